"""Early-Bird round ends: how far the mask a round would produce still moves.

With `IMP(round_end="converged")` a round does not have to train its whole
budget: every `every` steps the callback computes, on the host, the mask the
round would produce if it ended now (`masks.compute_masks` on the current
survivors, with the run's scope, rates and floor), and the round ends at the
first check where that mask has stopped moving. `MaskConvergence` keeps the
last masks of one round and decides.

The distance between two such masks is the fraction of the round's pruned
weights on which they disagree:

    distance(a, b) = |a XOR b| / (2 * P)

where P is the number of weights the round prunes (survivors before the
round minus those kept). Both masks keep exactly the same number of weights,
so |a XOR b| / 2 is the number of weights one prunes and the other keeps,
and the distance lies in [0, 1] whatever the sparsity: 0.05 means that 5% of
the weights this round would prune are still changing. A raw Hamming
distance over all weights would shrink with the pruned fraction itself.

A round's mask drifts steadily rather than settling (docs/concepts/
early-bird.md gives the measurement): masks one check apart always look
alike. So the current mask is compared with each of the masks of the last
`patience` checks, not only the previous one, and the round has converged
when all those distances are at most `tol`: the mask has stayed within `tol`
of where it is now for `patience` checks, i.e. for `patience * every` steps.
A drift of r (fraction of the pruned weights per step) then passes only if
r * patience * every <= tol, so the horizon `patience * every` sets the
slowest drift that still counts as converged; a drift that is merely slow
compared to one check cannot end the round.

Example:
  >>> crit = ConvergenceCriterion(every=100, tol=0.05, patience=3)
  >>> track = MaskConvergence(crit)
  >>> import numpy as np
  >>> m = {"d/kernel": np.array([1., 1., 0., 0.])}
  >>> [track.update(s, m, pruned=2) for s in (0, 100, 200, 300)]
  [False, False, False, True]
  >>> track.converged_step
  300
"""

import collections
import numbers

import numpy as np

__all__ = [
    "ROUND_ENDS",
    "DEFAULT_EVERY",
    "DEFAULT_TOL",
    "DEFAULT_PATIENCE",
    "ConvergenceCriterion",
    "MaskConvergence",
    "chunked_batches",
    "make_criterion",
    "mask_distance",
]

#: `round_end` values: "epochs" trains each round its whole budget (plain
#: IMP); "converged" ends a round once its mask has converged.
ROUND_ENDS = ("epochs", "converged")

#: Defaults (picked on Fashion-MNIST LeNet-300-100; see docs/concepts/early-bird.md).
DEFAULT_EVERY = 100
DEFAULT_TOL = 0.15
DEFAULT_PATIENCE = 5


def mask_distance(a, b, pruned):
    """The fraction of a round's `pruned` weights on which masks `a` and `b` disagree.

    Args:
      a, b: flat boolean (or 0/1) arrays of the same size, each keeping the
        same number of weights.
      pruned: how many weights the round prunes (survivors - kept).

    Returns:
      |a XOR b| / (2 * pruned), in [0, 1]; 0.0 when nothing is pruned.

    Example:
      >>> mask_distance(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]), pruned=2)
      0.5
    """
    if pruned <= 0:
        return 0.0
    return float(np.count_nonzero(np.asarray(a, bool) != np.asarray(b, bool))) / (2.0 * pruned)


def make_criterion(round_end, converge_every=None, converge_tol=None, converge_patience=None,
                   rewind=None):
    """The `ConvergenceCriterion` for a `round_end` setting (None for "epochs").

    Args:
      round_end: one of `ROUND_ENDS`.
      converge_every, converge_tol, converge_patience: None for the defaults.
      rewind: the run's `RewindPoint` (an epoch-based one is refused with
        "converged", whose epochs are chunks of `converge_every` steps).

    Raises:
      ValueError: for an unknown round_end, a converge_* setting given with
        round_end="epochs", a value out of range or a rewind point in epochs.
    """
    if round_end not in ROUND_ENDS:
        raise ValueError(f"round_end must be one of {ROUND_ENDS}, got {round_end!r}: 'epochs' "
                         "trains every round its whole budget, 'converged' ends a round once "
                         "its mask has converged (Early-Bird).")
    given = {name: value for name, value in (("converge_every", converge_every),
                                             ("converge_tol", converge_tol),
                                             ("converge_patience", converge_patience))
             if value is not None}
    if round_end == "epochs":
        if given:
            raise ValueError(f"{', '.join(sorted(given))} only apply with round_end='converged' "
                             "(round_end is 'epochs'): pass round_end='converged' or drop them.")
        return None
    if rewind is not None and rewind.unit == "ep":
        raise ValueError(f"Rewind point {rewind} is given in epochs, but with "
                         "round_end='converged' a fit epoch is a chunk of converge_every steps: "
                         "give the rewind point in iterations (e.g. '500it').")
    return ConvergenceCriterion(
        every=DEFAULT_EVERY if converge_every is None else converge_every,
        tol=DEFAULT_TOL if converge_tol is None else converge_tol,
        patience=DEFAULT_PATIENCE if converge_patience is None else converge_patience)


