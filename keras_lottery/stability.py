"""Instability analysis, stability to pruning, and the search for a rewind point.

Frankle, Dziugaite, Roy & Carbin ("Linear Mode Connectivity and the Lottery
Ticket Hypothesis") call a network *stable* at step k when two copies trained
from θk with different SGD noise (here: data order) end in the same linearly
connected region: the error along the straight line between their final
weights does not rise above that of the endpoints. Instability is the error
barrier: the highest error on the path minus the mean of the endpoints'
errors. IMP finds matching tickets (by rewinding to θk) from about the first
k at which the subnetwork is stable.

Batch normalization: the moving statistics of an interpolated network are not
the interpolation of the endpoints' statistics (the activations change
non-linearly with the weights), so evaluating it with interpolated moving
statistics measures a broken network, not the loss landscape. By default each
point on the path gets its moving mean and variance recomputed from training
batches (`recompute_bn_statistics`: a cumulative average over the batches, in
training mode), as the papers' authors and later work do for BN networks.
Pass `bn_data=None` to switch that off (the two endpoints then keep their own
statistics, interior points the interpolation).

Everything here works on copies: the models passed in are never modified.
"""

import dataclasses
import logging
import math
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from keras_lottery import masks as masks_lib
from keras_lottery import report as report_lib
from keras_lottery.guard import SparsityGuard
from keras_lottery.models import compile_classifier
from keras_lottery._keras import check_tf_keras_model, keras
from keras_lottery.schedule import IMPSchedule, parse_rewind
from keras_lottery.wrap import (
    bypass_wrapper_ops,
    iter_layers,
    pruned_layers,
    wrap_model,
)

__all__ = [
    "DEFAULT_POINTS",
    "DEFAULT_THRESHOLD",
    "InstabilityResult",
    "PathResult",
    "RewindSearchResult",
    "copy_model",
    "earliest_stable",
    "evaluate_path",
    "instability_analysis",
    "interpolate",
    "plot_instability",
    "plot_paths",
    "pruning_distance",
    "recompute_bn_statistics",
    "search_rewind_point",
    "train_copy",
]

logger = logging.getLogger("keras_lottery")

DEFAULT_POINTS = 30
DEFAULT_THRESHOLD = 0.02  # 2 percentage points of error, as in the papers


# -- copies and interpolation ------------------------------------------------


def _custom_objects():
    return {"IMPSchedule": IMPSchedule}


