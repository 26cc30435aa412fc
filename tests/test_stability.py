"""Instability analysis, BN handling, stability to pruning, rewind-point search."""

import json
import os

import numpy as np
import pytest

from conftest import compile_model, load_script, small_mlp
from keras_lottery import masks as masks_lib
from keras_lottery import stability
from keras_lottery._keras import keras
from keras_lottery.schedule import IMPSchedule
from keras_lottery.wrap import wrap_model



def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _assert_same(before, model):
    after = model.get_weights()
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# -- crafted networks ---------------------------------------------------------------


def _bump_pair():
    """Two networks computing the same function whose midpoint fails on half the data.

    Hidden units relu(x) and relu(-x), swapped between A and B (a permutation).
    On the path, with s = 1 - 2 alpha, the class-1 logit for input x = +1 is
    s**2 - 0.25 (class-0 logit 0): wrong exactly where |s| < 0.5, i.e. for
    alpha in (0.25, 0.75). Inputs x = -1 (class 0) are always right.
    """
    def build():
        inputs = keras.Input((1,))
        h = keras.layers.Dense(2, activation="relu", use_bias=False, name="hidden")(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, name="output")(h))

    a, b = build(), build()
    bias = np.array([0.0, -0.25], np.float32)
    a.set_weights([np.array([[1.0, -1.0]], np.float32),
                   np.array([[0.0, 1.0], [0.0, -1.0]], np.float32), bias])
    b.set_weights([np.array([[-1.0, 1.0]], np.float32),
                   np.array([[0.0, -1.0], [0.0, 1.0]], np.float32), bias])
    x = np.array([[1.0]] * 8 + [[-1.0]] * 8, np.float32)
    y = np.array([1] * 8 + [0] * 8, np.int64)
    return a, b, x, y


def _bn_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, name="fc")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="output")(h))


# -- the path ----------------------------------------------------------------------


def test_identical_copies_have_zero_barrier(tiny_data):
    (x, y), _, _ = tiny_data
    model = small_mlp(seed=3)
    copy = stability.copy_model(model)
    path = stability.evaluate_path(model, copy, x, y, num_points=7)
    assert path.barrier == 0.0
    assert path.loss_barrier == 0.0
    assert len(set(path.errors)) == 1 and len(path.alphas) == 7


def test_crafted_bump_is_found():
    a, b, x, y = _bump_pair()
    path = stability.evaluate_path(a, b, x, y)  # default: 30 points
    assert len(path.alphas) == stability.DEFAULT_POINTS
    expected = [0.5 if (1 - 2 * alpha) ** 2 < 0.25 else 0.0 for alpha in path.alphas]
    assert path.errors == expected
    assert path.errors[0] == path.errors[-1] == 0.0
    assert path.barrier == pytest.approx(0.5)
    assert path.bump == pytest.approx(0.5)  # endpoints equal: the whole barrier is a bump
    skewed = stability.PathResult([0, 0.5, 1], [0.30, 0.20, 0.10], [1, 1, 1], 0.10, 0.0)
    assert skewed.bump == 0.0  # a barrier from unequal endpoints only
    assert path.loss_barrier > 0.1
    assert not path.bn_recomputed  # no BN layer


def test_interpolation_leaves_originals_unchanged(tiny_data):
    (x, y), _, _ = tiny_data
    a, b = _bn_model(0), _bn_model(1)
    before_a, before_b = _weights(a), _weights(b)
    stability.evaluate_path(a, b, x[:, :3], y % 2, num_points=4, bn_data=x[:64, :3])
    mid = stability.interpolate(a, b, 0.5, bn_data=x[:64, :3])
    _assert_same(before_a, a)
    _assert_same(before_b, b)
    assert mid is not a and mid is not b
    with pytest.raises(ValueError, match="never modifies"):
        stability.interpolate(a, b, 0.5, into=a)
    with pytest.raises(ValueError, match="different variables"):
        stability.evaluate_path(a, small_mlp(), x, y)


