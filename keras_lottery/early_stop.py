"""The papers' early-stopping iteration, measured at a chosen evaluation interval.

Frankle & Carbin report, for every round, the training iteration at which the
validation loss is lowest (the *early-stopping iteration*) and the accuracy
there. Keras logs validation loss only at epoch ends, which is too coarse when
a round is one or two epochs long; `IntervalEvaluator` evaluates the
validation (and optionally test) data every `every` steps inside a round.
`IMPCallback(eval_every=N, validation_data=...)` uses it; with `eval_every`
unset nothing here runs and training pays nothing per step.
"""

import dataclasses

import numpy as np

__all__ = ["CurvePoint", "IntervalEvaluator", "early_stopping_point"]


@dataclasses.dataclass
class CurvePoint:
    """One evaluation inside a round.

    Attributes:
      step: optimizer steps into the round at which it was taken.
      val_loss: validation loss there.
      val_accuracy: validation accuracy there (None if not measured).
      test_accuracy: test accuracy there (None if no test data).
    """

    step: int
    val_loss: float
    val_accuracy: float = None
    test_accuracy: float = None


def _as_point(entry):
    if isinstance(entry, CurvePoint):
        return entry
    entry = tuple(entry) + (None,) * (4 - len(entry))
    return CurvePoint(*entry[:4])


def early_stopping_point(curve):
    """The point of minimum validation loss (the first one if tied).

    Args:
      curve: a sequence of `CurvePoint` or tuples
        `(step, val_loss[, val_accuracy[, test_accuracy]])`, in step order.

    Returns:
      The `CurvePoint` with the lowest `val_loss`, or None for an empty curve.
      NaN losses never win.

    Example:
      >>> early_stopping_point([(100, 0.9), (200, 0.5), (300, 0.5), (400, 0.7)]).step
      200
    """
    points = [_as_point(e) for e in curve]
    if not points:
        return None
    losses = np.array([np.inf if p.val_loss is None or np.isnan(p.val_loss) else p.val_loss
                       for p in points], dtype=np.float64)
    return points[int(np.argmin(losses))]


def _accuracy(results):
    for key in ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy"):
        if key in results:
            return float(results[key])
    return None


class IntervalEvaluator:
    """Evaluates a model on validation (and test) data every `every` steps.

    Evaluation goes through `model.evaluate`, so the loss is exactly the one
    Keras reports as `val_loss`; the running training metrics that
    `evaluate` resets are saved before and restored after, so the epoch's
    training logs are unaffected.

    Args:
      every: evaluation interval in optimizer steps (>= 1).
      validation_data: `(x, y)` tuple or a finite `tf.data.Dataset`.
      test_data: optional `(x, y)` or dataset, also evaluated at each point so
        that the test accuracy at the early-stopping iteration is known.
      batch_size: evaluation batch size for array data (default 512).

    Raises:
      ValueError: for an interval that is not a positive integer, or no
        validation data.

    Example:
      >>> ev = IntervalEvaluator(100, (x_val, y_val))     # doctest: +SKIP
      >>> ev.due(200), ev.due(250)                          # doctest: +SKIP
      (True, False)
    """

    def __init__(self, every, validation_data, test_data=None, batch_size=512):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"eval_every must be a positive number of steps, got {every!r}.")
        if validation_data is None:
            raise ValueError("eval_every needs validation_data=(x_val, y_val) (or a dataset) "
                             "to evaluate on.")
        self.every = int(every)
        self.validation_data = validation_data
        self.test_data = test_data
        self.batch_size = int(batch_size)

    def due(self, round_step, round_steps=None):
        """True at every `every`-th step of a round, and at its last step if known."""
        return round_step % self.every == 0 or (round_steps is not None and round_step == round_steps)

    def _evaluate(self, model, data):
        if isinstance(data, (tuple, list)):
            return model.evaluate(data[0], data[1], batch_size=self.batch_size, verbose=0,
                                  return_dict=True)
        return model.evaluate(data, verbose=0, return_dict=True)

    def evaluate(self, model, step):
        """Evaluates `model` now and returns a `CurvePoint` for `step`."""
        saved = [(v, v.numpy()) for m in model.metrics for v in m.variables]
        try:
            val = self._evaluate(model, self.validation_data)
            test = self._evaluate(model, self.test_data) if self.test_data is not None else {}
        finally:
            for variable, value in saved:
                variable.assign(value)
        return CurvePoint(int(step), float(val["loss"]), _accuracy(val),
                          _accuracy(test) if test else None)
