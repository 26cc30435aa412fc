"""Copies of a network and the straight line between two of them.

`interpolate(A, B, alpha)` builds (1 - alpha) * A + alpha * B. Batch
normalization: the moving statistics of an interpolated network are not the
interpolation of the endpoints' statistics, so `recompute_bn_statistics`
recomputes them on training batches (see the `keras_lottery.stability`
package docstring).
"""

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from keras_lottery._keras import check_tf_keras_model, keras
from keras_lottery.schedule import IMPSchedule
from keras_lottery.wrap import iter_layers, pruned_layers

__all__ = ["copy_model", "interpolate", "recompute_bn_statistics"]


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
