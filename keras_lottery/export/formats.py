"""Stripping a ticket and writing it as `.keras` / `.h5` / SavedModel, atomically.

Every writer here puts its output under a temporary name beside the target
and renames it into place, so an error never leaves a half-written file or
folder. The `.keras` / `.h5` writers check the free disk space first and turn
a full disk into an `ExportError` naming the file.
"""

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from keras_lottery import report as report_lib
from keras_lottery._keras import check_tf_keras_model, keras
from keras_lottery.wrap import (
    is_prunable,
    iter_layers,
    layer_prunable_weights,
    pruned_layers,
    strip_model,
)

logger = logging.getLogger("keras_lottery")

# A plain model counts as a pruned ticket when at least this fraction of one of
# its prunable weight tensors are exact zeros (a trained dense net has none).
# Per tensor: a large table left dense (e.g. an Embedding kept out of pruning
# by layer_filter) must not hide a pruned head.
MIN_ZERO_FRACTION = 0.01

# Free space asked for beyond a model's weight bytes before a .keras / .h5
# write: the files hold the architecture and metadata besides the weights.
_SPACE_MARGIN_BYTES = 256 << 10
_SPACE_FACTOR = 1.1


class ExportError(OSError, ValueError):
    """An export could not be written or read (full disk, truncated model file).

    An `OSError` with `errno` set where there is one (ENOSPC for a full
    disk), and a `ValueError`, so callers that report bad input report it too.
    """

    def __init__(self, message, errno_=None):
        super().__init__(message)
        self.errno = errno_


# -- stripping ------------------------------------------------------------------


def _plain_layers(model):
    """The layers of `model` and of its nested models, in order, the nested models left out."""
    return [layer for layer in iter_layers(model) if not isinstance(layer, keras.Model)]


def prunable_kernels(model):
    """(layer name, kernel ndarray) for each prunable layer of a plain model with a `kernel`.

    The layers whose kernel TFLite stores as an op's filter (Dense, Conv);
    `prunable_arrays` has every pruned weight.
    """
    return [(layer.name, layer.kernel.numpy()) for layer in _plain_layers(model)
            if is_prunable(layer) and getattr(layer, "kernel", None) is not None]


def prunable_arrays(model):
    """(layer name, [ndarray, ...]) for each layer of a plain model that IMP prunes.

    Every weight a pruning wrapper masks (`keras_lottery.wrap.layer_prunable_weights`):
    kernels, Embedding tables, depthwise kernels, MultiHeadAttention's four
    kernels, recurrent kernels; so counts read from a stripped ticket are
    the masks' counts.
    """
    result = []
    for layer in _plain_layers(model):
        weights = layer_prunable_weights(layer)
        if weights:
            result.append((layer.name, [w.numpy() for w in weights]))
    return result


