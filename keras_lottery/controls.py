"""The controls that make a lottery ticket a *winning* ticket.

A ticket is the mask IMP found in each round plus the weights it rewinds to
(θk; θ0 in the original lottery ticket). Frankle & Carbin compare it with two
controls at every sparsity level, trained exactly like the ticket (same
optimizer, same data order, same number of steps from the same step k):

- `"reinit"`: the ticket's mask, weights drawn afresh from each layer's
  initializer (a new seed per round);
- `"random"`: a random mask with the same number of weights kept in every
  layer, weights taken from the ticket's rewind point θk.

Usage::

    data, steps = ordered_batches(x, y, batch_size=60, seed=0)   # fixed order
    model = imp.wrap(base); model.compile(...)
    callbacks = imp.callbacks(...)
    recorder = TicketRecorder(callbacks)
    model.fit(data, steps_per_epoch=steps, epochs=imp.epochs(per_round=2),
              callbacks=callbacks + [recorder])
    reinit = train_control("reinit", model, recorder, x, y, batch_size=60, data_seed=0)

Each control is one `fit` over rounds 1..R (nothing retraced between rounds),
driven by `ControlCallback`, which reports a `RoundResult` per round exactly
like `IMPCallback`.
"""

import logging

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from keras_lottery import masks as masks_lib
from keras_lottery._keras import keras
from keras_lottery.callback import IMPCallback
from keras_lottery.rewind import WeightSnapshot, model_state_variables, reset_optimizer
from keras_lottery.wrap import is_pruning_wrapper

__all__ = [
    "CONTROLS",
    "ControlCallback",
    "TicketRecorder",
    "clone_for_control",
    "ordered_batches",
    "parse_controls",
    "random_masks",
    "reinit_values",
    "train_control",
]

logger = logging.getLogger("keras_lottery")

CONTROLS = ("reinit", "random")


def parse_controls(text):
    """Parses `"reinit,random"` (or a list) into a tuple of control names.

    Raises:
      ValueError: for an unknown name, listing the known ones.

    Example:
      >>> parse_controls("reinit, random")
      ('reinit', 'random')
    """
    if text is None:
        return ()
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise ValueError(f"Unknown control(s) {unknown}; choose from {list(CONTROLS)} "
                         "(e.g. --controls reinit,random).")
    return tuple(dict.fromkeys(names))


def _derived_seed(*parts):
    return int(np.random.default_rng([abs(int(p)) for p in parts]).integers(2 ** 31 - 1))


# -- data order ---------------------------------------------------------------


def ordered_batches(x, y, batch_size, seed=0, start_epoch=0):
    """An endless dataset whose epoch `e` is a fixed permutation of (x, y).

    The order of epoch `e` depends only on `(seed, e)`, so a ticket trained
    from epoch 0 and a control trained from epoch `start_epoch` see exactly
    the same batches in the same round. Batches never straddle epochs.

    Args:
      x, y: arrays with the same first dimension.
      batch_size: examples per batch.
      seed: data-order seed.
      start_epoch: the first epoch the dataset yields.

    Returns:
      `(dataset, steps_per_epoch)`: pass both to `fit` (`steps_per_epoch=`).

    Raises:
      ValueError: for mismatched lengths or a non-positive batch size.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y have different lengths ({len(x)} vs {len(y)}).")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
    n, batch_size = len(x), int(batch_size)
    xs, ys = tf.constant(x), tf.constant(y)
    seed = int(seed)

    def epoch_indices(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    dataset = (tf.data.Dataset.counter(int(start_epoch))
               .flat_map(epoch_indices)
               .map(lambda idx: (tf.gather(xs, idx), tf.gather(ys, idx)),
                    num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    return dataset, -(-n // batch_size)


# -- the ticket -----------------------------------------------------------------


class TicketRecorder(keras.callbacks.Callback):
    """Records the mask of every IMP round (what the controls need).

    Pass it to the ticket's `fit` together with the IMP callbacks, in either
    order: `callbacks = imp.callbacks(...); callbacks.append(TicketRecorder(callbacks))`.

    Args:
      imp_callback: the ticket's `IMPCallback`, or a list of callbacks holding one.

    Attributes:
      masks: dict round -> {weight name: 0/1 mask} used in that round.
      imp_callback: the ticket's `IMPCallback` (θk, schedule, history).

    Raises:
      ValueError: if no `IMPCallback` is given.
    """

    def __init__(self, imp_callback):
        super().__init__()
        if isinstance(imp_callback, (list, tuple)):
            found = [cb for cb in imp_callback if isinstance(cb, IMPCallback)]
            imp_callback = found[0] if found else None
        if not isinstance(imp_callback, IMPCallback):
            raise ValueError("TicketRecorder needs the ticket's IMPCallback (e.g. "
                             "TicketRecorder(imp.callbacks(...)) or TicketRecorder(imp.callback)).")
        self.imp_callback = imp_callback
        self.masks = {}

    def on_train_begin(self, logs=None):
        self.masks = {0: masks_lib.read_masks(self.model)}

    def on_epoch_end(self, epoch, logs=None):
        # Masks change only at round boundaries, so reading them under the
        # callback's current round is right before or after it advances.
        rnd = self.imp_callback.round
        if rnd not in self.masks:
            self.masks[rnd] = masks_lib.read_masks(self.model)

    @property
    def rewind_snapshot(self):
        """The ticket's rewind weights θk (a `WeightSnapshot`)."""
        if self.imp_callback.theta_k is None:
            raise ValueError("The ticket has no rewind point yet: train it first.")
        return self.imp_callback.theta_k


