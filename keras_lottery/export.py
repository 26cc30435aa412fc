"""Shipping a ticket: strip the wrappers, then SavedModel, .keras / H5, TFLite.

Every exporter first strips the tfmot wrappers (`strip`), which multiplies
each kernel by its mask, so pruned weights are exact zeros in every format.
Files are written to a temporary name in the target folder and renamed, so an
error never leaves a half-written export behind.

TFLite variants: float; float with the sparse weight encoding
(`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`); full int8 with a representative
dataset (int8 kernels, float input and output), combinable with sparsity.
They run with `ai_edge_litert.interpreter.Interpreter` where it works, else
with the deprecated `tf.lite.Interpreter` (`TFLiteModel.interpreter_name`
says which ran). `report` compares ticket and dense model across all formats.

Example:
    import keras_lottery as kl
    kl.export.tflite(model, "ticket.tflite", sparse=True, int8=True,
                     representative_data=x_train[:256])
    kl.export.saved_model(model, "ticket_savedmodel/")
"""

import gzip
import io
import logging
import os
import re
import shutil
import statistics
import tarfile
import tempfile
import time

import numpy as np
import tensorflow as tf

from keras_lottery import report as report_lib
from keras_lottery._keras import check_tf_keras_model, keras
from keras_lottery.wrap import is_prunable, pruned_layers, strip_model

__all__ = [
    "TFLiteConversionError",
    "TFLITE_VARIANTS",
    "is_pruned",
    "strip",
    "keras_file",
    "saved_model",
    "tflite",
    "TFLiteModel",
    "report",
    "format_report",
    "file_size",
    "gzip_size",
]

logger = logging.getLogger("keras_lottery")

# A plain model counts as a pruned ticket when at least this fraction of its
# prunable kernel weights are exact zeros (a trained dense net has none).
MIN_ZERO_FRACTION = 0.01

# name -> (sparse, int8), in report order
TFLITE_VARIANTS = {
    "tflite": (False, False),
    "tflite_sparse": (True, False),
    "tflite_int8": (False, True),
    "tflite_int8_sparse": (True, True),
}

NUM_CALIBRATION = 256


class TFLiteConversionError(ValueError):
    """The TFLite converter refused the model (e.g. an op with no TFLite kernel)."""


# -- stripping ------------------------------------------------------------------


def _prunable_kernels(model):
    """(layer name, kernel ndarray) for each prunable layer of a plain model."""
    result = []
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.Model):
            stack[:0] = list(layer.layers)
        elif is_prunable(layer) and getattr(layer, "kernel", None) is not None:
            result.append((layer.name, layer.kernel.numpy()))
    return result


def is_pruned(model):
    """True if `model` holds a ticket: wrapped with some mask < 1, or plain with zeros.

    A wrapped model counts when any mask has pruned something; a plain
    (stripped) model when at least `MIN_ZERO_FRACTION` of its prunable
    kernel weights are exact zeros.
    """
    wrappers = pruned_layers(model)
    if wrappers:
        return any(float(tf.reduce_min(mask)) < 0.5
                   for w in wrappers for _, mask, _ in w.pruning_vars)
    kernels = _prunable_kernels(model)
    total = sum(k.size for _, k in kernels)
    zeros = sum(int((k == 0).sum()) for _, k in kernels)
    return bool(total) and zeros / total >= MIN_ZERO_FRACTION


