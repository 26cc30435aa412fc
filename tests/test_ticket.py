"""Saving and loading the ticket itself: masks, θk and settings, to retrain later."""

import json
import os

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from conftest import compile_model, small_mlp

import keras_lottery as kl
from keras_lottery.ticket import Ticket, load_ticket, save_ticket


@pytest.fixture(scope="module")
def run():
    """An IMP run rewinding to iteration 2, so θk differs from θ0 and from the end."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1).astype("int64")
    imp = kl.IMP(rounds=2, prune_rate=0.5, rewind="2it")
    model = compile_model(imp.wrap(small_mlp(seed=1)))
    model.fit(x, y, batch_size=40, epochs=imp.epochs(per_round=1), verbose=0,
              callbacks=imp.callbacks(verbose=0))
    return imp, model, (x, y)


def test_round_trip(tmp_path, run):
    imp, model, _ = run
    ticket = save_ticket(tmp_path / "ticket", model, imp, config={"dataset": "toy"})
    assert sorted(os.listdir(tmp_path)) == ["ticket.json", "ticket.npz"]
    again = load_ticket(tmp_path)  # the folder works too
    assert again.step == imp.callback.theta_k.step == 2
    assert again.weights_remaining == pytest.approx(kl.overall_weights_remaining(model))
    assert again.config["dataset"] == "toy" and again.config["rewind"] == "2it"
    for name, mask in kl.read_masks(model).items():
        np.testing.assert_array_equal(again.masks[name], mask)
    for a, b in zip(again.theta.values, imp.callback.theta_k.values):
        np.testing.assert_array_equal(a, b)
    assert again.theta.names == ticket.theta.names
    meta = json.loads((tmp_path / "ticket.json").read_text())
    assert meta["theta"]["step"] == 2 and len(meta["masks"]) == 3


def test_build_model_rewinds_to_theta_k_and_retrains_with_zeros(tmp_path, run):
    imp, model, (x, y) = run
    save_ticket(tmp_path / "t", model, imp)
    fresh = load_ticket(tmp_path / "t.npz").build_model()
    assert fresh is not model
    masks = kl.read_masks(fresh)
    theta = dict(zip(imp.callback.theta_k.names, imp.callback.theta_k.values))
    for w in kl.masks.prunable_weights(fresh):
        mask = masks[w.name]
        np.testing.assert_array_equal(mask, kl.read_masks(model)[w.name])
        value = w.weight.numpy()
        key = next(k for k in theta if k.startswith(f"prune_low_magnitude_{w.layer_name}/kernel"))
        np.testing.assert_array_equal(value[mask == 1], theta[key][mask == 1])
        assert np.all(value[mask == 0] == 0)
    # retraining the subnetwork keeps the pruned weights at zero after every batch
    compile_model(fresh)
    ticket = load_ticket(tmp_path / "t")
    callbacks = ticket.callbacks(check_sparsity=1)
    guard = next(cb for cb in callbacks if isinstance(cb, kl.SparsityGuard))
    fresh.fit(x, y, batch_size=40, epochs=2, verbose=0, callbacks=callbacks)
    assert guard.checks == 2 * len(x) // 40 and guard.weights_checked > 0


def _one_step_update(model, x, y, lr):
    """Each prunable kernel after one plain-SGD step at learning rate `lr`, masked."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = model.compiled_loss(tf.constant(y), model(tf.constant(x), training=False))  # no dropout/BN
    weights = kl.masks.prunable_weights(model)
    grads = tape.gradient(loss, [w.weight for w in weights])
    return {w.name: (w.weight.numpy() - lr * g.numpy()) * w.mask.numpy()
            for w, g in zip(weights, grads)}


def _schedule(k):
    """Learning rate 0 up to step k - 1, then 0.1: only a step counter at k moves the weights."""
    return kl._keras.keras.optimizers.schedules.PiecewiseConstantDecay([k - 1], [0.0, 0.1])


@pytest.mark.parametrize("how", ["build_model", "set_optimizer_step", "callbacks"])
def test_retraining_continues_the_lr_schedule_from_k(tmp_path, run, how):
    imp, model, (x, y) = run
    ticket = save_ticket(tmp_path / "t", model, imp)
    k = ticket.step
    assert k == 2
    keras = kl._keras.keras
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(_schedule(k))
    if how == "build_model":
        fresh = ticket.build_model(optimizer=optimizer, loss=loss)
        assert int(fresh.optimizer.iterations.numpy()) == k
    else:
        fresh = ticket.build_model()
        fresh.compile(optimizer, loss)
        if how == "set_optimizer_step":
            assert ticket.set_optimizer_step(fresh) == k
    expected = _one_step_update(fresh, x[:40], y[:40], lr=0.1)
    callbacks = ticket.callbacks(check_sparsity=1) if how == "callbacks" else [
        tfmot.sparsity.keras.UpdatePruningStep()]
    fresh.fit(x[:40], y[:40], batch_size=40, epochs=1, shuffle=False, verbose=0,
              callbacks=callbacks)
    assert int(fresh.optimizer.iterations.numpy()) == k + 1
    for w in kl.masks.prunable_weights(fresh):  # the step used the LR of step k, not of step 0
        np.testing.assert_allclose(w.weight.numpy(), expected[w.name], rtol=1e-5, atol=1e-7)


