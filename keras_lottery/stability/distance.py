"""Stability to pruning: the distance between a trained subnetwork and the trained dense network."""

import math

import numpy as np

from keras_lottery import masks as masks_lib
from keras_lottery._keras import keras
from keras_lottery.wrap import iter_layers, pruned_layers

__all__ = ["pruning_distance"]


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