def is_pruned(model):
    """True if `model` holds a ticket: wrapped with some mask < 1, or plain with zeros.

    A wrapped model counts when any mask has pruned something; a plain
    (stripped) model when at least 1% (`MIN_ZERO_FRACTION`) of the weights of
    one of its prunable tensors (kernels, Embedding tables, depthwise and
    recurrent kernels) are exact zeros.

    Args:
      model: a tf_keras model, wrapped or plain.

    Returns:
      bool.
    """
    wrappers = pruned_layers(model)
    if wrappers:
        return any(float(tf.reduce_min(mask)) < 0.5
                   for w in wrappers for _, mask, _ in w.pruning_vars)
    arrays = [a for _, layer_arrays in prunable_arrays(model) for a in layer_arrays]
    return any(a.size and int((a == 0).sum()) / a.size >= MIN_ZERO_FRACTION for a in arrays)


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

    Example:
      >>> plain = kl.export.strip(model)   # doctest: +SKIP
    """
    check_tf_keras_model(model)
    wrapped = bool(pruned_layers(model))
    if not is_pruned(model):
        state = ("is wrapped for pruning but no round has pruned anything yet "
                 "(every mask is all ones)" if wrapped else
                 "was never wrapped or pruned (no tfmot wrappers, and no prunable "
                 f"weight tensor with {MIN_ZERO_FRACTION:.0%} or more zeros)")
        if not allow_dense:
            raise ValueError(
                f"The model {model.name!r} {state}, so there is no ticket to export. "
                "Export the model returned by IMP.wrap after its fit (or a run's "
                "wrapped_model.keras), or pass allow_dense=True (CLI: --allow-dense) "
                "to export it as a dense model.")
        logger.warning("Exporting %r as a dense model: it %s.", model.name, state)
    if not wrapped:
        return without_training_state(model)
    return strip_model(model)


def without_training_state(model):
    """An uncompiled copy with the same weights, so no optimizer state is exported."""
    if getattr(model, "optimizer", None) is None:
        return model
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        return model  # subclassed: cannot clone; exported as it is
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


# -- atomic file and folder writing ------------------------------------------------


def _missing_folders(path):
    """The folders above `path` that do not exist yet (deepest first), and the nearest that does.

    The nearest existing entry may be a file (`check_out_path` refuses it).
    """
    folder = os.path.dirname(os.path.abspath(path))
    missing = []
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing, folder


def check_out_path(path):
    """`path` as a string; refuses an empty path, or a file where a folder above it goes.

    Nothing is created: the writers create the missing folders, and remove
    them again when the write fails (`_folders_for`).
    """
    path = os.fspath(path)
    if not path:
        raise ValueError("The output path is empty: name a file or folder to write.")
    _, folder = _missing_folders(path)
    if not os.path.isdir(folder):
        raise ValueError(f"Cannot write {path}: {folder} is a file, not a folder.")
    return path


@contextlib.contextmanager
def _folders_for(path):
    """Creates the missing folders above `path`; removes them again if the block fails.

    A failed export leaves no empty folders behind (only the ones it made,
    and only while they are still empty).
    """
    missing, _ = _missing_folders(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        yield
    except BaseException:
        for made in missing:  # deepest first
            try:
                os.rmdir(made)
            except OSError:
                break  # not empty (something else wrote there): keep it and those above
        raise


def write_file_atomically(path, write):
    """Calls `write(tmp_path)` then renames tmp_path to `path` (same folder)."""
    path = check_out_path(path)

    def checked_write(tmp):
        write(tmp)
        if os.path.isdir(path):
            raise ValueError(f"Cannot write file {path}: a folder of that name exists.")

    with _folders_for(path):
        return report_lib.atomic_path(path, checked_write)


def recover_interrupted_dir(path):
    """Cleans up what a killed `write_dir_atomically` of `path` left beside it.

    A process killed while it wrote leaves its temporary folder
    (`.tmp-<name>-XXXXXXXX`); one killed between its two renames also left
    the previous folder renamed aside (`.old-<name>-XXXXXXXX`) and no
    `path`: that folder is renamed back. Only names of exactly these forms
    are touched. Do not run two writes of the same folder at once.

    Returns:
      The leftover names removed or restored.
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        return []
    form = re.compile(r"^\.(tmp|old)-" + re.escape(name) + r"-[a-z0-9_]{8}$")
    leftovers = sorted(n for n in os.listdir(folder)
                       if form.match(n) and os.path.isdir(os.path.join(folder, n))
                       and not os.path.islink(os.path.join(folder, n)))
    olds = [n for n in leftovers if n.startswith(".old-")]
    if olds and not os.path.lexists(os.path.join(folder, name)):
        os.rename(os.path.join(folder, olds[0]), os.path.join(folder, name))
        logger.warning("%s: restored the previous content from %s (a write of it was "
                       "interrupted between its renames).", path, olds[0])
    for leftover in leftovers:
        if os.path.isdir(os.path.join(folder, leftover)):
            shutil.rmtree(os.path.join(folder, leftover), ignore_errors=True)
    return leftovers


