"""Datasets: tfds pipelines, with MNIST-1D (generated) and Fashion-MNIST (IDX) locally.

`load(name, split=..., batch_size=...)` returns a batched, prefetched
`tf.data` pipeline through `tfds.load`, falling back on the local sources when
tfds has no prepared copy and cannot download one. The array loaders return
NumPy arrays `(x_train, y_train), (x_test, y_test)`; `split_validation`
carves a validation set off the end of the training set.
"""

import dataclasses
import gzip
import hashlib
import logging
import os
import re

import numpy as np

from keras_lottery import _keras  # noqa: F401  (selects tf_keras before TensorFlow loads)
import tensorflow as tf  # noqa: E402

__all__ = [
    "DataInfo",
    "DataUnavailableError",
    "load",
    "FASHION_MNIST_DIRS",
    "DATASETS",
    "load_mnist1d",
    "load_fashion_mnist",
    "load_arrays",
    "load_local",
    "split_validation",
    "check_finite",
    "check_labelled",
    "data_fingerprint",
]

logger = logging.getLogger("keras_lottery")

FASHION_MNIST_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"),
)
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def load_mnist1d(num_samples=5000, seed=42, train_split=0.8):
    """MNIST-1D, generated locally by the `mnist1d` package (no download).

    Args:
      num_samples: total examples (train + test), 10 classes of length-40 signals.
      seed: generation seed (the package's default is 42).
      train_split: fraction of examples in the training set.

    Returns:
      ((x_train, y_train), (x_test, y_test)); x float32 of shape (n, 40),
      y int64 labels 0-9.

    Raises:
      ImportError: if the `mnist1d` package is not installed.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError("MNIST-1D needs the `mnist1d` package: pip install mnist1d") from err
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    args.train_split = float(train_split)
    # make_dataset reseeds NumPy's global generator; keep the caller's state.
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    return ((data["x"].astype(np.float32), data["y"].astype(np.int64)),
            (data["x_test"].astype(np.float32), data["y_test"].astype(np.int64)))


def _read_idx(path):
    """Reads a (gzipped) IDX file into a NumPy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    dtype = dtypes.get(raw[2])
    if dtype is None:
        raise ValueError(f"{path}: unknown IDX data type 0x{raw[2]:02x}.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values, found {data.size}.")
    return data.reshape(shape)


def _find_fashion_dir(path, strict=True):
    """The folder holding the four IDX files.

    A `path` given with `strict` must be that folder (no fallback on another
    copy: the user named this one); otherwise `path`, then
    $KERAS_LOTTERY_FASHION_MNIST, then `FASHION_MNIST_DIRS` are searched.
    """
    if path and strict:
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"Fashion-MNIST folder {path} does not exist{' (it is a file)' if os.path.exists(path) else ''}. "
                f"Pass the folder that holds {', '.join(_FASHION_FILES.values())} "
                "(--data-dir / path=...), or leave it out to use a system copy "
                f"({', '.join(FASHION_MNIST_DIRS)}).")
        missing = [n for n in _FASHION_FILES.values() if not os.path.exists(os.path.join(path, n))]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST folder {path} lacks {', '.join(missing)}. Copy the four "
                "IDX .gz files there, or pass the folder that holds them (--data-dir / "
                "path=...), or leave it out to use a system copy.")
        return path
    candidates = [path] if path else []
    candidates += [os.environ["KERAS_LOTTERY_FASHION_MNIST"]] if os.environ.get("KERAS_LOTTERY_FASHION_MNIST") else []
    candidates += list(FASHION_MNIST_DIRS)
    for folder in candidates:
        if all(os.path.exists(os.path.join(folder, name)) for name in _FASHION_FILES.values()):
            return folder
    raise FileNotFoundError(
        "Fashion-MNIST not found. Looked for "
        f"{', '.join(_FASHION_FILES.values())} in: {', '.join(candidates)}. "
        "Install the Debian package (apt-get install dataset-fashion-mnist), "
        "copy the four IDX .gz files into ~/.keras/datasets/fashion-mnist/, or "
        "pass the folder that holds them (path=... / --data-dir).")


