"""`WarmupStepDecay`: linear learning-rate warm-up, then step decay.

Frankle et al. ("Stabilizing the LTH", "Linear Mode Connectivity") needed a
warm-up to train and to find tickets in deep networks (ResNet-20 and VGG-16 at
high learning rates): the rate rises linearly from near zero to `base_lr`
over `warmup_steps` optimizer steps, then is multiplied by `gamma` at every
step in `boundaries`. The schedule is a function of the optimizer's step
counter only, so when IMP rewinds the counter to k (`rewind.reset_optimizer`)
the rate continues from k as well.
"""

import tensorflow as tf

from keras_lottery._keras import keras

__all__ = ["WarmupStepDecay"]


@keras.utils.register_keras_serializable(package="keras_lottery")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `base_lr` over `warmup_steps`, then step decay.

    lr(step) = base_lr * min(1, (step + 1) / warmup_steps) * gamma ** n(step),
    where n(step) counts the boundaries <= step. The first step (0) already
    gets base_lr / warmup_steps (never a wasted step at rate 0); the full rate
    is reached at step warmup_steps - 1. With warmup_steps=0 there is no
    warm-up.

    Args:
      base_lr: peak learning rate (> 0).
      warmup_steps: steps of linear warm-up (>= 0).
      boundaries: increasing steps (>= 0) at which the rate is multiplied by `gamma`.
      gamma: decay factor in (0, 1].
      name: optional name.

    Raises:
      ValueError: for a non-positive base_lr, negative or non-integer
        warmup_steps, unsorted or negative boundaries, or gamma outside (0, 1].

    Example:
      >>> lr = WarmupStepDecay(0.1, warmup_steps=1000, boundaries=[32000, 48000])
      >>> optimizer = keras.optimizers.SGD(lr, momentum=0.9)  # doctest: +SKIP
    """

    def __init__(self, base_lr, warmup_steps=0, boundaries=(), gamma=0.1, name=None):
        super().__init__()
        if isinstance(base_lr, bool) or not isinstance(base_lr, (int, float)) or not base_lr > 0:
            raise ValueError(f"base_lr must be a number > 0, got {base_lr!r}.")
        if isinstance(warmup_steps, bool) or int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}.")
        boundaries = [int(b) for b in boundaries]
        if any(b < 0 for b in boundaries) or boundaries != sorted(set(boundaries)):
            raise ValueError(f"boundaries must be strictly increasing steps >= 0, got "
                             f"{boundaries!r}.")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}.")
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = boundaries
        self.gamma = float(gamma)
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "WarmupStepDecay"):
            step = tf.cast(step, tf.float32)
            lr = tf.constant(self.base_lr, tf.float32)
            if self.warmup_steps:
                lr = lr * tf.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
            if self.boundaries:
                passed = tf.reduce_sum(tf.cast(
                    step >= tf.constant(self.boundaries, tf.float32), tf.float32))
                lr = lr * tf.pow(tf.constant(self.gamma, tf.float32), passed)
            return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "boundaries": list(self.boundaries),
            "gamma": self.gamma,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (f"WarmupStepDecay(base_lr={self.base_lr}, warmup_steps={self.warmup_steps}, "
                f"boundaries={self.boundaries}, gamma={self.gamma})")
