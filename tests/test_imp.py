import pytest

import keras_lottery as kl
from conftest import small_mlp


@pytest.mark.parametrize("kwargs,match", [
    (dict(rounds=0, prune_rate=0.2), "rounds"),
    (dict(rounds=3, prune_rate=1.0), "prune_rate"),
    (dict(rounds=3, prune_rate=0.0), "prune_rate"),
    (dict(rounds=3, prune_rate=0.2, rewind="five"), "rewind point"),
    (dict(rounds=3, prune_rate=0.2, scope="per-layer"), "scope"),
    (dict(rounds=3, prune_rate=0.2, layer_rates={"fc1": 1.5}), "fc1"),
    (dict(rounds=3, prune_rate=0.2, output_layer_rate=-0.1), "output_layer_rate"),
])
def test_bad_settings_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kl.IMP(**kwargs)


def test_epoch_rewind_past_round_zero_fails_before_fit():
    imp = kl.IMP(rounds=2, prune_rate=0.2, rewind="3ep")
    with pytest.raises(ValueError, match="past the end of round 0"):
        imp.epochs(per_round=2)
    assert imp.epochs(per_round=3) == 9


def test_callbacks_need_epochs_first():
    imp = kl.IMP(rounds=2, prune_rate=0.2)
    with pytest.raises(ValueError, match="epochs"):
        imp.callbacks()


def test_layer_rates_must_name_pruned_layers():
    imp = kl.IMP(rounds=2, prune_rate=0.2, layer_rates={"missing": 0.1})
    with pytest.raises(ValueError, match="missing"):
        imp.wrap(small_mlp())


def test_output_layer_rate_applies_to_last_prunable_layer():
    imp = kl.IMP(rounds=2, prune_rate=0.2, output_layer_rate=0.1)
    imp.wrap(small_mlp())
    assert imp.layer_rates == {"output": 0.1}


def test_config_round_trips():
    imp = kl.IMP(rounds=4, prune_rate=0.25, rewind="2ep", scope="global", layer_rates={"fc1": 0.1})
    again = kl.IMP.from_config(imp.get_config())
    assert again.get_config() == imp.get_config()
