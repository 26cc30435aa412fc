"""The search for a rewind point: instability per candidate k, and the earliest stable k."""

import dataclasses
import logging
import math

import numpy as np

from keras_lottery import masks as masks_lib
from keras_lottery._keras import keras
from keras_lottery.schedule import IMPSchedule, parse_rewind
from keras_lottery.stability.distance import pruning_distance
from keras_lottery.stability.instability import instability_analysis, train_copy
from keras_lottery.stability.interpolation import copy_model
from keras_lottery.stability.path import DEFAULT_POINTS, _loss_and_error
from keras_lottery.wrap import pruned_layers, wrap_model

__all__ = ["DEFAULT_THRESHOLD", "RewindSearchResult", "earliest_stable", "search_rewind_point"]

logger = logging.getLogger("keras_lottery")

DEFAULT_THRESHOLD = 0.02  # 2 percentage points of error, as in the papers


def earliest_stable(rows, threshold=DEFAULT_THRESHOLD, key="instability"):
    """The earliest row whose instability is below `threshold`, or None.

    Args:
      rows: dicts with "k_steps" and `key` (any order; sorted by k_steps).
      threshold: the largest error barrier still called stable (fraction:
        0.02 = 2 percentage points).
      key: which field holds the instability.

    Returns:
      That row (the same dict object), or None when no k is stable.

    Raises:
      ValueError: for a negative threshold.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}.")
    for row in sorted(rows, key=lambda r: r["k_steps"]):
        if row[key] is not None and row[key] < threshold:
            return row
    return None


@dataclasses.dataclass
class RewindSearchResult:
    """Instability and ticket accuracy per candidate rewind point.

    Attributes:
      rows: one dict per candidate: rewind (label), k_steps, instability,
        bump (`PathResult.bump`), loss_barrier, accuracy (mean test accuracy of the two trained copies),
        pruning_distance (to the dense network trained from θ0, if known),
        errors (the error curve), seconds.
      chosen: the earliest stable row's rewind label, or None.
      threshold: the instability threshold used.
      weights_remaining: fraction of prunable weights the analysed network keeps.
      dense_accuracy: test accuracy of the dense network trained from θ0.
      total_steps: training length.
    """

    rows: list
    chosen: str
    threshold: float
    weights_remaining: float
    dense_accuracy: float
    total_steps: int

    def to_dict(self):
        return dataclasses.asdict(self)

    def table(self):
        lines = [f"{'rewind':>8} {'k':>6} {'instab.(pp)':>12} {'bump (pp)':>10} "
                 f"{'loss barrier':>12} {'acc (%)':>8} {'dist':>6}"]
        for r in self.rows:
            dist = "" if r.get("pruning_distance") is None else f"{r['pruning_distance']:.3f}"
            mark = "  <- earliest stable" if r["rewind"] == self.chosen else ""
            bump = r.get("bump")
            bump = "" if bump is None else f"{100 * bump:.2f}"
            lines.append(f"{r['rewind']:>8} {r['k_steps']:>6d} {100 * r['instability']:>12.2f} "
                         f"{bump:>10} {r['loss_barrier']:>12.3f} {100 * r['accuracy']:>8.2f} "
                         f"{dist:>6}{mark}")
        return "\n".join(lines)


class _Snapshots(keras.callbacks.Callback):
    """Captures model.get_weights() after the given global step counts."""

    def __init__(self, steps):
        super().__init__()
        self.wanted = set(int(s) for s in steps)
        self.taken = {}
        self._step = 0

    def on_train_begin(self, logs=None):
        if 0 in self.wanted:
            self.taken[0] = self.model.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step in self.wanted:
            self.taken[self._step] = self.model.get_weights()


def search_rewind_point(model, train_data, eval_data, candidates, epochs, batch_size=128,
                        compile_fn=None, masks=None, weights_remaining=None,
                        threshold=DEFAULT_THRESHOLD, seeds=(1, 2), num_points=DEFAULT_POINTS,
                        bn_examples=2048, analyze=None, progress=None, check_sparsity=None):
    """Instability (and ticket accuracy) for each candidate rewind point k.

    1. Trains `model` from θ0 for `epochs` (data order seed 0) and keeps θk for
       every candidate k.
    2. The subnetwork: `masks` (e.g. `read_masks` of an IMP ticket), or a
       one-shot global magnitude mask of the trained dense weights keeping
       `weights_remaining` (a cheap stand-in for IMP's mask), or, with
       neither, the dense network itself.
    3. For each k: two copies of θk ⊙ m train for the rest of training with
       different data orders; the error barrier between them is the
       instability at k, their mean test accuracy the ticket's accuracy.
    4. Picks the earliest k with instability below `threshold`.

    Args:
      model: the network at initialization θ0 (wrapped or not; not modified).
      train_data, eval_data: `(x, y)` arrays.
      candidates: rewind points: ints (steps) or strings like "0it", "100it", "2ep".
      epochs: training length of the dense run; copies from k train to the same end.
      batch_size, compile_fn, seeds, num_points, bn_examples: as in `instability_analysis`.
      masks: optional dict weight name -> 0/1 mask (keys as in `masks.read_masks`).
      weights_remaining: optional fraction in (0, 1) for a one-shot mask.
      threshold: stability threshold on the error barrier (0.02 = 2 points).
      analyze: optional replacement for `instability_analysis` (same signature),
        e.g. to reuse cached results.
      progress: optional callable(str) for one line per finished candidate
        (default: the "keras_lottery" logger at INFO level).
      check_sparsity: optional N, passed to `analyze`: check the subnetwork's
        pruned weights after every N-th step of every copy.

    Returns:
      A `RewindSearchResult`.

    Raises:
      ValueError: for no candidates, a candidate past the end of training,
        both masks and weights_remaining, or a bad fraction.

    Example:
      >>> search = search_rewind_point(model, (x, y), (xt, yt), ["0it", "100it", "1ep"],
      ...                              epochs=4, compile_fn=my_compile,
      ...                              masks=read_masks(ticket))   # doctest: +SKIP
      >>> print(search.table()); search.chosen                     # doctest: +SKIP
    """
    if not candidates:
        raise ValueError("Give at least one candidate rewind point, e.g. ['0it', '100it', '1ep'].")
    if masks is not None and weights_remaining is not None:
        raise ValueError("Pass either masks or weights_remaining, not both.")
    if weights_remaining is not None and not 0.0 < weights_remaining < 1.0:
        raise ValueError(f"weights_remaining must be in (0, 1), got {weights_remaining!r}.")
    x, y = train_data
    steps_per_epoch = int(math.ceil(len(x) / batch_size))
    total = steps_per_epoch * int(epochs)
    labelled = []
    for c in candidates:
        point = None if isinstance(c, (int, np.integer)) else parse_rewind(c)
        if point is not None and point.mode == "lr":
            raise ValueError(
                f"Rewind point {c!r} is learning-rate rewinding, which keeps the trained weights; "
                "the search compares weight rewind points θk. Give e.g. '0it', '500it' or '1ep'.")
        k = int(c) if point is None else point.to_steps(steps_per_epoch)
        label = f"{k}it" if point is None else str(point)
        if k >= total:
            raise ValueError(f"Rewind point {label} ({k} steps) is not before the end of "
                             f"training ({epochs} epochs = {total} steps).")
        labelled.append((k, label))
    labelled.sort()
    analyze = analyze or instability_analysis

    base = model if pruned_layers(model) else wrap_model(model, IMPSchedule(1, 0.5))
    snaps = _Snapshots([k for k, _ in labelled])
    dense = train_copy(base, x, y, total, seed=0, batch_size=batch_size,
                       compile_fn=compile_fn, callbacks=[snaps])
    dense_acc = 1.0 - _loss_and_error(dense, *eval_data, 256, True)[1]
    if weights_remaining is not None:
        entries = masks_lib.prunable_weights(dense)
        masks = masks_lib.compute_masks(
            {w.name: w.weight.numpy() for w in entries},
            {w.name: np.ones(w.weight.shape, np.float32) for w in entries},
            1, 1.0 - weights_remaining, "global")
    rows = []
    start = copy_model(base)
    for k, label in labelled:
        start.set_weights(snaps.taken[k])
        if masks is not None:
            masks_lib.write_masks(start, masks)  # also zeroes the pruned weights
        result = analyze(start, train_data, eval_data, steps=total - k, seeds=seeds,
                         batch_size=batch_size, compile_fn=compile_fn, start_step=k,
                         num_points=num_points, bn_examples=bn_examples,
                         **({"check_sparsity": check_sparsity} if check_sparsity else {}))
        distance = None
        if result.models and masks is not None:
            distance = float(np.mean([pruning_distance(m, dense) for m in result.models]))
        rows.append({"rewind": label, "k_steps": k, "instability": float(result.instability),
                     "bump": float(result.path.bump),
                     "loss_barrier": float(result.path.loss_barrier),
                     "accuracy": float(result.accuracy), "pruning_distance": distance,
                     "errors": list(result.path.errors), "alphas": list(result.path.alphas),
                     "seconds": float(result.seconds)})
        (progress or logger.info)(
            f"rewind {label} (k={k}): instability {100 * result.instability:.2f} pp, "
            f"accuracy {100 * result.accuracy:.2f}%")
    chosen = earliest_stable(rows, threshold)
    remaining = masks_lib.overall_weights_remaining(start)
    return RewindSearchResult(rows=rows, chosen=None if chosen is None else chosen["rewind"],
                              threshold=float(threshold), weights_remaining=float(remaining),
                              dense_accuracy=float(dense_acc), total_steps=int(total))
