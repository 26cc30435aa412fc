"""Controls of a found ticket: random re-initialisation and random pruning.

One tiny ticket (3 rounds at 50%) is found once per module; the controls are
checked at the moment they enter a round (masks and weights) and after a
short training run (sparsity kept, results recorded).
"""

import logging

import numpy as np
import pytest
from conftest import compile_model, small_mlp

import keras_lottery as kl
from keras_lottery import controls, masks as masks_lib
from keras_lottery._keras import keras
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


def _clone_at_theta0(ticket):
    """A control model holding the ticket's θ0 in every variable.

    `clone_model` draws new values from the initializers, so a weight the
    re-init control failed to redraw would still look fresh in a plain
    clone; holding θ0 (as it would hold trained values at a later round's
    start), such a weight shows up as kept.
    """
    clone = controls.clone_for_control(ticket["model"])
    for variable, value in zip(model_state_variables(clone), ticket["recorder"].rewind_snapshot.values):
        variable.assign(value)
    return clone


def _enter_round_one(ticket, kind, seed=1):
    """A control model as it stands right after entering round 1 (before any step)."""
    clone = _clone_at_theta0(ticket)
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
                                eval_every=3, report_dir=tmp_path, check_sparsity=1)
    assert [r.round for r in cb.history] == list(range(1, ROUNDS + 1))
    ticket_rows = ticket["imp"].history
    for row in cb.history:
        assert row.weights_remaining == pytest.approx(ticket_rows[row.round].weights_remaining)
        assert row.weights_remaining_by_layer == pytest.approx(ticket_rows[row.round].weights_remaining_by_layer)
        assert row.steps == ticket_rows[row.round].steps
        assert row.early_stop_iteration % 3 == 0 or row.early_stop_iteration == row.steps
        assert row.test_accuracy is not None
    # pruned weights stayed exactly zero after every batch of the control's fit
    assert cb.sparsity_guard.checks == ROUNDS * ticket["steps"]
    assert cb.sparsity_guard.weights_checked > 0
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


# -- re-initialisation of every kind of layer ------------------------------------------

ZOO_BATCH = 12


def _zoo_model(seed):
    """Embedding, Conv2D, BN, SeparableConv2D, DepthwiseConv2D, LSTM, Bidirectional GRU, GRU, Dense."""
    layers = keras.layers
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((64,), dtype="int32")
    h = layers.Embedding(50, 4, name="emb")(tokens)
    h = layers.Reshape((8, 8, 4))(h)
    h = layers.Conv2D(8, 3, name="conv")(h)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.SeparableConv2D(16, 3, name="sep")(h)
    h = layers.DepthwiseConv2D(3, name="dw")(h)
    h = layers.Reshape((4, 16))(h)
    h = layers.LSTM(8, return_sequences=True, name="lstm")(h)
    h = layers.Bidirectional(layers.GRU(6, return_sequences=True), name="bigru")(h)
    h = layers.GRU(8, name="gru")(h)
    return keras.Model(tokens, layers.Dense(3, name="out")(h))


@pytest.fixture(scope="module")
def zoo_ticket():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 50, (24, 64)).astype("int32")
    y = rng.integers(0, 3, 24).astype("int64")
    imp = kl.IMP(rounds=1, prune_rate=0.5, rewind="0it")
    model = imp.wrap(_zoo_model(seed=4))
    # eager: tracing three RNN layers costs ~10x the four steps trained here
    # (the per-batch exactness of graph-mode fits is the exactness matrix's job)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0, check_sparsity=1)
    recorder = controls.TicketRecorder(callbacks)
    data, steps = controls.ordered_batches(x, y, ZOO_BATCH, seed=0)
    model.fit(data, steps_per_epoch=steps, epochs=epochs, callbacks=callbacks + [recorder],
              verbose=0)
    return {"model": model, "recorder": recorder, "x": x, "y": y, "steps": steps}


