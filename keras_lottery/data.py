"""Datasets from local sources only: MNIST-1D (generated) and Fashion-MNIST (IDX).

Every loader returns NumPy arrays `(x_train, y_train), (x_test, y_test)`;
`validation_split` carves a validation set off the end of the training set.
"""

import gzip
import logging
import os

import numpy as np

__all__ = [
    "FASHION_MNIST_DIRS",
    "DATASETS",
    "load_mnist1d",
    "load_fashion_mnist",
    "load_arrays",
    "split_validation",
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


def _find_fashion_dir(path):
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

    Looks in `path`, then $KERAS_LOTTERY_FASHION_MNIST, then
    /usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist`), then
    the Keras cache ~/.keras/datasets/fashion-mnist.

    Args:
      path: optional folder holding the four `*-ubyte.gz` files.
      normalize: scale pixels to float32 in [0, 1] (else uint8).

    Returns:
      ((x_train, y_train), (x_test, y_test)); x of shape (n, 28, 28, 1).

    Raises:
      FileNotFoundError: naming every folder searched and how to get the data.
    """
    folder = _find_fashion_dir(path)
    arrays = {k: _read_idx(os.path.join(folder, v)) for k, v in _FASHION_FILES.items()}
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


def split_validation(x, y, fraction=0.1):
    """Splits the last `fraction` of (x, y) off as a validation set.

    Returns:
      ((x_train, y_train), (x_val, y_val)).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}.")
    n_val = max(1, int(round(len(x) * fraction)))
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])