def strip(model, allow_dense=False):
    """The plain Keras model to export: wrappers removed, pruned weights exact zeros.

    Args:
      model: a model wrapped by `IMP.wrap` after pruning, or an already
        stripped ticket (a plain model whose kernels hold zeros).
      allow_dense: export a model that was never wrapped or never pruned
        anyway (as the dense model it is).

    Returns:
      A plain tf_keras model (no tfmot wrappers). For a wrapped model the
      kernels are masked first (`keras_lottery.strip_model`); a plain model
      is returned as it is, or as an uncompiled copy with the same weights
      if it was compiled (so no optimizer state is exported).

    Raises:
      TypeError: for a Keras 3 model or a non-model.
      ValueError: for a model that was never wrapped or never pruned, unless
        `allow_dense=True`.
    """
    check_tf_keras_model(model)
    wrapped = bool(pruned_layers(model))
    if not is_pruned(model):
        state = ("is wrapped for pruning but no round has pruned anything yet "
                 "(every mask is all ones)" if wrapped else
                 "was never wrapped or pruned (no tfmot wrappers, and less than "
                 f"{MIN_ZERO_FRACTION:.0%} of its prunable weights are zero)")
        if not allow_dense:
            raise ValueError(
                f"The model {model.name!r} {state}, so there is no ticket to export. "
                "Export the model returned by IMP.wrap after its fit (or a run's "
                "wrapped_model.keras), or pass allow_dense=True (CLI: --allow-dense) "
                "to export it as a dense model.")
        logger.warning("Exporting %r as a dense model: it %s.", model.name, state)
    if not wrapped:
        return _without_training_state(model)
    return strip_model(model)


def _without_training_state(model):
    """An uncompiled copy with the same weights, so no optimizer state is exported."""
    if getattr(model, "optimizer", None) is None:
        return model
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        return model  # subclassed: cannot clone; exported as it is
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


# -- atomic file and folder writing ------------------------------------------------


def _check_out_path(path):
    path = os.fspath(path)
    if not path:
        raise ValueError("The output path is empty: name a file or folder to write.")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"Cannot write {path}: {folder} is a file, not a folder.")
    os.makedirs(folder, exist_ok=True)
    return path


def _write_file_atomically(path, write):
    """Calls `write(tmp_path)` then renames tmp_path to `path` (same folder)."""
    path = _check_out_path(path)

    def checked_write(tmp):
        write(tmp)
        if os.path.isdir(path):
            raise ValueError(f"Cannot write file {path}: a folder of that name exists.")

    return report_lib.atomic_path(path, checked_write)


def _write_dir_atomically(path, write):
    """Calls `write(tmp_dir)` then moves tmp_dir to `path`, replacing an old one."""
    path = _check_out_path(path).rstrip(os.sep) or path
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"Cannot write folder {path}: a file of that name exists.")
    folder = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(dir=folder, prefix=".tmp-" + os.path.basename(path) + "-")
    old = None
    try:
        write(tmp)
        os.chmod(tmp, report_lib.shared_mode(0o777))  # mkdtemp makes it private
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=folder, prefix=".old-" + os.path.basename(path) + "-")
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover and os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
    return path


# -- Keras files and SavedModel -----------------------------------------------------


