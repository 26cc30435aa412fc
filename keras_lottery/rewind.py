"""Weight snapshots (θ0, θk) and rewinding survivors to them.

Snapshots are NumPy copies on the host, off the training graph: restoring one
is a handful of variable assignments at a round boundary, never a retrace.
"""

import numpy as np

from keras_lottery.masks import prunable_weights
from keras_lottery.schedule import parse_rewind
from keras_lottery.wrap import pruned_layers

__all__ = [
    "WeightSnapshot",
    "model_state_variables",
    "reset_optimizer",
    "rewind_step",
]


def _bookkeeping_ids(model):
    """ids of tfmot's own variables (masks, thresholds, pruning steps)."""
    ids = set()
    for wrapper in pruned_layers(model):
        ids.add(id(wrapper.pruning_step))
        for _, mask, threshold in wrapper.pruning_vars:
            ids.add(id(mask))
            ids.add(id(threshold))
    return ids


def model_state_variables(model):
    """The model's own variables: every weight except tfmot's bookkeeping.

    Kernels, biases, normalization scales/offsets and moving statistics are
    all included, so a rewind restores the network's full state at step k.
    """
    skip = _bookkeeping_ids(model)
    return [v for v in model.weights if id(v) not in skip]


class WeightSnapshot:
    """A host copy of a model's state variables, taken at optimizer step `step`.

    Args:
      names: variable names, in `model_state_variables` order.
      values: list of ndarrays.
      step: the optimizer step the snapshot belongs to.

    Example:
      >>> theta0 = WeightSnapshot.capture(model, step=0)   # doctest: +SKIP
      >>> theta0.restore(model, masks)                      # doctest: +SKIP
    """

    def __init__(self, names, values, step):
        self.names = list(names)
        self.values = [np.array(v, copy=True) for v in values]
        self.step = int(step)

    @classmethod
    def capture(cls, model, step):
        variables = model_state_variables(model)
        return cls([v.name for v in variables], [v.numpy() for v in variables], step)

    @property
    def nbytes(self):
        return int(sum(v.nbytes for v in self.values))

    def as_dict(self):
        return dict(zip(self.names, self.values))

    def restore(self, model, masks=None):
        """Assigns the snapshot to `model`; kernels become θ ⊙ mask.

        Args:
          model: the wrapped model the snapshot was taken from.
          masks: optional dict weight name -> mask (see `masks.read_masks`); by
            default the masks now in the model.

        Raises:
          ValueError: if the model's variables do not match the snapshot.
        """
        variables = model_state_variables(model)
        if [v.name for v in variables] != self.names:
            raise ValueError(
                "The snapshot does not match this model's variables; it was "
                "taken from a different model.")
        by_id = {}
        for w in prunable_weights(model):
            mask = w.mask.numpy() if masks is None else np.asarray(masks[w.name])
            by_id[id(w.weight)] = mask
        for variable, value in zip(variables, self.values):
            mask = by_id.get(id(variable))
            if mask is not None:
                value = value * mask.astype(value.dtype)
            variable.assign(value)


def reset_optimizer(optimizer, step):
    """Resets the optimizer's slots and sets its step counter to `step`.

    Slots (momentum, Adam's m and v, ...) go back to their initial values
    (zeros; Adagrad-style accumulators to `initial_accumulator_value`), and
    `iterations` is set to `step`, so a learning-rate schedule continues from
    the rewind point k as if training had restarted there.

    Args:
      optimizer: a tf_keras optimizer (current or legacy).
      step: the rewind step k.
    """
    variables = optimizer.variables
    if callable(variables):
        variables = variables()
    iterations = optimizer.iterations
    initial_accumulator = getattr(optimizer, "initial_accumulator_value", None)
    for variable in variables:
        if variable is iterations or variable.name == iterations.name:
            continue
        value = np.zeros(variable.shape, variable.dtype.as_numpy_dtype)
        if initial_accumulator is not None and "accumulator" in variable.name:
            value = value + initial_accumulator
        variable.assign(value)
    iterations.assign(step)


def rewind_step(rewind, steps_per_epoch):
    """The optimizer step k a rewind point ('500it', '2ep', 0) stands for."""
    return parse_rewind(rewind).to_steps(steps_per_epoch)
