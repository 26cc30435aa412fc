"""WarmupStepDecay: values, serialization, and continuation after a rewind."""

import numpy as np
import pytest

from keras_lottery._keras import keras
from keras_lottery.lr_schedule import WarmupStepDecay
from keras_lottery.rewind import capture_optimizer_state, reset_optimizer


def _lr(schedule, step):
    return float(schedule(step))


def test_linear_warmup_then_step_decay():
    s = WarmupStepDecay(0.1, warmup_steps=10, boundaries=[20, 30], gamma=0.1)
    expected = [0.1 * (i + 1) / 10 for i in range(10)]
    np.testing.assert_allclose([_lr(s, i) for i in range(10)], expected, rtol=1e-6)
    assert _lr(s, 9) == pytest.approx(0.1)  # full rate at the end of warm-up
    assert _lr(s, 19) == pytest.approx(0.1)
    assert _lr(s, 20) == pytest.approx(0.01)
    assert _lr(s, 29) == pytest.approx(0.01)
    assert _lr(s, 30) == pytest.approx(0.001)
    assert _lr(s, 10_000) == pytest.approx(0.001)


def test_no_warmup_no_boundaries_is_constant():
    s = WarmupStepDecay(0.05)
    assert [_lr(s, i) for i in (0, 1, 1000)] == pytest.approx([0.05] * 3)


def test_config_round_trip_and_keras_serialization():
    s = WarmupStepDecay(0.2, warmup_steps=5, boundaries=[7, 9], gamma=0.5, name="lr")
    again = WarmupStepDecay.from_config(s.get_config())
    assert again.get_config() == s.get_config()
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert isinstance(restored, WarmupStepDecay)
    assert [_lr(restored, i) for i in range(12)] == pytest.approx([_lr(s, i) for i in range(12)])
    # inside an optimizer's config too (what model.save stores)
    opt = keras.optimizers.SGD(s, momentum=0.9)
    opt2 = keras.optimizers.SGD.from_config(opt.get_config())
    assert isinstance(opt2._learning_rate, WarmupStepDecay)
    assert opt2.get_config()["learning_rate"] == opt.get_config()["learning_rate"]


def test_rate_follows_the_optimizer_step_after_a_rewind():
    s = WarmupStepDecay(0.1, warmup_steps=4, boundaries=[6])
    import tensorflow as tf

    var = tf.Variable(1.0)
    opt = keras.optimizers.SGD(s)
    capture_optimizer_state(opt, [var])  # what IMPCallback does when fit begins
    for _ in range(8):
        opt.apply_gradients([(tf.constant(1.0), var)])
    before = float(var.numpy())
    opt.apply_gradients([(tf.constant(1.0), var)])  # step 8: past the boundary
    assert before - float(var.numpy()) == pytest.approx(0.01, rel=1e-5)
    reset_optimizer(opt, 2)  # IMP rewinds the counter to k = 2
    assert int(opt.iterations.numpy()) == 2
    before = float(var.numpy())
    opt.apply_gradients([(tf.constant(1.0), var)])  # step 2: back in the warm-up
    assert before - float(var.numpy()) == pytest.approx(0.1 * 3 / 4, rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(base_lr=0), "base_lr"),
    (dict(base_lr=0.1, warmup_steps=-1), "warmup_steps"),
    (dict(base_lr=0.1, warmup_steps=1.5), "warmup_steps"),
    (dict(base_lr=0.1, boundaries=[5, 3]), "increasing"),
    (dict(base_lr=0.1, boundaries=[-1]), "increasing"),
    (dict(base_lr=0.1, gamma=0), "gamma"),
    (dict(base_lr=0.1, gamma=1.5), "gamma"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WarmupStepDecay(**kwargs)
