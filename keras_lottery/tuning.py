"""keras-tuner searches for the best lottery ticket at a target fraction of weights remaining.

The search space is IMP's own: the prune rate per round (which fixes the
number of rounds needed to reach the target), the rewind point and the
learning rate, plus anything `build_model(hp)` declares. Each trial builds the
model, wraps it with `IMP`, trains every round in one `fit`, and reports the
final (target-sparsity) round's metrics to keras-tuner. The tuners are
keras-tuner's own `RandomSearch`, `Hyperband` and `BayesianOptimization`,
subclassed only to run that trial: the oracle, trial bookkeeping and the
resumable search folder (`directory/project_name`, one sub-folder per trial
with its `imp_report.json` and ticket) stay keras-tuner's.

keras-tuner 1.4 works with Keras 3 whenever `keras` 3.x is installed and
its stock `Tuner` would refuse a tf_keras model; overriding `run_trial` is its
"tune anything" path, which is what these classes do. Importing this module
imports keras-tuner (and Keras 3).

Example:
    from keras_lottery.tuning import TicketRandomSearch

    tuner = TicketRandomSearch(
        lambda hp: kl.models.lenet_300_100((40,), seed=0),
        target_weights_remaining=0.1, prune_rates=[0.2, 0.5, 0.68],
        rewinds=["0it", "1ep"], learning_rate=(3e-4, 3e-3), epochs_per_round=5,
        max_trials=10, directory="tuning", project_name="lenet")
    tuner.search(x, y, validation_data=(x_val, y_val), batch_size=60)
    best = tuner.best_ticket()   # hyperparameters, rounds and metrics of the best trial
"""

import logging
import math
import os
import time

import keras_tuner as kt

from keras_lottery import models
from keras_lottery import report as report_lib
from keras_lottery._keras import keras
from keras_lottery.progress import ProgressLogger, eta_seconds, format_duration
from keras_lottery.schedule import parse_rewind

__all__ = [
    "TicketSearchMixin",
    "TicketRandomSearch",
    "TicketHyperband",
    "TicketBayesianOptimization",
    "TUNERS",
    "make_tuner",
    "rounds_for",
    "prune_rates_for",
]

logger = logging.getLogger("keras_lottery")

OPTIMIZERS = models.OPTIMIZERS


def rounds_for(prune_rate, target):
    """Rounds of IMP at `prune_rate` needed to reach `target` weights remaining.

    The smallest r with (1 - prune_rate) ** r <= target (a rate printed with
    four decimals, as `prune_rates_for` makes them, counts as exact).

    Raises:
      ValueError: for a rate or target outside (0, 1).
    """
    if not 0.0 < prune_rate < 1.0:
        raise ValueError(f"prune rate must be in (0, 1), got {prune_rate!r}.")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target weights remaining must be in (0, 1), got {target!r}.")
    return max(1, math.ceil(math.log(target) / math.log(1.0 - prune_rate) - 1e-3))


def prune_rates_for(target, rounds):
    """Per-round rates that reach `target` in exactly each of `rounds` rounds: 1 - target^(1/r)."""
    return [round(1.0 - target ** (1.0 / int(r)), 4) for r in rounds]


class _TicketHyperModel(kt.HyperModel):
    """Declares the IMP hyperparameters, then builds the user's model."""

    def __init__(self, build_model, prune_rates, rewinds, learning_rate):
        super().__init__(name="lottery_ticket")
        self.build_model = build_model
        self.prune_rates = prune_rates
        self.rewinds = rewinds
        self.learning_rate = learning_rate

    def declare(self, hp):
        hp.Choice("prune_rate", self.prune_rates)
        hp.Choice("rewind", self.rewinds)
        low, high = self.learning_rate
        if low == high:
            hp.Fixed("learning_rate", float(low))
        else:
            hp.Float("learning_rate", float(low), float(high), sampling="log")

    def build(self, hp):
        self.declare(hp)
        return self.build_model(hp)