def load_fashion_mnist(path=None, normalize=True):
    """Fashion-MNIST from local IDX files.

    Reads the folder `path` when given (and only it: a folder that does not
    exist or lacks a file is an error, never a silent fallback on another
    copy); otherwise looks in $KERAS_LOTTERY_FASHION_MNIST, then
    /usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist`), then
    the Keras cache ~/.keras/datasets/fashion-mnist.

    Args:
      path: optional folder holding the four `*-ubyte.gz` files.
      normalize: scale pixels to float32 in [0, 1] (else uint8).

    Returns:
      ((x_train, y_train), (x_test, y_test)); x of shape (n, 28, 28, 1).

    Raises:
      FileNotFoundError: naming `path` when it is not a folder with the four
        files, else every folder searched, and how to get the data.
      ValueError: for a damaged IDX file or one holding NaN / inf values.
    """
    folder = _find_fashion_dir(path)
    arrays = {k: _read_idx(os.path.join(folder, v)) for k, v in _FASHION_FILES.items()}
    check_finite({os.path.join(folder, _FASHION_FILES[k]): v for k, v in arrays.items()})
    x_train, x_test = arrays["x_train"][..., None], arrays["x_test"][..., None]
    if normalize:
        x_train = x_train.astype(np.float32) / 255.0
        x_test = x_test.astype(np.float32) / 255.0
    logger.info("Fashion-MNIST loaded from %s", folder)
    return ((x_train, arrays["y_train"].astype(np.int64)),
            (x_test, arrays["y_test"].astype(np.int64)))


DATASETS = {
    "mnist1d": load_mnist1d,
    "fashion_mnist": load_fashion_mnist,
}


def load_arrays(name, **kwargs):
    """Loads a local dataset by name ("mnist1d" or "fashion_mnist") as arrays.

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    key = name.replace("-", "_").lower()
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    return DATASETS[key](**kwargs)


def load_local(name, num_samples=5000, data_dir=None):
    """A local dataset by name with the settings the CLI exposes.

    Args:
      name: "mnist1d" (generated, `num_samples` examples, seed 42) or
        "fashion_mnist" (IDX files, searched as `load_fashion_mnist` does,
        starting with `data_dir`).
      num_samples: MNIST-1D examples, train + test.
      data_dir: optional Fashion-MNIST folder.

    Returns:
      ((x_train, y_train), (x_test, y_test)).

    Raises:
      ValueError: for an unknown name, a `data_dir` with "mnist1d" (it is
        generated, not read), or data holding NaN / inf values.
      FileNotFoundError: for a `data_dir` that is not a Fashion-MNIST folder.
    """
    if name == "mnist1d":
        if data_dir is not None:
            raise ValueError(f"data_dir {data_dir!r} applies to fashion_mnist only: MNIST-1D is "
                             "generated, not read. Drop --data-dir, or pass --dataset fashion_mnist.")
        (x, y), (xt, yt) = load_mnist1d(num_samples=num_samples, seed=42)
        check_finite({"MNIST-1D x_train": x, "MNIST-1D x_test": xt})
        return (x, y), (xt, yt)
    return load_arrays(name, path=data_dir)


def split_validation(x, y, fraction=0.1):
    """Splits the last `fraction` of (x, y) off as a validation set.

    Returns:
      ((x_train, y_train), (x_val, y_val)).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}.")
    n_val = max(1, int(round(len(x) * fraction)))
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def _named_leaves(value, name):
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _named_leaves(sub, f"{name}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, sub in enumerate(value):
            yield from _named_leaves(sub, f"{name}[{i}]")
    elif value is not None:
        yield name, value


def check_finite(arrays, effect="Training on it gives NaN weights"):
    """Raises if an array holds NaN or inf, naming it, the count and the first place.

    Args:
      arrays: dict name -> array (or a nest of arrays: dicts, lists, tuples).
        Integer and boolean arrays are always finite and skipped.
      effect: what such values would do, for the message.

    Raises:
      ValueError: naming the array, how many values are not finite, the index
        of the first one, and the fix.

    Example:
      >>> check_finite({"x_train": np.zeros((2, 3))})
      >>> check_finite({"x_train": np.array([1.0, np.nan])})
      Traceback (most recent call last):
      ...
      ValueError: x_train holds 1 non-finite value (NaN or inf), the first at index (1,) (nan). ...
    """
    for name, value in (pair for key, val in arrays.items() for pair in _named_leaves(val, key)):
        array = np.asarray(value)
        if array.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            count = int(bad.sum())
            raise ValueError(
                f"{name} holds {count} non-finite value{'s' if count > 1 else ''} (NaN or "
                f"inf), the first at index {first} ({array[first]}). {effect}: clean the "
                "data first (drop those examples, e.g. "
                "x[np.isfinite(x).reshape(len(x), -1).all(axis=1)], or impute them).")


def check_labelled(data, name="test_data"):
    """Raises if evaluation data has no labels (Keras would score it 0.0 silently).

    Args:
      data: None, an `(x, y)` / `(x, y, sample_weight)` tuple or list, or a
        `tf.data.Dataset` of such tuples. Other objects (generators,
        `keras.utils.Sequence`) cannot be inspected and are accepted.
      name: how the error calls it (e.g. "test_data").

    Raises:
      ValueError: for inputs alone (an array, a 1-tuple, `(x, None)`, a
        dataset of single elements), naming `name` and the fix.

    Example:
      >>> check_labelled((np.zeros((2, 3)), np.zeros(2)))
      >>> check_labelled(np.zeros((2, 3)))
      Traceback (most recent call last):
      ...
      ValueError: test_data is an array of inputs without labels: ...
    """
    fix = (f"pass {name}=(x, y) with the labels, or a dataset of (x, y) pairs "
           "(tf.data.Dataset.from_tensor_slices((x, y)) or ds.map(lambda x, y: (x, y))).")
    if data is None:
        return
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) >= 2):
            raise ValueError(f"{name} is a dataset of {spec} without labels: {fix}")
        return
    if isinstance(data, (tuple, list)):
        if len(data) < 2 or data[1] is None:
            raise ValueError(f"{name} has {len(data)} element(s) and no labels: {fix}")
        return
    if isinstance(data, (np.ndarray, tf.Tensor)) or hasattr(data, "shape"):
        raise ValueError(f"{name} is an array of inputs without labels: {fix}")


