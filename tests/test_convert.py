"""Keras 3 models rebuilt as tf_keras: same outputs, weights copied, clear errors."""

import logging

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery._keras import keras
from keras_lottery.convert import ConversionError, is_keras3_model, to_tf_keras

keras3 = pytest.importorskip("keras")
if not keras3.__version__.startswith("3"):
    pytest.skip("Keras 3 is not installed", allow_module_level=True)


def _functional_k3():
    keras3.utils.set_random_seed(1)
    inputs = keras3.Input((12,), name="features")
    a = keras3.layers.Dense(8, activation="relu", name="branch_a",
                            kernel_regularizer=keras3.regularizers.L2(1e-3))(inputs)
    b = keras3.layers.Dense(8, activation="tanh", name="branch_b")(inputs)
    x = keras3.layers.Concatenate(name="join")([a, b])
    x = keras3.layers.BatchNormalization(name="bn")(x)
    x = keras3.layers.Dropout(0.3, name="drop")(x)
    head = keras3.Sequential([keras3.Input((16,)), keras3.layers.Dense(6, activation="relu")],
                             name="head")
    outputs = keras3.layers.Dense(3, name="logits")(head(x))
    model = keras3.Model(inputs, outputs, name="k3_functional")
    # non-trivial batch-norm statistics, so copying them is checked too
    bn = model.get_layer("bn")
    bn.set_weights([w + np.linspace(0.1, 0.9, w.size).astype("float32") for w in bn.get_weights()])
    return model


def test_functional_keras3_model_gives_equal_outputs(caplog):
    k3 = _functional_k3()
    assert is_keras3_model(k3)
    with caplog.at_level(logging.INFO, logger="keras_lottery"):
        model = to_tf_keras(k3)
    assert isinstance(model, keras.Model) and not is_keras3_model(model)
    assert "Converted Keras 3 model 'k3_functional'" in caplog.text
    x = np.random.default_rng(3).normal(size=(16, 12)).astype("float32")
    np.testing.assert_allclose(model(x, training=False).numpy(),
                               np.asarray(k3(x, training=False)), rtol=1e-5, atol=1e-6)
    assert [l.name for l in model.layers] == [l.name for l in k3.layers]
    reg = model.get_layer("branch_a").kernel_regularizer
    assert reg is not None and np.isclose(float(reg.l2), 1e-3)


def test_sequential_cnn_and_embedding_lstm_convert():
    keras3.utils.set_random_seed(2)
    cnn = keras3.Sequential([
        keras3.Input((10, 10, 1)),
        keras3.layers.Conv2D(4, 3, activation="relu"),
        keras3.layers.MaxPooling2D(),
        keras3.layers.Flatten(),
        keras3.layers.Dense(5),
    ])
    text = keras3.Sequential([
        keras3.Input((7,), dtype="int32"),
        keras3.layers.Embedding(20, 4),
        keras3.layers.LSTM(3),
        keras3.layers.Dense(2),
    ])
    x = np.random.default_rng(0).normal(size=(3, 10, 10, 1)).astype("float32")
    np.testing.assert_allclose(to_tf_keras(cnn)(x).numpy(), np.asarray(cnn(x)), rtol=1e-5, atol=1e-6)
    tokens = np.random.default_rng(0).integers(0, 20, size=(3, 7)).astype("int32")
    np.testing.assert_allclose(to_tf_keras(text)(tokens).numpy(), np.asarray(text(tokens)),
                               rtol=1e-5, atol=1e-6)


def test_imp_wraps_a_keras3_model_and_trains(tiny_data):
    (x, y), val, _ = tiny_data
    keras3.utils.set_random_seed(0)
    k3 = keras3.Sequential([keras3.Input((40,)), keras3.layers.Dense(16, activation="relu"),
                            keras3.layers.Dense(10)])
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = imp.wrap(k3)
    assert len(kl.pruned_layers(model)) == 2
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
    model.fit(x, y, epochs=imp.epochs(per_round=1), batch_size=60, validation_data=val,
              callbacks=imp.callbacks(verbose=0), verbose=0)
    assert [round(r.weights_remaining, 2) for r in imp.history] == [1.0, 0.5]


def test_unconvertible_layer_error_names_the_layer():
    class Doubler(keras3.layers.Layer):
        def call(self, x):
            return 2 * x

    k3 = keras3.Sequential([keras3.Input((4,)), Doubler(name="my_doubler"), keras3.layers.Dense(2)])
    with pytest.raises(ConversionError, match="my_doubler") as err:
        to_tf_keras(k3)
    assert "Doubler" in str(err.value) and "tf_keras" in str(err.value)
    # IMP.wrap surfaces the same error (a ValueError, so the CLI prints it cleanly)
    with pytest.raises(ValueError, match="my_doubler"):
        kl.IMP(rounds=1, prune_rate=0.2).wrap(k3)