class TicketSearchMixin:
    """Turns a keras-tuner tuner into a search for the best ticket at a target sparsity.

    Mix it in before a keras-tuner tuner class (`TicketRandomSearch`,
    `TicketHyperband` and `TicketBayesianOptimization` are ready-made).

    Args:
      build_model: `hp -> model`, a fresh uncompiled tf_keras (or Keras 3,
        converted) model; it may declare hyperparameters of its own.
      target_weights_remaining: fraction of prunable weights the ticket keeps,
        in (0, 1), e.g. 0.1.
      objective: what the final round is judged by (default "val_accuracy";
        any metric of the last round: "val_loss", "test_accuracy", ...).
      prune_rates: per-round prune rates to try; default: the rates that
        reach the target in exactly each of `rounds` rounds.
      rounds: round counts the default prune rates are derived from.
      rewinds: rewind points to try ("0it", "500it", "1ep", ...).
      learning_rate: (low, high) searched on a log scale; equal bounds fix it.
      epochs_per_round: epochs each round trains (Hyperband: its
        `tuner/epochs` budget is used instead, up to `max_epochs`).
      optimizer: "adam", "sgd" (momentum 0.9) or `learning_rate -> optimizer`.
      loss: a tf_keras loss (default sparse categorical cross-entropy on logits).
      metrics: compiled metrics (default ["accuracy"]).
      scope: "layerwise" or "global" ranking.
      output_layer_rate: per-round rate of the output layer (None: same rate).
      init_seed: seed set before every trial's model is built, so all trials
        start from the same initialisation (None: not set). keras-tuner's
        own `seed` (the oracle's, fixing the sequence of trials) passes
        through with the other tuner arguments.
      save_tickets: save each trial's wrapped model as `ticket.keras` in its
        trial folder (needed by `get_best_models`).
      tensorboard_dir: optional folder; each trial writes its IMP TensorBoard
        logs to `tensorboard_dir/trial_<id>` (see `keras_lottery.tensorboard`).
      **tuner_kwargs: passed to the keras-tuner class (max_trials, seed,
        directory, project_name, overwrite, max_epochs for Hyperband, ...).

    Raises:
      ValueError: for a target, rate, rewind point, learning-rate range,
        optimizer or epochs_per_round that cannot work, naming the value.
    """

    def __init__(self, build_model, target_weights_remaining, *, objective="val_accuracy",
                 prune_rates=None, rounds=(2, 4), rewinds=("0it", "1ep"),
                 learning_rate=(1e-4, 1e-2), epochs_per_round=2, optimizer="adam",
                 loss=None, metrics=("accuracy",), scope="layerwise", output_layer_rate=None,
                 init_seed=0, save_tickets=True, tensorboard_dir=None, **tuner_kwargs):
        if not callable(build_model):
            raise ValueError(f"build_model must be a callable hp -> model, got {build_model!r}.")
        target = float(target_weights_remaining)
        if not 0.0 < target < 1.0:
            raise ValueError(f"target_weights_remaining must be in (0, 1), got {target_weights_remaining!r}.")
        rates = list(prune_rates) if prune_rates is not None else prune_rates_for(target, rounds)
        if not rates:
            raise ValueError("prune_rates (or rounds) must not be empty.")
        for rate in rates:
            rounds_for(rate, target)  # validates the rate
        rewinds = [str(parse_rewind(r)) for r in rewinds]
        if isinstance(epochs_per_round, bool) or int(epochs_per_round) < 1:
            raise ValueError(f"epochs_per_round must be an integer >= 1, got {epochs_per_round!r}.")
        for rewind in rewinds:
            point = parse_rewind(rewind)
            if point.unit == "ep" and point.value > int(epochs_per_round) and "max_epochs" not in tuner_kwargs:
                raise ValueError(f"Rewind point {rewind} is past the end of round 0 "
                                 f"({epochs_per_round} epochs per round).")
        low, high = (learning_rate, learning_rate) if isinstance(learning_rate, (int, float)) else learning_rate
        if not 0.0 < float(low) <= float(high):
            raise ValueError(f"learning_rate must be a value or (low, high) with 0 < low <= high, "
                             f"got {learning_rate!r}.")
        if not callable(optimizer) and optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} or a callable "
                             f"learning_rate -> optimizer, got {optimizer!r}.")
        self.target_weights_remaining = target
        self.epochs_per_round = int(epochs_per_round)
        # keras-tuner's Tuner has attributes optimizer / loss / metrics of its own
        self._ticket_optimizer = optimizer
        self._ticket_loss = loss
        self._ticket_metrics = list(metrics)
        self.scope = scope
        self.output_layer_rate = output_layer_rate
        self.init_seed = init_seed
        self.save_tickets = save_tickets
        self.tensorboard_dir = None if tensorboard_dir is None else os.fspath(tensorboard_dir)
        self._search_started = None
        self._trials_run = 0
        hypermodel = _TicketHyperModel(build_model, rates, rewinds, (float(low), float(high)))
        super().__init__(hypermodel=hypermodel, objective=objective, **tuner_kwargs)

    # -- one trial ---------------------------------------------------------

    def _make_optimizer(self, learning_rate):
        if callable(self._ticket_optimizer):
            return self._ticket_optimizer(learning_rate)
        return models.make_optimizer(self._ticket_optimizer, learning_rate)

    def trial_settings(self, hp):
        """The IMP settings of a trial: prune_rate, rounds, rewind, learning_rate, epochs_per_round."""
        prune_rate = float(hp.get("prune_rate"))
        return {
            "prune_rate": prune_rate,
            "rounds": rounds_for(prune_rate, self.target_weights_remaining),
            "rewind": hp.get("rewind"),
            "learning_rate": float(hp.get("learning_rate")),
            "epochs_per_round": int(hp.values.get("tuner/epochs", self.epochs_per_round)),
        }

    def run_trial(self, trial, x=None, y=None, validation_data=None, test_data=None,
                  callbacks=None, **fit_kwargs):
        """Builds, wraps and trains one ticket; returns its final round's metrics.

        Args:
          trial: the keras-tuner `Trial`.
          x, y, validation_data: as for `model.fit` (arrays or tf.data).
          test_data: optional `(x, y)` / dataset evaluated at each round's end.
          callbacks: extra Keras callbacks for fit.
          **fit_kwargs: other `fit` arguments (batch_size, shuffle, ...);
            `epochs` is set by IMP and must not be given.

        Returns:
          A dict of the final round's metrics (the objective among them).
        """
        import keras_lottery as kl

        fit_kwargs.pop("verbose", None)
        fit_kwargs.pop("initial_epoch", None)
        if "epochs" in fit_kwargs:
            raise ValueError("Do not pass epochs to search(): IMP sets them "
                             "((rounds + 1) x epochs_per_round).")
        hp = trial.hyperparameters
        settings = self.trial_settings(hp)
        rewind = parse_rewind(settings["rewind"])
        if rewind.unit == "ep" and rewind.value > settings["epochs_per_round"]:
            raise kt.errors.FailedTrialError(
                f"rewind {rewind} is past round 0 ({settings['epochs_per_round']} epochs).")
        if self.init_seed is not None:
            keras.utils.set_random_seed(self.init_seed)
        model = self.hypermodel.build(hp)
        imp = kl.IMP(rounds=settings["rounds"], prune_rate=settings["prune_rate"],
                     rewind=settings["rewind"], scope=self.scope,
                     output_layer_rate=self.output_layer_rate)
        model = imp.wrap(model)
        model.compile(self._make_optimizer(settings["learning_rate"]),
                      self._ticket_loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      self._ticket_metrics)
        trial_dir = self.get_trial_dir(trial.trial_id)
        epochs = imp.epochs(per_round=settings["epochs_per_round"])
        progress = ProgressLogger(epochs_per_round=settings["epochs_per_round"],
                                  rounds=settings["rounds"], every=settings["epochs_per_round"],
                                  prefix=f"trial {trial.trial_id}")
        model.fit(x, y, epochs=epochs, validation_data=validation_data, verbose=0,
                  callbacks=imp.callbacks(test_data=test_data, report_dir=trial_dir, verbose=0,
                                          run_config=dict(settings, trial_id=trial.trial_id),
                                          tensorboard_dir=None if self.tensorboard_dir is None else
                                          os.path.join(self.tensorboard_dir, f"trial_{trial.trial_id}"))
                  + [progress] + list(callbacks or []),
                  **fit_kwargs)
        if self.save_tickets:
            # atomically, as every file of a run: a killed trial leaves no half-written model
            report_lib.atomic_path(os.path.join(trial_dir, "ticket.keras"), model.save)
        final, dense = imp.history[-1], imp.history[0]
        metrics = {k: v for k, v in final.metrics.items() if v is not None}
        for key in ("weights_remaining", "test_accuracy", "test_loss", "early_stop_iteration",
                    "early_stop_val_accuracy"):
            value = getattr(final, key)
            if value is not None:
                metrics[key] = float(value)
        if dense.val_accuracy is not None:
            metrics["dense_val_accuracy"] = float(dense.val_accuracy)
        metrics["rounds"] = float(settings["rounds"])
        if self.oracle.objective.name not in metrics:
            raise kt.errors.FatalError(
                f"The objective {self.oracle.objective.name!r} is not among the final round's "
                f"metrics {sorted(metrics)}; pass validation_data (for val_*) or test_data "
                "(for test_*) to search(), or choose another objective.")
        return metrics

    def load_model(self, trial):
        """The wrapped ticket a trial saved (`ticket.keras` in its trial folder)."""
        from keras_lottery.imp import load_wrapped_model

        path = os.path.join(self.get_trial_dir(trial.trial_id), "ticket.keras")
        if not os.path.exists(path):
            raise FileNotFoundError(f"Trial {trial.trial_id} saved no ticket ({path}); "
                                    "construct the tuner with save_tickets=True.")
        return load_wrapped_model(path)

    # -- progress and results ----------------------------------------------

    def on_search_begin(self):
        super().on_search_begin()
        self._search_started = time.perf_counter()
        self._trials_run = 0

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        settings = self.trial_settings(trial.hyperparameters)
        total = getattr(self.oracle, "max_trials", None)
        done = len([t for t in self.oracle.trials.values() if t.status == "COMPLETED"])
        elapsed = time.perf_counter() - (self._search_started or time.perf_counter())
        remaining = None if total is None else total - done
        eta = eta_seconds(elapsed, self._trials_run, None if remaining is None else
                          self._trials_run + remaining)
        logger.info("trial %s (%d/%s): prune_rate %.4g x %d rounds -> %.3g weights remaining, "
                    "rewind %s, learning_rate %.3g, %d epochs/round · %s elapsed · ETA %s",
                    trial.trial_id, done + 1, total or "?", settings["prune_rate"],
                    settings["rounds"], (1 - settings["prune_rate"]) ** settings["rounds"],
                    settings["rewind"], settings["learning_rate"], settings["epochs_per_round"],
                    format_duration(elapsed), format_duration(eta))

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self._trials_run += 1
        value = None
        if trial.metrics.exists(self.oracle.objective.name):
            value = trial.metrics.get_last_value(self.oracle.objective.name)
        logger.info("trial %s %s: %s %s", trial.trial_id, str(trial.status).lower(),
                    self.oracle.objective.name, "n/a" if value is None else f"{value:.4f}")

    def results(self):
        """One dict per finished trial: id, status, IMP settings and final-round metrics."""
        rows = []
        for trial in self.oracle.trials.values():
            if "prune_rate" not in trial.hyperparameters.values:
                continue
            row = {"trial": trial.trial_id, "status": str(trial.status)}
            row.update(self.trial_settings(trial.hyperparameters))
            for name in ("weights_remaining", "val_accuracy", "val_loss", "test_accuracy",
                         "dense_val_accuracy", "early_stop_iteration"):
                if trial.metrics.exists(name):
                    row[name] = float(trial.metrics.get_last_value(name))
            row["score"] = None if trial.score is None else float(trial.score)
            rows.append(row)
        return rows

    def best_ticket(self):
        """The best trial: its id, IMP settings, other hyperparameters and metrics.

        Raises:
          ValueError: if no trial finished yet.
        """
        best = [t for t in self.oracle.get_best_trials(1) if t.score is not None]
        if not best:
            raise ValueError("No finished trial yet: run search() first.")
        trial = best[0]
        metrics = {name: float(trial.metrics.get_last_value(name)) for name in trial.metrics.metrics}
        extra = {k: v for k, v in trial.hyperparameters.values.items()
                 if k not in ("prune_rate", "rewind", "learning_rate")}
        return {"trial": trial.trial_id, "objective": self.oracle.objective.name,
                "score": float(trial.score), "target_weights_remaining": self.target_weights_remaining,
                **self.trial_settings(trial.hyperparameters), "hyperparameters": extra,
                "metrics": metrics, "trial_dir": self.get_trial_dir(trial.trial_id)}


