"""`SparsityGuard`: a callback that checks, after training batches, that every
pruned weight is exactly zero.

tfmot's `UpdatePruningStep` multiplies kernels by their masks at every epoch
end, so a check after `fit` or at an epoch's end passes even when pruned
weights trained all epoch long. The guard checks right after the optimizer
step, in `on_train_batch_end`, where a leak is still visible.
"""

import numpy as np

from keras_lottery import masks as masks_lib
from keras_lottery._keras import keras

__all__ = ["SparsityGuard", "SparsityViolation"]


class SparsityViolation(AssertionError):
    """A pruned weight was found non-zero after a training step.

    Attributes:
      weight: the weight's name (`"<layer>/<weight>"`).
      count: how many of its pruned positions were non-zero.
      step: the training step (1-based, counted over the whole `fit`).
    """

    def __init__(self, weight, count, step, largest):
        self.weight, self.count, self.step = weight, int(count), int(step)
        super().__init__(
            f"{weight}: {count} pruned weight(s) are non-zero after training "
            f"step {step} (largest magnitude {largest:.3g}). The mask is not "
            "being enforced on this path; please report the model, optimizer "
            "and dtype policy to keras-lottery.")


class SparsityGuard(keras.callbacks.Callback):
    """Raises `SparsityViolation` when a pruned weight is non-zero after a step.

    Every `every`-th training batch it reads every prunable weight of the
    wrapped model and its mask and checks that `weight == 0` wherever
    `mask == 0`, exactly. The check runs in `on_train_batch_end`, before any
    epoch-end callback re-masks the kernels, so it sees what the next step
    and any checkpoint would see.

    Cost: one host copy of every prunable kernel and mask per checked batch
    (see docs/concepts/exactness.md for measured figures); `every=1` is for tests
    and debugging, `every=100` is cheap enough to leave on.

    Args:
      every: check after every N-th training batch (>= 1).
      model: optional wrapped model to check (default: the model being fit).

    Attributes:
      checks: how many batches were checked.
      weights_checked: how many pruned positions were checked, in total.

    Raises:
      ValueError: for `every` < 1.

    Example:
      >>> callbacks = imp.callbacks() + [kl.SparsityGuard(every=1)]  # doctest: +SKIP
      >>> model.fit(x, y, epochs=imp.epochs(2), callbacks=callbacks)  # doctest: +SKIP
    """

    def __init__(self, every=1, model=None):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}.")
        self.every = int(every)
        self._target = model
        self._supports_tf_logs = True  # never reads logs: no host copy of them
        self.checks = 0
        self.weights_checked = 0
        self._step = 0

    def on_train_begin(self, logs=None):
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every:
            return
        self.check(step=self._step)

    def check(self, step=None):
        """Checks the model now; raises `SparsityViolation` on the first leak.

        Args:
          step: the step to name in the error (default: the guard's count).

        Returns:
          The number of pruned positions checked.
        """
        model = self._target if self._target is not None else self.model
        step = self._step if step is None else step
        checked = 0
        for w in masks_lib.prunable_weights(model):
            pruned = w.mask.numpy() == 0
            if not pruned.any():
                continue
            leaked = np.asarray(w.weight.numpy())[pruned]
            bad = leaked != 0
            if bad.any():
                raise SparsityViolation(w.name, bad.sum(), step, float(np.abs(leaked).max()))
            checked += int(pruned.sum())
        self.checks += 1
        self.weights_checked += checked
        return checked

    def get_config(self):
        return {"every": self.every}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
