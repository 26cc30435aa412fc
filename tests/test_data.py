import gzip
import os

import numpy as np
import pytest

from keras_lottery import data


def _write_idx(path, array):
    codes = {np.dtype("uint8"): 0x08, np.dtype(">f4"): 0x0D}
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
    monkeypatch.setenv("KERAS_LOTTERY_FASHION_MNIST", str(tmp_path / "mine"))
    with pytest.raises(FileNotFoundError) as err:
        data.load_fashion_mnist()
    message = str(err.value)
    assert "mine" in message and "nowhere" in message and "dataset-fashion-mnist" in message


def test_a_named_folder_that_does_not_exist_is_an_error_not_a_fallback(fake_fashion_dir, tmp_path,
                                                                     monkeypatch):
    """On the old code a wrong path silently loaded the system copy instead."""
    folder, _ = fake_fashion_dir
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (str(folder),))  # a copy that would be found
    typo = str(tmp_path / "fashoin")
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST folder .*fashoin does not exist"):
        data.load_fashion_mnist(path=typo)
    with pytest.raises(FileNotFoundError, match="fashoin does not exist"):
        data.load_local("fashion_mnist", data_dir=typo)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty lacks train-images-idx3-ubyte\.gz"):
        data.load_fashion_mnist(path=str(empty))
    # without a path the usual search still finds the copy
    (x, _), _ = data.load_fashion_mnist()
    assert x.shape == (20, 28, 28, 1)


def test_mnist1d_refuses_a_data_dir():
    with pytest.raises(ValueError, match="applies to fashion_mnist only"):
        data.load_local("mnist1d", num_samples=200, data_dir="/data")


def test_non_finite_values_in_a_loaded_file_are_refused(fake_fashion_dir):
    folder, arrays = fake_fashion_dir
    images = arrays["train-images-idx3-ubyte.gz"].astype(">f4")
    images[3, 4, 5] = np.nan
    images[7, 0, 0] = np.inf
    _write_idx(str(folder / "train-images-idx3-ubyte.gz"), images)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz holds 2 non-finite values "
                                         r"\(NaN or inf\), the first at index \(3, 4, 5\)"):
        data.load_fashion_mnist(path=str(folder))


def test_check_finite_names_the_array_and_skips_integers():
    data.check_finite({"x": np.ones((3, 2)), "y": np.arange(3), "none": None})
    x = np.ones((4, 3), np.float32)
    x[2, 1] = -np.inf
    with pytest.raises(ValueError, match=r"x_val\[0\] holds 1 non-finite value .*index \(2, 1\) \(-inf\)"):
        data.check_finite({"x_val": (x, np.zeros(4))})


def test_check_labelled_refuses_inputs_alone():
    import tensorflow as tf

    x, y = np.zeros((4, 3), np.float32), np.zeros(4)
    data.check_labelled(None)
    data.check_labelled((x, y))
    data.check_labelled(tf.data.Dataset.from_tensor_slices((x, y)).batch(2))
    for bad in (x, (x,), (x, None), [x], tf.data.Dataset.from_tensor_slices(x).batch(2)):
        with pytest.raises(ValueError, match=r"test_data .*(no labels|without labels).*\(x, y\)"):
            data.check_labelled(bad, "test_data")


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


# -- bad data given to the Python API ------------------------------------------------

def test_test_data_without_labels_is_refused_before_training():
    """On the old code every round reported test accuracy 0.0."""
    import keras_lottery as kl

    imp = kl.IMP(rounds=1, prune_rate=0.5)
    imp.epochs(per_round=1)
    x = np.zeros((8, 40), np.float32)
    with pytest.raises(ValueError, match="test_data is an array of inputs without labels"):
        imp.callbacks(test_data=x)
    with pytest.raises(ValueError, match="validation_data has 1 element"):
        imp.callbacks(validation_data=(x,))


def test_non_finite_test_or_validation_arrays_are_refused_before_training():
    """On the old code a NaN in test_data passed: every round's test accuracy was
    computed on NaN logits (argmax 0), silently."""
    import keras_lottery as kl

    imp = kl.IMP(rounds=1, prune_rate=0.5)
    imp.epochs(per_round=1)
    x, y = np.zeros((8, 40), np.float32), np.zeros(8, np.int64)
    bad = x.copy()
    bad[2, 5] = np.inf
    with pytest.raises(ValueError, match=r"test_data\[0\] holds 1 non-finite value .* "
                       r"index \(2, 5\) \(inf\)\. Its accuracies would be computed on NaN"):
        imp.callbacks(test_data=(bad, y))
    with pytest.raises(ValueError, match=r"validation_data\[0\]\['a'\] holds 1 non-finite"):
        imp.callbacks(validation_data=({"a": bad}, y))
    imp.callbacks(test_data=(x, y), validation_data=[x, y])  # finite: accepted


def test_a_dataset_that_turns_non_finite_stops_the_run_keeping_finished_rounds(tmp_path):
    """Inputs become NaN in round 2 (a tf.data pipeline we cannot inspect up
    front): fit stops there with an error naming the round, rounds 0-1 stay in
    the report. On the old code fit 'succeeded' with NaN weights."""
    import json

    import tensorflow as tf
    from conftest import compile_model, small_mlp

    import keras_lottery as kl
    from keras_lottery.resume import NonFiniteLossError

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 40)).astype("float32")
    y = rng.integers(0, 10, 30)
    steps = 3

    def batch(i):
        scale = tf.where(i >= 2 * steps, np.float32(np.nan), np.float32(1.0))
        start = (i % steps) * 10
        return scale * tf.gather(x, tf.range(start, start + 10)), tf.gather(y, tf.range(start, start + 10))

    ds = tf.data.Dataset.counter().map(batch)
    imp = kl.IMP(rounds=3, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(0)))
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0, report_dir=str(tmp_path))
    # ReLU maps the NaN inputs to 0: the loss stays finite, fc1's kernel turns NaN
    with pytest.raises(NonFiniteLossError, match=r"weights .*fc1.*kernel.* became non-finite .* end of "
                                                 r"epoch 2 \(IMP round 2\), while the loss stayed finite"
                                                 r".*finished rounds' results are kept"):
        model.fit(ds, steps_per_epoch=steps, epochs=epochs, callbacks=callbacks, verbose=0)
    assert [r.round for r in imp.history] == [0, 1]
    report = json.loads((tmp_path / "imp_report.json").read_text())
    assert report["rounds_finished"] == 2
    assert all(np.isfinite(r["loss"]) for r in report["history"])


def test_a_diverging_loss_stops_the_run_at_that_batch():
    """An infinite sample weight makes batch 2's loss non-finite: the run stops
    one batch later with an error naming the epoch, the batch and the round."""
    import tensorflow as tf
    from conftest import compile_model, small_mlp

    import keras_lottery as kl
    from keras_lottery.resume import NonFiniteLossError

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 40)).astype("float32")
    y = rng.integers(0, 10, 40)
    w = np.ones(40, np.float32)
    w[25] = np.inf  # batch 2 of epoch 0 (batches of 10)
    ds = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(10)
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(0)))
    epochs = imp.epochs(per_round=1)
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf) at epoch 0, batch 2 \(IMP round 0\)"):
        model.fit(ds, epochs=epochs, callbacks=imp.callbacks(verbose=0), verbose=0)
    assert imp.history == []