def test_bn_statistics_recomputed_on_the_interpolated_network(tiny_data):
    (x, _), _, _ = tiny_data
    x = x[:128, :3]
    a, b = _bn_model(0), _bn_model(1)
    # give the endpoints distinct, non-trivial moving statistics
    a.get_layer("bn").set_weights([np.ones(4), np.zeros(4), np.full(4, 5.0), np.full(4, 2.0)])
    b.get_layer("bn").set_weights([np.ones(4), np.zeros(4), np.full(4, -1.0), np.full(4, 4.0)])

    plain = stability.interpolate(a, b, 0.5)
    mean, var = plain.get_layer("bn").get_weights()[2:]
    np.testing.assert_allclose(mean, 2.0)  # the interpolation of 5 and -1
    np.testing.assert_allclose(var, 3.0)

    mid = stability.interpolate(a, b, 0.5, bn_data=x, bn_batch_size=32)
    kernel, bias = mid.get_layer("fc").get_weights()
    pre_bn = x @ kernel + bias  # the activations the BN layer sees at alpha = 0.5
    batches = pre_bn.reshape(4, 32, 4)
    mean, var = mid.get_layer("bn").get_weights()[2:]
    np.testing.assert_allclose(mean, batches.mean(axis=1).mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, batches.var(axis=1).mean(axis=0), rtol=1e-3, atol=1e-5)
    # the trainable weights are the plain interpolation, momentum is restored
    np.testing.assert_allclose(kernel, 0.5 * (a.get_layer("fc").get_weights()[0]
                                              + b.get_layer("fc").get_weights()[0]), rtol=1e-5, atol=1e-6)
    assert mid.get_layer("bn").momentum == a.get_layer("bn").momentum

    path = stability.evaluate_path(a, b, x, np.zeros(len(x), np.int64), num_points=3, bn_data=x)
    assert path.bn_recomputed


# -- training two copies, tickets, distance -----------------------------------------


@pytest.fixture(scope="module")
def ticket_analysis():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1).astype("int64")
    wrapped = wrap_model(small_mlp(seed=1), IMPSchedule(1, 0.5))
    entries = masks_lib.prunable_weights(wrapped)
    masks = masks_lib.compute_masks({w.name: w.weight.numpy() for w in entries},
                                    masks_lib.read_masks(wrapped), 1, 0.5, "global")
    masks_lib.write_masks(wrapped, masks)
    before = _weights(wrapped)
    result = stability.instability_analysis(
        wrapped, (x, y), (x, y), steps=12, seeds=(1, 2), batch_size=32,
        compile_fn=compile_model, start_step=5, num_points=5, check_sparsity=1)
    return wrapped, before, masks, result


def test_instability_analysis_on_a_ticket(ticket_analysis):
    wrapped, before, masks, result = ticket_analysis
    _assert_same(before, wrapped)  # the starting state is untouched
    assert len(result.path.errors) == 5 and result.instability >= 0.0
    assert result.instability == result.path.barrier
    assert result.start_step == 5 and result.steps == 12
    a, b = result.models
    assert int(a.optimizer.iterations.numpy()) == 5 + 12
    for model in (a, b):  # masks unchanged; pruned weights zero after every one of the 12 steps
        for w in masks_lib.prunable_weights(model):
            np.testing.assert_array_equal(w.mask.numpy(), masks[w.name])
        assert model.sparsity_guard.checks == 12 and model.sparsity_guard.weights_checked > 0
    # different data orders gave different weights
    assert any(not np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert result.accuracies == [1 - result.path.errors[0], 1 - result.path.errors[-1]]


def test_same_seeds_are_refused(tiny_data):
    with pytest.raises(ValueError, match="two different"):
        stability.instability_analysis(small_mlp(), tiny_data[0], tiny_data[1], steps=1,
                                       seeds=(3, 3))


def test_pruning_distance(ticket_analysis):
    _, _, masks, result = ticket_analysis
    a, b = result.models
    assert stability.pruning_distance(a, a) == 0.0
    wa = {w.layer_name: (w.weight.numpy(), w.mask.numpy()) for w in masks_lib.prunable_weights(a)}
    wb = {w.layer_name: w.weight.numpy() for w in masks_lib.prunable_weights(b)}
    diff = sum(np.sum((m * (w - wb[n])) ** 2) for n, (w, m) in wa.items())
    norm = sum(np.sum((m * wb[n]) ** 2) for n, (_, m) in wa.items())
    assert stability.pruning_distance(a, b) == pytest.approx(np.sqrt(diff / norm), rel=1e-5)
    with pytest.raises(ValueError, match="share no prunable layer"):
        stability.pruning_distance(a, keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))


# -- the rewind-point search ---------------------------------------------------------


def test_earliest_stable_on_crafted_rows():
    rows = [{"rewind": "2ep", "k_steps": 40, "instability": 0.0},
            {"rewind": "0it", "k_steps": 0, "instability": 0.10},
            {"rewind": "500it", "k_steps": 15, "instability": 0.01},
            {"rewind": "100it", "k_steps": 5, "instability": 0.03},
            {"rewind": "1ep", "k_steps": 20, "instability": 0.005}]
    assert stability.earliest_stable(rows)["rewind"] == "500it"  # default threshold 2 points
    assert stability.earliest_stable(rows, 0.04)["rewind"] == "100it"
    assert stability.earliest_stable(rows, 0.001)["rewind"] == "2ep"
    assert stability.earliest_stable(rows, 0.0) is None
    with pytest.raises(ValueError, match="threshold"):
        stability.earliest_stable(rows, -1)


