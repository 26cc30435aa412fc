"""TFLite export of models beyond one float input and one output: token ids, several
inputs and outputs, recurrent layers, and representative data that does not fit.

Every comparison is against the Keras model's own predictions on the same inputs.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_lottery as kl
from keras_lottery import export
from keras_lottery._keras import keras

VOCAB, STEPS = 50, 12


def tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, STEPS)).astype("int32")


def token_model(seed=0):
    """Token ids (int32) -> Embedding -> mean -> Dense: an integer-input classifier."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((STEPS,), dtype="int32", name="tokens")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 8, name="emb")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="bag")


def two_io_model(seed=0):
    """Inputs zeta_in (float) and alpha_in (int ids); outputs z_head (5) and a_head (2).

    Names sort opposite to the Keras order, on both sides, so any order mix-up shows.
    """
    keras.utils.set_random_seed(seed)
    a = keras.Input((4,), name="zeta_in")
    b = keras.Input((3,), name="alpha_in", dtype="int32")
    e = keras.layers.Flatten()(keras.layers.Embedding(10, 2)(b))
    h = keras.layers.Dense(6, activation="relu", name="shared")(keras.layers.Concatenate()([a, e]))
    return keras.Model([a, b], [keras.layers.Dense(5, name="z_head")(h),
                                keras.layers.Dense(2, name="a_head")(h)], name="two_io")


def two_io_inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 10, size=(n, 3)).astype("int32")]


