"""Weight snapshots (θ0, θk) and rewinding survivors to them.

Snapshots are NumPy copies on the host, off the training graph: restoring one
is a handful of variable assignments at a round boundary, never a retrace.
"""

import weakref

import numpy as np
import tensorflow as tf

from keras_lottery.masks import apply_masks, prunable_weights
from keras_lottery.schedule import parse_rewind
from keras_lottery.wrap import pruned_layers

__all__ = [
    "OptimizerInitialState",
    "WeightSnapshot",
    "base_optimizer",
    "build_optimizer",
    "capture_optimizer_state",
    "is_legacy_optimizer",
    "mask_moving_averages",
    "optimizer_variables",
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


def optimizer_variables(optimizer):
    """The optimizer's own variables (slots, step counter), current or legacy API."""
    variables = optimizer.variables
    if callable(variables):
        variables = variables()
    return list(variables)


def _trainable(model):
    """`model.trainable_variables`, or `model` itself if it is a variable list."""
    if hasattr(model, "trainable_variables"):
        return list(model.trainable_variables)
    return list(model)


def build_optimizer(optimizer, model):
    """Creates the optimizer's slots now, for `model`'s trainable variables.

    Keras creates them lazily inside the first training step; IMP needs them
    before it (to read their initial values, or to restore a checkpoint).
    Idempotent. A `LossScaleOptimizer` builds its inner optimizer.

    Args:
      optimizer: a tf_keras optimizer (current or legacy API).
      model: the model it trains, or a list of the variables it trains.
    """
    base = base_optimizer(optimizer)
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    # Under the model's strategy, as fit creates the state: a call from outside
    # fit (a script, a test) would otherwise create plain, unmirrored variables.
    with strategy.scope():
        if is_legacy_optimizer(base):
            base._create_all_weights(_trainable(model))
        elif not getattr(base, "_built", False):
            base.build(_trainable(model))


def base_optimizer(optimizer):
    """The optimizer that holds the state: the inner one of a `LossScaleOptimizer`."""
    inner = getattr(optimizer, "inner_optimizer", None)
    return optimizer if inner is None else base_optimizer(inner)


def _extra_state(optimizer):
    """Optimizer state Keras keeps outside `optimizer.variables`.

    The current API's Nadam keeps the running product of its momentum
    schedule in `_u_product` (initial value 1.0), a plain attribute.
    """
    found = []
    for attr in ("_u_product",):
        value = getattr(base_optimizer(optimizer), attr, None)
        if value is not None and hasattr(value, "assign"):
            found.append(value)
    return found


def _resettable(optimizer):
    """The optimizer's state variables a rewind resets, in creation order.

    Slots and extra state (see `_extra_state`), without the step counter and
    without `use_ema`'s moving averages (reset to the model's variables).
    """
    base = base_optimizer(optimizer)
    iterations = base.iterations
    ema = {id(v) for v in getattr(base, "_model_variables_moving_average", None) or []}
    return [v for v in optimizer_variables(base) + _extra_state(base)
            if v is not iterations and v.name != iterations.name and id(v) not in ema]


def _compact(value):
    """A scalar when every entry of `value` is equal (the usual initial slot)."""
    flat = value.ravel()
    if flat.size and np.all(flat == flat[0]):
        return flat[0].copy()
    return value.copy()


class OptimizerInitialState:
    """The values an optimizer's state variables start from, for rewinding.

    Recorded when the IMP fit begins, before any training step: zeros for
    momentum and Adam's moments, but
    `initial_accumulator_value` for Adagrad's and Ftrl's accumulators, 1.0
    for Nadam's momentum-schedule product, and so on for any optimizer,
    without a per-optimizer table. With `use_ema=True` the moving averages
    are not restored from here: a rewind sets each to its model variable's
    rewound value, which is what Keras initialises them with. The step
    counter is set by `restore`'s `step`; a dynamic loss scale is left as it
    is (it tracks the numerics, not the training trajectory).

    Args:
      values: initial values of the optimizer's resettable state, in
        creation order; NumPy scalars for constant tensors, arrays otherwise.
      ema: whether the optimizer keeps `use_ema` moving averages.
      var_list: the model variables the optimizer trains.

    Example:
      >>> state = OptimizerInitialState.capture(model.optimizer, model)  # doctest: +SKIP
      >>> state.restore(model.optimizer, step=500)                        # doctest: +SKIP
    """

    def __init__(self, values, ema=False, var_list=()):
        self.values = list(values)
        self.ema = bool(ema)
        self.var_list = list(var_list)

    @classmethod
    def capture(cls, optimizer, model):
        """Records the initial values of `optimizer`'s state for `model`.

        The values are read from a shadow: a fresh optimizer of the same class
        and config, built on copies of the model's variables. The optimizer
        itself is left to create its slots inside its first step, as Keras
        does (building it earlier, from a callback, made Nadam diverge under
        MirroredStrategy here). `restore` matches shadow and live variables
        by creation order, which depends only on the class, config and
        variable list.

        Args:
          optimizer: a tf_keras optimizer (current or legacy API); it may
            already have taken steps (the shadow starts fresh).
          model: the model it trains, or a list of the variables it trains.
        """
        base = base_optimizer(optimizer)
        var_list = _trainable(model)
        shadow = type(base).from_config(base.get_config())
        copies = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in var_list]
        build_optimizer(shadow, copies)
        values = [_compact(np.asarray(v.numpy())) for v in _resettable(shadow)]
        return cls(values, ema=bool(getattr(base, "use_ema", False)), var_list=var_list)
    def restore(self, optimizer, step):
        """Puts the optimizer's state back to its initial values; step counter to `step`.

        Raises:
          RuntimeError: if the optimizer's variables do not correspond to the
            recorded ones (another model's optimizer).
        """
        base = base_optimizer(optimizer)
        live = _resettable(base)
        if not live:
            # Rewound before its first step (a control entering round 1): Keras
            # creates the state at its initial values inside that step. Creating
            # it here instead, from a callback, is what made Nadam diverge under
            # MirroredStrategy (see `capture`).
            optimizer.iterations.assign(step)
            return
        if len(live) != len(self.values):
            raise RuntimeError(
                f"The optimizer has {len(live)} state variables, {len(self.values)} "
                "were recorded when fit began: it is not the optimizer this state "
                "was captured from.")
        for variable, value in zip(live, self.values):
            if np.ndim(value) == 0:
                value = np.full(variable.shape, value, dtype=variable.dtype.as_numpy_dtype)
            variable.assign(value)
        if self.ema and getattr(base, "_built", False):
            for var in self.var_list:
                average = base._model_variables_moving_average[base._index_dict[base._var_key(var)]]
                average.assign(var)
        optimizer.iterations.assign(step)