def random_masks(masks, seed):
    """Random masks keeping, in every tensor, as many weights as `masks` does.

    Args:
      masks: dict weight name -> 0/1 mask.
      seed: random seed.

    Returns:
      dict name -> float32 0/1 mask with the same count of ones per tensor.
    """
    result = {}
    for i, (name, mask) in enumerate(sorted(masks.items())):
        mask = np.asarray(mask)
        keep = int(np.round(mask.sum()))
        rng = np.random.default_rng(_derived_seed(seed, i))
        flat = np.zeros(mask.size, np.float32)
        flat[rng.choice(mask.size, size=keep, replace=False)] = 1.0
        result[name] = flat.reshape(mask.shape)
    return {name: result[name] for name in masks}


def _initializers(model):
    """dict id(variable) -> the initializer its layer was built with."""
    found = {}

    def visit(layer):
        if isinstance(layer, keras.Model):
            for sub in layer.layers:
                visit(sub)
            return
        inner = layer.layer if is_pruning_wrapper(layer) else layer
        for weight in inner.weights:
            short = weight.name.split("/")[-1].split(":")[0]
            init = getattr(inner, f"{short}_initializer", None)
            if init is not None:
                found[id(weight)] = init

    visit(model)
    return found


def reinit_values(model, seed):
    """Fresh values for every state variable of `model`, from its initializers.

    Each weight is redrawn from its layer's `<name>_initializer` with a new
    seed derived from `seed` (so the draw differs from θ0 even when the
    model was built with seeded initializers). Variables without a known
    initializer keep their current value.

    Returns:
      A list of ndarrays in `model_state_variables(model)` order.
    """
    inits = _initializers(model)
    values = []
    for i, variable in enumerate(model_state_variables(model)):
        init = inits.get(id(variable))
        if init is None:
            logger.debug("reinit: no initializer for %s; keeping its value", variable.name)
            values.append(variable.numpy())
            continue
        config = init.get_config()
        if "seed" in config:
            config["seed"] = _derived_seed(seed, i)
        fresh = type(init).from_config(config)
        values.append(np.asarray(fresh(tuple(variable.shape), dtype=variable.dtype)))
    return values


def clone_for_control(model):
    """A fresh copy of a wrapped, compiled model, compiled the same way.

    Raises:
      ValueError: if `model` was not compiled.
    """
    if not getattr(model, "compiled_loss", None) and not getattr(model, "_is_compiled", False):
        raise ValueError("Compile the ticket's model before training controls from it.")
    from keras_lottery.imp import custom_objects

    with tfmot.sparsity.keras.prune_scope(), keras.utils.custom_object_scope(custom_objects()):
        clone = keras.models.clone_model(model)
        clone.compile_from_config(model.get_compile_config())
    return clone