def lstm_model(steps=STEPS, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((steps,), dtype="int32", name="tokens")
    h = keras.layers.LSTM(16, name="lstm")(keras.layers.Embedding(VOCAB, 8, name="emb")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="text_lstm")


# -- integer inputs ------------------------------------------------------------------


def test_int_input_is_fed_as_int32_and_matches_keras():
    model = token_model()
    x = tokens(40)
    lite = export.TFLiteModel(export.tflite(model, allow_dense=True))
    assert [d["dtype"] for d in lite._inputs] == [np.int32]
    np.testing.assert_allclose(lite.predict(x, batch_size=16), model.predict(x, verbose=0),
                               rtol=0, atol=1e-5)
    # ids stored as floats are fed as the integers they are; fractions are refused
    np.testing.assert_allclose(lite(x[:4].astype("float32")), model(x[:4]).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="takes integers"):
        lite(x[:4] + 0.5)


def test_int8_calibrates_on_token_ids():
    model = token_model()
    x = tokens(64)
    content = export.tflite(model, int8=True, representative_data=x, allow_dense=True)
    logits = export.TFLiteModel(content).predict(x)
    keras_logits = model.predict(x, verbose=0)
    assert np.max(np.abs(logits - keras_logits)) < 0.1 * np.max(np.abs(keras_logits)) + 1e-3


def test_report_on_int_input_model(tmp_path):
    model = token_model()
    x, y = tokens(32, seed=1), np.arange(32) % 3
    result = export.report(model, (x, y), formats=("tflite", "tflite_int8"), representative_data=x,
                           repeats=2, latency_batches=(1, 8), allow_dense=True,
                           out_dir=tmp_path / "rep")
    lite = {r["variant"]: r for r in result["tflite"]}
    assert lite["tflite"]["max_abs_logit_diff"] < 1e-5
    assert lite["tflite"]["accuracy"] == pytest.approx(result["keras_accuracy"])
    assert set(lite["tflite_int8"]["latency_ms"]) == {"1", "8"}


def test_report_counts_every_pruned_weight_not_only_kernels(tmp_path):
    """Embedding tables, MultiHeadAttention's four kernels and an LSTM's two are
    pruned like Dense kernels; the export report counts them as IMP does."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((STEPS,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCAB, 8, name="emb")(inputs)
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)
    h = keras.layers.LSTM(4, name="lstm")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    wrapped = kl.IMP(rounds=1, prune_rate=0.5).wrap(model)
    entries = kl.masks.prunable_weights(wrapped)  # one 50% round, written as IMP does
    kl.masks.write_masks(wrapped, kl.compute_masks(
        {w.name: w.weight.numpy() for w in entries},
        {w.name: np.ones(w.weight.shape) for w in entries}, 1, 0.5))
    x, y = tokens(8, seed=2), np.arange(8) % 3
    result = export.report(wrapped, (x, y), formats=("keras",), out_dir=tmp_path / "rep")
    masks = kl.read_masks(wrapped)
    assert [r["layer"] for r in result["layers"]] == ["emb", "mha", "lstm", "logits"]
    assert result["prunable_params"] == sum(m.size for m in masks.values())
    assert result["nonzero_params"] == sum(int(m.sum()) for m in masks.values())
    assert result["weights_remaining"] == pytest.approx(kl.overall_weights_remaining(wrapped))
    assert result["all_weights_remaining"] == pytest.approx(kl.masks.all_weights_remaining(wrapped))
    text = export.format_report(result)
    assert f"{result['all_weights_remaining']:.1%} of all" in text


def test_plain_ticket_with_a_large_dense_table_still_counts_as_pruned():
    """A stripped ticket whose big Embedding was kept dense (layer_filter) and whose
    head is pruned: the dense table must not make it look never pruned."""
    inputs = keras.Input((STEPS,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(2000, 16, name="emb")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    kernel = model.get_layer("head").kernel
    kernel.assign(np.where(np.arange(48).reshape(16, 3) % 2 == 0, kernel.numpy(), 0.0))
    assert export.formats.is_pruned(model)  # 24 of 48 head weights zero, 0 of 32,000 in emb
    model.get_layer("head").kernel.assign(np.ones((16, 3)))
    assert not export.formats.is_pruned(model)


def test_mixed_precision_model_exports_to_tflite_in_float32():
    """A model trained under mixed_float16 computes in float16, which TFLite's builtin
    ops lack; it is converted with float32 compute (its variables are float32)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(5)
        inputs = keras.Input((8,), name="x")
        h = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32", name="logits")(h))
        wrapped = kl.IMP(rounds=1, prune_rate=0.5).wrap(model)
        entries = kl.masks.prunable_weights(wrapped)
        kl.masks.write_masks(wrapped, kl.compute_masks(
            {w.name: w.weight.numpy() for w in entries},
            {w.name: np.ones(w.weight.shape) for w in entries}, 1, 0.5))
        x = np.random.default_rng(5).normal(size=(16, 8)).astype("float32")
        keras_logits = export.strip(wrapped).predict(x, verbose=0)
        lite = export.TFLiteModel(export.tflite(wrapped, sparse=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # float16 compute in Keras against float32 in TFLite
    np.testing.assert_allclose(lite.predict(x), keras_logits, rtol=0, atol=5e-3 * np.abs(keras_logits).max())


# -- several inputs and outputs ---------------------------------------------------------


def test_two_inputs_two_outputs_in_keras_order():
    model = two_io_model()
    assert model.output_names == ["z_head", "a_head"]  # TFLite would sort: a_head first
    x = two_io_inputs(20)
    content = export.tflite(model, allow_dense=True)
    lite = export.TFLiteModel(content)
    assert lite.input_names == ["zeta_in", "alpha_in"]
    assert lite.output_names == ["z_head", "a_head"]
    keras_out = model.predict(x, verbose=0)
    for given in (x, {"alpha_in": x[1], "zeta_in": x[0]}):
        out = lite.predict(given, batch_size=8)
        assert isinstance(out, list) and [o.shape for o in out] == [(20, 5), (20, 2)]
        for got, want in zip(out, keras_out):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="2 inputs"):
        lite.predict(x[0])


def test_file_without_our_metadata_still_names_its_outputs():
    """A file converted elsewhere: outputs come in TFLite's order, each under its right name."""
    model = two_io_model()
    x = two_io_inputs(6)
    lite = export.TFLiteModel(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    keras_out = dict(zip(model.output_names, model.predict(x, verbose=0)))
    out = lite(dict(zip(lite.input_names, [x[0] if n == "zeta_in" else x[1]
                                           for n in lite.input_names])))
    assert sorted(lite.output_names) == ["a_head", "z_head"]
    for name, got in zip(lite.output_names, out):
        np.testing.assert_allclose(got, keras_out[name], rtol=0, atol=1e-5)


def test_int8_two_input_model_calibrates_on_a_list():
    model = two_io_model()
    x = two_io_inputs(32)
    content = export.tflite(model, int8=True, representative_data=(x, np.zeros(32)),
                            allow_dense=True)
    out = export.TFLiteModel(content).predict(x)
    for got, want in zip(out, model.predict(x, verbose=0)):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) < 0.15 * np.max(np.abs(want)) + 1e-2


# -- recurrent models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lstm_ticket():
    """An Embedding + LSTM classifier after one IMP round at 50% (LSTM kernels pruned)."""
    x, y = tokens(64, seed=2), np.arange(64) % 3
    imp = kl.IMP(rounds=1, prune_rate=0.5, rewind="0it")
    model = imp.wrap(lstm_model())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=imp.epochs(per_round=1), verbose=0,
              callbacks=imp.callbacks(verbose=0))
    return model


def test_lstm_conversion_error_names_layer_and_keeps_converter_hint(lstm_ticket):
    with pytest.raises(export.TFLiteConversionError) as info:
        export.tflite(lstm_ticket)
    message = str(info.value)
    assert "lstm (LSTM)" in message and "TensorListReserve" in message
    assert "unroll=True" in message and "batch_size=N" in message  # our ways out
    assert "Select TF ops" in message  # the converter's own hint, kept
    assert os.path.basename(__file__) not in message  # no call-site echo
    assert "note: called from" not in message


def test_lstm_ticket_exports_unrolled(lstm_ticket, tmp_path):
    plain = export.strip(lstm_ticket)
    x = tokens(40, seed=3)
    keras_logits = plain.predict(x, verbose=0)
    content = export.tflite(lstm_ticket, tmp_path / "t.tflite", unroll=True)
    lite = export.TFLiteModel(content)
    assert lite.fixed_batch is None and lite.interpreter_name.startswith("ai_edge_litert")
    np.testing.assert_allclose(lite.predict(x, batch_size=16), keras_logits, rtol=0, atol=1e-5)
    assert kl.overall_weights_remaining(lstm_ticket) < 0.6


def test_report_on_lstm_ticket_with_unroll_sparse(lstm_ticket):
    x, y = tokens(24, seed=8), np.arange(24) % 3
    result = export.report(lstm_ticket, (x, y), formats=("tflite_sparse",), unroll=True,
                           repeats=1, latency_batches=(1,))
    (row,) = result["tflite"]
    assert row["max_abs_logit_diff"] < 1e-5 and row["dense_max_abs_logit_diff"] < 1e-5
    assert result["weights_remaining"] < 0.6


def test_unroll_needs_fixed_sequence_length():
    model = lstm_model(steps=None)
    with pytest.raises(ValueError, match=r"fixed number of time steps.*lstm"):
        export.tflite(model, unroll=True, allow_dense=True)


def test_select_tf_ops_converts_but_cannot_run_here():
    content = export.tflite(lstm_model(), select_tf_ops=True, allow_dense=True)
    with pytest.raises(RuntimeError, match="Flex.*unroll=True"):
        export.TFLiteModel(content)


def test_lstm_ticket_exports_with_a_fixed_batch_size(lstm_ticket):
    """Fused LSTM op: state reset before every invoke, the last batch padded."""
    plain = export.strip(lstm_ticket)
    x = tokens(10, seed=4)
    keras_logits = plain.predict(x, verbose=0)
    lite = export.TFLiteModel(export.tflite(lstm_ticket, batch_size=4))
    assert lite.fixed_batch == 4
    np.testing.assert_allclose(lite.predict(x), keras_logits, rtol=0, atol=1e-5)  # 4 + 4 + 2
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        export.tflite(lstm_ticket, batch_size=0)


def test_int8_calibration_feeds_inputs_by_name_when_tflite_reorders_them():
    """The converter's graph can order inputs unlike Keras (here a_numbers first);
    calibration batches are fed by input name, not by position."""
    keras.utils.set_random_seed(3)
    ids = keras.Input((5,), dtype="int32", name="z_tokens")
    num = keras.Input((4,), name="a_numbers")
    h = keras.layers.Concatenate()([
        keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 3)(ids)),
        keras.layers.Dense(6, name="num_dense")(num)])
    model = keras.Model([ids, num], keras.layers.Dense(3, name="logits")(h))
    float_file = tf.lite.Interpreter(
        model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    graph_order = [d["name"] for d in float_file.get_input_details()]
    assert "a_numbers" in graph_order[0]  # the case is real: not the Keras order
    rng = np.random.default_rng(3)
    x = [rng.integers(0, VOCAB, (32, 5)).astype("int32"), rng.normal(size=(32, 4)).astype("float32")]
    for batch_size in (None, 4):
        lite = export.TFLiteModel(export.tflite(model, int8=True, representative_data=x,
                                                batch_size=batch_size, allow_dense=True))
        logits, keras_logits = lite.predict(x), model.predict(x, verbose=0)
        assert np.max(np.abs(logits - keras_logits)) < 0.1 * np.max(np.abs(keras_logits)) + 1e-3


def test_int8_at_a_fixed_batch_size_calibrates_in_batches_of_it():
    model = token_model()
    x = tokens(10, seed=5)  # 10 examples: calibrated as 3 batches of 4, cycled
    lite = export.TFLiteModel(export.tflite(model, batch_size=4, int8=True, representative_data=x,
                                            allow_dense=True))
    assert lite.fixed_batch == 4
    logits, keras_logits = lite.predict(x), model.predict(x, verbose=0)
    assert logits.shape == (10, 3)
    assert np.max(np.abs(logits - keras_logits)) < 0.1 * np.max(np.abs(keras_logits)) + 1e-3


# -- representative data that does not fit ------------------------------------------------


def test_representative_data_of_wrong_shape_names_both_shapes():
    model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"representative_data.*shape \(5,\).*expects \(40,\)"):
        export.tflite(model, int8=True, representative_data=np.zeros((10, 5), "float32"),
                      allow_dense=True)
    with pytest.raises(ValueError, match=r"shape \(40, 1\).*expects \(40,\)"):
        export.tflite(model, int8=True, representative_data=tf.data.Dataset.from_tensor_slices(
            np.zeros((10, 40, 1), "float32")).batch(4), allow_dense=True)
    with pytest.raises(ValueError, match="holds 3 arrays but the model has 2 inputs"):
        export.tflite(two_io_model(), int8=True, allow_dense=True,
                      representative_data=[np.zeros((4, 4))] * 3)
    # NaN in the calibration inputs: on the old code the int8 file was written,
    # its quantization ranges computed from NaN
    bad = np.ones((10, 40), "float32")
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"representative_data holds 1 non-finite value.*"
                       r"index \(3, 7\).*int8 calibration"):
        export.tflite(model, int8=True, representative_data=bad, allow_dense=True)


