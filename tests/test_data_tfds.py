"""data.load: the real tfds path under tfds.testing.mock_data, and the offline fallbacks."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from keras_lottery import data

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(autouse=True)
def _fresh_tfds_attempts():
    data._TFDS_FAILED.clear()  # each test sees tfds tried afresh
    yield
    data._TFDS_FAILED.clear()


def test_tfds_load_gives_a_batched_prefetched_normalized_pipeline():
    with tfds.testing.mock_data(num_examples=50):
        ds, info = data.load("fashion_mnist", split="train", batch_size=16, with_info=True)
        batches = list(ds)
    assert info.source == "tfds"
    assert info.input_shape == (28, 28, 1) and info.num_classes == 10
    assert [int(b[0].shape[0]) for b in batches] == [16, 16, 16, 2]
    x, y = batches[0]
    assert x.dtype == tf.float32 and y.dtype == tf.int64
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert ds.element_spec[0].shape.as_list() == [None, 28, 28, 1]
    assert "Prefetch" in type(ds).__name__


def test_tfds_pipeline_trains_a_model():
    from keras_lottery._keras import keras

    with tfds.testing.mock_data(num_examples=32):
        ds = data.load("mnist", split="train[:50%]", batch_size=8)
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_no_prepared_copy_falls_back_to_local_fashion_mnist(tmp_path, caplog):
    try:
        data._find_fashion_dir(None)
    except FileNotFoundError:
        pytest.skip("no local Fashion-MNIST IDX files on this machine")
    # A real tfds.load on an empty data_dir, download off: no prepared copy.
    with caplog.at_level(logging.WARNING, logger="keras_lottery"):
        ds, info = data.load("fashion_mnist", split="test[:100]", batch_size=32,
                             data_dir=str(tmp_path), download=False, with_info=True)
    assert "no prepared copy" in caplog.text and "using local Fashion-MNIST" in caplog.text
    assert info.source.startswith("local Fashion-MNIST") and info.num_examples == 100
    x, y = next(iter(ds))
    assert tuple(x.shape) == (32, 28, 28, 1) and x.dtype == tf.float32


def test_offline_download_error_becomes_a_log_line_not_a_traceback(monkeypatch, caplog):
    # What tfds 4.9.10 raises here when it tries to download without network.
    def offline(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'")

    monkeypatch.setattr(tfds, "load", offline)
    with caplog.at_level(logging.WARNING, logger="keras_lottery"):
        ds, info = data.load("fashion_mnist", split="train[:1%]", batch_size=None, with_info=True)
    assert "no prepared copy" in caplog.text and "no network" in caplog.text
    assert info.num_examples == 600 and ds.element_spec[0].shape.as_list() == [28, 28, 1]
    # the next split of the same dataset does not try tfds again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="keras_lottery"):
        data.load("fashion_mnist", split="test[:1%]", batch_size=None)
    assert "already failed in this process" in caplog.text
    # no local source: a clear error that says what to do, not the raw ModuleNotFoundError
    with pytest.raises(data.DataUnavailableError, match="no prepared copy.*tfds build cifar10"):
        data.load("cifar10")


def test_mnist1d_is_generated_locally_and_splits_slice():
    ds, info = data.load("mnist1d", split="train[:25%]", batch_size=50, num_samples=400, with_info=True)
    assert info.num_examples == 80 and info.input_shape == (40,)
    assert sum(int(b[0].shape[0]) for b in ds) == 80
    with pytest.raises(ValueError, match="Split .validation."):
        data.load("mnist1d", split="validation")


def test_unknown_names_and_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="no dataset 'no_such_set'"):
        data.load("no_such_set")
    with pytest.raises(ValueError, match="source"):
        data.load("mnist1d", source="internet")
    with pytest.raises(ValueError, match="batch_size"):
        data.load("mnist1d", batch_size=0)
