"""TFLite: conversion (float, sparse, int8, recurrent layers) and `TFLiteModel`.

`tflite` converts the stripped ticket; the file carries a small metadata
entry (`keras_lottery_io`) with the Keras model's input and output names in
Keras order, which `TFLiteModel` uses to feed inputs and return outputs in
that order (TFLite itself sorts a signature's outputs by name).
"""

import json
import logging
import os
import re
import statistics
import time

import numpy as np
import tensorflow as tf

from keras_lottery._keras import keras
from keras_lottery.export import formats

logger = logging.getLogger("keras_lottery")

# name -> (sparse, int8), in report order
TFLITE_VARIANTS = {
    "tflite": (False, False),
    "tflite_sparse": (True, False),
    "tflite_int8": (False, True),
    "tflite_int8_sparse": (True, True),
}

NUM_CALIBRATION = 256

IO_METADATA = "keras_lottery_io"

RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D",
                    "ConvLSTM3D")


class TFLiteConversionError(ValueError):
    """The TFLite converter refused the model (e.g. an op with no TFLite kernel)."""


# -- model inputs and representative data --------------------------------------------


def _input_specs(plain):
    """(name, per-example shape with None for free dims, numpy dtype) per model input."""
    specs = []
    for name, t in zip(plain.input_names, plain.inputs):
        specs.append((name, tuple(t.shape[1:]), t.dtype.as_numpy_dtype))
    return specs


def _split_inputs(data, specs, what):
    """`data` as a list with one array-like per model input, in Keras order.

    Accepts an array (one input), a list/tuple with one array per input, a
    dict keyed by input name, or an `(x, y)` / `(x, y, sample_weight)` pair
    whose x is any of those.
    """
    names = [s[0] for s in specs]
    if isinstance(data, dict):
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"{what} is a dict without the model input(s) {missing}; "
                             f"its keys are {sorted(data)}, the model's inputs {names}.")
        return [data[n] for n in names]
    if isinstance(data, (tuple, list)):
        if len(specs) == 1 and len(data) == 1 and isinstance(data[0], np.ndarray):
            return [data[0]]  # [x]
        if len(data) in (2, 3) and isinstance(data[0], (tuple, list, dict)):
            return _split_inputs(data[0], specs, what)  # ((x1, x2), y)
        if len(specs) == 1:
            if len(data) in (2, 3) and np.ndim(data[0]) > 1:
                return [data[0]]  # an (x, y) pair
            return [data]
        if len(data) == len(specs):
            return list(data)
        raise ValueError(f"{what} holds {len(data)} arrays but the model has "
                         f"{len(specs)} inputs {names}: pass one array per input, in "
                         "that order (or a dict keyed by input name).")
    if len(specs) > 1:
        raise ValueError(f"The model has {len(specs)} inputs {names}, so {what} must "
                         "be a list with one array per input or a dict keyed by input name.")
    return [data]


def _check_shapes(arrays, specs, what):
    """Refuses arrays whose per-example shape does not fit the model's inputs."""
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"{what}: the inputs hold different numbers of examples "
                         f"({[len(a) for a in arrays]}).")
    for arr, (name, shape, _) in zip(arrays, specs):
        given = tuple(arr.shape[1:])
        fits = len(given) == len(shape) and all(e is None or e == g for e, g in zip(shape, given))
        if not fits:
            expected = "(" + ", ".join("any" if e is None else str(e) for e in shape) + \
                (",)" if len(shape) == 1 else ")")
            raise ValueError(
                f"{what} does not fit the model's input {name!r}: its examples have "
                f"shape {given}, the model expects {expected} per example (batch "
                f"dimension left out; the whole array is {tuple(arr.shape)}). Pass "
                "inputs shaped like the training data, e.g. x_train[:256].")


def _as_arrays(arrays, specs, what):
    out = []
    for arr, (name, _, dtype) in zip(arrays, specs):
        arr = np.asarray(arr)
        if np.issubdtype(dtype, np.integer) and np.issubdtype(arr.dtype, np.floating):
            if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                raise ValueError(f"{what}: the model's input {name!r} takes integers "
                                 f"({np.dtype(dtype).name}, e.g. token ids) but got "
                                 "non-integral floats.")
        out.append(arr.astype(dtype, copy=False))
    return out


