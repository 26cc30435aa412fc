"""Loss and error along the linear path between two trained networks (the error barrier)."""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_lottery.stability.interpolation import (
    _bn_layers,
    _check_same_structure,
    _interpolated_values,
    copy_model,
    recompute_bn_statistics,
)

__all__ = ["DEFAULT_POINTS", "PathResult", "evaluate_path"]

DEFAULT_POINTS = 30


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