def test_search_picks_the_earliest_stable_k(tiny_data, tmp_path):
    (x, y), _, test = tiny_data
    barrier_at = {0: 0.20, 3: 0.05, 8: 0.015, 16: 0.0}  # crafted instability per k
    seen = []

    def fake_analysis(model, train_data, eval_data, steps, start_step, **kwargs):
        seen.append((start_step, steps, masks_lib.overall_weights_remaining(model)))
        assert kwargs["check_sparsity"] == 1  # the copies' per-step check is passed on
        errors = [0.1, 0.1 + barrier_at[start_step], 0.1]
        path = stability.PathResult([0.0, 0.5, 1.0], errors, [1.0, 1.0, 1.0],
                                    barrier=barrier_at[start_step], loss_barrier=0.0)
        return stability.InstabilityResult(path, path.barrier, [0.9, 0.9], [1, 2],
                                           start_step, steps, 0.0)

    model = small_mlp(seed=0)
    result = stability.search_rewind_point(
        model, (x, y), test, ["1ep", 0, "3it", "16it"], epochs=3, batch_size=30,
        compile_fn=compile_model, weights_remaining=0.25, analyze=fake_analysis,
        check_sparsity=1)
    assert [r["k_steps"] for r in result.rows] == [0, 3, 8, 16]  # 1ep = 8 steps of 30
    assert result.chosen == "1ep"
    assert result.total_steps == 24
    assert [s[:2] for s in seen] == [(0, 24), (3, 21), (8, 16), (16, 8)]  # copies train to the end
    assert all(s[2] == pytest.approx(0.25, abs=0.01) for s in seen)  # one-shot mask applied
    assert 0.0 < result.dense_accuracy <= 1.0
    assert "<- earliest stable" in result.table().splitlines()[3]
    with pytest.raises(ValueError, match="not before the end"):
        stability.search_rewind_point(model, (x, y), test, ["3ep"], epochs=3, batch_size=30,
                                      analyze=fake_analysis)
    # learning-rate rewinding keeps the trained weights: not a point θk to search
    with pytest.raises(ValueError, match="learning-rate rewinding"):
        stability.search_rewind_point(model, (x, y), test, ["0it", "lr:3it"], epochs=3,
                                      batch_size=30, analyze=fake_analysis)
    png = stability.plot_instability(result, str(tmp_path / "instability.png"))
    assert os.path.getsize(png) > 1000
    png = stability.plot_paths(result.rows, str(tmp_path / "paths.png"))
    assert os.path.getsize(png) > 1000


def test_short_example_runs(tmp_path):
    example = load_script("examples/late_rewinding_resnet20.py")
    out = tmp_path / "run"
    assert example.main(["--short", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["comparison"]] == [0, 1]
    assert summary["comparison"][1]["weights_remaining"] == pytest.approx(0.5, abs=0.01)
    rows = summary["stability"]["rows"]
    assert [r["rewind"] for r in rows] == ["0it", "2it"]
    assert all(r["instability"] >= 0 for r in rows)
    for name in ("tickets.png", "paths.png", "instability.png", "comparison.csv", "stability.json"):
        assert (out / name).stat().st_size > 0


def test_cli_stability(tmp_path, capsys):
    from keras_lottery.cli import main

    out = tmp_path / "stab"
    code = main(["stability", "--num-samples", "400", "--epochs", "1", "--batch-size", "40",
                 "--candidates", "0it,3it", "--points", "3", "--weights-remaining", "0.5",
                 "--bn-examples", "0", "--optimizer", "adam", "--lr", "0.002", "--quiet",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "earliest stable" in printed
    payload = json.loads((out / "stability.json").read_text())
    assert [r["rewind"] for r in payload["rows"]] == ["0it", "3it"]
    assert payload["weights_remaining"] == pytest.approx(0.5, abs=0.01)
    assert payload["total_steps"] == 8  # 320 training examples / 40
    assert (out / "instability.png").stat().st_size > 0 and (out / "paths.png").stat().st_size > 0
    assert main(["stability", "--seeds", "1", "--num-samples", "400", "--out", str(out)]) == 2
    assert "two different integers" in capsys.readouterr().err