def model_inputs(data, plain, what="the input"):
    """`data` as a list of arrays, one per input of `plain`, each in the input's dtype.

    Raises:
      ValueError: wrong number of inputs, or a per-example shape that does
        not fit (naming the expected and the given shape).
    """
    specs = _input_specs(plain)
    arrays = [np.asarray(a) for a in _split_inputs(data, specs, what)]
    for arr, (name, _, _) in zip(arrays, specs):
        if arr.ndim < 1:
            raise ValueError(f"{what} for input {name!r} is a scalar; pass a batch (n, ...).")
    _check_shapes(arrays, specs, what)
    return _as_arrays(arrays, specs, what)


def _is_batched(dataset):
    spec = tf.nest.flatten(dataset.element_spec)[0]
    return spec.shape.rank is not None and spec.shape.rank > 0 and spec.shape[0] is None


def _dataset_examples(dataset, specs, limit):
    if _is_batched(dataset):
        dataset = dataset.unbatch()
    columns = None
    for item in dataset.take(limit):
        item = tf.nest.map_structure(lambda t: t.numpy(), item)
        if isinstance(item, tuple) and len(specs) == 1:
            x = [item[0]]
        elif isinstance(item, tuple) and isinstance(item[0], (tuple, list, dict)):
            x = _split_inputs(item[0], specs, "representative_data")
        else:
            x = _split_inputs(item, specs, "representative_data")
        if columns is None:
            columns = [[] for _ in x]
        for column, value in zip(columns, x):
            column.append(np.asarray(value))
    if columns is None:
        return [np.zeros((0,) + tuple(0 if d is None else d for d in s[1])) for s in specs]
    return [np.stack(c) for c in columns]


