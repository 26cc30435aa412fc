"""TensorBoard for IMP: a point per round (weights remaining, accuracy, early stop) and mask histograms.

`IMPTensorBoard` writes, under `log_dir/rounds`, with the round number as the
step:

- scalars `imp/weights_remaining` (overall) and
  `imp/weights_remaining/<layer>/kernel` (each pruned weight),
- `imp/accuracy`, `imp/loss`, `imp/val_accuracy`, `imp/val_loss`,
  `imp/test_accuracy`, `imp/test_loss` (those that exist),
- `imp/early_stop_iteration` and `imp/early_stop_val_accuracy`,
- with `round_end="converged"`: `imp/converged_step` and, per round,
  `early_bird/mask_distance/round_<r>` (the distance curve of
  `keras_lottery.convergence`, against the step in the round),
- histograms `masks/<layer>/kernel` (the 0/1 mask the round trained with) and
  `surviving_weights/<layer>/kernel` (the trained values of kept weights).

With `epoch_summaries=True` it also adds tfmot's `PruningSummaries` (a
Keras TensorBoard callback) under `log_dir/epochs`: the usual per-epoch
loss / metric curves and each mask's sparsity per epoch, on a step axis that
keeps increasing across rewinds (tfmot would plot against the optimizer
step, which IMP sets back to k at every round).

Use `IMP.callbacks(tensorboard_dir=...)`, which puts the callbacks in the
right place: before `IMPCallback`, so the round's masks and trained weights
are seen before the callback prunes and rewinds them.
"""

import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from keras_lottery import masks as masks_lib
from keras_lottery._keras import keras

__all__ = ["IMPTensorBoard", "RewindSafePruningSummaries", "tensorboard_callbacks"]

logger = logging.getLogger("keras_lottery")

_ROUND_SCALARS = ("accuracy", "loss", "val_accuracy", "val_loss", "test_accuracy", "test_loss",
                  "early_stop_iteration", "early_stop_val_accuracy", "seconds", "steps",
                  "converged_step")


def _require_tensorboard():
    try:
        import tensorboard  # noqa: F401  (tf.summary needs it to write anything)
    except ImportError as err:
        raise ImportError("TensorBoard logging needs the `tensorboard` package: "
                          "pip install tensorboard  (or keras-lottery[tensorboard])") from err