def test_build_model_and_set_step_refuse_bad_use(tmp_path, run):
    imp, model, _ = run
    ticket = save_ticket(tmp_path / "t", model, imp)
    with pytest.raises(ValueError, match="optimizer="):
        ticket.build_model(loss="mse")
    with pytest.raises(ValueError, match="Compile the model"):
        ticket.set_optimizer_step(ticket.build_model())
    trained = save_ticket(tmp_path / "trained", model)  # trained weights: step -1
    fresh = trained.build_model(optimizer="sgd", loss="mse")
    assert trained.step == -1 and int(fresh.optimizer.iterations.numpy()) == 0


def test_apply_to_other_architecture_is_refused(run):
    imp, model, _ = run
    ticket = Ticket.from_model(model, imp)
    other = kl.IMP(rounds=1, prune_rate=0.5).wrap(small_mlp(seed=1, hidden=(8,)))
    with pytest.raises(ValueError, match="same architecture"):
        ticket.apply(other)


def test_mismatched_or_missing_files(tmp_path, run):
    imp, model, _ = run
    save_ticket(tmp_path / "a", model, imp)
    save_ticket(tmp_path / "b", model)  # θ = trained weights: a different npz
    os.replace(tmp_path / "b.npz", tmp_path / "a.npz")
    with pytest.raises(ValueError, match="different saves"):
        load_ticket(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="No ticket file"):
        load_ticket(tmp_path / "missing")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_unwrapped_model_has_no_ticket(run):
    with pytest.raises(ValueError, match="no pruning wrappers"):
        Ticket.from_model(small_mlp(seed=2))


def _broken_json(tmp_path, run, edit):
    """A saved ticket whose JSON was changed by `edit(meta) -> new JSON text`."""
    imp, model, _ = run
    save_ticket(tmp_path / "t", model, imp)
    path = tmp_path / "t.json"
    path.write_text(edit(json.loads(path.read_text())))
    return path


def _without(meta, *keys):
    target = meta
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]
    return json.dumps(meta)


@pytest.mark.parametrize("edit, message", [
    (lambda meta: json.dumps([meta]), r"holds a JSON list, not a ticket"),
    (lambda meta: json.dumps("ticket"), r"holds a JSON str"),
    (lambda meta: "", r"is empty"),
    (lambda meta: json.dumps(meta)[:200], r"not valid JSON \(truncated"),
    (lambda meta: _without(meta, "npz_sha256"), r"no 'npz_sha256' field"),
    (lambda meta: _without(meta, "masks"), r"no 'masks' field"),
    (lambda meta: _without(meta, "theta"), r"no 'theta' field"),
    (lambda meta: _without(meta, "theta", "names"), r"no 'theta'.'names' field"),
    (lambda meta: _without(meta, "theta", "step"), r"no 'theta'.'step' field"),
    (lambda meta: _without(meta, "version"), r"no 'version' field"),
    (lambda meta: _without(meta, "format"), r"not a keras-lottery ticket"),
    (lambda meta: json.dumps(dict(meta, masks={"a": 1})), r"'masks' should be a list, got dict"),
    (lambda meta: json.dumps(dict(meta, theta=dict(meta["theta"], step="2"))),
     r"'theta'.'step' should be a int, got str"),
    (lambda meta: json.dumps(dict(meta, masks=[dict(meta["masks"][0], shape=[1, 2])] + meta["masks"][1:])),
     r"mask_0 has shape \[40, 32\], but .* gives mask 'fc1/kernel' shape \[1, 2\]"),
    (lambda meta: json.dumps(dict(meta, masks=meta["masks"] + [{"name": "x/kernel", "shape": [3]}])),
     r"has no array mask_3 for mask 'x/kernel'"),
], ids=["list", "string", "empty", "truncated", "no-checksum", "no-masks", "no-theta",
        "no-theta-names", "no-theta-step", "no-version", "no-format", "masks-dict",
        "step-string", "mask-shape", "missing-array"])
def test_malformed_ticket_json_is_refused_naming_the_file(tmp_path, run, edit, message):
    path = _broken_json(tmp_path, run, edit)
    with pytest.raises(ValueError, match=message) as err:
        load_ticket(tmp_path / "t")
    assert str(path) in str(err.value) or str(tmp_path / "t.npz") in str(err.value)


def test_truncated_or_foreign_npz_is_refused_naming_the_file(tmp_path, run):
    imp, model, _ = run
    save_ticket(tmp_path / "t", model, imp)
    npz = tmp_path / "t.npz"
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"t\.npz does not match .*truncated"):
        load_ticket(tmp_path / "t")
    # a .json whose checksum matches bytes that are no .npz at all
    import hashlib

    meta = json.loads((tmp_path / "t.json").read_text())
    for content, message in [(b"not a zip file", r"t\.npz is not an \.npz \(zip\) file"),
                             (data[: len(data) // 2], r"t\.npz cannot be read as a ticket's arrays")]:
        npz.write_bytes(content)
        meta["npz_sha256"] = hashlib.sha256(content).hexdigest()
        (tmp_path / "t.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=message):
            load_ticket(tmp_path / "t")
