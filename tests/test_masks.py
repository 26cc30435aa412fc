import numpy as np
import pytest

from keras_lottery.masks import LAYER_FLOOR, compute_masks


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


def _kill_case(seed=0):
    # one large tensor of ordinary weights and a small one whose weights are
    # all 1000x smaller: a single global threshold empties the small one
    rng = np.random.default_rng(seed)
    weights = {"big/kernel": rng.normal(size=(100, 100)), "small/kernel": rng.normal(size=(10, 10)) * 1e-3}
    masks = {k: np.ones(v.shape, np.float32) for k, v in weights.items()}
    return weights, masks


def test_global_floor_keeps_every_layer_alive_and_warns_naming_it(caplog):
    # fails on the old code: small/kernel keeps 0 of its 100 weights, silently
    import logging

    weights, masks = _kill_case()
    with caplog.at_level(logging.WARNING, logger="keras_lottery"):
        new = compute_masks(weights, masks, 1, prune_rate=0.5, scope="global")
    floor = int(np.ceil(LAYER_FLOOR * 0.5 * 100))
    assert new["small/kernel"].sum() == floor
    assert sum(m.sum() for m in new.values()) == 5050  # total unchanged
    # the floor takes the small tensor's largest weights
    small = np.abs(weights["small/kernel"])
    assert small[new["small/kernel"] == 1].min() >= small[new["small/kernel"] == 0].max()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "small/kernel (0 of 100 weights -> 5)" in messages[0]
    assert "big/kernel" not in messages[0]
    # an explicit floor of 0 still leaves one weight (and warns)
    with caplog.at_level(logging.WARNING, logger="keras_lottery"):
        bare = compute_masks(weights, masks, 1, prune_rate=0.5, scope="global", layer_floor=0.0)
    assert bare["small/kernel"].sum() == 1


def test_global_floor_does_not_bind_when_no_layer_falls_below_it(caplog):
    import logging

    weights, masks = _random_layers()
    with caplog.at_level(logging.WARNING, logger="keras_lottery"):
        floored = compute_masks(weights, masks, 1, prune_rate=0.5, scope="global")
    plain = compute_masks(weights, masks, 1, prune_rate=0.5, scope="global", layer_floor=0.0)
    assert all(np.array_equal(floored[k], plain[k]) for k in weights)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("scope", ["global", "erk"])
def test_floor_is_respected_over_many_rounds_and_counts_stay_exact(scope):
    weights, masks = _kill_case()
    weights["mid/kernel"] = np.random.default_rng(5).normal(size=(30, 40)) * 0.1
    masks["mid/kernel"] = np.ones((30, 40), np.float32)
    total = sum(m.size for m in masks.values())
    rng = np.random.default_rng(2)
    for r in range(1, 9):
        new = compute_masks(weights, masks, r, prune_rate=0.4, scope=scope, layer_floor=0.2)
        density = 0.6 ** r
        assert abs(sum(m.sum() for m in new.values()) - total * density) <= 1
        for name, mask in new.items():
            assert np.all(mask <= masks[name]), "a pruned weight came back"
            assert mask.sum() >= min(masks[name].sum(), max(1, np.ceil(0.2 * density * mask.size)))
        masks = new
        weights = {k: v + rng.normal(scale=0.01, size=v.shape) for k, v in weights.items()}


def test_erk_densities_follow_sum_over_product_of_dims():
    rng = np.random.default_rng(0)
    shapes = {"conv1/kernel": (3, 3, 3, 16), "conv2/kernel": (3, 3, 16, 32),
              "fc/kernel": (512, 64), "out/kernel": (64, 10)}
    weights = {k: rng.normal(size=s) for k, s in shapes.items()}
    masks = {k: np.ones(s, np.float32) for k, s in shapes.items()}
    total = sum(m.size for m in masks.values())
    new = compute_masks(weights, masks, 2, prune_rate=0.5, scope="erk", layer_floor=0.0)
    assert abs(sum(m.sum() for m in new.values()) - total * 0.25) <= 1
    density = {k: new[k].mean() for k in shapes}
    score = {k: sum(s) / np.prod(s) for k, s in shapes.items()}
    # out (score 0.116) would need density 1.5: capped at 1, the rest redistributed
    assert density["out/kernel"] == 1.0
    free = [k for k in shapes if density[k] < 1.0]
    assert len(free) == 3
    # one epsilon for every uncapped tensor: count = eps * score * size, up to rounding
    eps = sum(new[k].sum() for k in free) / sum(score[k] * new[k].size for k in free)
    for k in free:
        assert abs(new[k].sum() - eps * score[k] * new[k].size) <= 1.0
    # within a tensor the largest magnitudes survive
    fc = np.abs(weights["fc/kernel"])
    assert fc[new["fc/kernel"] == 1].min() >= fc[new["fc/kernel"] == 0].max()


def test_erk_keeps_the_small_layer_that_global_would_kill():
    weights, masks = _kill_case()
    new = compute_masks(weights, masks, 1, prune_rate=0.5, scope="erk")
    # ERK gives the 10x10 tensor (score 0.2) 10x the density of the 100x100 one (0.02), capped at 1
    assert new["small/kernel"].sum() == 100
    assert new["big/kernel"].sum() == 5050 - 100


def test_bad_floor_is_refused():
    weights, masks = _random_layers()
    for bad in (-0.1, 1.5, "0.1", True):
        with pytest.raises(ValueError, match="layer_floor"):
            compute_masks(weights, masks, 1, 0.2, scope="global", layer_floor=bad)


def test_erk_is_a_scope_imp_accepts():
    import keras_lottery as kl

    assert "erk" in kl.masks.SCOPES
    assert kl.IMP(rounds=1, prune_rate=0.5, scope="erk").scope == "erk"
