"""`IMPCallback`: every IMP round inside one `model.fit` call.

At a round's end the callback (on the host, once, whatever the distribution
strategy) records a `RoundResult`, computes the next masks by magnitude over
the surviving weights, writes them into tfmot's mask variables, rewinds the
survivors to θk bit-exactly, and resets the optimizer to step k. The compiled
train function never changes, so nothing is retraced between rounds.
"""

import dataclasses
import logging
import os
import time

import numpy as np

from keras_lottery import blocks as blocks_lib
from keras_lottery import masks as masks_lib
from keras_lottery import report as report_lib
from keras_lottery._keras import keras
from keras_lottery.convergence import MaskConvergence, make_criterion
from keras_lottery.early_stop import IntervalEvaluator, early_stopping_point
from keras_lottery.rewind import (
    WeightSnapshot,
    capture_optimizer_state,
    is_legacy_optimizer,
    mask_moving_averages,
    reset_optimizer,
)
from keras_lottery.schedule import IMPSchedule, parse_rewind
from keras_lottery.wrap import (
    bypass_wrapper_ops,
    pruned_layers,
    rates_with_output_layers,
    require_imp_callbacks,
)

__all__ = ["IMPCallback", "RoundResult", "enforce_masks"]

logger = logging.getLogger("keras_lottery")


@dataclasses.dataclass
class RoundResult:
    """What one IMP round produced.

    Attributes:
      round: 0 for the dense network, r for the r-th pruned network.
      weights_remaining: fraction of prunable weights kept, overall.
      weights_remaining_by_layer: weight name -> fraction kept.
      epochs: epochs trained in this round.
      steps: optimizer steps trained in this round.
      loss, accuracy: training metrics of the round's last epoch.
      val_loss, val_accuracy: validation metrics of the round's last epoch.
      test_loss, test_accuracy: on `test_data` at the round's end, if given.
      early_stop_iteration: steps into the round at which validation loss
        was lowest (the papers' early-stopping iteration).
      early_stop_val_accuracy: validation accuracy at that point.
      early_stop_test_accuracy: test accuracy at that point (only with
        `eval_every` and `test_data`).
      seconds: wall time of the round's training (and evaluation).
      metrics: every metric Keras logged at the round's last epoch.
      all_weights_remaining: fraction of ALL the model's parameters kept
        (biases, normalization and layers that are not pruned count as kept).
      converged_step: with `round_end="converged"`, the step into the round
        at which its next mask converged and the round ended (None: the
        round trained its whole budget).
      mask_distances: with `round_end="converged"`, `[step, distance]` per
        check of the round (see `keras_lottery.convergence`); None in the
        last round, which has no next mask and trains its whole budget.
    """

    round: int
    weights_remaining: float
    weights_remaining_by_layer: dict
    epochs: int
    steps: int
    loss: float = None
    accuracy: float = None
    val_loss: float = None
    val_accuracy: float = None
    test_loss: float = None
    test_accuracy: float = None
    early_stop_iteration: int = None
    early_stop_val_accuracy: float = None
    seconds: float = None
    metrics: dict = dataclasses.field(default_factory=dict)
    early_stop_test_accuracy: float = None
    all_weights_remaining: float = None
    converged_step: int = None
    mask_distances: list = None

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row):
        return cls(**row)


def _accuracy_key(logs, prefix=""):
    for key in ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy"):
        if prefix + key in logs:
            return prefix + key
    return None


def _float(value):
    return None if value is None else float(value)


def _steps_per_execution(model):
    """The number of steps Keras runs between two batch callbacks (1 by default)."""
    value = getattr(model, "_steps_per_execution", None)
    try:
        return max(1, int(value.numpy())) if value is not None else 1
    except (AttributeError, TypeError, ValueError):
        return 1


def is_chief(model):
    """True if this process should write files for `model`'s strategy.

    Under `MultiWorkerMirroredStrategy` only the chief worker does; with no
    strategy, `MirroredStrategy` or `TPUStrategy` the single client does.
    """
    try:
        return bool(model.distribute_strategy.extended.should_checkpoint)
    except (AttributeError, NotImplementedError):
        return True