# -- tf.data pipelines through tensorflow-datasets, with local fallbacks -------

# tfds names (and aliases) with a local source to fall back on.
_LOCAL_SOURCES = {
    "fashion_mnist": ("fashion_mnist", "local Fashion-MNIST IDX files"),
    "mnist1d": ("mnist1d", "MNIST-1D generated by the mnist1d package"),
}
# names tfds does not know: always served locally.
_LOCAL_ONLY = ("mnist1d",)
# (name, data_dir, download) -> why tfds failed, so later splits of the same
# dataset fall back at once instead of retrying (and re-logging) the download.
_TFDS_FAILED = {}
SOURCES = ("auto", "tfds", "local")


class DataUnavailableError(FileNotFoundError):
    """A dataset could be loaded neither through tfds nor from a local source."""


@dataclasses.dataclass
class DataInfo:
    """What `load(..., with_info=True)` says about the pipeline it returned.

    Attributes:
      name: the dataset name as given.
      split: the split spec as given, e.g. "train[:90%]".
      source: "tfds" or a description of the local source used.
      input_shape: shape of one example, without the batch dimension.
      num_classes: number of label classes (None if unknown).
      num_examples: examples in the split (None if tfds does not say).
    """

    name: str
    split: str
    source: str
    input_shape: tuple
    num_classes: int = None
    num_examples: int = None


_SPLIT_RE = re.compile(r"^\s*(\w+)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")


def _slice_bounds(spec, n):
    """Parses a tfds-style split spec "train", "train[:90%]", "test[100:]" to (base, lo, hi)."""
    match = _SPLIT_RE.match(spec or "")
    if not match:
        raise ValueError(
            f"Cannot read split {spec!r}: use 'train', 'test' or a slice such as "
            "'train[:90%]', 'train[90%:]' or 'test[:1000]'.")
    base, lo, hi = match.groups()

    def bound(text, default):
        if text is None:
            return default
        if text.endswith("%"):
            return int(round(n * int(text[:-1]) / 100.0))
        return int(text)

    lo, hi = bound(lo, 0), bound(hi, n)
    lo, hi = (lo + n if lo < 0 else lo), (hi + n if hi < 0 else hi)
    return base, max(0, min(lo, n)), max(0, min(hi, n))