def test_option_without_tf_keras_equivalent_is_named():
    k3 = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3, lora_rank=2, name="lora_dense")])
    with pytest.raises(ConversionError, match="lora_dense.*lora_rank"):
        to_tf_keras(k3)


def test_subclassed_keras3_model_is_refused():
    class Net(keras3.Model):
        def __init__(self):
            super().__init__(name="subnet")
            self.d = keras3.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ConversionError, match="subnet.*subclassed"):
        to_tf_keras(net)


def test_tf_keras_model_passes_through_and_nonmodel_is_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert to_tf_keras(model) is model
    with pytest.raises(TypeError, match="Keras 3 or tf_keras model"):
        to_tf_keras("model.keras")


def test_augmentation_stays_off_at_inference_and_adapted_state_is_copied():
    # Keras 3 records training=True in a RandomFlip node; passing it on would
    # make the tf_keras model flip at inference too.
    norm = keras3.layers.Normalization()
    norm.adapt(np.random.default_rng(0).normal(3.0, 2.0, size=(64, 6, 6, 2)).astype("float32"))
    inputs = keras3.Input((6, 6, 2))
    x = keras3.layers.RandomFlip()(norm(inputs))
    y = keras3.layers.Conv2D(3, 3, padding="same")(x)
    z = keras3.layers.Add()([y, keras3.layers.Conv2D(3, 1)(x)])
    outputs = keras3.layers.Dense(2)(keras3.layers.GlobalAveragePooling2D()(z))
    k3 = keras3.Model(inputs, outputs)
    model = to_tf_keras(k3)
    x = np.random.default_rng(1).normal(size=(5, 6, 6, 2)).astype("float32")
    for _ in range(3):  # a random flip would show up in some of these
        np.testing.assert_allclose(model(x, training=False).numpy(), np.asarray(k3(x, training=False)),
                                   rtol=1e-5, atol=1e-5)


def test_keras3_multi_head_attention_converts_and_is_pruned():
    # fails on the old code: ConversionError ... KeyError: 'query_shape'
    keras3.utils.set_random_seed(4)
    inputs = keras3.Input((6, 8))
    x = keras3.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    x = keras3.layers.GlobalAveragePooling1D()(x)
    k3 = keras3.Model(inputs, keras3.layers.Dense(3, name="head")(x))
    model = to_tf_keras(k3)
    x = np.random.default_rng(0).normal(size=(3, 6, 8)).astype("float32")
    np.testing.assert_allclose(model(x).numpy(), np.asarray(k3(x)), rtol=1e-5, atol=1e-6)
    wrapped = kl.IMP(rounds=1, prune_rate=0.5).wrap(k3)
    assert len(kl.masks.prunable_weights(wrapped)) == 5


def test_every_keras3_string_activation_is_mapped_or_named():
    # fails on the old code: "hard_silu" unknown to tf_keras; "hard_sigmoid"
    # silently meant tf_keras's clip(0.2 x + 0.5), not relu6(x + 3) / 6
    from keras.src.activations import ALL_OBJECTS_DICT

    x = np.linspace(-7.0, 7.0, 6 * 10, dtype="float32").reshape(10, 6)
    converted = 0
    for name in sorted(ALL_OBJECTS_DICT):
        k3 = keras3.Sequential([keras3.Input((6,)), keras3.layers.Dense(4, activation=name, name="dense"),
                                keras3.layers.Activation(name, name="act")])
        try:
            model = to_tf_keras(k3, check=False)
        except ConversionError as err:
            assert name in str(err) and "'dense'" in str(err)
            continue
        expected = np.asarray(k3(x))
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-5, err_msg=name)
        # the config round-trips (what wrapping and saving do)
        again = keras.Sequential.from_config(model.get_config())
        again.set_weights(model.get_weights())
        np.testing.assert_allclose(again(x).numpy(), expected, rtol=1e-5, atol=1e-5, err_msg=name)
        converted += 1
    assert converted >= len(ALL_OBJECTS_DICT) - 2  # all but threshold / sparsemax


def test_keras3_arithmetic_operations_convert():
    inputs = keras3.Input((5,))
    x = keras3.layers.Dense(4, name="d")(inputs)
    outputs = keras3.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    k3 = keras3.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32") * 4
    np.testing.assert_allclose(to_tf_keras(k3)(x).numpy(), np.asarray(k3(x)), rtol=1e-6, atol=1e-6)


def test_keras3_lambda_gets_the_not_built_in_error():
    # fails on the old code: KeyError: 'function_type'
    k3 = keras3.Sequential([keras3.Input((4,)), keras3.layers.Lambda(lambda t: 2 * t, name="twice"),
                            keras3.layers.Dense(2)])
    with pytest.raises(ConversionError, match="'twice' \\(Lambda\\).*not a built-in layer"):
        to_tf_keras(k3)


