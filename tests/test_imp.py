import numpy as np
import pytest

import keras_lottery as kl
from conftest import small_mlp
from keras_lottery._keras import keras


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


def test_output_layer_rate_applies_to_the_layer_feeding_the_output():
    imp = kl.IMP(rounds=2, prune_rate=0.2, output_layer_rate=0.1)
    wrapped = imp.wrap(small_mlp())
    assert imp.rates_for(wrapped) == {"output": 0.1}
    assert imp.layer_rates == {}  # the IMP's own settings are not changed


def _two_headed():
    """Heads defined before the trunk's last layer in model.layers order."""
    L = keras.layers
    inp = keras.Input((8,))
    trunk = L.Dense(16, activation="relu", name="trunk")(inp)
    head_a = L.Activation("softmax", name="act_a")(L.Dense(3, name="head_a")(trunk))
    side = L.Dense(16, name="side")(inp)
    head_b = L.Dense(2, name="head_b")(L.Add()([trunk, side]))
    return keras.Model(inp, [head_b, head_a])


def _nested():
    L = keras.layers
    inner_in = keras.Input((8,))
    inner = keras.Model(inner_in, L.Dense(4, name="inner_out")(L.Dense(6, name="inner_fc")(inner_in)),
                        name="inner")
    inp = keras.Input((8,))
    out = L.Reshape((4,))(inner(L.Dense(8, name="pre")(inp)))
    return keras.Model(inp, out)


def test_output_layer_rate_follows_the_graph_for_multi_output_and_nested_models():
    imp = kl.IMP(rounds=2, prune_rate=0.2, output_layer_rate=0.1, layer_rates={"trunk": 0.3})
    two = imp.wrap(_two_headed())
    assert imp.rates_for(two) == {"trunk": 0.3, "head_a": 0.1, "head_b": 0.1}
    # the same IMP wraps a second, different model (wrap used to add the first
    # model's output layer to layer_rates, which then named no layer here)
    nested = kl.IMP(rounds=2, prune_rate=0.2, output_layer_rate=0.1)
    wrapped = nested.wrap(_nested())
    assert nested.rates_for(wrapped) == {"inner_out": 0.1}
    again = nested.wrap(small_mlp())
    assert nested.rates_for(again) == {"output": 0.1}


def test_output_layer_rate_reaches_the_callback_and_the_masks(tiny_data):
    (x, y), _, _ = tiny_data
    imp = kl.IMP(rounds=1, prune_rate=0.5, output_layer_rate=0.1)
    model = imp.wrap(_two_headed())
    model.compile("sgd", [keras.losses.MeanSquaredError()] * 2)
    epochs = imp.epochs(per_round=1)
    xs = x[:, :8]
    model.fit(xs, [np.zeros((len(xs), 2)), np.zeros((len(xs), 3))], epochs=epochs,
              batch_size=60, callbacks=imp.callbacks(verbose=0), verbose=0)
    remaining = kl.sparsity_by_layer(model)
    assert remaining["head_a/kernel"] == pytest.approx(0.9, abs=0.05)
    assert remaining["head_b/kernel"] == pytest.approx(0.9, abs=0.05)
    assert remaining["trunk/kernel"] == pytest.approx(0.5, abs=0.01)


def test_callbacks_take_the_output_layers_of_the_model_being_fit(tiny_data):
    """One IMP wraps two models before fitting the first: the callbacks resolve
    output_layer_rate and block_layers="hidden" for the model fit, not for the
    model wrapped last (they named its head and refused the fit)."""
    (x, y), _, _ = tiny_data
    imp = kl.IMP(rounds=1, prune_rate=0.5, output_layer_rate=0.1, block=(2, 1),
                 block_layers="hidden")
    first = imp.wrap(_two_headed())
    imp.wrap(_nested())
    first.compile("sgd", [keras.losses.MeanSquaredError()] * 2)
    epochs = imp.epochs(per_round=1)
    xs = x[:, :8]
    first.fit(xs, [np.zeros((len(xs), 2)), np.zeros((len(xs), 3))], epochs=epochs,
              batch_size=60, callbacks=imp.callbacks(verbose=0), verbose=0)
    assert imp.callback.layer_rates == {"head_a": 0.1, "head_b": 0.1}
    assert imp.callback.block_exempt == ["head_a", "head_b"]
    remaining = kl.sparsity_by_layer(first)
    assert remaining["head_a/kernel"] == pytest.approx(0.9, abs=0.05)
    assert remaining["trunk/kernel"] == pytest.approx(0.5, abs=0.01)


def test_config_round_trips():
    imp = kl.IMP(rounds=4, prune_rate=0.25, rewind="2ep", scope="global", layer_rates={"fc1": 0.1})
    again = kl.IMP.from_config(imp.get_config())
    assert again.get_config() == imp.get_config()


@pytest.mark.parametrize("floor", [0.0, 0.5])
def test_layer_floor_reaches_the_global_ranking(tiny_data, floor):
    """A layer of tiny weights is emptied by one global threshold unless floored."""
    (x, y), _, _ = tiny_data
    base = small_mlp(0)
    kernel, bias = base.layers[1].get_weights()
    base.layers[1].set_weights([kernel * 1e-4, bias])
    # 2 rounds at 50%: 25% of 1952 weights is fewer than the other kernels hold
    imp = kl.IMP(rounds=2, prune_rate=0.5, scope="global", layer_floor=floor)
    assert kl.IMP.from_config(imp.get_config()).layer_floor == floor
    model = imp.wrap(base)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    epochs = imp.epochs(per_round=1)
    model.fit(x, y, batch_size=60, epochs=epochs, callbacks=imp.callbacks(verbose=0), verbose=0)
    first = kl.sparsity_by_layer(model)[f"{base.layers[1].name}/kernel"]
    size = base.layers[1].get_weights()[0].size
    assert first * size >= max(1, int(floor * 0.25 * size))
    if floor == 0.0:
        assert round(first * size) == 1  # only the one-weight minimum


def test_bad_layer_floor_is_refused():
    with pytest.raises(ValueError, match="layer_floor"):
        kl.IMP(rounds=1, prune_rate=0.5, layer_floor=1.5)