class IMPTensorBoard(keras.callbacks.Callback):
    """Writes one TensorBoard point per IMP round, and the round's mask histograms.

    Args:
      log_dir: folder for the event files (written to `log_dir/rounds`).
      imp_callback: the `IMPCallback` of the run, whose `history` supplies
        the per-round results.
      histograms: also write mask and surviving-weight histograms per round.

    Raises:
      ValueError: for an empty `log_dir` or a missing `imp_callback`.
      ImportError: if the `tensorboard` package is not installed.

    Example:
      >>> imp = kl.IMP(rounds=5, prune_rate=0.2)
      >>> model.fit(x, y, epochs=imp.epochs(per_round=2),
      ...           callbacks=imp.callbacks(tensorboard_dir="logs/imp"))  # doctest: +SKIP
      $ tensorboard --logdir logs/imp
    """

    def __init__(self, log_dir, imp_callback, histograms=True):
        super().__init__()
        _require_tensorboard()
        if not log_dir:
            raise ValueError("log_dir must be a non-empty folder name.")
        if imp_callback is None or not hasattr(imp_callback, "history"):
            raise ValueError("imp_callback must be the run's IMPCallback (see IMP.callbacks()).")
        self.log_dir = os.fspath(log_dir)
        self.imp_callback = imp_callback
        self.histograms = histograms
        self._writer = None
        self._written = set()

    @property
    def writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "rounds"))
        return self._writer

    def on_train_begin(self, logs=None):
        self._written = {r.round for r in self.imp_callback.history}  # resumed rounds

    def on_epoch_begin(self, epoch, logs=None):
        self._write_pending()

    def on_epoch_end(self, epoch, logs=None):
        # Runs before IMPCallback: at a round's last epoch the masks and
        # weights are still those the round trained with.
        if self.histograms and self.imp_callback.round_ends_at(epoch):
            self._write_histograms(self.imp_callback.round)

    def on_train_end(self, logs=None):
        self._write_pending()
        if self._writer is not None:
            self._writer.flush()

    def _write_histograms(self, round_index):
        entries = masks_lib.prunable_weights(self.model)
        with self.writer.as_default():
            for entry in entries:
                mask = np.asarray(entry.mask.numpy(), dtype=np.float32)
                weight = np.asarray(entry.weight.numpy())
                tf.summary.histogram(f"masks/{entry.name}", mask, step=round_index)
                kept = weight[mask > 0]
                if kept.size:
                    tf.summary.histogram(f"surviving_weights/{entry.name}", kept, step=round_index)
        self.writer.flush()

    def _write_pending(self):
        pending = [r for r in self.imp_callback.history if r.round not in self._written]
        if not pending:
            return
        with self.writer.as_default():
            for result in pending:
                step = result.round
                tf.summary.scalar("imp/weights_remaining", result.weights_remaining, step=step)
                for name, value in sorted(result.weights_remaining_by_layer.items()):
                    tf.summary.scalar(f"imp/weights_remaining/{name}", value, step=step)
                for key in _ROUND_SCALARS:
                    value = getattr(result, key, None)
                    if value is not None:
                        tf.summary.scalar(f"imp/{key}", float(value), step=step)
                # round_end="converged": the round's mask distance curve
                # against the step in the round, one tag per round
                for check_step, distance in result.mask_distances or ():
                    if distance is not None:
                        tf.summary.scalar(f"early_bird/mask_distance/round_{step}",
                                          float(distance), step=int(check_step))
                self._written.add(result.round)
                logger.debug("TensorBoard: round %d written to %s", step, self.log_dir)
        self.writer.flush()


class RewindSafePruningSummaries(tfmot.sparsity.keras.PruningSummaries):
    """tfmot's `PruningSummaries` on a step axis that survives IMP's rewinds.

    tfmot logs each mask's sparsity against `optimizer.iterations`, which
    IMP sets back to the rewind step k every round, so curves would fold
    back on themselves. This subclass counts trained batches instead, and
    leaves out tfmot's `threshold` values, which IMP never uses (its masks
    are computed on the host).

    Args:
      log_dir: folder for the event files.
      **kwargs: passed to tfmot's `PruningSummaries` / Keras `TensorBoard`.
    """

    def __init__(self, log_dir, **kwargs):
        kwargs.setdefault("write_graph", False)
        kwargs.setdefault("profile_batch", 0)
        super().__init__(log_dir=os.fspath(log_dir), **kwargs)
        self._batches_trained = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches_trained += 1
        super().on_train_batch_end(batch, logs)

    def _log_pruning_metrics(self, logs, prefix, step):
        logs = {k: v for k, v in logs.items() if not k.endswith("/threshold")}
        super()._log_pruning_metrics(logs, prefix, self._batches_trained)


def tensorboard_callbacks(log_dir, imp_callback, histograms=True, epoch_summaries=True):
    """The TensorBoard callbacks for one IMP run, in the order to place them before `IMPCallback`.

    Args:
      log_dir: TensorBoard folder; rounds go to `log_dir/rounds`, epochs
        (tfmot's PruningSummaries) to `log_dir/epochs`.
      imp_callback: the run's `IMPCallback`.
      histograms: write mask / surviving-weight histograms per round.
      epoch_summaries: add the per-epoch `RewindSafePruningSummaries`.

    Returns:
      A list of callbacks.
    """
    callbacks = [IMPTensorBoard(log_dir, imp_callback, histograms=histograms)]
    if epoch_summaries:
        callbacks.append(RewindSafePruningSummaries(os.path.join(os.fspath(log_dir), "epochs")))
    return callbacks