def calibration_batches(representative_data, plain, limit=NUM_CALIBRATION, batch_size=1):
    """A re-iterable generator factory of calibration batches, one array per input.

    Args:
      representative_data: an array `(n, ...)`, an `(x, y)` pair, a list or
        dict of arrays for several inputs, or a `tf.data.Dataset` (batched
        or not) of any of these.
      plain: the model to calibrate; its inputs set the expected shapes and
        dtypes (token ids stay integers).
      limit: most examples used.
      batch_size: examples per batch (a model converted for a fixed batch
        size is calibrated in batches of that size; the examples are cycled
        to fill the last one).

    Raises:
      ValueError: no examples, examples whose shape does not fit the model
        (naming the expected and the given shape), or NaN / inf in the
        examples used.
    """
    specs = _input_specs(plain)
    what = "representative_data"
    if isinstance(representative_data, tf.data.Dataset):
        arrays = _dataset_examples(representative_data, specs, limit)
    else:
        arrays = [np.asarray(a) for a in _split_inputs(representative_data, specs, what)]
    if any(a.ndim < 1 for a in arrays) or not all(len(a) for a in arrays):
        raise ValueError(
            "representative_data must hold at least one example: an array of "
            f"shape (n, ...) or a tf.data.Dataset, got shape(s) {[a.shape for a in arrays]}.")
    _check_shapes(arrays, specs, what)
    arrays = [a[:limit] for a in _as_arrays(arrays, specs, what)]
    from keras_lottery.data import check_finite

    check_finite({what: arrays[0] if len(arrays) == 1 else arrays},
                 effect="int8 calibration on it would give meaningless quantization ranges")
    n = len(arrays[0])
    if batch_size > 1:
        total = -(-n // batch_size) * batch_size
        arrays = [np.resize(a, (total,) + a.shape[1:]) for a in arrays]
        n = total
    return lambda: ([a[i:i + batch_size] for a in arrays] for i in range(0, n, batch_size))


# -- recurrent layers ----------------------------------------------------------------


def _iter_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _iter_layers(layer)
        inner = getattr(layer, "layer", None) or getattr(layer, "forward_layer", None)
        if inner is not None and not isinstance(layer, keras.Model):
            yield inner


def recurrent_layers(plain):
    """The recurrent layers (LSTM, GRU, SimpleRNN, RNN, Bidirectional's halves) of a model."""
    return [l for l in _iter_layers(plain) if isinstance(l, keras.layers.RNN)]


def _set_unroll(config):
    """Sets `unroll: True` in every (nested) layer config that has the key."""
    if isinstance(config, dict):
        if "unroll" in config:
            config["unroll"] = True
        for value in config.values():
            _set_unroll(value)
    elif isinstance(config, list):
        for value in config:
            _set_unroll(value)


def unrolled(plain):
    """A copy of `plain` whose recurrent layers are unrolled (same weights).

    An unrolled LSTM / GRU / SimpleRNN is traced as one step per time step,
    so the TFLite converter needs no TensorList ops and the batch size stays
    free. Needs a fixed number of time steps.

    Raises:
      ValueError: a recurrent layer whose time dimension is not fixed.
    """
    rnns = recurrent_layers(plain)
    if not rnns:
        return plain
    for layer in rnns:
        try:
            shape = layer.input_shape
        except AttributeError:  # a Bidirectional's inner layer is never called itself
            continue
        shape = shape[0] if isinstance(shape, list) else shape
        if len(shape) < 2 or shape[1] is None:
            raise ValueError(
                f"unroll=True needs a fixed number of time steps, but layer {layer.name!r} "
                f"({type(layer).__name__}) gets input shape {shape}. Give the model's Input "
                "a fixed sequence length (pad the sequences), or use select_tf_ops=True.")

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        config = layer.get_config()
        _set_unroll(config)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(plain, clone_function=clone)
    copy.set_weights(plain.get_weights())
    return copy


def float32_compute(plain):
    """`plain`, or a copy computing in float32 if any layer computes in float16 / bfloat16.

    A model built under a mixed precision policy keeps its variables in float32
    but computes in 16 bits; TFLite's builtin ops have no float16 MatMul,
    BiasAdd, ... (the converter refused every layer). The copy has the same
    layers and weights with a float32 policy each.
    """
    def mixed(layer):
        return getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")

    if not any(mixed(l) for l in _iter_layers(plain)):
        return plain

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(plain, clone_function=clone)
    copy.set_weights(plain.get_weights())
    return copy


# -- conversion errors -----------------------------------------------------------------


def layers_using_ops(plain, op_types):
    """The layers of `plain` whose traced graph holds any of `op_types`."""
    found = []
    for layer in _iter_layers(plain):
        if isinstance(layer, keras.layers.InputLayer) or not op_types:
            continue
        try:
            specs = tf.nest.map_structure(
                lambda t: tf.TensorSpec(t.shape, t.dtype), layer.input)
            graph = tf.function(layer).get_concrete_function(specs).graph
        except Exception:  # a layer we cannot trace alone: skip it
            continue
        ops = {op.type for op in graph.get_operations()}
        for fn in getattr(graph, "_functions", {}).values():  # nested functions
            ops.update(node.op for node in fn.definition.node_def)
        if ops & set(op_types) and layer not in found:
            found.append(layer)
    # a wrapper's inner layer and the wrapper both trace the op: keep the outer one
    return [l for l in found if not any(getattr(o, "layer", None) is l or
                                        getattr(o, "forward_layer", None) is l for o in found)]


_LOCATION = re.compile(r"^(?:loc\(.*?\)|\S+:\d+:\d+|<unknown>:\d+):\s*")


def converter_messages(text):
    """The converter's own `error:` lines, without source locations or call-site echoes."""
    messages = []
    for line in text.splitlines():
        line = line.strip()
        match = re.search(r"\berror: (.*)$", line)
        if not match:
            continue
        message = match.group(1).replace("\\n", " ").strip()
        message = re.sub(r"\s+", " ", message)
        if message and message not in messages:
            messages.append(message)
    return messages


def conversion_error(err, plain, unroll=False, select_tf_ops=False, batch_size=None):
    """A TFLiteConversionError naming the op(s), the layer(s) and the way out."""
    text = str(err)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op", text)))
    ops += [o for o in re.findall(r"Custom ops: ([\w, ]+)", text)[:1] if o not in ops]
    layers = layers_using_ops(plain, ops)
    where = ", ".join(f"{l.name} ({type(l).__name__})" for l in layers) or "unknown layer"
    messages = converter_messages(text)
    tensor_list = any(op.startswith("TensorList") for op in ops)
    if tensor_list or (recurrent_layers(plain) and "tensor list" in text.lower()):
        rnn = layers or recurrent_layers(plain)
        where = ", ".join(f"{l.name} ({type(l).__name__})" for l in rnn) or where
        fixes = []
        if not unroll:
            fixes.append("pass unroll=True (CLI: --unroll) to unroll the recurrent layers "
                         "over their fixed number of time steps (builtin ops only, any "
                         "batch size, runs in ai-edge-litert)")
        if batch_size is None:
            fixes.append("or batch_size=N (CLI: --batch-size N) for a fixed batch size, "
                         "which makes the TensorList shapes static (TFLite's fused LSTM "
                         "op; the file takes batches of N only)")
        if not select_tf_ops:
            fixes.append("or select_tf_ops=True (CLI: --select-tf-ops), which keeps the "
                         "TensorFlow ops but needs an interpreter with the Flex delegate")
        detail = (f"the recurrent layer(s) {where} use TensorList ops "
                  f"({', '.join(o for o in ops if o.startswith('TensorList')) or 'TensorList'}) "
                  "that TFLite's builtin ops cannot express with a free batch size"
                  + (": " + "; ".join(fixes) if fixes else "") + ".")
    elif ops:
        detail = (f"op(s) {', '.join(ops)} in layer(s) {where} have no TFLite builtin "
                  "kernel. Replace those layers with ones built from standard ops "
                  "(Dense, Conv, pooling, activations), or export as SavedModel / "
                  ".keras instead.")
    else:
        first = messages[0] if messages else next(
            (line for line in text.splitlines() if "error" in line.lower()), text[:300])
        detail = f"the TFLite converter failed: {first.strip()}"
    if messages:
        detail += " Converter: " + " | ".join(messages)
    return TFLiteConversionError(f"Cannot convert model {plain.name!r} to TFLite: {detail}")


# -- metadata: Keras input and output order ----------------------------------------------


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema_fb
    return schema_fb


def with_io_metadata(content, plain):
    """`content` with a metadata entry holding the Keras input and output names in order."""
    import flatbuffers

    schema_fb = _schema()
    payload = json.dumps({"inputs": list(plain.input_names),
                          "outputs": list(plain.output_names)}).encode()
    model = schema_fb.ModelT.InitFromObj(schema_fb.Model.GetRootAsModel(content, 0))
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(payload, np.uint8)
    model.buffers.append(buffer)
    entry = schema_fb.MetadataT()
    entry.name = IO_METADATA
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != IO_METADATA.encode()]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(max(1024, len(content) + 1024))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_io_metadata(content):
    """The {"inputs": [...], "outputs": [...]} names stored by `tflite`, or None."""
    try:
        model = _schema().Model.GetRootAsModel(content, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == IO_METADATA.encode():
                data = model.Buffers(entry.Buffer()).DataAsNumpy()
                return json.loads(bytes(data).decode())
    except Exception:  # a file we did not write, or an older schema: no names
        return None
    return None


# -- conversion ----------------------------------------------------------------------------


def tflite(model, path=None, sparse=False, int8=False, representative_data=None,
           allow_dense=False, per_channel=None, unroll=False, select_tf_ops=False,
           batch_size=None, allow_ragged_blocks=False):
    """Converts the stripped model to TFLite (float, sparse, int8, int8 + sparse).

    Args:
      model: the wrapped (or stripped) ticket; see `strip`.
      path: optional output `.tflite` file (written atomically).
      sparse: store sparse weights in TFLite's sparse encoding
        (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).
      int8: full integer quantization: int8 weights and activations (ops
        restricted to `TFLITE_BUILTINS_INT8`), float input and output
        (integer inputs such as token ids stay integers).
      representative_data: calibration inputs for int8: an array `(n, ...)`,
        an `(x, y)` pair, a list / dict of arrays for a multi-input model, or
        a `tf.data.Dataset`; up to 256 examples are used. Their shape is
        checked against the model's inputs.
      allow_dense: see `strip`.
      per_channel: int8 weight scales per output channel (True) or one per
        tensor (False). Default: per-tensor with `sparse`, per-channel
        otherwise. Per-channel parameters cost about 36 bytes per output
        channel, 15% of a sparse int8 LeNet-300-100 at 10% weights; on
        that ticket per-tensor scales lost no test accuracy (docs/export.md).
      unroll: convert recurrent layers (LSTM, GRU, SimpleRNN) unrolled over
        their time steps: builtin ops only, batch size free. Needed for
        recurrent models, whose default conversion fails on TensorList ops;
        needs a fixed sequence length.
      select_tf_ops: allow TensorFlow ops the builtins lack
        (`SELECT_TF_OPS`, TensorList ops kept). The file then needs an
        interpreter linked with the Flex delegate; the pip ai-edge-litert and
        TensorFlow interpreters have none, so `TFLiteModel` refuses it.
      batch_size: convert for this fixed batch size instead of a free one.
        Recurrent layers then become TFLite's fused sequence ops (a small
        file whatever the sequence length, unlike `unroll`); the file only
        takes batches of that size (`TFLiteModel` pads the last one) and
        its LSTM state persists across invokes unless the interpreter's
        `reset_all_variables()` is called (`TFLiteModel` does, before each).
      allow_ragged_blocks: write a sparse file even when the converter stored
        a kernel as native blocks whose blocked axis is not a multiple of the
        block (e.g. 30 inputs in blocks of 4). TFLite's block-sparse kernels
        computed such layers wrongly (docs/export.md), so by default that
        file is refused.

    Returns:
      The flatbuffer bytes (also written to `path` if given). They carry a
      `keras_lottery_io` metadata entry with the Keras input / output names
      in order, which `TFLiteModel` uses.

    Raises:
      ValueError: int8 without representative data, representative data of
        the wrong shape, a model without a ticket.
      TFLiteConversionError: if the converter refuses the model (names the op
        and the layer, keeps the converter's own message), or, with `sparse`,
        if it stored a kernel in ragged native blocks (see
        `allow_ragged_blocks`); nothing is written then.

    Example:
      >>> kl.export.tflite(model, "t.tflite", sparse=True, int8=True,
      ...                  representative_data=x_train[:256])   # doctest: +SKIP
      >>> kl.export.tflite(lstm_ticket, "t.tflite", unroll=True)  # doctest: +SKIP
    """
    if int8 and representative_data is None:
        raise ValueError(
            "int8 quantization needs representative_data (a few hundred training "
            "inputs, e.g. x_train[:256]) to calibrate activation ranges; CLI: pass "
            "a run folder (its dataset is used) or --representative X.npy.")
    if path is not None:
        formats.check_out_path(path)
    if batch_size is not None and (isinstance(batch_size, bool) or
                                   not isinstance(batch_size, (int, np.integer)) or
                                   batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None (free), got "
                         f"{batch_size!r}.")
    plain = formats.strip(model, allow_dense)
    calibration = (calibration_batches(representative_data, plain, batch_size=batch_size or 1)
                   if int8 else None)
    return convert(plain, path, sparse, int8, calibration, per_channel, unroll=unroll,
                   select_tf_ops=select_tf_ops, batch_size=batch_size,
                   allow_ragged_blocks=allow_ragged_blocks)


def _refuse_ragged_blocks(content, plain):
    """Raises if the converter stored a kernel as native blocks that do not tile it.

    The advice depends on who chose the block: for a float file the
    converter keeps the blocks the ticket was pruned in, while for an int8
    file it also tries 1x16 blocks of its own, so an unstructured ticket
    with narrow or mostly empty rows can get them and re-pruning in blocks
    is no fix.
    """
    from keras_lottery.export.sparse_ops import kernel_ops

    ragged = [r for r in kernel_ops(content, plain) if r["ragged_block"]]
    if not ragged:
        return
    names = ", ".join(f"{r['layer'] or r['op']} (filter {r['filter_shape']}, block {r['block']})"
                      for r in ragged)
    message = (f"The sparse TFLite file stores {names} as native sparse blocks whose blocked "
               "axis is not a multiple of the block; TFLite's block-sparse kernels compute "
               "such layers wrongly. ")
    if any(r["dtype"] == "int8" for r in ragged):
        message += ("The converter chose these blocks itself (it tries 1x16 blocks on int8 "
                    "kernels, whether or not the ticket was pruned in blocks): export int8 without "
                    "sparse=True (--sparse), or sparse without int8")
    else:
        message += ("Prune with a block that divides the layer's input size "
                    "(kl.IMP(block=...), or block_layers= to leave that layer unstructured), "
                    "or export without sparse=True (--sparse)")
    raise TFLiteConversionError(message + ", or pass allow_ragged_blocks=True to write it "
                                "anyway.")


def _by_input_name(calibration, plain):
    """`calibration`'s batches as dicts keyed by input name (one input: as they are).

    The calibrator takes a list in the converted graph's input order, which
    can differ from the Keras order (a model with inputs `z_tokens`,
    `a_numbers` got `a_numbers` first), so a list in Keras order fed int ids
    to the float input. A dict is matched by the signature's input names,
    which are the Keras input names.
    """
    if len(plain.inputs) < 2:
        return calibration
    names = list(plain.input_names)
    return lambda: (dict(zip(names, batch)) for batch in calibration())


def convert(plain, path, sparse, int8, calibration, per_channel=None, unroll=False,
            select_tf_ops=False, batch_size=None, allow_ragged_blocks=True):
    """Converts a plain model; `calibration` from `calibration_batches` for int8.

    `allow_ragged_blocks=False` refuses a sparse file with ragged native blocks
    (see `tflite`); the comparison report keeps them and flags them instead.
    """
    source = float32_compute(unrolled(plain) if unroll else plain)
    if batch_size is None:
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
    else:  # the serving signature, with the batch fixed and the Keras names kept
        function = formats.serving_function(source, int(batch_size)).get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], source)
    optimizations = []
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if int8:
        optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.representative_dataset = _by_input_name(calibration, source)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if per_channel is None:
            per_channel = not sparse
        if not per_channel:
            # The converter's only switch for it is this experimental attribute.
            if hasattr(converter, "_experimental_disable_per_channel"):
                converter._experimental_disable_per_channel = True
            else:
                logger.warning("This TensorFlow has no per-tensor switch; using "
                               "per-channel int8 quantization.")
    if select_tf_ops:
        ops = ops + [tf.lite.OpsSet.SELECT_TF_OPS]
        # keep TensorList ops as TF ops instead of lowering them (the converter's advice)
        converter._experimental_lower_tensor_list_ops = False
    converter.target_spec.supported_ops = ops
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    try:
        content = converter.convert()
    except Exception as err:  # ConverterError and friends: name the op and layer
        raise conversion_error(err, plain, unroll, select_tf_ops, batch_size) from err
    content = with_io_metadata(content, plain)
    if sparse and not allow_ragged_blocks:
        _refuse_ragged_blocks(content, plain)
    if path is not None:
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(content)
        try:
            formats.write_file_atomically(path, write)
        except OSError as err:
            disk = formats._disk_error(err, path)
            if disk is None:
                raise
            raise disk from err
    return content