def _has_embedding(model):
    return any(isinstance(w.layer, keras.layers.Embedding) for w in pruned_layers(model))


def enforce_masks(model):
    """Makes the next `fit` of a compiled, masked `model` keep pruned weights at zero.

    What `IMPCallback` does when fit begins, for fits that train fixed masks
    without it (a retrained `Ticket`, `stability.train_copy`): the mask
    becomes each kernel's constraint (`masks.attach_mask_constraints`), the
    wrappers call their inner layers directly (`wrap.bypass_wrapper_ops`),
    and under a legacy optimizer embedding tables get a dense gradient (these
    optimizers refuse a constraint after a sparse update). The pruned weights
    are set to zero first: the direct call no longer multiplies kernels by
    their masks, so a value written there since the masks were (e.g. by
    `set_weights`) would otherwise take part in the first step. Call it
    before the fit's first step; pair it with `rewind.mask_moving_averages`
    when the fit ends (`use_ema`).

    Args:
      model: a wrapped model compiled with its optimizer.
    """
    masks_lib.apply_masks(model)
    masks_lib.attach_mask_constraints(model)
    bypass_wrapper_ops(model, dense_embedding_gradients=is_legacy_optimizer(model.optimizer))


class IMPCallback(keras.callbacks.Callback):
    """Runs iterative magnitude pruning with rewinding inside one `fit`.

    Use it with a model wrapped by `keras_lottery.wrap_model` (or `IMP.wrap`)
    and fit for `(schedule.rounds + 1) * epochs_per_round` epochs. Place it
    after tfmot's `UpdatePruningStep` (as `IMP.callbacks()` does).

    Args:
      schedule: the `IMPSchedule` (rounds, prune rate).
      epochs_per_round: epochs each round trains.
      rewind: rewind point, `"0it"` (θ0, the original LTH), `"500it"`, `"2ep"`;
        or learning-rate rewinding, `"lr"` / `"lr:500it"` / `"lr:2ep"` (see
        below).
      scope: `"layerwise"`, `"global"` or `"erk"` magnitude ranking.
      layer_rates: optional dict layer name -> per-round rate override.
      test_data: optional `(x, y)` tuple or dataset evaluated at each round's end.
      report_dir: optional folder; `imp_report.json` and `imp_history.csv` are
        rewritten (atomically) after every round, so an interrupted run keeps
        every finished round.
      verbose: 1 prints a line per finished round, 0 is silent.
      run_config: optional dict stored in the report as `config`.
      eval_every: optional interval in steps at which `validation_data` (and
        `test_data`) are evaluated inside a round to find the early-stopping
        iteration; default None uses the epoch-end `val_loss` only and costs
        nothing per step.
      validation_data: the `(x, y)` or dataset `eval_every` evaluates.
      layer_floor: in "global" / "erk" scope, the least share of the
        layer-wise count each kernel keeps (see `masks.compute_masks`).
      block: optional block setting, e.g. `(4, 1)`: prune Dense / Conv
        kernels in whole blocks (see `keras_lottery.blocks`); None (the
        default) or `(1, 1)` prunes weight by weight.
      block_score: how blocks are ranked, `"l2"` (default) or `"l1"`.
      round_end: `"epochs"` (default) trains every round for
        `epochs_per_round` epochs; `"converged"` (Early-Bird) checks every
        `converge_every` steps the mask the round would produce and ends
        the round at the first check where it has converged
        (`keras_lottery.convergence`); each fit epoch is then one chunk of
        `converge_every` steps (fit's `steps_per_epoch`), `epochs_per_round`
        chunks are a round's budget, the last round trains its whole budget,
        and fit stops once it is done (docs/concepts/early-bird.md).
      converge_every, converge_tol, converge_patience: the check interval in
        steps, the tolerance and the patience (`ConvergenceCriterion`;
        None: the defaults); only with `round_end="converged"`.
      block_exempt: names of layers left unstructured under `block`, or a
        function of the model being fit returning them (resolved when fit
        begins).
      output_layer_rate: optional per-round rate for every pruned layer
        feeding an output of the model being fit (`wrap.output_layers`,
        found when fit begins); an explicit `layer_rates` entry wins.

    Learning-rate rewinding (`rewind="lr"`, Renda et al., 2020): at a
    round's end the new masks are computed as usual, but the survivors keep
    their trained values (every model variable does: biases, normalization
    statistics), only the pruned weights are set to zero; the optimizer's
    state (slots) is reset to its initial values and its step counter set to
    k, the step every pruned round starts from (0 for `"lr"`, k for
    `"lr:<k>"`), so a learning-rate schedule replays from k exactly as under
    weight rewinding; only the weights differ. θk is still recorded (the
    controls and the step come from it). `ticket_weights` is the snapshot the
    last round started from (trained survivors at step k), which a `Ticket`
    stores.

    Raises:
      ValueError: for `test_data` / `validation_data` without labels or (given
        as arrays) with NaN / inf; for a bad rewind point (also one past the end of round 0,
        at the start of training, before any step), scope, block or round_end
        setting (also, at the start of training, a `steps_per_epoch` that
        is not `converge_every` with `round_end="converged"`).

    Example:
      >>> imp = IMPCallback(IMPSchedule(3, 0.2), epochs_per_round=2)  # doctest: +SKIP
      >>> model.fit(ds, epochs=8, callbacks=[UpdatePruningStep(), imp])  # doctest: +SKIP
    """

    #: When True (the default), `on_train_begin` makes the wrappers call their
    #: inner layers directly (`wrap.bypass_wrapper_ops`): the masks are then
    #: applied once per step, by the optimizer's variable constraint, instead
    #: of also by tfmot's per-step bookkeeping. Set it to False on an instance,
    #: before `fit`, to keep tfmot's forward pass (docs/performance.md).
    bypass_wrapper_ops = True

    def __init__(self, schedule, epochs_per_round, rewind="0it", scope="layerwise",
                 layer_rates=None, test_data=None, report_dir=None, verbose=1,
                 run_config=None, eval_every=None, validation_data=None,
                 layer_floor=masks_lib.LAYER_FLOOR, block=None, block_score="l2",
                 round_end="epochs", converge_every=None, converge_tol=None,
                 converge_patience=None, block_exempt=(), output_layer_rate=None):
        super().__init__()
        # The batch hook never reads `logs`: let Keras pass them as tensors
        # instead of copying them to NumPy (a host sync) after every step.
        self._supports_tf_logs = True
        if not isinstance(schedule, IMPSchedule):
            raise TypeError(f"schedule must be an IMPSchedule, got {schedule!r}.")
        if isinstance(epochs_per_round, bool) or int(epochs_per_round) != epochs_per_round or epochs_per_round < 1:
            raise ValueError(f"epochs_per_round must be an integer >= 1, got {epochs_per_round!r}.")
        if scope not in masks_lib.SCOPES:
            raise ValueError(f"scope must be one of {masks_lib.SCOPES}, got {scope!r}.")
        self.schedule = schedule
        self.epochs_per_round = int(epochs_per_round)
        self.rewind = parse_rewind(rewind)
        if self.rewind.unit == "ep" and self.rewind.value > self.epochs_per_round:
            raise ValueError(
                f"Rewind point {self.rewind} is past the end of round 0 "
                f"({self.epochs_per_round} epochs). Rewind to at most "
                f"'{self.epochs_per_round}ep', or train longer per round.")
        self.scope = scope
        self.round_end = round_end
        self.convergence = make_criterion(round_end, converge_every, converge_tol,
                                          converge_patience, self.rewind)
        self._tracker = None if self.convergence is None else MaskConvergence(self.convergence)
        self._round_first_epoch = 0
        self.layer_floor = float(layer_floor)
        self.layer_rates = dict(layer_rates or {})
        self.block = blocks_lib.parse_block(block)
        self.block_score = blocks_lib.check_block_score(block_score)
        self._block_exempt_for = block_exempt if callable(block_exempt) else None
        self.block_exempt = [] if callable(block_exempt) else sorted(block_exempt or ())
        self.output_layer_rate = output_layer_rate
        from keras_lottery.data import check_finite, check_labelled

        check_labelled(test_data, "test_data")
        check_labelled(validation_data, "validation_data")
        # arrays only (a dataset or a generator is not read here)
        check_finite({name: data for name, data in (("test_data", test_data),
                                                    ("validation_data", validation_data))
                      if isinstance(data, (tuple, list, dict))},
                     effect="Its accuracies would be computed on NaN outputs")
        self.test_data = test_data
        self.report_dir = os.fspath(report_dir) if report_dir is not None else None
        self.verbose = verbose
        self.run_config = dict(run_config or {})
        self._evaluator = (None if eval_every is None else
                           IntervalEvaluator(eval_every, validation_data, test_data))
        self.history = []
        self.theta0 = None
        self.theta_k = None
        self.round_start_weights = None
        self.round = 0
        self.total_epochs = (schedule.rounds + 1) * self.epochs_per_round

    # -- state --------------------------------------------------------------

    @property
    def rewind_steps(self):
        """The rewind point k in optimizer steps (known once training started)."""
        return self._k

    @property
    def ticket_weights(self):
        """The weights the ticket restarts from: θk, or for learning-rate
        rewinding the snapshot the current (last) round started from, at step k."""
        if self.rewind.rewinds_weights:
            return self.theta_k
        return self.round_start_weights

    def _reset_round_state(self):
        self._round_start = time.perf_counter()
        self._round_steps = 0
        self._val_curve = []
        if self._tracker is not None:
            self._tracker.reset()

    @property
    def _converged_step(self):
        """The step at which this round's next mask converged (None: not yet, or "epochs")."""
        return None if self._tracker is None else self._tracker.converged_step

    @property
    def round_first_epoch(self):
        """The fit epoch the current round started at."""
        if self.convergence is None:
            return self.round * self.epochs_per_round
        return self._round_first_epoch

    def round_epochs(self, rnd=None):
        """The fit epochs round `rnd` (default: the current one) trains at most.

        `epochs_per_round`; with `round_end="converged"` that is the round's
        budget in chunks, and any round but the last may end sooner. A
        `ControlCallback` of a converged ticket returns the ticket's own
        length of that round.
        """
        return self.epochs_per_round

    def round_ends_at(self, epoch):
        """True if the current round ends with fit epoch `epoch`.

        For callbacks that run before this one at an epoch's end (they see
        the round's trained weights and masks before it prunes and rewinds):
        with `round_end="converged"` the decision is taken at the epoch's
        last batch.
        """
        return (epoch - self.round_first_epoch + 1 >= self.round_epochs(self.round)
                or self._converged_step is not None)

    # -- Keras hooks --------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.theta0 is not None:
            raise ValueError(
                "This IMPCallback has already run (it holds θ0 and "
                f"{len(self.history)} finished round(s)); a second fit would take "
                "the pruned weights as a new θ0. Get fresh callbacks with "
                "imp.callbacks() for a new run; to continue an interrupted run, "
                "use imp.callbacks(resume_dir=...) and fit(..., "
                "initial_epoch=imp.initial_epoch()).")
        # from the model actually fit: one IMP may have wrapped several models
        if self._block_exempt_for is not None:
            self.block_exempt = sorted(self._block_exempt_for(self.model))
        self.layer_rates = rates_with_output_layers(self.model, self.layer_rates,
                                                    self.output_layer_rate)
        layers = {w.layer_name for w in masks_lib.prunable_weights(self.model)}
        unknown = set(self.layer_rates) - layers
        if unknown:
            raise ValueError(f"layer_rates names layers that are not pruned: "
                             f"{sorted(unknown)}; pruned layers: {sorted(layers)}.")
        epochs = self.params.get("epochs")
        if epochs is not None and epochs > self.total_epochs:
            raise ValueError(
                f"fit is asked for {epochs} epochs, but {self.schedule.rounds + 1} rounds "
                f"x {self.epochs_per_round} epochs per round are {self.total_epochs}: the "
                "epochs past the last round would append duplicate rounds. Pass "
                "epochs=imp.epochs(per_round=...) to fit, or ask IMP for more rounds.")
        if epochs is not None and epochs < self.total_epochs:
            logger.warning(
                "fit runs %d epochs but %d rounds x %d epochs per round need %d; "
                "rounds beyond the last full one are not run.",
                epochs, self.schedule.rounds + 1, self.epochs_per_round, self.total_epochs)
        self._steps_per_epoch = self.params.get("steps")
        if self.rewind.unit == "it":
            self._k = self.rewind.value
            if self._steps_per_epoch and self._k > self._steps_per_epoch * self.epochs_per_round:
                raise ValueError(
                    f"Rewind point {self.rewind} is past the end of round 0 "
                    f"({self._steps_per_epoch} steps/epoch x {self.epochs_per_round} "
                    f"epochs = {self._steps_per_epoch * self.epochs_per_round} steps). "
                    "Choose an earlier rewind point or train longer per round.")
        else:
            self._k = (self.rewind.value * self._steps_per_epoch
                       if self._steps_per_epoch else None)
        per_execution = _steps_per_execution(self.model)
        if self.rewind.unit == "it" and self._k % per_execution:
            raise ValueError(
                f"Rewind point {self.rewind} is not a multiple of the model's "
                f"steps_per_execution ({per_execution}), so the weights at step "
                f"{self._k} are never seen by a callback. Choose a rewind point "
                f"that is a multiple of {per_execution}, or compile with a "
                "steps_per_execution that divides it.")
        if self.convergence is not None:
            self._check_chunks(per_execution)
        capture_optimizer_state(self.model.optimizer, self.model)
        if self.bypass_wrapper_ops:
            enforce_masks(self.model)
        else:
            masks_lib.attach_mask_constraints(self.model)
            if is_legacy_optimizer(self.model.optimizer) and _has_embedding(self.model):
                raise ValueError(
                    "A legacy optimizer (keras.optimizers.legacy.*) cannot keep an "
                    "Embedding's pruned rows at zero with bypass_wrapper_ops = False: it "
                    "refuses the mask constraint on a sparse update. Leave "
                    "IMPCallback.bypass_wrapper_ops True (the default), or use the "
                    "current optimizer of the same name (keras.optimizers.*).")
        require_imp_callbacks(self.model, active=True)
        self._checked_fresh_masks = False
        self.theta0 = WeightSnapshot.capture(self.model, step=0)
        if self.rewind.value == 0:
            self.theta_k = self.theta0
        self._round_first_epoch = 0
        self._reset_round_state()

    def _check_chunks(self, per_execution):
        every = self.convergence.every
        if self._steps_per_epoch != every:
            raise ValueError(
                f"round_end='converged' checks the mask every {every} steps and ends a "
                f"round at a check, so each fit epoch must be one chunk of {every} steps, "
                f"but fit runs {self._steps_per_epoch or 'unknown'} steps per epoch. Pass "
                "**imp.fit_kwargs(steps_per_round=...) to fit (it gives epochs and "
                f"steps_per_epoch={every}) on data that repeats (a dataset with "
                "repeat(), or keras_lottery.convergence.chunked_batches).")
        if every % per_execution:
            raise ValueError(
                f"converge_every ({every}) is not a multiple of the model's "
                f"steps_per_execution ({per_execution}), so no callback sees the weights "
                "at a check. Choose a converge_every that is a multiple of "
                f"{per_execution}, or compile with a steps_per_execution that divides it.")

    def on_epoch_begin(self, epoch, logs=None):
        if not self._checked_fresh_masks:
            self._checked_fresh_masks = True
            self._refuse_late_start(epoch)
            self._refuse_pruned_start()
        self._epoch_start_steps = self._round_steps
        if self._checking() and self._tracker.checks == 0 and self._round_steps == 0:
            self._check_convergence()  # the mask at the round's step 0

    def _refuse_late_start(self, epoch):
        """A new run (nothing resumed) must start at fit epoch 0."""
        if self.round != 0 or self.history or epoch == 0:
            return
        raise ValueError(
            f"fit starts at epoch {epoch} (initial_epoch={epoch}), but nothing was resumed, "
            "so this IMP run starts at round 0: its rounds would end at the wrong epochs "
            "and the last ones would not run. Pass initial_epoch=0 (the default) for a new "
            "run; to continue an interrupted one, use imp.callbacks(resume_dir=...) and "
            "fit(..., initial_epoch=imp.initial_epoch()).")

    def _refuse_pruned_start(self):
        """A new run (nothing resumed) must start from a dense model."""
        if self.round != 0 or self.history:
            return
        remaining = masks_lib.overall_weights_remaining(self.model)
        if remaining < 1.0:
            raise ValueError(
                f"The model is already pruned ({remaining:.1%} of its prunable weights "
                "remain), so this IMP run would take the pruned weights as θ0 and its "
                "rounds would start from a ticket. Start a new run from the original "
                "model: imp.wrap(original_model) with a new compile and imp.callbacks(); "
                "to continue an interrupted run, use imp.callbacks(resume_dir=...) and "
                "fit(..., initial_epoch=imp.initial_epoch()).")

    def on_train_end(self, logs=None):
        # With use_ema, fit has just written the optimizer's moving averages
        # (taken before the mask constraint runs) into the weights.
        mask_moving_averages(self.model.optimizer, self.model)
        require_imp_callbacks(self.model, active=False)

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution = N (the usual setting on TPUs) Keras calls
        # this once per N steps, `batch` being the last step's index in the
        # epoch: count the steps run, not the calls.
        steps = getattr(self, "_epoch_start_steps", 0) + int(batch) + 1 - self._round_steps
        self._round_steps += steps
        if self._evaluator is not None and self._evaluator.due(
                self._round_steps, self._steps_per_epoch and self._steps_per_epoch * self.epochs_per_round):
            self._val_curve.append(self._evaluator.evaluate(self.model, self._round_steps))
        if (self.round == 0 and self.theta_k is None and self.rewind.unit == "it"
                and self._round_steps == self._k):
            self.theta_k = WeightSnapshot.capture(self.model, step=self._k)
        if self._checking() and self._round_steps % self.convergence.every == 0:
            self._check_convergence()

    # -- early mask convergence (round_end="converged") -------------------------

    def _checking(self):
        """True while this round's next mask is being tracked (not in the last round)."""
        return (self._tracker is not None and self.round < self.schedule.rounds
                and self._converged_step is None)

    def _check_convergence(self):
        current, masks = self._compute_next_masks()
        pruned = int(sum(m.sum() for m in current.values()) - sum(m.sum() for m in masks.values()))
        # round 0 may end only once θk was taken (a late rewind point); the
        # tracker records the step at which the round converged
        self._tracker.update(self._round_steps, masks, pruned, can_end=self.theta_k is not None)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        epoch_in_round = epoch - self.round_first_epoch + 1
        if (self.round == 0 and self.theta_k is None and self.rewind.unit == "ep"
                and epoch_in_round == self.rewind.value):
            self._k = self._round_steps
            self.theta_k = WeightSnapshot.capture(self.model, step=self._k)
        if "val_loss" in logs and self._evaluator is None:
            self._val_curve.append((self._round_steps, logs["val_loss"],
                                    logs.get(_accuracy_key(logs, "val_") or "", None)))
        if epoch_in_round < self.round_epochs(self.round) and self._converged_step is None:
            return
        result = self._finish_round(logs, epochs=epoch_in_round)
        self.history.append(result)
        self._write_report()
        if self.verbose:
            self._print_round(result)
        if self.round < self.schedule.rounds:
            self._next_round()
            self._round_first_epoch = epoch + 1
        elif self.convergence is not None:
            self.model.stop_training = True  # the budget's unused chunks are not run

    # -- round boundary -----------------------------------------------------

    def _finish_round(self, logs, epochs=None):
        test_loss = test_acc = None
        if self.test_data is not None:
            if isinstance(self.test_data, tuple):
                results = self.model.evaluate(*self.test_data, verbose=0, return_dict=True)
            else:
                results = self.model.evaluate(self.test_data, verbose=0, return_dict=True)
            test_loss = results.get("loss")
            key = _accuracy_key(results)
            test_acc = results.get(key) if key else None
        es_iter = es_acc = es_test = None
        if self._val_curve:
            best = early_stopping_point(self._val_curve)
            es_iter, es_acc, es_test = best.step, best.val_accuracy, best.test_accuracy
        acc_key = _accuracy_key(logs)
        val_key = _accuracy_key(logs, "val_")
        return RoundResult(
            round=self.round,
            weights_remaining=masks_lib.overall_weights_remaining(self.model),
            all_weights_remaining=masks_lib.all_weights_remaining(self.model),
            weights_remaining_by_layer=masks_lib.sparsity_by_layer(self.model),
            epochs=self.epochs_per_round if epochs is None else int(epochs),
            steps=self._round_steps,
            loss=_float(logs.get("loss")),
            accuracy=_float(logs.get(acc_key)) if acc_key else None,
            val_loss=_float(logs.get("val_loss")),
            val_accuracy=_float(logs.get(val_key)) if val_key else None,
            test_loss=_float(test_loss),
            test_accuracy=_float(test_acc),
            early_stop_iteration=None if es_iter is None else int(es_iter),
            early_stop_val_accuracy=_float(es_acc),
            early_stop_test_accuracy=_float(es_test),
            seconds=time.perf_counter() - self._round_start,
            metrics={k: float(v) for k, v in logs.items() if np.ndim(v) == 0},
            converged_step=self._converged_step,
            mask_distances=(None if self._tracker is None or self.round == self.schedule.rounds
                            else [list(row) for row in self._tracker.history]),
        )

    def _next_round(self):
        if self.theta_k is None:
            raise RuntimeError(
                f"Round 0 ended before the rewind point {self.rewind} was reached "
                f"({self._round_steps} steps). Choose an earlier rewind point.")
        _, new_masks = self._compute_next_masks()
        self.round += 1
        masks_lib.write_masks(self.model, new_masks)  # also zeroes the pruned weights
        if self.rewind.rewinds_weights:
            self.theta_k.restore(self.model, new_masks)
        else:
            # learning-rate rewinding: the trained survivors stay as they are
            self.round_start_weights = WeightSnapshot.capture(self.model, step=self.theta_k.step)
        reset_optimizer(self.model.optimizer, self.theta_k.step)
        self._reset_round_state()

    def _compute_next_masks(self):
        """(current masks, the masks of round `self.round + 1` from the weights now)."""
        entries = masks_lib.prunable_weights(self.model)
        weights = {w.name: w.weight.numpy() for w in entries}
        current = masks_lib.read_masks(self.model)
        new_masks = masks_lib.compute_masks(
            weights, current, self.round + 1, self.schedule.prune_rate, self.scope,
            self.layer_rates, {w.name: w.layer_name for w in entries},
            layer_floor=self.layer_floor,
            blocks=blocks_lib.kernel_blocks(entries, self.block, self.block_exempt),
            block_score=self.block_score)
        return current, new_masks

    # -- output ---------------------------------------------------------------

    def history_rows(self):
        """The history as a list of plain dicts (JSON-ready)."""
        return [r.to_dict() for r in self.history]

    def _write_report(self):
        if not self.report_dir or not is_chief(self.model):
            return
        payload = {
            "config": dict(self.run_config, rounds=self.schedule.rounds,
                           prune_rate=self.schedule.prune_rate, rewind=str(self.rewind),
                           rewind_steps=self._k, scope=self.scope,
                           layer_rates=self.layer_rates,
                           epochs_per_round=self.epochs_per_round,
                           **blocks_lib.block_config(self.block, self.block_score,
                                                     self.block_exempt),
                           **self._round_end_config()),
            "rounds_finished": len(self.history),
            "history": self.history_rows(),
        }
        report_lib.write_json(os.path.join(self.report_dir, "imp_report.json"), payload)
        report_lib.write_csv(os.path.join(self.report_dir, "imp_history.csv"), self.history_rows())

    def _round_end_config(self):
        """`round_end` and the criterion's settings; nothing for plain "epochs" rounds."""
        if self.convergence is None:
            return {}
        return dict(round_end=self.round_end, **self.convergence.get_config())

    def _print_round(self, result):
        from tf_keras.src.utils import io_utils

        row = result.to_dict()
        if len(self.history) == 1:
            lines = report_lib.format_table([row]).splitlines()
        else:
            lines = report_lib.format_table([row]).splitlines()[2:]
        io_utils.print_msg("\n".join(f"[IMP] {line}" for line in lines))

    # -- checkpoint state (keras_lottery.resume) -------------------------------

    def state_dict(self):
        """The callback's run state at a round boundary, for a checkpoint.

        Valid once `fit` has started (after `on_train_begin`); taken between
        two rounds, it is everything `load_state` needs to continue the run
        in a fresh process with a freshly built callback.

        Returns:
          A dict with `round` (the round trained next; the last round once
          all are finished), `history` (a JSON-ready dict per finished round),
          `rewind_steps` (k, None while unknown), `steps_per_epoch`
          (as Keras reported it, or None), `theta0` and `theta_k`
          (`WeightSnapshot`s or None; for rewind "0it" `theta_k` is the same
          object as `theta0`, so a writer can store it once), and
          `next_epoch`, the fit epoch the next round starts at (with
          `round_end="converged"` rounds end at any chunk; once every round
          finished, fit's whole epoch count, so a resumed fit trains nothing).

        Example:
          >>> state = imp.callback.state_dict()   # doctest: +SKIP
          >>> state["round"], len(state["history"])  # doctest: +SKIP
          (2, 2)
        """
        return {
            "round": int(self.round),
            "history": self.history_rows(),
            "rewind_steps": None if getattr(self, "_k", None) is None else int(self._k),
            "steps_per_epoch": getattr(self, "_steps_per_epoch", None),
            "theta0": self.theta0,
            "theta_k": self.theta_k,
            "next_epoch": self._next_epoch(),
        }

    def _next_epoch(self):
        if len(self.history) > self.schedule.rounds:
            return int(self.total_epochs)
        return int(self.round_first_epoch)

    def load_state(self, state):
        """Continues a run from a `state_dict()` taken at a round boundary.

        Call it after `on_train_begin` (so the model is set up for IMP) and
        before the first step; the model's and optimizer's variables are
        restored separately (see `keras_lottery.resume.RoundCheckpoint`).

        Args:
          state: a dict as returned by `state_dict`.

        Raises:
          RuntimeError: if fit has not started yet.
          ValueError: if `state` lacks a key or its snapshots were taken
            from another model.

        Example:
          >>> fresh.load_state(old.state_dict())   # doctest: +SKIP
        """
        if self.model is None or self.theta0 is None:
            raise RuntimeError("load_state restores a started run: call it after "
                               "on_train_begin (RoundCheckpoint does).")
        missing = [k for k in ("round", "history", "rewind_steps", "theta0", "theta_k")
                   if k not in state]
        if missing:
            raise ValueError(f"IMP state lacks {missing}: pass a dict from state_dict().")
        for key in ("theta0", "theta_k"):
            snap = state[key]
            if snap is not None and snap.names != self.theta0.names:
                raise ValueError(f"The state's {key} was taken from another model "
                                 "(its variable names differ).")
        self.theta0 = state["theta0"]
        self.theta_k = state["theta_k"]
        self.history = [RoundResult.from_dict(dict(row)) for row in state["history"]]
        self.round = min(int(state["round"]), self.schedule.rounds)
        self._k = state["rewind_steps"]
        if (not self.rewind.rewinds_weights and self.round > 0
                and len(self.history) == self.round and self.theta_k is not None):
            # the model's variables were restored first: they are the round's start
            self.round_start_weights = WeightSnapshot.capture(self.model, step=self.theta_k.step)
        self._round_first_epoch = int(state.get("next_epoch", self.round * self.epochs_per_round))
        self._reset_round_state()