def is_legacy_optimizer(optimizer):
    """True for `keras.optimizers.legacy.*` (OptimizerV2), also inside a loss scaler."""
    return hasattr(base_optimizer(optimizer), "_create_all_weights")


def mask_moving_averages(optimizer, model):
    """Zeroes pruned positions in `use_ema` averages and in the weights fit wrote from them.

    Keras updates a moving average inside the optimizer step, before the
    variable's constraint (the mask) runs, so averages hold small non-zero
    values at pruned positions, and `fit` ends by writing the averages into
    the model (`finalize_variable_values`). Called by `IMPCallback` when fit
    ends. A no-op without `use_ema`.
    """
    base = base_optimizer(optimizer)
    if not getattr(base, "use_ema", False) or not getattr(base, "_built", False):
        return
    for w in prunable_weights(model):
        index = base._index_dict.get(base._var_key(w.weight))
        if index is None:
            continue
        average = base._model_variables_moving_average[index]
        average.assign(average * tf.cast(w.mask, average.dtype))
    apply_masks(model)


_INITIAL_STATES = weakref.WeakKeyDictionary()


def capture_optimizer_state(optimizer, model):
    """Records `optimizer`'s initial state for later `reset_optimizer` calls.

    `IMPCallback` calls it at the start of `fit`. Returns the
    `OptimizerInitialState`.
    """
    state = OptimizerInitialState.capture(optimizer, model)
    _INITIAL_STATES[optimizer] = state
    return state


def reset_optimizer(optimizer, step):
    """Resets the optimizer's state to its initial values and its step counter to `step`.

    Slots (momentum, Adam's m and v, Adagrad's accumulators, Nadam's schedule
    product, ...) go back to the values they were created with, recorded by
    `capture_optimizer_state` when the IMP fit began, and `iterations` is set
    to `step`, so a learning-rate schedule continues from the rewind point k
    as if training had restarted there. With `use_ema=True` each moving
    average is set to its (rewound) model variable.

    Args:
      optimizer: a tf_keras optimizer (current or legacy).
      step: the rewind step k.

    Raises:
      ValueError: if no initial state was recorded for this optimizer (fit
        it with the IMP callbacks, or call `capture_optimizer_state` first).
    """
    state = _INITIAL_STATES.get(optimizer)
    if state is None:
        raise ValueError(
            "No initial state was recorded for this optimizer: reset_optimizer "
            "runs inside an IMP fit (IMPCallback records the state at the start "
            "of fit), or after keras_lottery.rewind.capture_optimizer_state("
            "optimizer, model).")
    state.restore(optimizer, step)


def rewind_step(rewind, steps_per_epoch):
    """The optimizer step k a rewind point ('500it', '2ep', 0) stands for."""
    return parse_rewind(rewind).to_steps(steps_per_epoch)
