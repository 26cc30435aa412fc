"""The controls that make a lottery ticket a *winning* ticket.

A ticket is the mask IMP found in each round plus the weights it rewinds to
(θk; θ0 in the original lottery ticket). Frankle & Carbin compare it with two
controls at every sparsity level, trained exactly like the ticket (same
optimizer, same data order, same number of steps from the same step k):

- `"reinit"`: the ticket's mask, every weight drawn afresh from the
  initializer its layer holds (a new seed per round), cells of RNN layers,
  separable and depthwise kernels included (see `weight_initializers`);
- `"random"`: a random mask with the same number of weights kept in every
  layer, weights taken from the ticket's rewind point θk; for a block ticket
  (`IMP(block=...)`) random whole blocks, the same number in every layer.

For a ticket found with learning-rate rewinding (`rewind="lr"`), whose rounds
start from the previous round's trained survivors rather than from θk, the
controls stay the same from-scratch baselines: every control round starts
from fresh weights (`"reinit"`) or from θk (`"random"`, θ0 for `"lr"`) at step
k, for one round's training. They ask whether the ticket's inherited, trained
weights and its mask beat training that sparsity from the start; they are not
a chain of random pruning with learning-rate rewinding.

Usage::

    data, steps = ordered_batches(x, y, batch_size=60, seed=0)   # fixed order
    model = imp.wrap(base); model.compile(...)
    callbacks = imp.callbacks(...)
    recorder = TicketRecorder(callbacks)
    model.fit(data, steps_per_epoch=steps, epochs=imp.epochs(per_round=2),
              callbacks=callbacks + [recorder])
    reinit = train_control("reinit", model, recorder, x, y, batch_size=60, data_seed=0)

Pass `check_sparsity=1` to `train_control` to check after every batch that the
control's pruned weights are exactly zero (a `SparsityGuard`).

Each control is one `fit` over rounds 1..R (nothing retraced between rounds),
driven by `ControlCallback`, which reports a `RoundResult` per round exactly
like `IMPCallback`. Every control round trains as long as the ticket's round
did: for an Early-Bird ticket (`IMP(round_end="converged")`), whose rounds end
at different chunks, each round's own length, ending at the chunk boundary the
ticket's round ended at (see `ControlCallback`).
"""

import logging

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from keras_lottery import blocks as blocks_lib
from keras_lottery import masks as masks_lib
from keras_lottery._keras import keras
from keras_lottery.callback import IMPCallback
from keras_lottery.guard import SparsityGuard
from keras_lottery.rewind import WeightSnapshot, model_state_variables, reset_optimizer
from keras_lottery.wrap import is_pruning_wrapper

