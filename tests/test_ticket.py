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
    # retraining the subnetwork keeps the pruned weights at zero
    compile_model(fresh)
    fresh.fit(x, y, batch_size=40, epochs=1, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    for w in kl.masks.prunable_weights(fresh):
        assert np.all(w.weight.numpy()[masks[w.name] == 0] == 0)


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