def _fans(shape):
    """(fan_in, fan_out) as Glorot defines them (receptive field times channels)."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def _check_drawn_like_its_initializer(name, layer_class, value, original):
    """Asserts `value` looks drawn from the Keras default initializer of weight `name`."""
    short = name.split("/")[-1].split(":")[0]
    if short in ("bias", "beta", "moving_mean", "gamma", "moving_variance"):
        expected = np.zeros_like(value) if short in ("bias", "beta", "moving_mean") else np.ones_like(value)
        if short == "bias" and layer_class == "LSTMCell":  # unit_forget_bias: forget gate at 1
            n = value.shape[0] // 4
            expected[n:2 * n] = 1.0
        np.testing.assert_array_equal(value, expected, err_msg=name)
        return "constant"
    # a random initializer: a new draw, no value kept from the original
    assert np.mean(value == original) < 0.01, f"{name} kept the original's values"
    if short == "embeddings":  # RandomUniform(-0.05, 0.05)
        assert np.abs(value).max() <= 0.05
        assert np.std(value) == pytest.approx(0.1 / np.sqrt(12), rel=0.2), name
    elif short == "recurrent_kernel":  # Orthogonal: orthonormal rows
        np.testing.assert_allclose(value @ value.T, np.eye(value.shape[0]), atol=1e-5, err_msg=name)
    else:  # kernel, depthwise_kernel, pointwise_kernel: GlorotUniform
        fan_in, fan_out = _fans(value.shape)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(value).max() <= limit, name
        assert np.std(value) == pytest.approx(limit / np.sqrt(3), rel=0.3), name
    return "random"


def test_reinit_redraws_every_weight_of_every_layer_kind(zoo_ticket):
    """SeparableConv2D's, DepthwiseConv2D's and the RNN cells' kernels included.

    Before the initializer was looked up per owning layer (cells) and with the
    `_kernel` suffix dropped, pointwise/depthwise/recurrent kernels kept θ0.
    """
    clone = _clone_at_theta0(zoo_ticket)
    theta0 = zoo_ticket["recorder"].rewind_snapshot.values
    owners = {id(v): type(layer).__name__ for v, layer, _ in controls.weight_initializers(clone)}
    variables = model_state_variables(clone)
    values = controls.reinit_values(clone, seed=7)
    kinds = {}
    for variable, value, original in zip(variables, values, theta0):
        assert value.shape == original.shape and value.dtype == original.dtype
        kinds[variable.name] = _check_drawn_like_its_initializer(
            variable.name, owners[id(variable)], value, original)
    random = sorted(n.split("/")[-1].split(":")[0] for n, k in kinds.items() if k == "random")
    assert set(random) == {"embeddings", "kernel", "depthwise_kernel", "pointwise_kernel",
                           "recurrent_kernel"}
    assert random.count("recurrent_kernel") == 4  # LSTM, both GRU directions, GRU
    assert random.count("depthwise_kernel") == 2  # SeparableConv2D, DepthwiseConv2D


def test_reinit_control_of_every_layer_kind_masks_and_stays_exact(zoo_ticket):
    clone, cb = _enter_round_one(zoo_ticket, "reinit", seed=3)
    theta0 = _theta0_of(clone, zoo_ticket)
    ticket_masks = zoo_ticket["recorder"].masks[1]
    names = {w.name for w in masks_lib.prunable_weights(clone)}
    assert {"sep/pointwise_kernel", "lstm/recurrent_kernel", "gru/recurrent_kernel",
            "emb/embeddings"} <= names
    for w in masks_lib.prunable_weights(clone):
        mask, value = ticket_masks[w.name], w.weight.numpy()
        np.testing.assert_array_equal(w.mask.numpy(), mask)
        assert 0 < mask.sum() < mask.size
        assert np.all(value[mask == 0] == 0.0), w.name
        alive = mask == 1
        assert np.mean(value[alive] == theta0[w.name][alive]) < 0.01, w.name
    # trained, the control's pruned weights are exactly zero after every batch
    control = controls.train_control("reinit", zoo_ticket["model"], zoo_ticket["recorder"],
                                     zoo_ticket["x"], zoo_ticket["y"], batch_size=ZOO_BATCH,
                                     seed=3, check_sparsity=1)
    assert control.sparsity_guard.checks == zoo_ticket["steps"]
    assert control.trained_model.run_eagerly  # compiled like the ticket
    assert [r.round for r in control.history] == [1]


class _Scaled(keras.layers.Layer):
    """A custom layer whose weight has no `<name>_initializer` attribute."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones",
                                     trainable=self.trainable)

    def call(self, inputs):
        return inputs * self.scale