# -- running ---------------------------------------------------------------------------


def _quantization(detail):
    """(scale, zero point) of a quantized int8 / uint8 / int16 tensor, else (0, 0)."""
    if np.dtype(detail["dtype"]) not in (np.int8, np.uint8, np.int16):
        return 0.0, 0
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


class TFLiteModel:
    """Runs a TFLite flatbuffer with the ai-edge-litert interpreter (or tf.lite's).

    Inputs are fed each in its own dtype (token ids stay int32; float
    values for a quantized int8 input are quantized with its scale and zero
    point, and quantized outputs dequantized) and outputs come back in the
    Keras model's order: files written by `tflite` name
    them in a metadata entry; for other files the signature's input order
    and TFLite's output order are used.

    Args:
      content: flatbuffer bytes, or a path to a `.tflite` file.
      num_threads: interpreter threads (default 1, for stable timings).
      xnnpack: False runs TFLite's builtin kernels without the default
        XNNPACK delegate (ai-edge-litert's `BUILTIN_WITHOUT_DEFAULT_DELEGATES`),
        e.g. to time the kernels a platform without XNNPACK would use.

    Attributes:
      interpreter_name: which interpreter runs it: `"ai_edge_litert <version>
        (XNNPACK)"`; `"... (builtin kernels; ...)"` when the XNNPACK delegate
        refuses the model (it does for int8 + sparse fully connected layers);
        `"tf.lite.Interpreter"` only if ai-edge-litert is missing or fails.
      input_names, output_names: in the order `__call__` takes and returns them.
      fixed_batch: the batch size the file was converted for, or None (free).

    Raises:
      FileNotFoundError: no file at `content`.
      RuntimeError: the model needs TensorFlow (Flex) ops, which neither
        interpreter here can run.

    Example:
      >>> lite = kl.export.TFLiteModel("ticket.tflite")   # doctest: +SKIP
      >>> logits = lite.predict(x_test)                   # doctest: +SKIP
    """

    def __init__(self, content, num_threads=1, xnnpack=True):
        if isinstance(content, (str, os.PathLike)):
            if not os.path.exists(content):
                raise FileNotFoundError(f"No TFLite file at {content}.")
            with open(content, "rb") as f:
                content = f.read()
        self.content = bytes(content)
        self.num_threads = num_threads
        self.xnnpack = xnnpack
        self._batch = None
        flex = self._flex_ops()
        if flex:
            raise RuntimeError(
                f"The TFLite model uses TensorFlow (Flex) ops {', '.join(flex)} "
                "(converted with select_tf_ops=True): neither ai-edge-litert nor "
                "tf.lite.Interpreter in this Python links the Flex delegate, so it "
                "cannot run here. Run it where the delegate is linked (e.g. Android "
                "with tensorflow-lite-select-tf-ops), or convert with unroll=True.")
        self.interpreter, self.interpreter_name = self._make()
        self._inputs, self._outputs, self.input_names, self.output_names = self._io()
        first = self._inputs[0]["shape_signature"] if self._inputs else [-1]
        self.fixed_batch = int(first[0]) if len(first) and first[0] > 0 else None

    def _flex_ops(self):
        try:
            model = _schema().Model.GetRootAsModel(self.content, 0)
            names = {model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())}
        except Exception:  # not a flatbuffer we can read: let the interpreter say so
            return []
        return sorted(n.decode() for n in names if n and n.startswith(b"Flex"))

    def _make(self):
        """ai-edge-litert with XNNPACK, then without delegates, then tf.lite."""
        errors = []
        try:
            from ai_edge_litert import interpreter as litert
        except ImportError as err:
            litert = None
            errors.append(f"ai-edge-litert not installed ({err})")
        if litert is not None:
            try:
                from importlib.metadata import version
                name = f"ai_edge_litert {version('ai-edge-litert')}"
            except Exception:  # metadata missing: still name the package
                name = "ai_edge_litert"
            builtin = {"experimental_op_resolver_type":
                       litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
            attempts = ([(f"{name} (XNNPACK)", {}),
                         (f"{name} (builtin kernels; XNNPACK refused the model)", builtin)]
                        if self.xnnpack else
                        [(f"{name} (builtin kernels; XNNPACK not used)", builtin)])
            for label, kwargs in attempts:
                try:
                    interp = litert.Interpreter(model_content=self.content,
                                                num_threads=self.num_threads, **kwargs)
                    interp.allocate_tensors()
                    return interp, label
                except Exception as err:  # this delegate / resolver cannot run it
                    errors.append(f"{label}: {err}")
        logger.warning("ai-edge-litert cannot run the model (%s); using the deprecated "
                       "tf.lite.Interpreter.", "; ".join(errors))
        interp = tf.lite.Interpreter(model_content=self.content, num_threads=self.num_threads)
        interp.allocate_tensors()
        return interp, "tf.lite.Interpreter"

    def _io(self):
        """Input and output details in Keras order, with their names."""
        interp = self.interpreter
        inputs, outputs = list(interp.get_input_details()), list(interp.get_output_details())
        in_names = [d["name"] for d in inputs]
        out_names = [d["name"] for d in outputs]
        try:
            signatures = interp.get_signature_list()
        except Exception:  # an interpreter without signature support
            signatures = {}
        if not signatures:
            return inputs, outputs, in_names, out_names
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = interp.get_signature_runner(key)
        by_index_in = {d["index"]: d for d in inputs}
        by_index_out = {d["index"]: d for d in outputs}
        sig_in = {name: d["index"] for name, d in runner.get_input_details().items()}
        sig_out = {name: d["index"] for name, d in runner.get_output_details().items()}
        if not (set(sig_in.values()) <= set(by_index_in) and
                set(sig_out.values()) <= set(by_index_out)):
            return inputs, outputs, in_names, out_names
        name_of_in = {i: n for n, i in sig_in.items()}
        name_of_out = {i: n for n, i in sig_out.items()}
        order = read_io_metadata(self.content)
        if order and set(order.get("inputs", [])) == set(sig_in):
            inputs = [by_index_in[sig_in[n]] for n in order["inputs"]]
        if order and set(order.get("outputs", [])) == set(sig_out):
            outputs = [by_index_out[sig_out[n]] for n in order["outputs"]]
        return (inputs, outputs, [name_of_in.get(d["index"], d["name"]) for d in inputs],
                [name_of_out.get(d["index"], d["name"]) for d in outputs])

    def _arrays(self, x):
        """`x` as a list of arrays in input order, each cast to its input's dtype."""
        names = self.input_names
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"Missing input(s) {missing}; the model takes {names}.")
            arrays = [x[n] for n in names]
        elif len(self._inputs) == 1:
            arrays = [x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x]
        else:
            if not isinstance(x, (list, tuple)) or len(x) != len(self._inputs):
                raise ValueError(f"The model has {len(self._inputs)} inputs {names}: pass a "
                                 "list with one array per input in that order, or a dict "
                                 "keyed by input name.")
            arrays = list(x)
        out = []
        for arr, detail, name in zip(arrays, self._inputs, names):
            arr = np.asarray(arr)
            dtype = np.dtype(detail["dtype"])
            scale, zero_point = _quantization(detail)
            if scale and np.issubdtype(arr.dtype, np.floating):
                # a quantized input (a file converted with inference_input_type=int8):
                # float values are quantized as the converter's parameters say
                info = np.iinfo(dtype)
                arr = np.clip(np.round(arr / scale + zero_point), info.min, info.max)
            elif np.issubdtype(dtype, np.integer) and np.issubdtype(arr.dtype, np.floating):
                if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                    raise ValueError(f"Input {name!r} takes integers ({dtype.name}, e.g. "
                                     "token ids) but got non-integral floats.")
            expected = list(detail["shape_signature"][1:])
            given = list(arr.shape[1:])
            if len(given) != len(expected) or any(e not in (-1, g) for e, g in zip(expected, given)):
                raise ValueError(f"Input {name!r} has per-example shape {tuple(given)}, the "
                                 f"model expects {tuple(expected)} (-1 = any).")
            out.append(arr.astype(dtype, copy=False))
        if len({len(a) for a in out}) > 1:
            raise ValueError(f"The inputs hold different numbers of examples {[len(a) for a in out]}.")
        return out

    def _resize(self, batch):
        if batch == self._batch:
            return
        for detail in self._inputs:
            self.interpreter.resize_tensor_input(detail["index"], [batch] + list(detail["shape"][1:]))
        self.interpreter.allocate_tensors()
        self._batch = batch

    def _invoke(self, arrays):
        """Outputs (list, Keras order) for one batch the interpreter can take as it is."""
        self._resize(len(arrays[0]))
        interp = self.interpreter
        # stateful kernels (a fused LSTM converted with a fixed batch) keep their
        # state across invokes; Keras predictions start from zero state each time
        interp.reset_all_variables()
        for arr, detail in zip(arrays, self._inputs):
            interp.set_tensor(detail["index"], arr)
        interp.invoke()
        outputs = []
        for detail in self._outputs:
            value = interp.get_tensor(detail["index"]).copy()
            scale, zero_point = _quantization(detail)
            if scale:  # a quantized output: back to the float values it stands for
                value = ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)
            outputs.append(value)
        return outputs

    def _run(self, arrays):
        n = len(arrays[0])
        step = self.fixed_batch
        if step is None or n == step:
            return self._invoke(arrays)
        parts = []
        for i in range(0, n, step):
            chunk = [a[i:i + step] for a in arrays]
            real = len(chunk[0])
            if real < step:  # pad with copies of the last example, drop their outputs
                chunk = [np.concatenate([c, np.repeat(c[-1:], step - real, axis=0)]) for c in chunk]
            parts.append([o[:real] for o in self._invoke(chunk)])
        return [np.concatenate(p) for p in zip(*parts)]

    def _result(self, outputs):
        return outputs[0] if len(outputs) == 1 else outputs

    def __call__(self, x):
        """Outputs for one batch `x`: an array, a list of arrays (one per input), or a dict.

        Returns:
          An array for a one-output model, else a list in the Keras order.
        """
        return self._result(self._run(self._arrays(x)))

    def predict(self, x, batch_size=256):
        """Outputs for all of `x`, batch by batch (same forms as `__call__`)."""
        arrays = self._arrays(x)
        n = len(arrays[0])
        parts = [self._run([a[i:i + batch_size] for a in arrays]) for i in range(0, n, batch_size)]
        if not parts:
            raise ValueError("No examples to predict (the input is empty).")
        return self._result([np.concatenate(p) for p in zip(*parts)])

    def latency(self, x_batch, repeats=50, warmup=5):
        """Median seconds of one `invoke` on `x_batch` over `repeats` runs."""
        arrays = self._arrays(x_batch)
        if self.fixed_batch is not None:
            arrays = [np.resize(a, (self.fixed_batch,) + a.shape[1:]) for a in arrays]
        self._resize(len(arrays[0]))
        interp = self.interpreter
        for arr, detail in zip(arrays, self._inputs):
            interp.set_tensor(detail["index"], arr)
        for _ in range(warmup):
            interp.invoke()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            interp.invoke()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
