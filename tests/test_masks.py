import numpy as np
import pytest

from keras_lottery.masks import compute_masks


def _random_layers(seed=0):
    rng = np.random.default_rng(seed)
    weights = {"a/kernel": rng.normal(size=(40, 30)), "b/kernel": rng.normal(size=(30, 20)) * 3,
               "out/kernel": rng.normal(size=(20, 10))}
    masks = {k: np.ones(v.shape, np.float32) for k, v in weights.items()}
    return weights, masks


def _run_rounds(rounds, **kwargs):
    weights, masks = _random_layers()
    history = [masks]
    rng = np.random.default_rng(1)
    for r in range(1, rounds + 1):
        # weights move between rounds, as training would move them
        weights = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in weights.items()}
        masks = compute_masks(weights, masks, r, **kwargs)
        history.append(masks)
    return weights, history


def test_layerwise_keeps_the_scheduled_fraction_in_every_layer():
    _, history = _run_rounds(5, prune_rate=0.2, scope="layerwise")
    for r, masks in enumerate(history):
        for name, mask in masks.items():
            assert abs(mask.sum() - mask.size * 0.8**r) <= 1, (r, name)


def test_per_layer_override_prunes_that_layer_at_its_own_rate():
    _, history = _run_rounds(4, prune_rate=0.2, scope="layerwise", layer_rates={"out": 0.1})
    final = history[-1]
    assert abs(final["out/kernel"].sum() - 200 * 0.9**4) <= 1
    assert abs(final["a/kernel"].sum() - 1200 * 0.8**4) <= 1


def test_global_uses_one_threshold_across_layers():
    weights, masks = _random_layers()
    new = compute_masks(weights, masks, 1, prune_rate=0.5, scope="global")
    total = sum(m.size for m in masks.values())
    assert abs(sum(m.sum() for m in new.values()) - total * 0.5) <= 1
    kept = np.concatenate([np.abs(weights[k])[new[k] == 1] for k in weights])
    pruned = np.concatenate([np.abs(weights[k])[new[k] == 0] for k in weights])
    assert kept.min() >= pruned.max()
    # the layer with 3x larger weights keeps a larger fraction than the others
    assert new["b/kernel"].mean() > new["a/kernel"].mean()


def test_global_with_override_keeps_override_layer_exact():
    weights, masks = _random_layers()
    new = compute_masks(weights, masks, 1, prune_rate=0.5, scope="global", layer_rates={"out": 0.25})
    assert new["out/kernel"].sum() == 150
    shared_total = 1200 + 600
    assert abs(new["a/kernel"].sum() + new["b/kernel"].sum() - shared_total * 0.5) <= 1


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_masks_only_shrink_and_rank_survivors_by_magnitude(scope):
    weights, history = _run_rounds(6, prune_rate=0.3, scope=scope)
    for before, after in zip(history, history[1:]):
        for name in before:
            assert np.all(after[name] <= before[name]), "a pruned weight came back"


def test_pruned_weights_are_never_ranked_again_even_if_large():
    weights = {"d/kernel": np.array([[5.0, 0.1, 0.2, 0.3]])}
    masks = {"d/kernel": np.array([[0.0, 1.0, 1.0, 1.0]])}
    new = compute_masks(weights, masks, 2, prune_rate=0.5)
    assert new["d/kernel"][0, 0] == 0
    assert new["d/kernel"].sum() == 1  # round(4 * 0.25)
    assert new["d/kernel"][0, 3] == 1


def test_same_inputs_give_same_masks_ties_included():
    weights = {"d/kernel": np.ones((10, 10))}
    masks = {"d/kernel": np.ones((10, 10))}
    first = compute_masks(weights, masks, 1, prune_rate=0.37)
    second = compute_masks(weights, masks, 1, prune_rate=0.37)
    assert np.array_equal(first["d/kernel"], second["d/kernel"])
    assert first["d/kernel"].sum() == 63


def test_bad_arguments_are_refused():
    weights, masks = _random_layers()
    with pytest.raises(ValueError, match="scope"):
        compute_masks(weights, masks, 1, 0.2, scope="per-layer")
    with pytest.raises(ValueError, match="not pruned"):
        compute_masks(weights, masks, 1, 0.2, layer_rates={"nope": 0.1})
    with pytest.raises(ValueError, match="Rate"):
        compute_masks(weights, masks, 1, 1.5)
