"""Controls of a found ticket: random re-initialisation and random pruning.

One tiny ticket (3 rounds at 50%) is found once per module; the controls are
checked at the moment they enter a round (masks and weights) and after a
short training run (sparsity kept, results recorded).
"""

import numpy as np
import pytest
from conftest import compile_model, small_mlp

import keras_lottery as kl
from keras_lottery import controls, masks as masks_lib
from keras_lottery.rewind import model_state_variables

ROUNDS = 2
BATCH = 30


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1).astype("int64")
    return (x[:240], y[:240]), (x[240:], y[240:])


@pytest.fixture(scope="module")
def ticket():
    (x, y), val = _data()
    imp = kl.IMP(rounds=ROUNDS, prune_rate=0.5, rewind="0it", output_layer_rate=0.25)
    model = imp.wrap(small_mlp(seed=3))
    compile_model(model)
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0)
    recorder = controls.TicketRecorder(callbacks)
    data, steps = controls.ordered_batches(x, y, BATCH, seed=5)
    model.fit(data, steps_per_epoch=steps, epochs=epochs, validation_data=val,
              callbacks=callbacks + [recorder], verbose=0)
    return {"imp": imp, "model": model, "recorder": recorder, "x": x, "y": y, "val": val,
            "steps": steps}


def _theta0_of(clone, ticket):
    """weight name -> its θ0 value, matched by position in the state variables."""
    snapshot = ticket["recorder"].rewind_snapshot
    index = {id(v): i for i, v in enumerate(model_state_variables(clone))}
    return {w.name: snapshot.values[index[id(w.weight)]] for w in masks_lib.prunable_weights(clone)}


def _enter_round_one(ticket, kind, seed=1):
    """A control model as it stands right after entering round 1 (before any step)."""
    clone = controls.clone_for_control(ticket["model"])
    cb = controls.ControlCallback(kind, ticket["recorder"], seed=seed)
    cb.set_model(clone)
    cb.set_params({"epochs": cb.total_epochs, "steps": ticket["steps"], "verbose": 0})
    cb.on_train_begin()
    return clone, cb


def test_recorder_keeps_every_rounds_masks(ticket):
    recorded = ticket["recorder"].masks
    assert sorted(recorded) == list(range(ROUNDS + 1))
    history = ticket["imp"].history
    for rnd in range(ROUNDS + 1):
        kept = sum(m.sum() for m in recorded[rnd].values()) / sum(m.size for m in recorded[rnd].values())
        assert kept == pytest.approx(history[rnd].weights_remaining)
    for name in recorded[1]:  # masks only shrink
        assert np.all(recorded[2][name] <= recorded[1][name])


def test_reinit_keeps_the_mask_and_redraws_the_weights(ticket):
    clone, cb = _enter_round_one(ticket, "reinit")
    theta0 = ticket["recorder"].rewind_snapshot
    ticket_masks = ticket["recorder"].masks[1]
    assert cb.round == 1
    current = masks_lib.read_masks(clone)
    for name, mask in ticket_masks.items():
        np.testing.assert_array_equal(current[name], mask)
    base = _theta0_of(clone, ticket)
    for w in masks_lib.prunable_weights(clone):
        value = w.weight.numpy()
        mask = ticket_masks[w.name]
        assert np.all(value[mask == 0] == 0.0)
        original = base[w.name]
        alive = mask == 1
        # a fresh draw: no surviving weight keeps its θ0 value, same scale as the initializer
        assert np.mean(value[alive] == original[alive]) < 0.01
        assert np.std(value[alive]) == pytest.approx(np.std(original), rel=0.3)
    assert int(clone.optimizer.iterations.numpy()) == theta0.step


def test_reinit_draws_differ_between_rounds_and_seeds(ticket):
    clone = controls.clone_for_control(ticket["model"])
    a = controls.reinit_values(clone, seed=1)
    b = controls.reinit_values(clone, seed=1)
    c = controls.reinit_values(clone, seed=2)
    kernels = [i for i, v in enumerate(model_state_variables(clone)) if "kernel" in v.name]
    assert kernels
    for i in kernels:
        np.testing.assert_array_equal(a[i], b[i])
        assert not np.allclose(a[i], c[i])


def test_random_pruning_keeps_per_layer_sparsity_and_theta_k(ticket):
    clone, cb = _enter_round_one(ticket, "random")
    ticket_masks = ticket["recorder"].masks[1]
    theta0 = _theta0_of(clone, ticket)
    current = masks_lib.read_masks(clone)
    for w in masks_lib.prunable_weights(clone):
        mask = current[w.name]
        assert mask.sum() == ticket_masks[w.name].sum()          # same count per layer
        assert not np.array_equal(mask, ticket_masks[w.name])   # but a different mask
        original = theta0[w.name]
        np.testing.assert_array_equal(w.weight.numpy(), original * mask)  # θk ⊙ random mask