class ControlCallback(IMPCallback):
    """Trains a control of a found ticket over its rounds 1..R in one `fit`.

    At the start of each round it writes the control's mask (the ticket's, or
    a random one with the same per-tensor count), sets the weights (fresh
    initializer draws, or the ticket's θk) masked, and resets the optimizer to
    the ticket's rewind step k. Fit it for `total_epochs` epochs starting at
    `initial_epoch=epochs_per_round` on data in the ticket's order (see
    `ordered_batches`). Results, reports and the early-stopping iteration are
    recorded as `IMPCallback` does.

    Args:
      kind: `"reinit"` or `"random"`.
      recorder: the ticket's `TicketRecorder` (after the ticket's fit).
      seed: seed of the control's random draws.
      test_data, report_dir, verbose, run_config, eval_every,
        validation_data: as for `IMPCallback`.

    Raises:
      ValueError: for an unknown kind, or a recorder missing rounds.
    """

    def __init__(self, kind, recorder, seed=0, test_data=None, report_dir=None, verbose=0,
                 run_config=None, eval_every=None, validation_data=None):
        if kind not in CONTROLS:
            raise ValueError(f"Unknown control {kind!r}; choose one of {list(CONTROLS)}.")
        ticket = recorder.imp_callback
        missing = [r for r in range(1, ticket.schedule.rounds + 1) if r not in recorder.masks]
        if missing:
            raise ValueError(f"The ticket's masks for rounds {missing} were not recorded: "
                             "finish the ticket's fit (all rounds) with the TicketRecorder.")
        super().__init__(ticket.schedule, ticket.epochs_per_round, rewind=str(ticket.rewind),
                         scope=ticket.scope, layer_rates=ticket.layer_rates, test_data=test_data,
                         report_dir=report_dir, verbose=verbose,
                         run_config=dict(run_config or {}, control=kind, control_seed=seed),
                         eval_every=eval_every, validation_data=validation_data)
        self.kind = kind
        self.recorder = recorder
        self.seed = int(seed)
        self.masks_used = {}
        self._checked_start = False

    @property
    def initial_epoch(self):
        """The `initial_epoch` to pass to `fit` (the start of round 1)."""
        return self.epochs_per_round

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._checked_start = False
        self._enter_round(1)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if not self._checked_start:
            self._checked_start = True
            if epoch != self.initial_epoch:
                raise ValueError(f"Fit a control with initial_epoch={self.initial_epoch} "
                                 f"(round 1 starts there), not {epoch}.")

    def _next_round(self):
        self._enter_round(self.round + 1)

    def _enter_round(self, rnd):
        masks = self.recorder.masks[rnd]
        if self.kind == "random":
            masks = random_masks(masks, _derived_seed(self.seed, rnd, 1))
        masks_lib.write_masks(self.model, masks)
        base = self.recorder.rewind_snapshot
        variables = model_state_variables(self.model)
        if [tuple(v.shape) for v in variables] != [v.shape for v in base.values]:
            raise ValueError("The control model does not match the ticket's variables.")
        values = (reinit_values(self.model, _derived_seed(self.seed, rnd, 2))
                  if self.kind == "reinit" else base.values)
        WeightSnapshot([v.name for v in variables], values, base.step).restore(self.model, masks)
        reset_optimizer(self.model.optimizer, base.step)
        self.masks_used[rnd] = masks
        self.round = rnd
        self._reset_round_state()


def train_control(kind, model, recorder, x, y=None, *, batch_size=None, data_seed=0, seed=0,
                  validation_data=None, test_data=None, eval_every=None, report_dir=None,
                  verbose=0, run_config=None):
    """Trains one control of the ticket IMP found in `model`.

    Args:
      kind: `"reinit"` or `"random"`.
      model: the ticket's wrapped, compiled model (after its IMP `fit`); it is
        not changed: the control trains a fresh copy.
      recorder: the `TicketRecorder` that watched the ticket's fit.
      x, y: training arrays (batched with `ordered_batches(x, y, batch_size,
        data_seed)`, as the ticket should be), or `x` a callable
        `start_epoch -> (dataset, steps_per_epoch)` giving the ticket's order.
      batch_size: batch size for array data.
      data_seed: the ticket's data-order seed.
      seed: seed of the control's random draws.
      validation_data, test_data, eval_every, report_dir, verbose, run_config:
        as for `IMPCallback`.

    Returns:
      The control's `ControlCallback` (its `history` has a `RoundResult`
      for rounds 1..R).

    Raises:
      ValueError: for an unknown kind, a ticket without all rounds recorded, or
        array data without a batch size.
    """
    control = ControlCallback(kind, recorder, seed=seed, test_data=test_data,
                              report_dir=report_dir, verbose=verbose, run_config=run_config,
                              eval_every=eval_every, validation_data=validation_data)
    if callable(x):
        data, steps = x(control.initial_epoch)
    else:
        if batch_size is None:
            raise ValueError("Pass batch_size= (the ticket's) to train a control on arrays.")
        data, steps = ordered_batches(x, y, batch_size, seed=data_seed,
                                      start_epoch=control.initial_epoch)
    clone = clone_for_control(model)
    clone.fit(data, steps_per_epoch=steps, epochs=control.total_epochs,
              initial_epoch=control.initial_epoch, validation_data=validation_data,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), control], verbose=0)
    control.trained_model = clone
    return control