def copy_model(model):
    """A copy of `model` (tfmot pruning wrappers included) with the same weights.

    Args:
      model: a tf_keras Sequential or Functional model, wrapped or not.

    Returns:
      A new model sharing no variables with `model`; not compiled.

    Raises:
      TypeError: for a Keras 3 model or a non-model.
    """
    check_tf_keras_model(model)
    with tfmot.sparsity.keras.prune_scope(), keras.utils.custom_object_scope(_custom_objects()):
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _bn_layers(model):
    return [layer for layer in iter_layers(model, inside_wrappers=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _check_same_structure(model_a, model_b):
    shapes_a = [tuple(w.shape) for w in model_a.weights]
    shapes_b = [tuple(w.shape) for w in model_b.weights]
    if shapes_a != shapes_b:
        raise ValueError(
            "The two models have different variables (shapes "
            f"{shapes_a[:4]}... vs {shapes_b[:4]}...); interpolation needs two "
            "copies of the same architecture (and both wrapped, or neither).")


def _interpolated_values(values_a, values_b, alpha):
    out = []
    for a, b in zip(values_a, values_b):
        if np.issubdtype(a.dtype, np.floating):
            # a + alpha * (b - a): exactly a when the endpoints are equal
            out.append((a + alpha * (b - a)).astype(a.dtype))
        else:  # step counters and other integer bookkeeping: keep A's
            out.append(a)
    return out


def recompute_bn_statistics(model, x, batch_size=128, max_batches=None):
    """Recomputes every BatchNormalization layer's moving mean and variance.

    The model runs in training mode over `x` batch by batch; each layer's
    momentum is set so that its moving statistics become the plain average of
    the per-batch statistics (momentum (i - 1) / i for the i-th batch), then
    restored. Only the moving statistics change: no trainable weight is
    updated. Used on interpolated networks, whose true statistics are not the
    interpolation of the endpoints'.

    Args:
      model: the model to update in place (a copy, normally).
      x: training inputs (ndarray or tensor), at least one batch.
      batch_size: examples per batch.
      max_batches: optional cap on the number of batches.

    Returns:
      The number of batches used (0 if the model has no batch norm).

    Raises:
      ValueError: if `x` is empty.
    """
    layers = _bn_layers(model)
    if not layers:
        return 0
    n = len(x)
    if n == 0:
        raise ValueError("recompute_bn_statistics needs at least one training example.")
    for wrapper in pruned_layers(model):  # tfmot asserts step >= 0 in training mode
        if int(wrapper.pruning_step.numpy()) < 0:
            wrapper.pruning_step.assign(0)
    saved = [layer.momentum for layer in layers]
    starts = list(range(0, n, batch_size))
    if max_batches:
        starts = starts[: int(max_batches)]
    try:
        for i, start in enumerate(starts, start=1):
            for layer in layers:
                layer.momentum = (i - 1) / i
            model(tf.convert_to_tensor(x[start:start + batch_size]), training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(starts)


def interpolate(model_a, model_b, alpha, bn_data=None, bn_batch_size=128, into=None):
    """The network (1 - alpha) * A + alpha * B, as a new model.

    Floating-point variables (kernels, biases, masks, BN statistics) are
    interpolated; integer ones (tfmot's step counters) are taken from A. With
    `bn_data`, the batch-norm moving statistics are then recomputed on it.

    Args:
      model_a, model_b: two models of the same architecture; not modified.
      alpha: position on the path, 0 gives A and 1 gives B.
      bn_data: optional training inputs to recompute BN statistics on.
      bn_batch_size: batch size for that.
      into: optional model of the same architecture to write into (saves a
        copy per point); never pass model_a or model_b.

    Returns:
      The interpolated model.

    Raises:
      ValueError: for models of different structure or `into` being one of them.
    """
    _check_same_structure(model_a, model_b)
    if into is model_a or into is model_b:
        raise ValueError("`into` must be a separate model, not one of the endpoints: "
                         "interpolation never modifies its inputs.")
    probe = into if into is not None else copy_model(model_a)
    probe.set_weights(_interpolated_values(model_a.get_weights(), model_b.get_weights(),
                                           float(alpha)))
    if bn_data is not None:
        recompute_bn_statistics(probe, bn_data, batch_size=bn_batch_size)
    return probe


# -- evaluation along the path ------------------------------------------------


def _loss_and_error(model, x, y, batch_size, from_logits):
    # direct calls in inference mode: no predict function to trace per copy
    out = np.concatenate([
        np.asarray(model(tf.convert_to_tensor(x[i:i + batch_size]), training=False))
        for i in range(0, len(x), batch_size)]).astype(np.float64)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(y) != len(out) or y.min() < 0 or y.max() >= out.shape[1]:
        raise ValueError(f"Labels must be {len(out)} integers in [0, {out.shape[1]}) for a model "
                         f"with {out.shape[1]} outputs; got {len(y)} labels in "
                         f"[{y.min()}, {y.max()}].")
    if from_logits:
        shifted = out - out.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    else:
        log_probs = np.log(np.clip(out, 1e-12, None))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    error = float(np.mean(np.argmax(out, axis=1) != y))
    return loss, error


@dataclasses.dataclass
class PathResult:
    """Loss and error along the straight line between two networks.

    Attributes:
      alphas: positions on the path (0 = A, 1 = B).
      errors, losses: classification error (fraction) and cross-entropy there.
      barrier: max error on the path minus the mean of the endpoints' errors
        (the error instability; >= 0).
      loss_barrier: the same for the loss.
      bn_recomputed: whether BN statistics were recomputed at each point.
    """

    alphas: list
    errors: list
    losses: list
    barrier: float
    loss_barrier: float
    bn_recomputed: bool = False

    @property
    def endpoint_error(self):
        """Mean error of the two endpoints."""
        return 0.5 * (self.errors[0] + self.errors[-1])

    @property
    def bump(self):
        """Highest error on the path minus the *worse* endpoint's error (>= 0).

        The papers' barrier (max - mean of endpoints) also counts half of any
        gap between the endpoints; `bump` is only the rise inside the path.
        """
        return max(0.0, float(max(self.errors) - max(self.errors[0], self.errors[-1])))

    def to_dict(self):
        return dataclasses.asdict(self)


def _barrier(values):
    return max(0.0, float(max(values) - 0.5 * (values[0] + values[-1])))


def evaluate_path(model_a, model_b, x, y, num_points=DEFAULT_POINTS, bn_data=None,
                  bn_batch_size=128, batch_size=256, from_logits=True):
    """Evaluates loss and error at `num_points` evenly spaced points from A to B.

    Args:
      model_a, model_b: two trained models of the same architecture (not modified).
      x, y: evaluation data (integer labels).
      num_points: points on the path, endpoints included (>= 2; papers use 30).
      bn_data: training inputs on which BN statistics are recomputed at every
        point (None: use the interpolated statistics). Ignored without BN.
      bn_batch_size: batch size for the BN recomputation.
      batch_size: evaluation batch size.
      from_logits: whether the models output logits (True) or probabilities.

    Returns:
      A `PathResult`.

    Raises:
      ValueError: for num_points < 2 or models of different structure.

    Example:
      >>> path = evaluate_path(net_a, net_b, x_test, y_test, bn_data=x[:2048])  # doctest: +SKIP
      >>> path.barrier, path.errors[len(path.errors) // 2]                      # doctest: +SKIP
    """
    if isinstance(num_points, bool) or int(num_points) != num_points or num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2, got {num_points!r}.")
    _check_same_structure(model_a, model_b)
    has_bn = bool(_bn_layers(model_a))
    use_bn = bn_data is not None and has_bn
    alphas = [float(a) for a in np.linspace(0.0, 1.0, int(num_points))]
    probe = copy_model(model_a)
    # the endpoints' weights are read once, not once per point
    values_a, values_b = model_a.get_weights(), model_b.get_weights()
    losses, errors = [], []
    for alpha in alphas:
        probe.set_weights(_interpolated_values(values_a, values_b, alpha))
        if use_bn:
            recompute_bn_statistics(probe, bn_data, batch_size=bn_batch_size)
        loss, error = _loss_and_error(probe, x, y, batch_size, from_logits)
        losses.append(loss)
        errors.append(error)
    return PathResult(alphas=alphas, errors=errors, losses=losses,
                      barrier=_barrier(errors), loss_barrier=_barrier(losses),
                      bn_recomputed=use_bn)


# -- training two copies --------------------------------------------------------


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
        masks_lib.apply_masks(copy)
        masks_lib.attach_mask_constraints(copy)
        bypass_wrapper_ops(copy)
        extra = [tfmot.sparsity.keras.UpdatePruningStep()] + extra
        if check_sparsity:
            copy.sparsity_guard = SparsityGuard(every=1 if check_sparsity is True else check_sparsity)
            extra.insert(1, copy.sparsity_guard)
    copy.fit(_dataset(x, y, batch_size, seed), epochs=1, steps_per_epoch=int(steps),
             callbacks=extra, verbose=0)
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


# -- stability to pruning -------------------------------------------------------


def _kernels(model):
    """layer name -> kernel ndarray of every prunable (or pruned) layer."""
    if pruned_layers(model):
        return {w.layer_name: w.weight.numpy() * w.mask.numpy()
                for w in masks_lib.prunable_weights(model)}
    from keras_lottery.wrap import is_prunable

    return {layer.name: layer.kernel.numpy() for layer in iter_layers(model, inside_wrappers=True)
            if not isinstance(layer, keras.Model) and is_prunable(layer)
            and getattr(layer, "kernel", None) is not None}


def pruning_distance(subnetwork, dense, survivors_only=True):
    """Stability to pruning: how far a trained subnetwork ends from the trained dense net.

    ||w_sub - w_dense|| / ||w_dense|| over the prunable kernels the two
    models share (matched by layer name). With `survivors_only` both norms run
    over the subnetwork's surviving weights only (the pruned ones are zero in
    the subnetwork by construction); otherwise over all weights.

    Args:
      subnetwork: the trained ticket (a wrapped model; its masks say which
        weights survive) or any model with the same layers.
      dense: the trained dense network (wrapped or not).
      survivors_only: restrict to the surviving weights.

    Returns:
      A float >= 0 (0: the subnetwork reached the dense network's weights).

    Raises:
      ValueError: if the models share no prunable layer of equal shape, or the
        dense weights are all zero.
    """
    sub, den = _kernels(subnetwork), _kernels(dense)
    masks = ({w.layer_name: w.mask.numpy() for w in masks_lib.prunable_weights(subnetwork)}
             if pruned_layers(subnetwork) else {})
    common = [n for n in sub if n in den and sub[n].shape == den[n].shape]
    if not common:
        raise ValueError(f"The models share no prunable layer of equal shape (subnetwork: "
                         f"{sorted(sub)}, dense: {sorted(den)}).")
    diff = norm = 0.0
    for name in common:
        keep = masks.get(name) if survivors_only else None
        keep = np.ones_like(sub[name]) if keep is None else keep
        diff += float(np.sum((keep * (sub[name] - den[name])) ** 2))
        norm += float(np.sum((keep * den[name]) ** 2))
    if norm == 0.0:
        raise ValueError("The dense network's weights are all zero at the surviving positions.")
    return math.sqrt(diff / norm)


# -- the rewind-point search -------------------------------------------------------


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
        k = int(c) if isinstance(c, (int, np.integer)) else parse_rewind(c).to_steps(steps_per_epoch)
        label = f"{k}it" if isinstance(c, (int, np.integer)) else str(parse_rewind(c))
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


# -- plots -------------------------------------------------------------------------


def plot_paths(paths, path, title=None):
    """Plots test error (and loss) along the interpolation path, one line per entry.

    Args:
      paths: dict label -> `PathResult` (or its `to_dict()`), or a list of rows
        from `RewindSearchResult.rows`.
      path: PNG file to write.
      title: optional figure title.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(paths, list):
        paths = {f"k = {r['rewind']}": r for r in paths}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, p in paths.items():
        p = p.to_dict() if hasattr(p, "to_dict") else p
        ax.plot(p["alphas"], [100 * e for e in p["errors"]], "o-", ms=3, label=label)
    ax.set_xlabel("interpolation α (0 = copy A, 1 = copy B)")
    ax.set_ylabel("test error (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return report_lib.save_figure(fig, path)


def plot_instability(result, path, title=None):
    """Plots instability and ticket accuracy against the rewind point k.

    Args:
      result: a `RewindSearchResult` (or its `to_dict()`).
      path: PNG file to write.
      title: optional figure title.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result.to_dict() if hasattr(result, "to_dict") else result
    rows = r["rows"]
    xs = range(len(rows))
    labels = [f"{row['rewind']}\n({row['k_steps']})" for row in rows]
    fig, (ax_i, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    ax_i.plot(xs, [100 * row["instability"] for row in rows], "o-", label="instability")
    ax_i.axhline(100 * r["threshold"], color="gray", ls="--", label="threshold")
    ax_i.set_ylabel("error barrier (percentage points)")
    ax_a.plot(xs, [100 * row["accuracy"] for row in rows], "o-", label="subnetwork from θk")
    if r.get("dense_accuracy") is not None:
        ax_a.axhline(100 * r["dense_accuracy"], color="gray", ls="--", label="dense from θ0")
    ax_a.set_ylabel("test accuracy (%)")
    for ax in (ax_i, ax_a):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels)
        ax.set_xlabel("rewind point k (steps)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title or f"{100 * r['weights_remaining']:.1f}% weights remaining; "
                 f"earliest stable: {r['chosen']}")
    fig.tight_layout()
    return report_lib.save_figure(fig, path)
