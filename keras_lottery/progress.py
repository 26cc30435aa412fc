"""Progress of long runs through `logging`: round i/R, epoch, metrics, elapsed and ETA.

The library never prints: `ProgressLogger` is a Keras callback that logs one
line per epoch (or every `every` epochs) to the "keras_lottery" logger at INFO
level, so a command line tool shows it by configuring logging and silences
it (`--quiet`) by raising the level to WARNING.
"""

import logging
import time

from keras_lottery._keras import keras

__all__ = ["ProgressLogger", "format_duration", "eta_seconds"]

logger = logging.getLogger("keras_lottery")

_SHOWN_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def format_duration(seconds):
    """Formats seconds as "42s", "3m05s" or "1h02m"; "?" for None."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def eta_seconds(elapsed, done, total):
    """Remaining time if the `total - done` remaining units take as long as the done ones.

    Returns:
      Seconds, or None before the first unit is done.
    """
    if done <= 0 or total is None:
        return None
    return elapsed / done * max(0, total - done)


class ProgressLogger(keras.callbacks.Callback):
    """Logs "round i/R · epoch e/E · metrics · elapsed · ETA" as training goes.

    Args:
      epochs_per_round: epochs of one IMP round (None: no round column).
      rounds: pruning rounds after the dense round 0 (the run has rounds + 1).
      every: log every `every` epochs (the last epoch of a round always logs).
      prefix: text put before each line, e.g. "trial 2/10".
      log: the `logging.Logger` to write to (default "keras_lottery").

    Raises:
      ValueError: if `every` < 1 or `epochs_per_round` < 1.

    Example:
      >>> progress = ProgressLogger(epochs_per_round=imp.epochs_per_round,
      ...                           rounds=imp.rounds)          # doctest: +SKIP
      >>> model.fit(..., callbacks=imp.callbacks() + [progress])  # doctest: +SKIP
      round 2/9 · epoch 3/5 (13/45) · loss 0.412 · val_accuracy 0.861 · 1m02s elapsed · ETA 3m40s
    """

    def __init__(self, epochs_per_round=None, rounds=None, every=1, prefix="", log=None):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every!r}.")
        if epochs_per_round is not None and int(epochs_per_round) < 1:
            raise ValueError(f"epochs_per_round must be >= 1, got {epochs_per_round!r}.")
        self.epochs_per_round = None if epochs_per_round is None else int(epochs_per_round)
        self.rounds = rounds
        self.every = int(every)
        self.prefix = prefix
        self.log = log or logger
        self.lines = 0

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self._initial_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._initial_epoch is None:
            self._initial_epoch = epoch  # resumed runs start past 0

    def describe(self, epoch, logs=None):
        """The progress line after `epoch` (0-based) finished, with `logs` metrics."""
        total = self.params.get("epochs") if self.params else None
        done = epoch + 1
        parts = [self.prefix] if self.prefix else []
        if self.epochs_per_round:
            rnd = epoch // self.epochs_per_round
            n_rounds = (self.rounds + 1) if self.rounds is not None else (
                None if total is None else -(-total // self.epochs_per_round))
            parts.append(f"round {rnd}/{'?' if n_rounds is None else n_rounds - 1}")
            parts.append(f"epoch {epoch % self.epochs_per_round + 1}/{self.epochs_per_round} "
                         f"({done}/{total if total is not None else '?'})")
        else:
            parts.append(f"epoch {done}/{total if total is not None else '?'}")
        for key in _SHOWN_METRICS:
            if logs and key in logs:
                parts.append(f"{key} {float(logs[key]):.4g}")
        elapsed = time.perf_counter() - self._start
        trained = done - (self._initial_epoch or 0)
        eta = eta_seconds(elapsed, trained, None if total is None else total - (self._initial_epoch or 0))
        parts.append(f"{format_duration(elapsed)} elapsed")
        parts.append(f"ETA {format_duration(eta)}")
        return " · ".join(parts)

    def on_epoch_end(self, epoch, logs=None):
        round_end = bool(self.epochs_per_round) and (epoch + 1) % self.epochs_per_round == 0
        if (epoch + 1) % self.every and not round_end:
            return
        self.log.info("%s", self.describe(epoch, logs))
        self.lines += 1