def keras_file(model, path, allow_dense=False):
    """Saves the stripped model as a `.keras` (Keras v3 format) or `.h5` file.

    Args:
      model: the wrapped (or stripped) ticket; see `strip`.
      path: output file, ending in `.keras` or `.h5`.
      allow_dense: see `strip`.

    Returns:
      The path written. Load it with `keras.models.load_model(path)` (no
      tfmot scope needed: it holds no wrappers).

    Raises:
      ValueError: for another extension, or a model without a ticket.

    Example:
      >>> kl.export.keras_file(model, "ticket.keras")   # doctest: +SKIP
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".keras", ".h5"):
        raise ValueError(f"Keras file {path!r} must end in .keras or .h5 "
                         "(for a SavedModel folder use export.saved_model).")
    return _save_keras_file(strip(model, allow_dense), path)


def _save_keras_file(plain, path):
    ext = os.path.splitext(path)[1].lower()

    # the temporary path ends with the file's own name, so Keras sees its extension
    return _write_file_atomically(
        path, lambda tmp: plain.save(tmp, save_format="h5" if ext == ".h5" else None))


def _serving_function(plain):
    specs = [tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype, name=t.name.split(":")[0])
             for t in plain.inputs]
    output_names = list(plain.output_names)

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = plain(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return dict(zip(output_names, outputs))

    return serve


def saved_model(model, path, allow_dense=False):
    """Exports the stripped model as a SavedModel folder with a serving signature.

    The `serving_default` signature takes the model's inputs by their input
    names (batch size free) and returns a dict keyed by the output layers'
    names; TF Serving and `tf.saved_model.load` can use it.

    Args:
      model: the wrapped (or stripped) ticket; see `strip`.
      path: output folder (replaced if it exists; written to a temporary
        folder first, then renamed).
      allow_dense: see `strip`.

    Returns:
      The path written.

    Example:
      >>> kl.export.saved_model(model, "ticket_savedmodel")       # doctest: +SKIP
      >>> serve = tf.saved_model.load("ticket_savedmodel").signatures["serving_default"]  # doctest: +SKIP
    """
    return _save_saved_model(strip(model, allow_dense), path)


def _save_saved_model(plain, path):
    serve = _serving_function(plain)
    module = tf.Module()
    module.model = plain
    module.serve = serve

    def write(tmp):
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve})

    return _write_dir_atomically(path, write)


# -- TFLite -----------------------------------------------------------------------------


def _calibration_batches(representative_data, limit=NUM_CALIBRATION):
    """A re-iterable generator factory of single-example float batches."""
    data = representative_data
    if isinstance(data, tf.data.Dataset):
        data = data.unbatch() if _is_batched(data) else data
        examples = []
        for item in data.take(limit):
            x = item[0] if isinstance(item, (tuple, list)) else item
            examples.append(np.asarray(x))
        data = np.stack(examples) if examples else np.zeros((0,))
    elif isinstance(data, (tuple, list)) and len(data) == 2 and np.ndim(data[0]) > 1:
        data = data[0]  # an (x, y) pair
    data = np.asarray(data, dtype=np.float32)
    if data.ndim < 2 or len(data) == 0:
        raise ValueError(
            "representative_data must hold at least one example: an array of "
            f"shape (n, ...) or a tf.data.Dataset, got shape {data.shape}.")
    data = data[:limit]
    return lambda: ([data[i:i + 1]] for i in range(len(data)))


def _is_batched(dataset):
    spec = dataset.element_spec
    spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    return spec.shape.rank is not None and spec.shape.rank > 0 and spec.shape[0] is None


def _layers_using_ops(plain, op_types):
    """The layers of `plain` whose traced graph holds any of `op_types`."""
    found = []
    for layer in plain.layers:
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
        if ops & set(op_types):
            found.append(layer)
    return found


def _conversion_error(err, plain):
    text = str(err)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither", text)))
    ops += [o for o in re.findall(r"Custom ops: ([\w, ]+)", text)[:1] if o not in ops]
    layers = _layers_using_ops(plain, ops)
    where = ", ".join(f"{l.name} ({type(l).__name__})" for l in layers) or "unknown layer"
    if ops:
        detail = (f"op(s) {', '.join(ops)} in layer(s) {where} have no TFLite builtin "
                  "kernel. Replace those layers with ones built from standard ops "
                  "(Dense, Conv, pooling, activations), or export as SavedModel / "
                  ".keras instead.")
    else:
        first = next((line for line in text.splitlines() if "error" in line.lower()), text[:300])
        detail = f"the TFLite converter failed: {first.strip()}"
    return TFLiteConversionError(f"Cannot convert model {plain.name!r} to TFLite: {detail}")


def tflite(model, path=None, sparse=False, int8=False, representative_data=None,
           allow_dense=False, per_channel=None):
    """Converts the stripped model to TFLite (float, sparse, int8, int8 + sparse).

    Args:
      model: the wrapped (or stripped) ticket; see `strip`.
      path: optional output `.tflite` file (written atomically).
      sparse: store sparse weights in TFLite's sparse encoding
        (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).
      int8: full integer quantization: int8 weights and activations (ops
        restricted to `TFLITE_BUILTINS_INT8`), float input and output.
      representative_data: calibration inputs for int8: an array `(n, ...)`,
        an `(x, y)` pair, or a `tf.data.Dataset`; up to 256 examples are used.
      allow_dense: see `strip`.
      per_channel: int8 weight scales per output channel (True) or one per
        tensor (False). Default: per-tensor with `sparse`, per-channel
        otherwise. Per-channel parameters cost about 36 bytes per output
        channel, 15% of a sparse int8 LeNet-300-100 at 10% weights; on
        that ticket per-tensor scales lost no test accuracy (docs/export.md).

    Returns:
      The flatbuffer bytes (also written to `path` if given).

    Raises:
      ValueError: int8 without representative data, a model without a ticket.
      TFLiteConversionError: if the converter refuses the model (names the op
        and the layer).

    Example:
      >>> kl.export.tflite(model, "t.tflite", sparse=True, int8=True,
      ...                  representative_data=x_train[:256])   # doctest: +SKIP
    """
    if int8 and representative_data is None:
        raise ValueError(
            "int8 quantization needs representative_data (a few hundred training "
            "inputs, e.g. x_train[:256]) to calibrate activation ranges; CLI: pass "
            "a run folder (its dataset is used) or --representative X.npy.")
    calibration = _calibration_batches(representative_data) if int8 else None
    if path is not None:
        _check_out_path(path)
    return _convert_tflite(strip(model, allow_dense), path, sparse, int8, calibration, per_channel)


def _convert_tflite(plain, path, sparse, int8, calibration, per_channel=None):
    converter = tf.lite.TFLiteConverter.from_keras_model(plain)
    optimizations = []
    if int8:
        optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if per_channel is None:
            per_channel = not sparse
        if not per_channel:
            # The converter's only switch for it is this experimental attribute.
            if hasattr(converter, "_experimental_disable_per_channel"):
                converter._experimental_disable_per_channel = True
            else:
                logger.warning("This TensorFlow has no per-tensor switch; using "
                               "per-channel int8 quantization.")
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    try:
        content = converter.convert()
    except Exception as err:  # ConverterError and friends: name the op and layer
        raise _conversion_error(err, plain) from err
    if path is not None:
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(content)
        _write_file_atomically(path, write)
    return content


class TFLiteModel:
    """Runs a TFLite flatbuffer with the ai-edge-litert interpreter (or tf.lite's).

    Args:
      content: flatbuffer bytes, or a path to a `.tflite` file.
      num_threads: interpreter threads (default 1, for stable timings).

    Attributes:
      interpreter_name: which interpreter runs it: `"ai_edge_litert <version>
        (XNNPACK)"`; `"... (builtin kernels; ...)"` when the XNNPACK delegate
        refuses the model (it does for int8 + sparse fully connected layers);
        `"tf.lite.Interpreter"` only if ai-edge-litert is missing or fails.
    """

    def __init__(self, content, num_threads=1):
        if isinstance(content, (str, os.PathLike)):
            if not os.path.exists(content):
                raise FileNotFoundError(f"No TFLite file at {content}.")
            with open(content, "rb") as f:
                content = f.read()
        self.content = bytes(content)
        self.num_threads = num_threads
        self._batch = None
        self.interpreter, self.interpreter_name = self._make()

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
            attempts = [
                (f"{name} (XNNPACK)", {}),
                (f"{name} (builtin kernels; XNNPACK refused the model)",
                 {"experimental_op_resolver_type":
                  litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}),
            ]
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

    def _resize(self, batch):
        if batch == self._batch:
            return
        detail = self.interpreter.get_input_details()[0]
        self.interpreter.resize_tensor_input(detail["index"], [batch] + list(detail["shape"][1:]))
        self.interpreter.allocate_tensors()
        self._batch = batch

    def __call__(self, x):
        """Outputs for one batch `x` (float input; int8 models quantize inside)."""
        x = np.asarray(x, np.float32)
        self._resize(len(x))
        interp = self.interpreter
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()

    def predict(self, x, batch_size=256):
        """Outputs for all of `x`, batch by batch."""
        x = np.asarray(x, np.float32)
        return np.concatenate([self(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def latency(self, x_batch, repeats=50, warmup=5):
        """Median seconds of one `invoke` on `x_batch` over `repeats` runs."""
        x_batch = np.asarray(x_batch, np.float32)
        self._resize(len(x_batch))
        interp = self.interpreter
        interp.set_tensor(interp.get_input_details()[0]["index"], x_batch)
        for _ in range(warmup):
            interp.invoke()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            interp.invoke()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


# -- the report ------------------------------------------------------------------------


def file_size(path):
    """Bytes of a file, or of all files in a folder (a SavedModel)."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def gzip_size(path):
    """Bytes after gzip -9 (a folder is tarred first, with fixed metadata)."""
    if os.path.isdir(path):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for d, dirs, files in sorted(os.walk(path)):
                dirs.sort()
                for f in sorted(files):
                    full = os.path.join(d, f)
                    info = tar.gettarinfo(full, arcname=os.path.relpath(full, path))
                    info.mtime = 0
                    with open(full, "rb") as fh:
                        tar.addfile(info, fh)
        data = buffer.getvalue()
    else:
        with open(path, "rb") as f:
            data = f.read()
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _layer_table(plain):
    rows = []
    for name, kernel in _prunable_kernels(plain):
        nonzero = int(np.count_nonzero(kernel))
        rows.append({"layer": name, "weights": int(kernel.size), "nonzero": nonzero,
                     "remaining": nonzero / kernel.size if kernel.size else 1.0})
    return rows


def _dense_stand_in(plain):
    """The ticket with its zero kernel entries refilled by a fresh initialization.

    Biases and every other weight are the ticket's, so the converter keeps
    the same tensors (it drops all-zero biases, which would flatter the
    dense sizes); only the zeros are gone. Good for sizes and latency.
    """
    dense = keras.models.clone_model(plain)  # fresh initializers
    for layer, source in zip(dense.layers, plain.layers):
        values = []
        for fresh, kept in zip(layer.get_weights(), source.get_weights()):
            values.append(np.where(kept == 0, fresh, kept) if kept.ndim >= 2 else kept)
        layer.set_weights(values)
    return dense


def _accuracy(logits, y):
    y = np.asarray(y).reshape(-1)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _export_all(plain, folder, formats, calibration, per_channel=None):
    """Writes each format of a plain model into `folder`; returns name -> path."""
    written = {}
    for name in formats:
        if name == "keras":
            written[name] = _save_keras_file(plain, os.path.join(folder, "model.keras"))
        elif name == "h5":
            written[name] = _save_keras_file(plain, os.path.join(folder, "model.h5"))
        elif name == "savedmodel":
            written[name] = _save_saved_model(plain, os.path.join(folder, "savedmodel"))
        elif name in TFLITE_VARIANTS:
            sparse, int8 = TFLITE_VARIANTS[name]
            path = os.path.join(folder, f"{name}.tflite")
            _convert_tflite(plain, path, sparse, int8, calibration if int8 else None, per_channel)
            written[name] = path
        else:
            raise ValueError(f"Unknown export format {name!r}; choose from "
                             f"keras, h5, savedmodel, {', '.join(TFLITE_VARIANTS)}.")
    return written


ALL_FORMATS = ("keras", "h5", "savedmodel") + tuple(TFLITE_VARIANTS)


def report(model, test_data, dense_model=None, representative_data=None, out_dir=None,
           formats=ALL_FORMATS, latency_batches=(1, 128), repeats=50, num_threads=1,
           allow_dense=False, per_channel=None):
    """Exports ticket and dense model in every format and compares them.

    Args:
      model: the wrapped (or stripped) ticket.
      test_data: `(x_test, y_test)` arrays, integer labels; the models output
        logits or probabilities (argmax is taken).
      dense_model: the dense model to compare against (same architecture, e.g.
        the round-0 network). If None, the ticket with its pruned kernel
        entries refilled from a fresh initialization stands in: valid for
        sizes and latency only, so dense accuracies are then left out.
      representative_data: calibration inputs for the int8 variants (needed
        if `formats` has any).
      out_dir: folder for `ticket/`, `dense/` and `export_report.json`; a
        temporary folder (deleted afterwards) if None.
      formats: subset of `ALL_FORMATS`.
      latency_batches: batch sizes timed with the TFLite interpreter.
      repeats: timed invocations per batch size (the median is reported).
      num_threads: interpreter threads.
      allow_dense: see `strip`.
      per_channel: int8 quantization granularity, see `tflite`.

    Returns:
      The report dict (also written to `out_dir/export_report.json`); print
      it with `format_report`.

    Raises:
      ValueError: bad formats, missing representative data for int8, a model
        without a ticket, or test data that does not fit the model.
    """
    formats = list(formats)
    unknown = [f for f in formats if f not in ALL_FORMATS]
    if unknown:
        raise ValueError(f"Unknown export format(s) {unknown}; choose from {list(ALL_FORMATS)}.")
    calibration = None
    if any(TFLITE_VARIANTS.get(f, (0, 0))[1] for f in formats):
        if representative_data is None:
            raise ValueError("The int8 formats need representative_data (e.g. x_train[:256]); "
                             "pass it or leave tflite_int8* out of `formats`.")
        calibration = _calibration_batches(representative_data)
    x_test, y_test = test_data
    x_test = np.asarray(x_test, np.float32)
    plain = strip(model, allow_dense)
    dense_given = dense_model is not None
    if dense_given:
        check_tf_keras_model(dense_model, "dense model")
        dense_plain = (strip_model(dense_model) if pruned_layers(dense_model)
                       else _without_training_state(dense_model))
    else:
        dense_plain = _dense_stand_in(plain)
    keras_logits = plain.predict(x_test, batch_size=256, verbose=0)
    dense_logits = dense_plain.predict(x_test, batch_size=256, verbose=0)
    layers = _layer_table(plain)
    dense_layers = _layer_table(dense_plain)

    folder = out_dir or tempfile.mkdtemp(prefix="keras-lottery-export-")
    try:
        ticket_files = _export_all(plain, os.path.join(folder, "ticket"), formats, calibration,
                                   per_channel)
        dense_files = _export_all(dense_plain, os.path.join(folder, "dense"), formats, calibration,
                                  per_channel)
        dense_float_tflite = (file_size(dense_files["tflite"]) if "tflite" in dense_files else None)
        files, tflite_rows, interpreters = [], [], []
        for name in formats:
            t_path, d_path = ticket_files[name], dense_files[name]
            row = {"format": name, "bytes": file_size(t_path), "gzip_bytes": gzip_size(t_path),
                   "dense_bytes": file_size(d_path), "dense_gzip_bytes": gzip_size(d_path),
                   "file": os.path.relpath(t_path, folder)}
            row["ratio"] = row["bytes"] / row["dense_bytes"]
            row["gzip_ratio"] = row["gzip_bytes"] / row["dense_gzip_bytes"]
            if dense_float_tflite and name in TFLITE_VARIANTS:
                row["ratio_vs_dense_float_tflite"] = row["bytes"] / dense_float_tflite
            files.append(row)
            if name not in TFLITE_VARIANTS:
                continue
            t_lite, d_lite = TFLiteModel(t_path, num_threads), TFLiteModel(d_path, num_threads)
            for lite in (t_lite, d_lite):
                if lite.interpreter_name not in interpreters:
                    interpreters.append(lite.interpreter_name)
            t_out, d_out = t_lite.predict(x_test), d_lite.predict(x_test)
            entry = {
                "variant": name,
                "interpreter": t_lite.interpreter_name,
                "dense_interpreter": d_lite.interpreter_name,
                "int8_scales": (None if not TFLITE_VARIANTS[name][1] else
                                "per-channel" if (per_channel if per_channel is not None
                                                  else not TFLITE_VARIANTS[name][0])
                                else "per-tensor"),
                "accuracy": _accuracy(t_out, y_test),
                "keras_accuracy": _accuracy(keras_logits, y_test),
                "max_abs_logit_diff": float(np.max(np.abs(t_out - keras_logits))),
                "dense_accuracy": _accuracy(d_out, y_test) if dense_given else None,
                "dense_keras_accuracy": _accuracy(dense_logits, y_test) if dense_given else None,
                "dense_max_abs_logit_diff": float(np.max(np.abs(d_out - dense_logits))),
                "latency_ms": {}, "dense_latency_ms": {},
            }
            for batch in latency_batches:
                xb = np.resize(x_test, (batch,) + x_test.shape[1:])
                entry["latency_ms"][str(batch)] = 1e3 * t_lite.latency(xb, repeats)
                entry["dense_latency_ms"][str(batch)] = 1e3 * d_lite.latency(xb, repeats)
            tflite_rows.append(entry)
        result = {
            "model": plain.name,
            "interpreters": interpreters,
            "num_threads": num_threads,
            "latency_repeats": repeats,
            "dense_reference": ("given dense model" if dense_given else
                                "the ticket with its zeros refilled from a fresh "
                                "initialization (sizes and latency only; no dense accuracy)"),
            "test_examples": int(len(x_test)),
            "keras_accuracy": _accuracy(keras_logits, y_test),
            "dense_keras_accuracy": _accuracy(dense_logits, y_test) if dense_given else None,
            "layers": layers,
            "nonzero_params": sum(r["nonzero"] for r in layers),
            "prunable_params": sum(r["weights"] for r in layers),
            "total_params": int(plain.count_params()),
            "dense_nonzero_params": sum(r["nonzero"] for r in dense_layers),
            "files": files,
            "tflite": tflite_rows,
        }
        result["weights_remaining"] = (result["nonzero_params"] / result["prunable_params"]
                                       if result["prunable_params"] else 1.0)
        if out_dir:
            report_lib.write_json(os.path.join(out_dir, "export_report.json"), result)
        return result
    finally:
        if not out_dir:
            shutil.rmtree(folder, ignore_errors=True)


def _kb(n):
    return f"{n / 1024:,.1f}"


def format_report(result):
    """The export report as printable tables (layers, files, TFLite)."""
    lines = [f"model {result['model']}: {result['nonzero_params']:,} of "
             f"{result['prunable_params']:,} prunable weights nonzero "
             f"({result['weights_remaining']:.1%}); {result['total_params']:,} parameters in all",
             f"dense reference: {result['dense_reference']}", ""]
    lines.append(f"{'layer':<24}{'weights':>10}{'nonzero':>10}{'remaining':>11}")
    for r in result["layers"]:
        lines.append(f"{r['layer']:<24}{r['weights']:>10,}{r['nonzero']:>10,}{r['remaining']:>11.1%}")
    lines.append("")
    lines.append(f"{'format':<20}{'KB':>10}{'dense KB':>10}{'ratio':>8}{'gz KB':>10}"
                 f"{'dense gz KB':>12}{'gz ratio':>9}{'vs dense float tflite':>23}")
    for r in result["files"]:
        vs = r.get("ratio_vs_dense_float_tflite")
        lines.append(f"{r['format']:<20}{_kb(r['bytes']):>10}{_kb(r['dense_bytes']):>10}"
                     f"{r['ratio']:>8.1%}{_kb(r['gzip_bytes']):>10}{_kb(r['dense_gzip_bytes']):>12}"
                     f"{r['gzip_ratio']:>9.1%}{'-' if vs is None else f'{vs:.1%}':>23}")
    if result["tflite"]:
        batches = list(result["tflite"][0]["latency_ms"])
        lines.append("")
        lines.append(f"TFLite interpreter(s): {' / '.join(result['interpreters'])}; "
                     f"{result['num_threads']} "
                     f"thread(s), median of {result['latency_repeats']} runs; Keras ticket "
                     f"accuracy {result['keras_accuracy']:.4f}"
                     + ("" if result["dense_keras_accuracy"] is None else
                        f", Keras dense {result['dense_keras_accuracy']:.4f}"))
        header = f"{'variant':<20}{'acc':>8}{'dense acc':>10}{'max|Δlogit|':>13}"
        for b in batches:
            header += f"{f'ms/b{b}':>10}{f'dense ms/b{b}':>14}"
        lines.append(header + "  int8 scales  interpreter")
        for r in result["tflite"]:
            dense_acc = "-" if r["dense_accuracy"] is None else f"{r['dense_accuracy']:.4f}"
            line = (f"{r['variant']:<20}{r['accuracy']:>8.4f}{dense_acc:>10}"
                    f"{r['max_abs_logit_diff']:>13.2e}")
            for b in batches:
                line += f"{r['latency_ms'][b]:>10.3f}{r['dense_latency_ms'][b]:>14.3f}"
            kind = r["interpreter"].split("(")[-1].split(";")[0].rstrip(")")
            lines.append(line + f"  {r.get('int8_scales') or '-':<11}  {kind}")
    return "\n".join(lines)
