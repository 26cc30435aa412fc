import gzip
import os

import numpy as np
import pytest

from keras_lottery import data


def _write_idx(path, array):
    codes = {np.dtype("uint8"): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture
def fake_fashion_dir(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 5, dtype=np.uint8),
    }
    for name, array in arrays.items():
        _write_idx(str(tmp_path / name), array)
    return tmp_path, arrays


def test_mnist1d_is_generated_locally_and_keeps_numpy_state():
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    (x, y), (xt, yt) = data.load_mnist1d(num_samples=500)
    assert np.random.rand() == expected_next, "loading must not reseed the caller's RNG"
    assert x.shape == (400, 40) and xt.shape == (100, 40)
    assert x.dtype == np.float32 and set(np.unique(y)) <= set(range(10))
    (x2, _), _ = data.load_mnist1d(num_samples=500)
    assert np.array_equal(x, x2)


def test_fashion_mnist_reads_idx_files_from_a_named_folder(fake_fashion_dir):
    folder, arrays = fake_fashion_dir
    (x, y), (xt, yt) = data.load_fashion_mnist(path=str(folder))
    assert x.shape == (20, 28, 28, 1) and xt.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(x[..., 0] * 255.0, arrays["train-images-idx3-ubyte.gz"], atol=1e-3)
    assert np.array_equal(yt, arrays["t10k-labels-idx1-ubyte.gz"])
    (raw, _), _ = data.load_fashion_mnist(path=str(folder), normalize=False)
    assert raw.dtype == np.uint8


def test_missing_fashion_mnist_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delenv("KERAS_LOTTERY_FASHION_MNIST", raising=False)
    with pytest.raises(FileNotFoundError) as err:
        data.load_fashion_mnist(path=str(tmp_path / "mine"))
    message = str(err.value)
    assert "mine" in message and "nowhere" in message and "dataset-fashion-mnist" in message


def test_corrupt_idx_file_is_reported(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        data._read_idx(str(path))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_has_the_real_shapes():
    (x, y), (xt, yt) = data.load_fashion_mnist()
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert float(x.max()) <= 1.0 and set(np.unique(y)) == set(range(10))


def test_unknown_dataset_and_bad_split_are_refused():
    with pytest.raises(ValueError, match="mnist1d"):
        data.load_arrays("imagenet")
    with pytest.raises(ValueError, match="fraction"):
        data.split_validation(np.zeros(4), np.zeros(4), 1.5)