def chunked_batches(x, y, batch_size, chunk_steps, seed=0, start_chunk=0):
    """An endless dataset of `(x, y)` batches in fixed order, from chunk `start_chunk` on.

    The stream is that of `controls.ordered_batches` (data epoch `e` is a
    permutation depending only on `(seed, e)`), cut into chunks of
    `chunk_steps` batches: chunk `c` starts at batch `c * chunk_steps` of the
    stream whatever `start_chunk` was, so a run resumed at chunk `c`
    (`fit(..., initial_epoch=c)`) trains on exactly the batches an
    uninterrupted run does.

    Returns:
      `(dataset, chunk_steps)`: pass them to fit as data and `steps_per_epoch`.

    Raises:
      ValueError: for mismatched lengths, a batch size or chunk_steps < 1.
    """
    from keras_lottery.controls import ordered_batches

    if not _is_int(chunk_steps) or chunk_steps < 1:
        raise ValueError(f"chunk_steps must be an integer >= 1, got {chunk_steps!r}.")
    if not _is_int(start_chunk) or start_chunk < 0:
        raise ValueError(f"start_chunk must be an integer >= 0, got {start_chunk!r}.")
    per_epoch = -(-len(x) // max(1, int(batch_size)))
    offset = int(start_chunk) * int(chunk_steps)
    dataset, _ = ordered_batches(x, y, batch_size, seed=seed, start_epoch=offset // per_epoch)
    return dataset.skip(offset % per_epoch), int(chunk_steps)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class ConvergenceCriterion:
    """When a round's mask counts as converged (the settings, validated).

    Args:
      every: steps between two checks (>= 1); it is also the length of a
        "chunk" epoch, the `steps_per_epoch` to give fit (`IMP.fit_kwargs`).
      tol: the largest distance (`mask_distance`, a fraction of the round's
        pruned weights) between the mask now and each of the last
        `patience` checks' masks, in (0, 1).
      patience: how many earlier checks' masks the mask now must be within
        `tol` of (>= 1); the round cannot end before check `patience`
        (step `patience * every`).

    Raises:
      ValueError: for a value out of range, naming it and the accepted range.
    """

    def __init__(self, every=DEFAULT_EVERY, tol=DEFAULT_TOL, patience=DEFAULT_PATIENCE):
        if not _is_int(every) or every < 1:
            raise ValueError(f"converge_every must be an integer number of steps >= 1, got "
                             f"{every!r} (default {DEFAULT_EVERY}).")
        if (isinstance(tol, bool) or not isinstance(tol, numbers.Real)
                or not np.isfinite(tol) or not 0.0 < tol < 1.0):
            raise ValueError(f"converge_tol must be a fraction in (0, 1) of the round's pruned "
                             f"weights, got {tol!r} (default {DEFAULT_TOL}).")
        if not _is_int(patience) or patience < 1:
            raise ValueError(f"converge_patience must be an integer number of checks >= 1, got "
                             f"{patience!r} (default {DEFAULT_PATIENCE}).")
        self.every = int(every)
        self.tol = float(tol)
        self.patience = int(patience)

    def get_config(self):
        return {"converge_every": self.every, "converge_tol": self.tol,
                "converge_patience": self.patience}

    def __repr__(self):
        return (f"ConvergenceCriterion(every={self.every}, tol={self.tol}, "
                f"patience={self.patience})")


class MaskConvergence:
    """Tracks the would-be masks of one round and says when they converged.

    Args:
      criterion: a `ConvergenceCriterion`.

    Attributes:
      history: `[step, distance]` per check (`distance` is None at checks
        with no earlier mask): the largest distance between the mask at
        `step` and the masks of the `patience` checks before it (fewer at
        the round's first checks).
      converged_step: the step of the first check at which the round
        converged, or None.
    """

    def __init__(self, criterion):
        self.criterion = criterion
        self.reset()

    def reset(self):
        """Forgets the round's masks (call at each round's start)."""
        self._recent = collections.deque(maxlen=self.criterion.patience)
        self.history = []
        self.converged_step = None

    @property
    def checks(self):
        """The number of checks made this round."""
        return len(self.history)

    def update(self, step, masks, pruned, can_end=True):
        """Adds the mask the round would produce at `step`; True once converged.

        Args:
          step: steps trained in the round.
          masks: dict name -> 0/1 mask the round would produce now.
          pruned: how many weights the round prunes.
          can_end: False while the round may not end yet (round 0 before
            the rewind point): the check is recorded, but returns False.

        Returns:
          True if the mask now is within `tol` of each of the last
          `patience` checks' masks (there must be `patience` of them).
        """
        flat = np.concatenate([np.asarray(masks[name]).ravel() > 0.5 for name in sorted(masks)])
        distances = [mask_distance(flat, old, pruned) for old in self._recent]
        distance = max(distances) if distances else None
        self.history.append([int(step), distance])
        done = (can_end and len(self._recent) == self.criterion.patience
                and distance <= self.criterion.tol)
        self._recent.append(flat)
        if done and self.converged_step is None:
            self.converged_step = int(step)
        return done
