"""Instability analysis: two copies of θk trained with different data orders, and their barrier."""

import dataclasses
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from keras_lottery.callback import enforce_masks
from keras_lottery.guard import SparsityGuard
from keras_lottery.models import compile_classifier
from keras_lottery.stability.interpolation import copy_model
from keras_lottery.stability.path import DEFAULT_POINTS, PathResult, evaluate_path
from keras_lottery.rewind import mask_moving_averages
from keras_lottery.wrap import pruned_layers

__all__ = ["InstabilityResult", "instability_analysis", "train_copy"]


def _default_compile(model):
    compile_classifier(model, "sgd", 0.1)


def _dataset(x, y, batch_size, seed):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=int(seed), reshuffle_each_iteration=True)
    return ds.batch(batch_size).repeat()


def train_copy(model, x, y, steps, seed, batch_size=128, compile_fn=None, start_step=0,
               callbacks=None, check_sparsity=None):
    """Trains a copy of `model` for `steps` steps in the data order given by `seed`.

    The copy's optimizer is fresh (no momentum) with its step counter at
    `start_step`, so a learning-rate schedule continues from the rewind point k
    exactly as IMP's rewinding does (`rewind.reset_optimizer`). For a wrapped
    model (a ticket) the masks stay fixed and pruned weights stay zero.

    Args:
      model: the starting state θk (optionally wrapped and masked); not modified.
      x, y: training data.
      steps: optimizer steps to train (> 0).
      seed: shuffle seed: the only source of difference between two copies.
      batch_size: examples per step.
      compile_fn: `model -> None` compiling the copy with its optimizer, loss
        and metrics (default: SGD(0.1, momentum 0.9), sparse cross-entropy from logits).
      start_step: the optimizer's step counter at the start (k).
      callbacks: extra Keras callbacks.
      check_sparsity: optional N: for a ticket, a `SparsityGuard(every=N)`
        checks after every N-th step that each pruned weight is exactly zero
        (`True`: every step); the guard is left on the copy as
        `copy.sparsity_guard`.

    Returns:
      The trained copy.

    Raises:
      ValueError: for steps < 1.
      SparsityViolation: with `check_sparsity`, if a pruned weight is
        non-zero after a checked step.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    copy = copy_model(model)
    (compile_fn or _default_compile)(copy)
    copy.optimizer.iterations.assign(int(start_step))
    extra = list(callbacks or [])
    if pruned_layers(copy):
        # as in IMPCallback: kernels masked once, the optimizer's constraint
        # re-applies the masks after every step, tfmot's per-step ops bypassed
        # (and a legacy optimizer's Embedding gets a dense gradient)
        enforce_masks(copy)
        extra = [tfmot.sparsity.keras.UpdatePruningStep()] + extra
        if check_sparsity:
            copy.sparsity_guard = SparsityGuard(every=1 if check_sparsity is True else check_sparsity)
            extra.insert(1, copy.sparsity_guard)
    copy.fit(_dataset(x, y, batch_size, seed), epochs=1, steps_per_epoch=int(steps),
             callbacks=extra, verbose=0)
    if pruned_layers(copy):
        # use_ema: fit ended by writing averages taken before the mask constraint
        mask_moving_averages(copy.optimizer, copy)
    return copy


@dataclasses.dataclass
class InstabilityResult:
    """The outcome of one instability analysis.

    Attributes:
      path: the `PathResult` between the two trained copies.
      instability: the error barrier (same as `path.barrier`).
      accuracies: test accuracy of the two trained copies.
      seeds: their data-order seeds.
      start_step, steps: where training started (k) and how long it ran.
      seconds: wall time.
      models: the two trained copies (not serialized).
    """

    path: PathResult
    instability: float
    accuracies: list
    seeds: list
    start_step: int
    steps: int
    seconds: float
    models: list = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def accuracy(self):
        """Mean test accuracy of the two copies (the ticket's accuracy)."""
        return float(np.mean(self.accuracies))

    def to_dict(self):
        return {"instability": self.instability, "accuracy": self.accuracy,
                "accuracies": list(self.accuracies), "seeds": list(self.seeds),
                "start_step": self.start_step, "steps": self.steps,
                "seconds": self.seconds, "path": self.path.to_dict()}


def instability_analysis(model, train_data, eval_data, steps, seeds=(1, 2), batch_size=128,
                         compile_fn=None, start_step=0, num_points=DEFAULT_POINTS,
                         bn_examples=2048, eval_batch_size=256, from_logits=True,
                         check_sparsity=None):
    """Trains two copies of `model` with different data orders and measures the barrier.

    Works for dense networks (any model) and for tickets (a wrapped model whose
    masks define the subnetwork, e.g. after `WeightSnapshot.restore`).

    Args:
      model: the state θk to start from (not modified).
      train_data: `(x, y)` training arrays.
      eval_data: `(x, y)` on which the path is evaluated (the papers use test data).
      steps: training steps for each copy (the rest of training after k).
      seeds: two different shuffle seeds.
      batch_size, compile_fn, start_step: see `train_copy`.
      num_points: points on the path.
      bn_examples: training examples on which BN statistics are recomputed at
        each point (0 or None: keep interpolated statistics).
      eval_batch_size: evaluation batch size.
      from_logits: whether the model outputs logits.
      check_sparsity: optional N: check a ticket's pruned weights after every
        N-th step of both copies (see `train_copy`).

    Returns:
      An `InstabilityResult`.

    Raises:
      ValueError: for equal seeds or bad steps / num_points.

    Example:
      >>> res = instability_analysis(ticket_at_k, (x, y), (xt, yt), steps=T - k,
      ...                            start_step=k, compile_fn=my_compile)  # doctest: +SKIP
      >>> res.instability < DEFAULT_THRESHOLD   # stable at k?           # doctest: +SKIP
    """
    seeds = [int(s) for s in seeds]
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"seeds must be two different integers, got {seeds!r}: equal "
                         "seeds give the same data order and trivially zero instability.")
    started = time.perf_counter()
    x, y = train_data
    copies = [train_copy(model, x, y, steps, s, batch_size, compile_fn, start_step,
                         check_sparsity=check_sparsity) for s in seeds]
    bn_data = x[: int(bn_examples)] if bn_examples else None
    path = evaluate_path(copies[0], copies[1], *eval_data, num_points=num_points, bn_data=bn_data,
                         batch_size=eval_batch_size, from_logits=from_logits)
    accuracies = [1.0 - path.errors[0], 1.0 - path.errors[-1]]
    return InstabilityResult(path=path, instability=path.barrier, accuracies=accuracies,
                             seeds=seeds, start_step=int(start_step), steps=int(steps),
                             seconds=time.perf_counter() - started, models=copies)