def _local_arrays(key, split, data_dir=None, normalize=True, num_samples=5000):
    base = _SPLIT_RE.match(split or "")
    if not base or base.group(1) not in ("train", "test"):
        raise ValueError(f"Split {split!r} of the local {key} source: use 'train' or 'test', "
                         "optionally sliced ('train[:90%]').")
    if key == "fashion_mnist":
        # data_dir is tfds' folder here: searched first, then the usual copies
        folder = _find_fashion_dir(data_dir, strict=False)
        (x_tr, y_tr), (x_te, y_te) = load_fashion_mnist(path=folder, normalize=normalize)
        where = f"local Fashion-MNIST IDX files in {folder}"
    else:
        (x_tr, y_tr), (x_te, y_te) = load_mnist1d(num_samples=num_samples)
        where = "MNIST-1D generated by the mnist1d package"
    splits = {"train": (x_tr, y_tr), "test": (x_te, y_te)}
    x, y = splits[base.group(1)]
    _, lo, hi = _slice_bounds(split, len(x))
    return x[lo:hi], y[lo:hi], where


def _finish_pipeline(ds, batch_size, shuffle, shuffle_buffer, seed, cache):
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if batch_size:
        ds = ds.batch(int(batch_size))
    return ds.prefetch(tf.data.AUTOTUNE)


def _tfds_pipeline(name, split, data_dir, download, normalize, shuffle):
    import tensorflow_datasets as tfds

    ds, info = tfds.load(name, split=split, data_dir=data_dir, download=download,
                         as_supervised=True, with_info=True, shuffle_files=bool(shuffle))
    x_spec, y_spec = ds.element_spec
    label_feature = info.features[info.supervised_keys[1]] if info.supervised_keys else None
    num_classes = getattr(label_feature, "num_classes", None)

    def convert(x, y):
        if normalize and x.dtype.is_integer:
            x = tf.cast(x, tf.float32) / 255.0
        return x, tf.cast(y, tf.int64)

    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    try:
        num_examples = int(info.splits[split].num_examples)
    except Exception:  # not generated (mock data) or an unusual split spec
        num_examples = None
    return ds, DataInfo(name, split, "tfds", tuple(x_spec.shape.as_list()), num_classes, num_examples)


