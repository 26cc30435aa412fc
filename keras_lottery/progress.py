"""Progress of long runs: round i/R, epoch, step, metrics, elapsed and ETA.

`ProgressLogger` is a Keras callback that logs one line per epoch (or every
`every` epochs) to the "keras_lottery" logger at INFO level: the library
itself never prints, an application shows the lines by configuring logging.

`RoundProgress` is what `keras-lottery run` shows: on a terminal one line
per round that updates in place and is replaced by the round's row when the
round ends; elsewhere (CI, pipes, log files) one plain line per round.
"""

import logging
import time

from keras_lottery._keras import keras

__all__ = ["ProgressLogger", "RoundProgress", "PROGRESS_MODES", "format_duration",
           "format_round_row", "eta_seconds", "resolve_mode"]

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
      epochs_per_round: epochs of one IMP round (None: no round column). On
        its own the logger splits fit epochs into rounds of this fixed
        length; for rounds of varying length (`round_end="converged"` and
        the controls of such a ticket) use `RoundProgress(mode="epoch")`,
        which labels each epoch from the series' callback.
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

    def describe(self, epoch, logs=None, position=None):
        """The progress line after `epoch` (0-based) finished, with `logs` metrics.

        Args:
          epoch: the fit epoch that finished.
          logs: its metrics.
          position: optional `(round, epoch in the round (1-based), the
            round's epochs)` to show instead of the fixed-length split of
            `epoch` by `epochs_per_round` (rounds of varying length, e.g.
            `round_end="converged"`; see `RoundProgress`).
        """
        total = self.params.get("epochs") if self.params else None
        done = epoch + 1
        parts = [self.prefix] if self.prefix else []
        if self.epochs_per_round or position is not None:
            if position is None:
                position = (epoch // self.epochs_per_round, epoch % self.epochs_per_round + 1,
                            self.epochs_per_round)
            rnd, in_round, of = position
            n_rounds = (self.rounds + 1) if self.rounds is not None else (
                None if total is None or not self.epochs_per_round
                else -(-total // self.epochs_per_round))
            parts.append(f"round {rnd}/{'?' if n_rounds is None else n_rounds - 1}")
            parts.append(f"epoch {in_round}/{of} "
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


# -- the command line's progress display ------------------------------------------

PROGRESS_MODES = ("auto", "bar", "round", "epoch", "none")


def resolve_mode(mode, stream):
    """The display mode for `stream`: "auto" is "bar" on a terminal, else "round".

    Raises:
      ValueError: for a mode not in `PROGRESS_MODES`.
    """
    if mode not in PROGRESS_MODES:
        raise ValueError(f"Unknown progress mode {mode!r}: choose one of {list(PROGRESS_MODES)}.")
    if mode != "auto":
        return mode
    isatty = getattr(stream, "isatty", None)
    try:
        return "bar" if isatty is not None and isatty() else "round"
    except ValueError:  # a closed stream
        return "round"


def format_round_row(label, result, rounds):
    """One finished round as a line: "ticket  round 3/8  51.2% weights  test acc 0.6120 ...".

    Args:
      label: the series ("ticket", "reinit", ...).
      result: the round's `RoundResult` (or its dict).
      rounds: pruning rounds after the dense round 0.
    """
    row = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    parts = [f"{label:>7}", f"round {row['round']:>{len(str(rounds))}}/{rounds}",
             f"{100.0 * row['weights_remaining']:5.1f}% weights"]
    for key, name in (("test_accuracy", "test acc"), ("val_accuracy", "val acc")):
        if row.get(key) is not None:
            parts.append(f"{name} {row[key]:.4f}")
    if row.get("early_stop_iteration") is not None:
        parts.append(f"early stop {row['early_stop_iteration']}")
    if row.get("seconds") is not None:
        parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


class RoundProgress(keras.callbacks.Callback):
    """What `keras-lottery run` shows while one series (ticket or control) trains.

    Modes:
      - "bar" (a terminal): one line that updates in place (round, epoch,
        step, loss / accuracy, elapsed, ETA of this series), replaced at each
        round's end by the round's row (`format_round_row`);
      - "round" (not a terminal: CI, pipes, log files): the round's row only,
        one plain line per round;
      - "epoch": plain lines, one per epoch (`ProgressLogger`'s format, e.g.
        "round 1/2 · epoch 1/3 (4/9) · loss ...") plus the round's row;
      - "none": nothing.

    Put it after the series' `IMPCallback` (or `ControlCallback`) in fit's
    callbacks, so that the round's result exists when its row is written.

    Args:
      imp_callback: the series' `IMPCallback` / `ControlCallback`.
      label: the series' name on every line.
      mode: one of `PROGRESS_MODES` ("auto" looks at `stream.isatty()`).
      stream: where to write (default `sys.stdout`, looked up when writing).
      interval: seconds between two updates of the in-place line.

    Raises:
      ValueError: for an unknown mode.

    Example:
      >>> callbacks = imp.callbacks(verbose=0)                     # doctest: +SKIP
      >>> callbacks.append(RoundProgress(imp.callback, "ticket"))  # doctest: +SKIP
    """

    def __init__(self, imp_callback, label="ticket", mode="auto", stream=None, interval=0.1):
        super().__init__()
        self.imp_callback = imp_callback
        self.label = label
        self._stream = stream
        self.mode = resolve_mode(mode, self.stream)
        self.interval = float(interval)
        self.rows = 0      # round rows written
        self.updates = 0   # in-place updates written
        self._shown = False

    @property
    def stream(self):
        import sys

        return self._stream if self._stream is not None else sys.stdout

    @property
    def _rounds(self):
        return self.imp_callback.schedule.rounds

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self._last = 0.0
        self._first_epoch = None
        self._epoch = 0
        self._rows_seen = len(self.imp_callback.history)
        self._epoch_log = ProgressLogger(self.imp_callback.epochs_per_round, self._rounds)
        self._epoch_log.set_params(self.params)
        self._epoch_log.on_train_begin()

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
            self._epoch_log.on_epoch_begin(epoch)
        self._epoch = epoch

    def _eta(self, steps_done):
        epochs = self.params.get("epochs") if self.params else None
        per_epoch = self.params.get("steps") if self.params else None
        if not epochs or not per_epoch:
            return None
        total = (epochs - (self._first_epoch or 0)) * per_epoch
        return eta_seconds(time.perf_counter() - self._start, steps_done, total)

    def _bar_line(self, batch, logs):
        per_epoch = self.params.get("steps") if self.params else None
        # the callback's own round: with round_end="converged" rounds end at any epoch
        rnd = self.imp_callback.round
        per_round = self.imp_callback.round_epochs(rnd)
        in_round = self._epoch - self.imp_callback.round_first_epoch
        step = batch + 1
        done = (self._epoch - (self._first_epoch or 0)) * (per_epoch or 0) + step
        parts = [f"{self.label:>7}", f"round {rnd}/{self._rounds}",
                 f"epoch {in_round + 1}/{per_round}",
                 f"step {step}/{per_epoch or '?'}"]
        for key in ("loss", "accuracy"):
            if logs and key in logs:
                parts.append(f"{key} {float(logs[key]):.4f}")
        parts.append(f"{format_duration(time.perf_counter() - self._start)} elapsed")
        parts.append(f"ETA {format_duration(self._eta(done))}")
        return "  ".join(parts)

    def on_train_batch_end(self, batch, logs=None):
        if self.mode != "bar":
            return
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns - 1
        self._write("\r" + self._bar_line(batch, logs)[:width] + "\x1b[K")
        self._shown = True
        self.updates += 1

    def _position(self, epoch):
        """(round, epoch in the round, the round's epochs) of the fit epoch that just ended.

        Read from the series' callback, which runs first: a round that ended
        with this epoch is its last row (the callback has moved on to the
        next round), so rounds of any length (round_end="converged", the
        controls of such a ticket) are labelled as they were trained.
        """
        cb = self.imp_callback
        history = cb.history
        if len(history) > self._rows_seen:  # RoundResult rows (also a resumed history)
            rnd, in_round = history[-1].round, history[-1].epochs
        else:
            rnd, in_round = cb.round, epoch - cb.round_first_epoch + 1
        return rnd, in_round, cb.round_epochs(rnd)

    def on_epoch_end(self, epoch, logs=None):
        if self.mode == "epoch":
            self._write(self._epoch_log.describe(epoch, logs, self._position(epoch)) + "\n")
        history = self.imp_callback.history
        if len(history) <= self._rows_seen or self.mode == "none":
            return
        self._rows_seen = len(history)
        prefix = "\r\x1b[K" if self._shown else ""
        self._shown = False
        self._write(prefix + format_round_row(self.label, history[-1], self._rounds) + "\n")
        self.rows += 1

    def on_train_end(self, logs=None):
        if self._shown:  # an interrupted round: leave the terminal on a clean line
            self._write("\r\x1b[K")
            self._shown = False