__all__ = [
    "CONTROLS",
    "ControlCallback",
    "InitializerNotFound",
    "TicketRecorder",
    "clone_for_control",
    "ordered_batches",
    "parse_controls",
    "random_masks",
    "reinit_values",
    "train_control",
    "weight_initializers",
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


def random_masks(masks, seed, blocks=None):
    """Random masks keeping, in every tensor, as many weights as `masks` does.

    Args:
      masks: dict weight name -> 0/1 mask.
      seed: random seed.
      blocks: optional dict weight name -> per-axis block sizes (see
        `blocks.kernel_blocks`) or None: a tensor with a block keeps as many
        random whole blocks as `masks` keeps blocks (with a partial last
        block the count of weights may then differ by less than a block).

    Returns:
      dict name -> float32 0/1 mask with the same count of ones (of blocks,
      for a tensor with a block) per tensor.

    Raises:
      ValueError: if a mask with a block is not made of whole blocks.
    """
    blocks = blocks or {}
    result = {}
    for i, (name, mask) in enumerate(sorted(masks.items())):
        mask = np.asarray(mask)
        block = blocks.get(name)
        grid = mask > 0.5 if block is None else blocks_lib.block_alive(mask, block, name)
        keep = int(grid.sum())
        rng = np.random.default_rng(_derived_seed(seed, i))
        flat = np.zeros(grid.size, np.float32)
        flat[rng.choice(grid.size, size=keep, replace=False)] = 1.0
        drawn = flat.reshape(grid.shape)
        result[name] = drawn if block is None else blocks_lib.expand_blocks(drawn, block, mask.shape)
    return {name: result[name] for name in masks}


class InitializerNotFound(ValueError):
    """A trainable weight whose initializer the re-init control cannot find.

    Attributes:
      weight: the variable's name.
      layer: the name of the layer that created it.
    """

    def __init__(self, weight, layer, tried):
        self.weight, self.layer = weight, layer
        super().__init__(
            f"reinit control: no initializer found for the trainable weight {weight} "
            f"of layer {layer!r} (looked for the attribute(s) {', '.join(tried)}), so "
            "it cannot be redrawn and the control would not be a re-initialisation. "
            "Give the layer a `<weight>_initializer` attribute holding the "
            "initializer it builds that weight with, or use the 'random' control only.")


def _initializer_names(short):
    """The attributes that may hold weight `short`'s initializer, in lookup order."""
    names = [f"{short}_initializer"]
    if short.endswith("_kernel"):  # recurrent_kernel -> recurrent_initializer, ...
        names.append(f"{short[:-len('_kernel')]}_initializer")
    return names


def _short_name(variable):
    """The weight's own name: `prune_low_magnitude_lstm/lstm_cell/recurrent_kernel:0` -> `recurrent_kernel`."""
    return variable.name.split("/")[-1].split(":")[0]


def _owned_weights(layer):
    """The variables `layer` itself created (not its sublayers')."""
    return (list(getattr(layer, "_trainable_weights", ()))
            + list(getattr(layer, "_non_trainable_weights", ())))


def _owners(model):
    """dict id(variable) -> the layer that created it.

    Walks every layer Keras tracks, at any depth: nested models, the layer
    inside a pruning wrapper, the cell of an RNN layer, both directions of
    `Bidirectional`, `TimeDistributed`'s layer, attention's sublayers. Pruning
    wrappers are skipped: they create only tfmot's bookkeeping and list the
    inner layer's kernels as their own too.
    """
    owners = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if is_pruning_wrapper(layer):
            continue
        for weight in _owned_weights(layer):
            owners.setdefault(id(weight), layer)
    return owners


def _forget_bias_initializer(init):
    """An LSTM cell's bias with `unit_forget_bias`: `init`, ones for the forget gate, `init`."""

    def initializer(shape, dtype=None):
        n = shape[-1] // 4
        return tf.concat([init((n,), dtype=dtype), tf.ones((n,), dtype=dtype),
                          init((2 * n,), dtype=dtype)], axis=-1)

    return initializer


def weight_initializers(model):
    """The initializer of every state variable of `model`, found from its layer.

    Each variable is matched to the layer that created it (`_owners`), and
    its initializer is that layer's `<name>_initializer` attribute, or for a
    `<name>_kernel` weight `<name>_initializer` (`pointwise_kernel` ->
    `pointwise_initializer`, `depthwise_kernel` -> `depthwise_initializer`,
    `recurrent_kernel` -> `recurrent_initializer`). An LSTM cell's bias with
    `unit_forget_bias=True` gets ones for the forget gate, as Keras builds it.

    Args:
      model: a (wrapped) tf_keras model.

    Returns:
      A list, in `model_state_variables(model)` order, of `(variable, layer,
      initializer)`; `initializer` is None for a non-trainable variable
      without one (e.g. `Normalization`'s adapted mean and variance).

    Raises:
      InitializerNotFound: for a trainable variable without an initializer.
    """
    owners = _owners(model)
    found = []
    for variable in model_state_variables(model):
        layer = owners.get(id(variable))
        short = _short_name(variable)
        names = _initializer_names(short)
        init = None
        if layer is not None:
            for name in names:
                init = getattr(layer, name, None)
                if init is not None:
                    break
        if init is None and variable.trainable:
            raise InitializerNotFound(variable.name, getattr(layer, "name", "?"), names)
        found.append((variable, layer, init))
    return found


def _fresh(init, seed):
    """A copy of initializer `init` drawing with `seed` (unseeded ones get one too)."""
    if not hasattr(init, "get_config"):
        return init  # a plain function: nothing to reseed
    config = init.get_config()
    if "seed" in config:
        config["seed"] = seed
    return type(init).from_config(config)


def reinit_values(model, seed):
    """Fresh values for every state variable of `model`, from its initializers.

    Every variable is redrawn from the initializer its layer holds (see
    `weight_initializers`) with a new seed derived from `seed`, so the draw
    differs from θ0 even when the model was built with seeded initializers.
    Constant initializers (zero biases, BN's ones) give their constants
    again. A non-trainable variable without an initializer (a preprocessing
    layer's adapted statistics) keeps its current value, with a warning; a
    trainable one raises, since keeping it would make the control a partial
    re-initialisation.

    Args:
      model: a (wrapped) tf_keras model.
      seed: seed of the draws.

    Returns:
      A list of ndarrays in `model_state_variables(model)` order.

    Raises:
      InitializerNotFound: for a trainable variable without an initializer.

    Example:
      >>> values = reinit_values(model, seed=3)   # doctest: +SKIP
    """
    values = []
    for i, (variable, layer, init) in enumerate(weight_initializers(model)):
        if init is None:
            logger.warning("reinit control: %s of layer %r has no initializer and is not "
                           "trainable; it keeps its value at the rewind point.",
                           variable.name, getattr(layer, "name", "?"))
            values.append(np.asarray(variable.numpy()))
            continue
        fresh = _fresh(init, _derived_seed(seed, i))
        if (_short_name(variable) == "bias" and getattr(layer, "unit_forget_bias", False)
                and len(variable.shape) == 1 and variable.shape[0] % 4 == 0):
            fresh = _forget_bias_initializer(fresh)
        value = fresh(tuple(variable.shape), dtype=variable.dtype)
        values.append(np.asarray(value, dtype=variable.dtype.as_numpy_dtype))
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


def _ticket_round_epochs(ticket):
    """The fit epochs of each of a converged ticket's rounds 0..R; None for fixed rounds.

    Raises:
      ValueError: if the ticket's history lacks rounds, or a round's steps
        are not whole chunks.
    """
    if ticket.convergence is None:
        return None
    rounds = ticket.schedule.rounds
    got = [r.round for r in ticket.history]
    if got != list(range(rounds + 1)):
        raise ValueError(
            f"The ticket ended its rounds by mask convergence (round_end='converged'), so a "
            f"control trains each round as long as the ticket's did, but the ticket's "
            f"history holds rounds {got}, not 0..{rounds}: finish the ticket's fit (all "
            "rounds) first, or resume it (imp.callbacks(resume_dir=...)), which restores "
            "its history.")
    every = ticket.convergence.every
    for r in ticket.history:
        if r.steps != r.epochs * every:
            raise ValueError(
                f"The ticket's round {r.round} trained {r.steps} steps in {r.epochs} "
                f"epochs, not whole chunks of converge_every={every} steps, so the control "
                "cannot end its rounds where the ticket's ended.")
    return [int(r.epochs) for r in ticket.history]


class ControlCallback(IMPCallback):
    """Trains a control of a found ticket over its rounds 1..R in one `fit`.

    At the start of each round it writes the control's mask (the ticket's, or
    a random one with the same per-tensor count), sets the weights (fresh
    initializer draws, or the ticket's θk) masked, and resets the optimizer to
    the ticket's rewind step k. Fit it for `total_epochs` epochs starting at
    `initial_epoch` on data in the ticket's order (see `ordered_batches`).
    Results, reports and the early-stopping iteration are recorded as
    `IMPCallback` does.

    Each round trains exactly as long as the ticket's round did. For a
    ticket of fixed rounds that is `epochs_per_round` epochs, and fit starts
    at `initial_epoch = epochs_per_round`. For an Early-Bird ticket
    (`round_end="converged"`), whose rounds end at different chunks, round r
    trains the chunks of `converge_every` steps the ticket's round r trained
    (`RoundResult.epochs` in the ticket's history): fit epochs are chunks
    (`steps_per_epoch=chunk_steps`, data from `convergence.chunked_batches`),
    `initial_epoch` is the chunk the ticket's round 1 started at, and each
    round ends at the chunk boundary where the ticket's ended. The control
    thus sees the ticket's batches round for round, and its last round
    trains the whole budget like the ticket's.

    Args:
      kind: `"reinit"` or `"random"`.
      recorder: the ticket's `TicketRecorder` (after the ticket's fit).
      seed: seed of the control's random draws.
      test_data, report_dir, verbose, run_config, eval_every,
        validation_data: as for `IMPCallback`.

    Attributes:
      chunk_steps: for a converged ticket, the steps of one fit epoch
        (`converge_every`); None for fixed rounds.

    Raises:
      ValueError: for an unknown kind, a recorder missing rounds, or a
        converged ticket whose history lacks rounds (its fit not finished).
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
        plan = _ticket_round_epochs(ticket)
        # a converged ticket's round_end settings go into the control's report too
        config = dict(ticket._round_end_config(), **dict(run_config or {}))
        super().__init__(ticket.schedule, ticket.epochs_per_round, rewind=str(ticket.rewind),
                         scope=ticket.scope, layer_rates=ticket.layer_rates, test_data=test_data,
                         block=ticket.block, block_score=ticket.block_score,
                         block_exempt=ticket.block_exempt,
                         report_dir=report_dir, verbose=verbose,
                         run_config=dict(config, control=kind, control_seed=seed),
                         eval_every=eval_every, validation_data=validation_data)
        self.kind = kind
        self.recorder = recorder
        self.seed = int(seed)
        self.masks_used = {}
        self._checked_start = False
        self._plan = plan
        self.chunk_steps = None if plan is None else ticket.convergence.every
        if plan is not None:
            self.total_epochs = sum(plan)

    @property
    def initial_epoch(self):
        """The `initial_epoch` to pass to `fit` (the start of round 1)."""
        return self.epochs_per_round if self._plan is None else self._plan[0]

    def round_epochs(self, rnd=None):
        """The fit epochs round `rnd` trains: as many as the ticket's round `rnd` did."""
        rnd = self.round if rnd is None else rnd
        return self.epochs_per_round if self._plan is None else self._plan[rnd]

    @property
    def round_first_epoch(self):
        """The fit epoch the current round started at."""
        return self._round_first_epoch

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.chunk_steps is not None and self._steps_per_epoch != self.chunk_steps:
            raise ValueError(
                f"The ticket's rounds end at chunks of {self.chunk_steps} steps "
                "(round_end='converged'), but the control's fit runs "
                f"{self._steps_per_epoch or 'unknown'} steps per epoch: fit it with "
                f"steps_per_epoch={self.chunk_steps} on convergence.chunked_batches(..., "
                "start_chunk=control.initial_epoch) (train_control does).")
        self._checked_start = False
        self._round_first_epoch = self.initial_epoch
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
            masks = random_masks(masks, _derived_seed(self.seed, rnd, 1), blocks_lib.kernel_blocks(
                masks_lib.prunable_weights(self.model), self.block, self.block_exempt))
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
                  verbose=0, run_config=None, check_sparsity=None, callbacks=None,
                  validation_freq=1):
    """Trains one control of the ticket IMP found in `model`.

    Every control round trains as long as the ticket's round did, on the
    ticket's batches of that round. For an Early-Bird ticket
    (`round_end="converged"`) that is its own length of each round, in
    chunks of `converge_every` steps (see `ControlCallback`).

    Args:
      kind: `"reinit"` or `"random"`.
      model: the ticket's wrapped, compiled model (after its IMP `fit`); it is
        not changed: the control trains a fresh copy.
      recorder: the `TicketRecorder` that watched the ticket's fit.
      x, y: training arrays (batched with `ordered_batches(x, y, batch_size,
        data_seed)` as the ticket should be, or for a converged ticket with
        `convergence.chunked_batches(x, y, batch_size, converge_every,
        data_seed)`), or `x` a callable `start_epoch -> (dataset,
        steps_per_epoch)` giving the ticket's order from that fit epoch on
        (for a converged ticket an epoch is a chunk).
      batch_size: batch size for array data.
      data_seed: the ticket's data-order seed.
      seed: seed of the control's random draws.
      validation_data, test_data, eval_every, report_dir, verbose, run_config:
        as for `IMPCallback`.
      check_sparsity: optional N: a `SparsityGuard(every=N)` checks after
        every N-th batch of the control's fit that each pruned weight is
        exactly zero, as `IMP.callbacks(check_sparsity=N)` does for the ticket
        (`True` means every batch).
      callbacks: optional further Keras callbacks for the control's fit, run
        after its `ControlCallback`; an entry that is a function is called
        with the `ControlCallback` and must return the callback (e.g.
        `lambda control: RoundProgress(control, "reinit")`).
      validation_freq: passed to the control's `fit` (give the ticket's; it
        counts fit epochs, so the control validates at the ticket's epochs).

    Returns:
      The control's `ControlCallback` (its `history` has a `RoundResult`
      for rounds 1..R; `trained_model` is the trained copy and
      `sparsity_guard` the `SparsityGuard` used, or None).

    Raises:
      ValueError: for an unknown kind, a ticket without all rounds recorded, or
        array data without a batch size.
      InitializerNotFound: for `"reinit"`, when a trainable weight's
        initializer cannot be found (raised before the first step).
      SparsityViolation: with `check_sparsity`, if a pruned weight is non-zero
        after a checked batch.
    """
    callbacks_extra = list(callbacks or ())
    control = ControlCallback(kind, recorder, seed=seed, test_data=test_data,
                              report_dir=report_dir, verbose=verbose, run_config=run_config,
                              eval_every=eval_every, validation_data=validation_data)
    if callable(x):
        data, steps = x(control.initial_epoch)
    else:
        if batch_size is None:
            raise ValueError("Pass batch_size= (the ticket's) to train a control on arrays.")
        if control.chunk_steps is not None:  # the ticket's stream, in its chunks
            from keras_lottery.convergence import chunked_batches

            data, steps = chunked_batches(x, y, batch_size, control.chunk_steps, seed=data_seed,
                                          start_chunk=control.initial_epoch)
        else:
            data, steps = ordered_batches(x, y, batch_size, seed=data_seed,
                                          start_epoch=control.initial_epoch)
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), control]
    control.sparsity_guard = None
    if check_sparsity:
        every = 1 if check_sparsity is True else check_sparsity
        control.sparsity_guard = SparsityGuard(every=every)
        # before the control's own batch-end hook, as in IMP.callbacks
        callbacks.insert(1, control.sparsity_guard)
    for extra in callbacks_extra:
        callbacks.append(extra(control) if callable(extra) else extra)
    clone = clone_for_control(model)
    clone.fit(data, steps_per_epoch=steps, epochs=control.total_epochs,
              initial_epoch=control.initial_epoch, validation_data=validation_data,
              validation_freq=validation_freq, callbacks=callbacks, verbose=0)
    control.trained_model = clone
    return control