class TicketRandomSearch(TicketSearchMixin, kt.RandomSearch):
    """`keras_tuner.RandomSearch` over IMP settings; see `TicketSearchMixin` for arguments.

    Example:
      >>> tuner = TicketRandomSearch(build, 0.1, max_trials=8, directory="tuning")  # doctest: +SKIP
      >>> tuner.search(x, y, validation_data=(xv, yv), batch_size=60)              # doctest: +SKIP
    """


class TicketHyperband(TicketSearchMixin, kt.Hyperband):
    """`keras_tuner.Hyperband` over IMP settings: its epoch budget is the epochs per round.

    Pass `max_epochs` (the most epochs per round) and optionally `factor`.
    """


class TicketBayesianOptimization(TicketSearchMixin, kt.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` over IMP settings; see `TicketSearchMixin`."""


TUNERS = {
    "random": TicketRandomSearch,
    "hyperband": TicketHyperband,
    "bayesian": TicketBayesianOptimization,
}


def make_tuner(kind, build_model, target_weights_remaining, **kwargs):
    """A ticket tuner by name: "random", "hyperband" or "bayesian".

    Raises:
      ValueError: for an unknown kind, listing the known ones.
    """
    if kind not in TUNERS:
        raise ValueError(f"Unknown tuner {kind!r}; choose one of {sorted(TUNERS)}.")
    return TUNERS[kind](build_model, target_weights_remaining, **kwargs)
