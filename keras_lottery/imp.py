"""`IMP`: the user-facing recipe for one lottery-ticket search.

It holds the settings (rounds, prune rate, rewind point, scope, per-layer
rates), wraps a model, tells fit how many epochs to run, hands out the
callbacks, and exposes the results.
"""

from keras_lottery import blocks as blocks_lib
from keras_lottery import masks as masks_lib
from keras_lottery import report as report_lib
from keras_lottery._keras import keras
from keras_lottery.callback import IMPCallback
from keras_lottery.convergence import make_criterion
from keras_lottery.schedule import IMPSchedule, parse_rewind
from keras_lottery.wrap import (
    output_layers,
    pruned_layers,
    rates_with_output_layers,
    require_imp_callbacks,
    wrap_model,
)

import tensorflow_model_optimization as tfmot

__all__ = ["IMP"]


class IMP:
    """Iterative magnitude pruning with rewinding, run by one `model.fit`.

    Args:
      rounds: pruning rounds after the dense round 0 (>= 1); after the last
        one (1 - prune_rate) ** rounds of the prunable weights remain.
      prune_rate: fraction of surviving weights pruned per round, in (0, 1).
      rewind: where survivors are reset to: `"0it"` (θ0, the original lottery
        ticket), `"500it"` (iterations) or `"2ep"` (epochs); or `"lr"` /
        `"lr:500it"`: learning-rate rewinding (Renda et al., 2020), which keeps
        the trained survivors and rewinds only the optimizer (state reset, step
        and so the learning-rate schedule back to 0 or k); see `IMPCallback`.
      scope: `"layerwise"` (each layer keeps the same fraction), `"global"`
        (one magnitude threshold across layers; the papers use it for deep
        networks) or `"erk"` (Erdős–Rényi-kernel per-layer densities, then
        magnitude within each layer; see docs/concepts/masks.md).
      layer_rates: optional dict layer name -> per-round rate for that layer.
      layer_floor: in "global" / "erk" scope, the least share of the
        layer-wise count each kernel keeps (default `masks.LAYER_FLOOR`,
        0.1), so one global threshold never empties a layer; 0 keeps only
        the one-weight minimum.
      output_layer_rate: optional rate for the output layer(s): each pruned
        layer that feeds a model output (the papers prune the output layer
        at half the rate of the others); see `rates_for`.
      block: optional `(rows, cols)` (or `"4x1"`): prune Dense and Conv
        kernels in whole blocks of `rows` consecutive inputs by `cols`
        outputs, e.g. `(4, 1)` for TFLite's native sparse FULLY_CONNECTED;
        counts are in blocks, other kernels stay unstructured (see
        `keras_lottery.blocks`, docs/block-tickets.md). None (default) or
        `(1, 1)`: weight by weight.
      block_score: how a block is ranked: `"l2"` (root-mean-square, the
        default: it scored above `"l1"` in 13 of 15 rounds of
        docs/block-tickets.md's measurement, by up to 0.6 points) or `"l1"` (mean |w|).
      round_end: `"epochs"` (default: every round trains its whole budget)
        or `"converged"` (Early-Bird): every `converge_every` steps the mask
        the round would produce is computed on the host, and the round ends
        at the first check where it has stayed within `converge_tol` (a
        fraction of the round's pruned weights) of each of the last
        `converge_patience` checks' masks; the last round trains its whole
        budget. Fit with `**imp.fit_kwargs(steps_per_round=...)` (epochs
        become chunks of `converge_every` steps). See
        docs/concepts/early-bird.md and `keras_lottery.convergence`.
      converge_every, converge_tol, converge_patience: the check interval
        (steps), tolerance and patience; None: the defaults
        (`convergence.DEFAULT_EVERY`, `DEFAULT_TOL`, `DEFAULT_PATIENCE`).
        Only with `round_end="converged"`.
      block_layers: which layers `block` applies to: `"all"` (default),
        `"hidden"` (every pruned layer but the output layer(s), found as for
        `output_layer_rate`, which stay unstructured) or a list of layer
        names.

    Raises:
      ValueError: for rounds < 1, a prune_rate outside (0, 1), a malformed
        rewind point, an unknown scope, a bad per-layer rate, block or
        block score, or a bad round_end setting (also a rewind point in
        epochs with "converged").

    Example:
      >>> imp = IMP(rounds=10, prune_rate=0.2, rewind="500it", scope="global")
      >>> model = imp.wrap(model)                              # doctest: +SKIP
      >>> model.compile(...)                                   # doctest: +SKIP
      >>> model.fit(ds, epochs=imp.epochs(per_round=5),
      ...           callbacks=imp.callbacks())                 # doctest: +SKIP
      >>> imp.history[-1].weights_remaining                    # doctest: +SKIP
      0.107...
    """

    def __init__(self, rounds, prune_rate, rewind="0it", scope="layerwise",
                 layer_rates=None, output_layer_rate=None, layer_floor=masks_lib.LAYER_FLOOR,
                 block=None, block_score="l2", round_end="epochs", converge_every=None,
                 converge_tol=None, converge_patience=None, block_layers="all"):
        self.schedule = IMPSchedule(rounds, prune_rate)
        self.rewind = parse_rewind(rewind)
        self.round_end = round_end
        self.convergence = make_criterion(round_end, converge_every, converge_tol,
                                          converge_patience, self.rewind)
        if scope not in masks_lib.SCOPES:
            raise ValueError(f"scope must be one of {masks_lib.SCOPES}, got {scope!r}.")
        self.scope = scope
        self.layer_rates = dict(layer_rates or {})
        for name, rate in list(self.layer_rates.items()) + [("output_layer_rate", output_layer_rate)]:
            if rate is not None and (not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0):
                raise ValueError(f"Per-layer rate for {name!r} must be in [0, 1), got {rate!r}.")
        self.output_layer_rate = output_layer_rate
        if not isinstance(layer_floor, (int, float)) or not 0.0 <= layer_floor <= 1.0:
            raise ValueError(f"layer_floor must be in [0, 1], got {layer_floor!r}.")
        self.layer_floor = float(layer_floor)
        self.block = blocks_lib.parse_block(block)
        self.block_score = blocks_lib.check_block_score(block_score)
        self.block_layers = blocks_lib.check_block_layers(block_layers)
        self.epochs_per_round = None
        self._callback = None

    @property
    def rounds(self):
        return self.schedule.rounds

    @property
    def prune_rate(self):
        return self.schedule.prune_rate

    def wrap(self, model, layer_filter=None):
        """Returns a copy of `model` with tfmot pruning wrappers on its prunable layers.

        Args:
          model: a built tf_keras Sequential or Functional model.
          layer_filter: optional `layer -> bool` to prune only some layers.

        Raises:
          TypeError: for a Keras 3 model (build it with tf_keras) or a non-model.
          ValueError: for a subclassed or already-wrapped model, one with
            nothing to prune, or a `layer_rates` name that is not pruned.
        """
        wrapped = wrap_model(model, self.schedule, layer_filter=layer_filter)
        names = [w.layer.name for w in pruned_layers(wrapped)]
        unknown = set(self.layer_rates) - set(names)
        if unknown:
            raise ValueError(f"layer_rates names layers that are not pruned: "
                             f"{sorted(unknown)}; prunable layers: {names}.")
        require_imp_callbacks(wrapped)
        return wrapped

    def rates_for(self, model):
        """The per-layer rates IMP uses for `model`: `layer_rates` plus the output layers'.

        `output_layer_rate` goes to every pruned layer that feeds a model
        output through non-pruned layers only (activations, reshapes, ...):
        one per head of a multi-output model, found from the layer graph,
        not from the order of `model.layers`. An explicit `layer_rates`
        entry wins. `IMP` itself is not changed, so one `IMP` can wrap
        several models; `callbacks()` resolves the rates (and `block_layers`)
        for the model being fit, when its `fit` begins.

        Args:
          model: a model wrapped by `wrap`.

        Returns:
          dict layer name -> per-round rate.
        """
        return rates_with_output_layers(model, self.layer_rates, self.output_layer_rate)

    @property
    def chunk_steps(self):
        """With round_end="converged", the steps of one fit epoch (`converge_every`); else None."""
        return None if self.convergence is None else self.convergence.every

    def fit_kwargs(self, steps_per_round):
        """`epochs` and `steps_per_epoch` for `fit` with `round_end="converged"`.

        A round's budget of `steps_per_round` steps becomes whole chunks of
        `converge_every` steps (rounded up): each fit epoch is one chunk, a
        round ends at the end of any chunk, and `epochs` is the budget of
        every round, an upper bound (fit stops once the last round, always
        trained to its whole budget, is done).

        Args:
          steps_per_round: optimizer steps a round may train (>= 1), e.g.
            epochs of data x batches per epoch.

        Returns:
          `{"epochs": ..., "steps_per_epoch": converge_every}`; the data
          must repeat (a dataset with `repeat()`, or
          `convergence.chunked_batches`, whose order is a function of the
          chunk, so that a resumed run is bit-identical).

        Raises:
          ValueError: with round_end="epochs" (use `epochs(per_round=...)`),
            or for steps_per_round < 1.

        Example:
          >>> imp = IMP(rounds=4, prune_rate=0.2, round_end="converged", converge_every=100)
          >>> imp.fit_kwargs(steps_per_round=1834)
          {'epochs': 95, 'steps_per_epoch': 100}
        """
        if self.convergence is None:
            raise ValueError("fit_kwargs is for round_end='converged'; with round_end='epochs' "
                             "pass epochs=imp.epochs(per_round=...) to fit.")
        if (isinstance(steps_per_round, bool) or int(steps_per_round) != steps_per_round
                or steps_per_round < 1):
            raise ValueError(f"steps_per_round must be an integer >= 1, got {steps_per_round!r}.")
        every = self.convergence.every
        return {"epochs": self.epochs(per_round=-(-int(steps_per_round) // every)),
                "steps_per_epoch": every}

    def block_exempt_for(self, model):
        """The pruned layers of `model` that `block_layers` leaves unstructured (sorted names).

        Raises:
          ValueError: if `block_layers` names a layer that is not pruned.
        """
        names = [w.layer.name for w in pruned_layers(model)]
        if self.block_layers == "all":
            return []
        if self.block_layers == "hidden":
            return sorted(w.layer.name for w in output_layers(model))
        unknown = set(self.block_layers) - set(names)
        if unknown:
            raise ValueError(f"block_layers names layers that are not pruned: {sorted(unknown)}; "
                             f"pruned layers: {names}.")
        return sorted(set(names) - set(self.block_layers))

    def epochs(self, per_round):
        """Total epochs to pass to `fit`: (rounds + 1) * per_round.

        With `round_end="converged"` an epoch is a chunk of `converge_every`
        steps and this is an upper bound (see `fit_kwargs`).

        Raises:
          ValueError: if per_round < 1 or the rewind point (in epochs) lies
            past the end of round 0.
        """
        if isinstance(per_round, bool) or int(per_round) != per_round or per_round < 1:
            raise ValueError(f"per_round must be an integer >= 1, got {per_round!r}.")
        if self.rewind.unit == "ep" and self.rewind.value > per_round:
            raise ValueError(
                f"Rewind point {self.rewind} is past the end of round 0 ({per_round} "
                f"epochs per round). Rewind to at most '{per_round}ep'.")
        self.epochs_per_round = int(per_round)
        return (self.rounds + 1) * self.epochs_per_round

    def callbacks(self, test_data=None, report_dir=None, verbose=1, run_config=None,
                  eval_every=None, validation_data=None, resume_dir=None,
                  tensorboard_dir=None, check_sparsity=None):
        """The callbacks to pass to `fit`: tfmot's `UpdatePruningStep`, then `IMPCallback`.

        Args:
          test_data: optional `(x, y)` or dataset evaluated at each round's end.
          report_dir: optional folder for `imp_report.json` / `imp_history.csv`,
            rewritten after every round.
          verbose: 1 prints a table row per finished round.
          run_config: extra settings to record in the report.
          eval_every: optional interval in steps at which `validation_data`
            is evaluated inside each round for the early-stopping iteration
            (default: epoch-end `val_loss` only).
          validation_data: `(x, y)` or dataset for `eval_every`.
          resume_dir: optional folder for round checkpoints: a run killed at
            any point and started again with the same command resumes from
            its last finished round (also pass
            `initial_epoch=imp.initial_epoch()` to fit; see
            `keras_lottery.resume`).
          tensorboard_dir: optional TensorBoard folder: a point per round
            (weights remaining overall and per layer, accuracies, early-stop
            iteration), mask histograms, and per-epoch curves through tfmot's
            PruningSummaries (see `keras_lottery.tensorboard`).
          check_sparsity: optional N: add a `SparsityGuard(every=N)` that
            checks after every N-th batch that each pruned weight is exactly
            zero, raising `SparsityViolation` naming the layer, the count and
            the step (`True` means every batch).

        The list starts with a `resume.StopOnNonFiniteLoss`: fit stops with
        `NonFiniteLossError` at the first NaN or infinite training loss (or
        weights, checked at epoch ends), and the finished rounds' results stay.

        Raises:
          ValueError: if `epochs(per_round=...)` was not called first, or
            `test_data` / `validation_data` has no labels or (given as arrays)
            holds NaN / inf.
        """
        if self.epochs_per_round is None:
            raise ValueError("Call imp.epochs(per_round=N) first (and pass its "
                             "result to fit's `epochs`).")
        self._callback = IMPCallback(
            self.schedule, self.epochs_per_round, rewind=self.rewind, scope=self.scope,
            layer_floor=self.layer_floor, block=self.block, block_score=self.block_score,
            round_end=self.round_end,
            **({} if self.convergence is None else self.convergence.get_config()),
            # resolved for the model fit, when fit begins: this IMP may have
            # wrapped other models since
            block_exempt=self.block_exempt_for, layer_rates=self.layer_rates,
            output_layer_rate=self.output_layer_rate,
            test_data=test_data, report_dir=report_dir,
            verbose=verbose, run_config=run_config, eval_every=eval_every,
            validation_data=validation_data)
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), self._callback]
        if tensorboard_dir is not None:
            from keras_lottery.tensorboard import tensorboard_callbacks

            # before IMPCallback: they must see a round's masks before it prunes
            callbacks[1:1] = tensorboard_callbacks(tensorboard_dir, self._callback)
        if resume_dir is not None:
            from keras_lottery.resume import RoundCheckpoint

            self._resume_dir = resume_dir
            callbacks.append(RoundCheckpoint(self._callback, resume_dir))
        if check_sparsity:
            from keras_lottery.guard import SparsityGuard

            every = 1 if check_sparsity is True else check_sparsity
            # before IMPCallback's hooks: it checks each step's weights before
            # a round boundary prunes and rewinds them
            callbacks.insert(1, SparsityGuard(every=every))
        from keras_lottery.resume import StopOnNonFiniteLoss

        # first: a diverged round (NaN loss or weights) is neither recorded nor
        # pruned from; it only reads losses (and at epoch ends whether the
        # weights are finite), so it does not disturb the batch hooks above
        callbacks.insert(0, StopOnNonFiniteLoss(self._callback))
        return callbacks

    def initial_epoch(self, resume_dir=None):
        """The epoch to pass to fit's `initial_epoch` (0 when nothing to resume).

        Args:
          resume_dir: the checkpoint folder (default: the one given to
            `callbacks(resume_dir=...)`).

        Raises:
          ValueError: if no resume_dir is given here or to `callbacks()`.
        """
        from keras_lottery.resume import initial_epoch

        resume_dir = resume_dir if resume_dir is not None else getattr(self, "_resume_dir", None)
        if resume_dir is None:
            raise ValueError("No resume_dir: pass it here or to imp.callbacks(resume_dir=...).")
        return initial_epoch(resume_dir)

    @property
    def callback(self):
        """The `IMPCallback` of the last `callbacks()` call (None before)."""
        return self._callback

    @property
    def history(self):
        """A `RoundResult` per finished round."""
        return [] if self._callback is None else list(self._callback.history)

    def table(self):
        """The per-round table as text."""
        return report_lib.format_table([r.to_dict() for r in self.history])

    def plot(self, path, title=None):
        """Saves accuracy and early-stop iteration vs % weights remaining to `path`."""
        if not self.history:
            raise ValueError("No finished round to plot yet: run fit with imp.callbacks().")
        return report_lib.plot_history([r.to_dict() for r in self.history], path, title=title)

    def get_config(self):
        return {
            "rounds": self.rounds,
            "prune_rate": self.prune_rate,
            "rewind": str(self.rewind),
            "scope": self.scope,
            "layer_rates": dict(self.layer_rates),
            "output_layer_rate": self.output_layer_rate,
            "layer_floor": self.layer_floor,
            "block": None if self.block is None else list(self.block),
            "block_score": self.block_score,
            "round_end": self.round_end,
            "converge_every": None if self.convergence is None else self.convergence.every,
            "converge_tol": None if self.convergence is None else self.convergence.tol,
            "converge_patience": None if self.convergence is None else self.convergence.patience,
            "block_layers": self.block_layers,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return "IMP(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


def custom_objects():
    """Objects needed to load a saved wrapped model: use with `keras.models.load_model`."""
    return {"IMPSchedule": IMPSchedule}


def load_wrapped_model(path, **kwargs):
    """Loads a model saved while wrapped for pruning (needs tfmot's prune_scope)."""
    with tfmot.sparsity.keras.prune_scope(), keras.utils.custom_object_scope(custom_objects()):
        return keras.models.load_model(path, **kwargs)