def test_reinit_refuses_a_trainable_weight_without_initializer():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"),
                              _Scaled(name="scaled")])
    with pytest.raises(controls.InitializerNotFound, match=r"scale.*'scaled'.*scale_initializer"):
        controls.reinit_values(model, seed=0)


def test_reinit_keeps_untrainable_state_without_initializer(caplog):
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(np.arange(12, dtype="float32").reshape(6, 2))
    frozen = _Scaled(name="frozen", trainable=False)
    model = keras.Sequential([keras.Input((2,)), norm, keras.layers.Dense(3, name="fc"), frozen])
    before = {v.name: v.numpy() for v in model.weights}
    with caplog.at_level(logging.WARNING, logger="keras_lottery"):
        values = controls.reinit_values(model, seed=0)
    untrainable = {id(v) for v in norm.weights + frozen.weights}
    kept = []
    for variable, value in zip(model_state_variables(model), values):
        if id(variable) in untrainable:
            np.testing.assert_array_equal(value, before[variable.name])  # data statistics kept
            kept.append(variable.name)
        elif "kernel" in variable.name:
            assert not np.any(value == before[variable.name])  # the rest is redrawn
    assert len(kept) == 4  # mean, variance, count, the frozen scale
    assert "'norm'" in caplog.text and "'frozen'" in caplog.text


def test_experiment_guards_the_ticket_and_every_control(tmp_path, monkeypatch):
    """run_experiment(check_sparsity=1): a SparsityGuard on the ticket's and each control's fit."""
    from keras_lottery import experiment
    from keras_lottery.guard import SparsityGuard

    checked = []
    original = SparsityGuard.check

    def counting(self, step=None):
        checked.append(id(self.model))
        return original(self, step)

    monkeypatch.setattr(SparsityGuard, "check", counting)
    (x, y), val = _data()
    experiment.run_experiment(
        lambda seed: small_mlp(seed=seed), compile_model, (x, y), val, val, str(tmp_path),
        experiment.ExperimentSettings(rounds=1, prune_rate=0.5, epochs_per_round=1,
                                      batch_size=BATCH, seeds=(0,), controls=("reinit", "random"),
                                      verbose=0, check_sparsity=1))
    steps = len(x) // BATCH
    # the ticket: rounds 0 and 1; each control: round 1; three different models
    assert len(checked) == 2 * steps + 2 * steps
    assert len(set(checked)) == 3


def test_experiment_refuses_an_unredrawable_weight_before_training(tmp_path):
    (x, y), val = _data()

    def build(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((40,)), keras.layers.Dense(10, name="fc"),
                                 _Scaled(name="scaled")])

    from keras_lottery import experiment

    with pytest.raises(controls.InitializerNotFound, match="'scaled'"):
        experiment.run_experiment(build, compile_model, (x, y), val, val, str(tmp_path),
                                  experiment.ExperimentSettings(
                                      rounds=1, prune_rate=0.5, epochs_per_round=1,
                                      batch_size=BATCH, controls=("reinit",), verbose=0))
    assert not (tmp_path / "seed_0" / "ticket" / "imp_report.json").exists()  # nothing trained