def test_random_masks_helper_counts():
    rng = np.random.default_rng(0)
    masks = {"a/kernel": (rng.random((20, 10)) < 0.3).astype("float32"),
             "b/kernel": (rng.random((7,)) < 0.5).astype("float32")}
    out = controls.random_masks(masks, seed=4)
    assert list(out) == list(masks)
    for name in masks:
        assert out[name].shape == masks[name].shape
        assert out[name].sum() == masks[name].sum()
    np.testing.assert_array_equal(controls.random_masks(masks, 4)["a/kernel"], out["a/kernel"])


@pytest.mark.parametrize("kind", ["reinit", "random"])
def test_trained_control_keeps_sparsity_and_reports_rounds(ticket, kind, tmp_path):
    cb = controls.train_control(kind, ticket["model"], ticket["recorder"], ticket["x"], ticket["y"],
                                batch_size=BATCH, data_seed=5, seed=2,
                                validation_data=ticket["val"], test_data=ticket["val"],
                                eval_every=3, report_dir=tmp_path)
    assert [r.round for r in cb.history] == list(range(1, ROUNDS + 1))
    ticket_rows = ticket["imp"].history
    for row in cb.history:
        assert row.weights_remaining == pytest.approx(ticket_rows[row.round].weights_remaining)
        assert row.weights_remaining_by_layer == pytest.approx(ticket_rows[row.round].weights_remaining_by_layer)
        assert row.steps == ticket_rows[row.round].steps
        assert row.early_stop_iteration % 3 == 0 or row.early_stop_iteration == row.steps
        assert row.test_accuracy is not None
    final = masks_lib.read_masks(cb.trained_model)
    for w in masks_lib.prunable_weights(cb.trained_model):
        assert np.all(w.weight.numpy()[final[w.name] == 0] == 0.0)
    payload = kl.report.read_json(tmp_path / "imp_report.json")
    assert payload["config"]["control"] == kind
    assert [r["round"] for r in payload["history"]] == [1, 2]


def test_ordered_batches_same_order_from_any_start_epoch():
    x = np.arange(50, dtype="float32").reshape(25, 2)
    y = np.arange(25)
    full, steps = controls.ordered_batches(x, y, 10, seed=3)
    late, _ = controls.ordered_batches(x, y, 10, seed=3, start_epoch=2)
    assert steps == 3
    batches = [b[1].numpy() for b in full.take(4 * steps)]
    assert sorted(np.concatenate(batches[:steps]).tolist()) == list(range(25))
    assert not np.array_equal(np.concatenate(batches[:steps]), np.concatenate(batches[steps:2 * steps]))
    for a, b in zip(batches[2 * steps:], [b[1].numpy() for b in late.take(2 * steps)]):
        np.testing.assert_array_equal(a, b)


def test_errors_name_the_fix(ticket):
    with pytest.raises(ValueError, match="reinit"):
        controls.parse_controls("reinit,shuffle")
    assert controls.parse_controls("random, reinit,random") == ("random", "reinit")
    with pytest.raises(ValueError, match="IMPCallback"):
        controls.TicketRecorder([])
    recorder = controls.TicketRecorder(ticket["recorder"].imp_callback)
    with pytest.raises(ValueError, match="rounds"):
        controls.ControlCallback("reinit", recorder)
    with pytest.raises(ValueError, match="batch_size"):
        controls.train_control("reinit", ticket["model"], ticket["recorder"], ticket["x"], ticket["y"])


def test_control_counts_steps_over_multi_epoch_rounds():
    (x, y), val = _data()
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(seed=3)))
    epochs = imp.epochs(per_round=2)
    callbacks = imp.callbacks(verbose=0)
    recorder = controls.TicketRecorder(callbacks)
    data, steps = controls.ordered_batches(x, y, BATCH, seed=5)
    model.fit(data, steps_per_epoch=steps, epochs=epochs, validation_data=val,
              callbacks=callbacks + [recorder], verbose=0)
    cb = controls.train_control("random", model, recorder, x, y, batch_size=BATCH,
                                data_seed=5, seed=2, validation_data=val)
    assert imp.history[1].steps == 2 * steps
    assert [r.steps for r in cb.history] == [2 * steps]
    assert 0 < cb.history[0].early_stop_iteration <= 2 * steps
