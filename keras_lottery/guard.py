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
      replica: under `tf.distribute`, the index of the replica's copy that
        leaked (None for a variable with one copy).
    """

    def __init__(self, weight, count, step, largest, replica=None):
        self.weight, self.count, self.step = weight, int(count), int(step)
        self.replica = replica
        where = "" if replica is None else f" in replica {replica}'s copy"
        super().__init__(
            f"{weight}: {count} pruned weight(s) are non-zero{where} after training "
            f"step {step} (largest magnitude {largest:.3g}). The mask is not "
            "being enforced on this path; please report the model, optimizer "
            "and dtype policy to keras-lottery.")


def _replica_copies(variable):
    """The per-device copies of `variable` (itself when it has one copy).

    An `AutoCastVariable` (mixed precision) is read through its float32
    variable, the one the optimizer updates.
    """
    inner = getattr(variable, "_variable", None)
    while inner is not None:  # AutoCastVariable -> the variable it casts
        variable, inner = inner, getattr(inner, "_variable", None)
    values = getattr(variable, "values", None)
    if isinstance(values, (tuple, list)) and len(values) > 1:
        return list(values)
    return [variable]


class SparsityGuard(keras.callbacks.Callback):
    """Raises `SparsityViolation` when a pruned weight is non-zero after a step.

    Every `every`-th training batch it reads every prunable weight of the
    wrapped model and its mask and checks that `weight == 0` wherever
    `mask == 0`, exactly; under `tf.distribute` it reads every replica's copy
    of the weight, not only the primary one that `variable.numpy()` returns
    (a leak on one device only would otherwise go unseen until the replicas
    disagree). The check runs in `on_train_batch_end`, before any
    epoch-end callback re-masks the kernels, so it sees what the next step
    and any checkpoint would see.

    Cost: one host copy of every prunable kernel (of each replica's copy) and
    mask per checked batch (see docs/concepts/exactness.md for measured
    figures); `every=1` is for tests and debugging, `every=100` is cheap
    enough to leave on.

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
            copies = _replica_copies(w.weight)
            for replica, copy in enumerate(copies):
                leaked = np.asarray(copy.numpy())[pruned]
                bad = leaked != 0
                if bad.any():
                    raise SparsityViolation(w.name, bad.sum(), step, float(np.abs(leaked).max()),
                                            replica=replica if len(copies) > 1 else None)
            checked += int(pruned.sum())
        self.checks += 1
        self.weights_checked += checked
        return checked

    def get_config(self):
        return {"every": self.every}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