def test_keras3_convnext_layer_scale_converts():
    # fails on the old code: LayerScale (keras.src.applications.convnext) "is not
    # a built-in Keras layer", so Keras 3 ConvNeXt models were refused
    from keras.src.applications.convnext import LayerScale

    keras3.utils.set_random_seed(5)
    inputs = keras3.Input((4, 4, 6))
    x = keras3.layers.Dense(6, name="pw")(inputs)
    x = LayerScale(0.5, 6, name="scale")(x)
    k3 = keras3.Model(inputs, keras3.layers.Add()([inputs, x]))
    k3.get_layer("scale").set_weights([np.linspace(-1.0, 1.0, 6).astype("float32")])
    model = to_tf_keras(k3)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 6)).astype("float32")
    np.testing.assert_allclose(model(x).numpy(), np.asarray(k3(x)), rtol=1e-6, atol=1e-6)
    assert len(kl.pruned_layers(kl.IMP(rounds=1, prune_rate=0.5).wrap(k3))) == 1


def test_keras3_leaky_relu_negative_slope_becomes_tf_keras_alpha():
    # fails on the old code: "option negative_slope=0.2 has no tf_keras
    # equivalent in LeakyReLU" (Keras 3 renamed tf_keras's alpha)
    k3 = keras3.Sequential([keras3.Input((5,)), keras3.layers.Dense(4, name="d"),
                            keras3.layers.LeakyReLU(negative_slope=0.2, name="leaky")])
    model = to_tf_keras(k3)
    assert model.get_layer("leaky").get_config()["alpha"] == pytest.approx(0.2)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32") * 3
    np.testing.assert_allclose(model(x).numpy(), np.asarray(k3(x)), rtol=1e-6, atol=1e-6)


def test_keras3_activation_of_your_own_is_named_as_user_code():
    # the lambda failed deep in tf_keras's from_config ("could not rebuild it
    # from its config (TypeError: Error when deserializing class 'Dense' ...")
    def doubled(t):
        return 2 * t

    for activation, shown in ((lambda t: 2 * t, "a lambda"), (doubled, "'doubled'")):
        k3 = keras3.Sequential([keras3.Input((5,)), keras3.layers.Dense(4, activation=activation,
                                                                        name="mine")])
        with pytest.raises(ConversionError) as err:
            to_tf_keras(k3)
        message = str(err.value)
        assert "Layer 'mine' (Dense)" in message and shown in message
        assert "your own Python function" in message and "not a built-in activation" in message


def test_keras3_wrapper_layers_convert_their_inner_layer_like_any_layer():
    # fails on the old code: TimeDistributed(Dense) died in tf_keras's
    # from_config ("Keyword argument not understood: 'quantization_config'"),
    # its inner config was passed through without the per-layer conversion
    keras3.utils.set_random_seed(6)
    inputs = keras3.Input((5, 3))
    x = keras3.layers.TimeDistributed(keras3.layers.Dense(4, activation="hard_silu"), name="td")(inputs)
    x = keras3.layers.Bidirectional(keras3.layers.LSTM(3, activation="hard_silu",
                                                      return_sequences=True), name="bi")(x)
    x = keras3.layers.TimeDistributed(keras3.layers.LeakyReLU(negative_slope=0.1), name="td_leaky")(x)
    k3 = keras3.Model(inputs, keras3.layers.Dense(2, name="head")(keras3.layers.Flatten()(x)))
    model = to_tf_keras(k3)
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32") * 3
    np.testing.assert_allclose(model(x).numpy(), np.asarray(k3(x)), rtol=1e-5, atol=1e-6)
    assert kl.pruned_layers(kl.IMP(rounds=1, prune_rate=0.5).wrap(k3))  # head (at least)
    # user code inside a wrapper gets the same refusal as at top level (was a KeyError)
    k3 = keras3.Sequential([keras3.Input((5, 3)), keras3.layers.TimeDistributed(
        keras3.layers.Lambda(lambda t: 2 * t, name="twice"), name="td")])
    with pytest.raises(ConversionError, match=r"'twice' \(Lambda\) inside Layer 'td'.*not a built-in"):
        to_tf_keras(k3)


def test_keras3_model_of_dict_inputs_converts():
    # fails on the old code: the output check fed the inputs as a list, which a
    # Keras 3 model of dict inputs refuses ("The structure of `inputs` doesn't
    # match the expected structure")
    keras3.utils.set_random_seed(7)
    a = keras3.Input((4,), name="zz_in")
    b = keras3.Input((3,), name="aa_in", dtype="int32")
    h = keras3.layers.Concatenate()([keras3.layers.Dense(5)(a),
                                     keras3.layers.Flatten()(keras3.layers.Embedding(10, 2)(b))])
    k3 = keras3.Model({"zz_in": a, "aa_in": b}, keras3.layers.Dense(2, name="head")(h))
    model = to_tf_keras(k3)
    rng = np.random.default_rng(1)
    x = {"zz_in": rng.normal(size=(3, 4)).astype("float32"),
         "aa_in": rng.integers(0, 10, (3, 3)).astype("int32")}
    np.testing.assert_allclose(model(x).numpy(), np.asarray(k3(x)), rtol=1e-6, atol=1e-6)
