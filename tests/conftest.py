"""Test setup: tf_keras as tf.keras, quiet TF logs, 2 logical CPU devices.

The CPU is split into two logical devices before TensorFlow initializes, so
MirroredStrategy tests run on any machine; single-device code uses /CPU:0.
"""

import contextlib
import importlib.util
import os
import pathlib

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # already initialized by an earlier import
    pass

from keras_lottery._keras import keras  # noqa: E402


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the 2 logical CPUs, shared by every test.

    TensorFlow 2.21 reuses collective instance keys across MirroredStrategy
    objects on the same devices: a second strategy in the same process fails
    with "Shape mismatch in the collective instance 100" once the first one
    has run a step. So every in-process test shares this one.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.skip("needs the CPU split into 2 logical devices (conftest)")
    return tf.distribute.MirroredStrategy(devices)


def make_tiny_data():
    """A small, learnable 10-class problem on 40 features (MNIST-1D shaped).

    Returns ((x_train, y_train), (x_val, y_val), (x_test, y_test)) with 240,
    60 and 60 examples.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(360, 40)).astype("float32")
    w = rng.normal(size=(40, 10)).astype("float32")
    y = np.argmax(x @ w, axis=1).astype("int64")
    return (x[:240], y[:240]), (x[240:300], y[240:300]), (x[300:], y[300:])


@pytest.fixture
def tiny_data():
    """`make_tiny_data()` for one test."""
    return make_tiny_data()


def small_mlp(seed=0, input_dim=40, hidden=(32, 16), classes=10):
    """A tf_keras MLP small enough for fast tests."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_dim,))
    x = inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{i + 1}")(x)
    outputs = keras.layers.Dense(classes, name="output")(x)
    return keras.Model(inputs, outputs)


def compile_model(model, optimizer=None):
    model.compile(
        optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ["accuracy"],
    )
    return model


def check_nadam_resume_refused(x, y, folder, strategy=None):
    """A resumable IMP run with the current-API Nadam is refused before its first
    step (under `strategy` when given); the same run with legacy Nadam trains."""
    import keras_lottery as kl

    for optimizer, refused in ((keras.optimizers.Nadam, True), (keras.optimizers.legacy.Nadam, False)):
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            imp = kl.IMP(rounds=1, prune_rate=0.5)
            model = imp.wrap(small_mlp(0))
            model.compile(optimizer(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        epochs = imp.epochs(per_round=1)
        callbacks = imp.callbacks(verbose=0, resume_dir=os.path.join(folder, optimizer.__module__))
        if refused:
            with pytest.raises(ValueError, match="legacy.Nadam"):
                model.fit(x, y, batch_size=40, epochs=epochs, callbacks=callbacks, verbose=0)
            assert int(model.optimizer.iterations.numpy()) == 0
        else:
            model.fit(x, y, batch_size=40, epochs=epochs, callbacks=callbacks, verbose=0)
            assert len(imp.history) == 2


ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative_path, name=None):
    """Imports a runnable script of the repository (bench/, examples/) as a module.

    Args:
      relative_path: the script's path from the repository root, e.g. "bench/zoo.py".
      name: the module name (default: the file's stem).
    """
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snapshot(folder):
    """relative path -> bytes of every file under `folder`."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            full = os.path.join(d, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, folder)] = fh.read()
    return out