def test_one_input_two_outputs_returns_both_heads_in_keras_order():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, activation="relu")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(5, name="z_head")(h),
                                 keras.layers.Dense(2, name="a_head")(h)])
    x = np.random.default_rng(5).normal(size=(9, 4)).astype("float32")
    out = export.TFLiteModel(export.tflite(model, allow_dense=True)).predict(x)
    assert isinstance(out, list) and len(out) == 2
    for got, want in zip(out, model.predict(x, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_bidirectional_lstm_and_gru_export_unrolled():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8,), dtype="int32")
    h = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))(
        keras.layers.Embedding(20, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GRU(4)(h)))
    x = np.random.default_rng(6).integers(0, 20, size=(9, 8)).astype("int32")
    lite = export.TFLiteModel(export.tflite(model, unroll=True, allow_dense=True))
    np.testing.assert_allclose(lite.predict([x]), model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_quantized_io_file_takes_and_returns_floats():
    """A file converted elsewhere with int8 input and output tensors."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(7).normal(size=(64, 6)).astype("float32")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(64))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    lite = export.TFLiteModel(converter.convert())
    out = lite.predict(x)
    want = model.predict(x, verbose=0)
    assert out.dtype == np.float32
    assert np.max(np.abs(out - want)) < 0.1 * np.max(np.abs(want))