def write_dir_atomically(path, write):
    """Calls `write(tmp_dir)` then moves tmp_dir to `path`, replacing an old one.

    `tmp_dir` is a fresh empty folder beside `path`. The old folder (if any)
    is renamed aside, the new one renamed into place, and the old one
    removed; on an error in `write` the old folder is untouched and the
    temporary one removed, so `path` holds either the old or the new
    content, never a mix. What a killed earlier write left beside `path` is
    cleaned up first (`recover_interrupted_dir`).
    """
    path = check_out_path(path).rstrip(os.sep) or path
    recover_interrupted_dir(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"Cannot write folder {path}: a file of that name exists.")
    with _folders_for(path):
        return _write_dir(path, write)


def _write_dir(path, write):
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


def weight_bytes(model):
    """Bytes of all of `model`'s weights as stored (dtype sizes)."""
    return int(sum(np.prod(w.shape) * w.dtype.size for w in model.weights))


def check_free_space(path, needed):
    """Raises ExportError if the folder of `path` has less than `needed` bytes free."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)  # the nearest folder that exists
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ExportError(
            f"Not enough free disk space to write {path}: about {needed / 1e6:,.1f} MB "
            f"needed, {free / 1e6:,.1f} MB free in {folder}. Free some space or "
            "choose another output folder; nothing was written.", errno.ENOSPC)


def _disk_error(err, path):
    if isinstance(err, ExportError):
        return err
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or \
        "No space left" in str(err)
    if not full:
        return None
    return ExportError(f"The disk filled up while writing {path} ({type(err).__name__}: no "
                       "space left on device). Free some "
                       "space or choose another output folder; the partial file was "
                       "removed.", errno.ENOSPC)


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
      ExportError: (an `OSError`) when the disk has too little free space
        or fills up; nothing is left at `path`'s temporary name.

    Example:
      >>> kl.export.keras_file(model, "ticket.keras")   # doctest: +SKIP
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".keras", ".h5"):
        raise ValueError(f"Keras file {path!r} must end in .keras or .h5 "
                         "(for a SavedModel folder use export.saved_model).")
    return save_keras_file(strip(model, allow_dense), path)


def save_keras_file(plain, path):
    """Writes a plain model to `path` (.keras or .h5), atomically, space checked."""
    ext = os.path.splitext(path)[1].lower()
    check_out_path(path)
    check_free_space(path, int(weight_bytes(plain) * _SPACE_FACTOR) + _SPACE_MARGIN_BYTES)
    try:
        # the temporary path ends with the file's own name, so Keras sees its extension
        return write_file_atomically(
            path, lambda tmp: plain.save(tmp, save_format="h5" if ext == ".h5" else None))
    except Exception as err:  # h5py / zipfile report a full disk in their own ways
        disk = _disk_error(err, path)
        if disk is None:
            raise
        raise disk from err


def serving_function(plain, batch_size=None):
    """A tf.function over the model's inputs returning {output name: tensor}.

    The batch dimension is free unless `batch_size` is given; the inputs are
    named after the Keras input tensors.
    """
    specs = [tf.TensorSpec((batch_size,) + tuple(t.shape[1:]), t.dtype, name=t.name.split(":")[0])
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

    Raises:
      ValueError: a model without a ticket, or a file where the folder goes.
      ExportError: the disk filled up (the old folder, if any, stays).

    Example:
      >>> kl.export.saved_model(model, "ticket_savedmodel")       # doctest: +SKIP
      >>> serve = tf.saved_model.load("ticket_savedmodel").signatures["serving_default"]  # doctest: +SKIP
    """
    return save_saved_model(strip(model, allow_dense), path)


def save_saved_model(plain, path):
    """Writes a plain model as a SavedModel folder at `path`, atomically."""
    serve = serving_function(plain)
    module = tf.Module()
    module.model = plain
    module.serve = serve

    def write(tmp):
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve})

    try:
        return write_dir_atomically(path, write)
    except Exception as err:
        disk = _disk_error(err, path)
        if disk is None:
            raise
        raise disk from err


def file_size(path):
    """Bytes of a file, or of all files in a folder (a SavedModel)."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)