def load(name, split="train", batch_size=32, data_dir=None, source="auto", download=True,
         shuffle=None, shuffle_buffer=10000, seed=0, normalize=True, cache=True,
         with_info=False, num_samples=5000):
    """A batched, prefetched `tf.data` pipeline of `(x, y)` for a dataset name.

    Names tfds knows ("fashion_mnist", "mnist", "cifar10", ...) are read with
    `tfds.load` (a prepared copy in `data_dir`, or a download). Where that
    fails — no prepared copy and no network — "fashion_mnist" falls back on
    the local IDX files (see `load_fashion_mnist`) with a log line saying so;
    "mnist1d" is always generated locally. Images are scaled to float32 in
    [0, 1] and labels cast to int64.

    Args:
      name: a tfds dataset name, or "mnist1d".
      split: "train", "test" or a tfds slice such as "train[:90%]",
        "train[90%:]", "test[:1000]" (local sources understand these too).
      batch_size: examples per batch; None for an unbatched dataset.
      data_dir: tfds data folder (default ~/tensorflow_datasets); for the
        local Fashion-MNIST source, the folder holding the IDX files.
      source: "auto" (tfds, then the local fallback; once tfds failed for a
        dataset, later calls in the process go straight to the fallback),
        "tfds" (always tfds, no fallback) or "local" (never call tfds).
      download: let tfds download a missing dataset.
      shuffle: shuffle examples; None shuffles only splits of "train".
      shuffle_buffer: size of the shuffle buffer.
      seed: shuffle seed.
      normalize: scale integer images to float32 in [0, 1].
      cache: cache decoded examples in memory after the first pass.
      with_info: also return a `DataInfo` (source, input shape, classes).
      num_samples: MNIST-1D examples (train + test) to generate.

    Returns:
      The `tf.data.Dataset`, or `(dataset, DataInfo)` with `with_info=True`.

    Raises:
      ValueError: for an unknown source, a name tfds does not know and no
        local source serves, or a split the local source cannot read.
      DataUnavailableError: (a FileNotFoundError) when tfds cannot provide
        the data and there is no local fallback, saying what to do.

    Example:
      >>> train = load("fashion_mnist", split="train[:90%]", batch_size=60)  # doctest: +SKIP
      >>> val = load("fashion_mnist", split="train[90%:]", batch_size=256)   # doctest: +SKIP
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}.")
    key = name.replace("-", "_").lower()
    if shuffle is None:
        shuffle = (split or "").strip().startswith("train")
    local = _LOCAL_SOURCES.get(key)
    use_tfds = source == "tfds" or (source == "auto" and key not in _LOCAL_ONLY)
    if source == "tfds" and key in _LOCAL_ONLY:
        raise ValueError(f"{name!r} is not a tfds dataset; use source='local' or 'auto'.")
    if source == "local" and local is None:
        raise ValueError(f"No local source for {name!r}; local sources: {sorted(_LOCAL_SOURCES)}. "
                         "Use source='auto' or 'tfds'.")
    info = None
    failed_key = (key, data_dir, bool(download))
    if use_tfds and source == "auto" and failed_key in _TFDS_FAILED:
        logger.info("tfds.load(%r) already failed in this process (%s); using %s",
                    name, _TFDS_FAILED[failed_key], local[1])
        use_tfds = False
    if use_tfds:
        try:
            import tensorflow_datasets as tfds
        except ImportError as err:
            if local is None or source == "tfds":
                raise ImportError(f"Loading {name!r} needs tensorflow-datasets: "
                                  "pip install tensorflow-datasets") from err
            logger.warning("tensorflow-datasets is not installed; using %s", local[1])
        else:
            try:
                ds, info = _tfds_pipeline(name, split, data_dir, download, normalize, shuffle)
            except tfds.core.registered.DatasetNotFoundError:
                if local is None:
                    raise ValueError(
                        f"tfds knows no dataset {name!r} and there is no local source for it "
                        f"(local: {sorted(_LOCAL_SOURCES)}); see `tfds.list_builders()`.") from None
            except Exception as err:  # tfds reports a missing copy in many ways
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
                if local is None or source == "tfds":
                    raise DataUnavailableError(
                        f"tfds.load({name!r}, split={split!r}) failed: no prepared copy in "
                        f"{where} and no network ({reason}). Prepare it where there is a "
                        f"network (`tfds build {name}`), copy the folder {name}/ into "
                        f"{where} (or pass data_dir=...), or use a local dataset "
                        f"({sorted(_LOCAL_SOURCES)}).") from None
                logger.warning("tfds.load(%r): no prepared copy in %s and no network (%s); "
                               "using %s", name, where, reason, local[1])
                _TFDS_FAILED[failed_key] = reason
    if info is None:
        x, y, where = _local_arrays(local[0], split, data_dir if key == "fashion_mnist" else None,
                                    normalize, num_samples)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        classes = int(y.max()) + 1 if len(y) else None
        num_classes = 10 if local[0] in ("fashion_mnist", "mnist1d") else classes
        info = DataInfo(name, split, where, tuple(x.shape[1:]), num_classes, len(x))
        shuffle_buffer = max(1, min(shuffle_buffer, len(x)))
        cache = False  # already in memory
    ds = _finish_pipeline(ds, batch_size, shuffle, shuffle_buffer, seed, cache)
    logger.info("%s[%s]: %s examples from %s", name, split,
                "?" if info.num_examples is None else info.num_examples, info.source)
    return (ds, info) if with_info else ds


def data_fingerprint(*arrays):
    """SHA-256 of the arrays' dtypes, shapes and bytes: a resumed run must train on the same data."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
