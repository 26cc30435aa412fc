"""A lottery-ticket experiment: IMP and its controls over several seeds.

For each seed: build and wrap the network, find the ticket with IMP in one
`fit` (data in a fixed order), then train each control (`reinit`, `random`)
with the same data order and steps. Results go to

    OUT/seed_<s>/<series>/imp_report.json, imp_history.csv   (series: ticket, reinit, random)
    OUT/summary.json, OUT/summary.csv, OUT/rounds.csv, OUT/tickets.png

and are rewritten after every round / run, so an interrupted experiment keeps
what it finished; a rerun skips seeds whose runs are all complete.
"""

import dataclasses
import logging
import os
import time

from keras_lottery import controls as controls_lib
from keras_lottery import report as report_lib
from keras_lottery._keras import keras
from keras_lottery.imp import IMP

__all__ = ["ExperimentSettings", "RoundMaskWriter", "load_round_masks", "run_complete", "run_experiment",
           "seed_dir"]

logger = logging.getLogger("keras_lottery")


def seed_dir(out, seed, series):
    """The folder of one run: OUT/seed_<seed>/<series>."""
    return os.path.join(out, f"seed_{seed}", series)


# settings that may differ between a finished run and its rerun
_OUTPUT_SETTINGS = ("out", "quiet", "resume", "fresh", "progress", "tensorboard", "data_dir",
                    "command", "func", "verbose", "check_sparsity", "controls", "seeds")


def run_complete(path, rounds, config=None):
    """Whether `path/imp_report.json` holds a finished run (its last row is round `rounds`).

    Args:
      path: a run's report folder.
      rounds: the run's pruning rounds.
      config: optional settings the run must have been made with: a report
        whose recorded config differs in any of these keys (other than
        output-only ones such as "out" or "progress") is not complete for
        this run.

    Returns:
      True if the report exists, reached round `rounds`, and matches `config`.
    """
    report = os.path.join(path, "imp_report.json")
    if not os.path.exists(report):
        return False
    payload = report_lib.read_json(report)
    last = payload["history"][-1]["round"] if payload.get("history") else -1
    if last != rounds:
        return False
    saved = payload.get("config", {})
    return all(saved.get(k) == v for k, v in (config or {}).items() if k not in _OUTPUT_SETTINGS)


def _mask_file(folder, rnd):
    return os.path.join(folder, f"round_{int(rnd):03d}.npz")


class RoundMaskWriter(keras.callbacks.Callback):
    """Writes the masks of every IMP round to `folder/round_<r>.npz` as the round starts.

    The controls train with the ticket's mask of each round; a resumed ticket
    fit does not see its earlier rounds again, so they are kept on disk
    (written atomically). Put it after the `IMPCallback` and after a
    `resume.RoundCheckpoint`, which restores a resumed run's round and masks
    in `on_train_begin`.

    Args:
      imp_callback: the ticket's `IMPCallback`.
      folder: where the mask files go (created).
    """

    def __init__(self, imp_callback, folder):
        super().__init__()
        self.imp_callback = imp_callback
        self.folder = folder
        self.saved = set()

    def _save(self):
        rnd = int(self.imp_callback.round)
        if rnd in self.saved:
            return
        import io

        import numpy as np

        from keras_lottery import masks as masks_lib

        masks = masks_lib.read_masks(self.model)
        names = sorted(masks)
        buffer = io.BytesIO()
        np.savez(buffer, names=np.array(names),
                 **{f"mask_{i}": np.asarray(masks[n], np.float32) for i, n in enumerate(names)})
        report_lib.atomic_write(_mask_file(self.folder, rnd), buffer.getvalue(), mode="wb")
        self.saved.add(rnd)

    def on_train_begin(self, logs=None):
        self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save()


def load_round_masks(folder, rounds):
    """The masks `RoundMaskWriter` wrote: dict round -> {weight name: 0/1 mask}, rounds 0..`rounds`.

    Raises:
      FileNotFoundError: if a round's file is missing, naming it.
    """
    import numpy as np

    result = {}
    for rnd in range(rounds + 1):
        path = _mask_file(folder, rnd)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: the ticket's masks of round {rnd} are needed to train its "
                "controls. Start the run over with --fresh (or pass --controls none).")
        with np.load(path) as npz:
            names = [str(n) for n in npz["names"]]
            result[rnd] = {n: npz[f"mask_{i}"] for i, n in enumerate(names)}
    return result


@dataclasses.dataclass
class ExperimentSettings:
    """What `run_experiment` trains: IMP's settings, training length, seeds, controls, outputs.

    Checked when made (`__post_init__`), so a bad value fails before any data
    is loaded or any model built. Serializable: `get_config()` is a plain
    dict of JSON types and `ExperimentSettings.from_config(config)` rebuilds it.

    Args:
      rounds, prune_rate, rewind, scope, layer_rates, output_layer_rate: as for `IMP`.
      epochs_per_round: epochs trained in each round (>= 1).
      batch_size: examples per step (>= 1).
      seeds: the seeds (distinct integers); each sets the initialization,
        data order and control draws.
      controls: names from `controls.CONTROLS` (a tuple, or "reinit,random").
      eval_every: steps between validation evaluations inside a round (the
        early-stopping iteration's resolution); None: at epoch ends only.
      verbose: 1 logs a line per finished run.
      run_config: extra settings recorded in every report (and compared when
        a rerun decides what is already finished).
      title: figure title.
      save_model: also save each seed's wrapped ticket model.
      check_sparsity: optional N: a `SparsityGuard(every=N)` on the ticket's
        and every control's fit (see `IMP.callbacks`).
      progress: a `progress.RoundProgress` mode for every fit ("none": silent).
      block, block_score, block_layers: block-structured masks, as for `IMP`
        (`block` is kept as a `(rows, cols)` tuple, None for unstructured).
      resume: checkpoint every finished round of each seed's ticket (in
        OUT/seed_<s>/ticket/resume) so that a rerun continues an interrupted
        ticket from its last finished round instead of starting the seed over.
      round_end, converge_every, converge_tol, converge_patience: as for
        `IMP` (`"converged"`: Early-Bird rounds; a round's budget is then
        `epochs_per_round` epochs of data in chunks of `converge_every`
        steps, and the controls train each round as long as the seed's
        ticket did, see `controls.ControlCallback`).

    Raises:
      ValueError: for a value out of range, naming the field and the fix.

    Example:
      >>> settings = ExperimentSettings(rounds=10, prune_rate=0.2, epochs_per_round=2,
      ...                               batch_size=60, seeds=(0, 1, 2),
      ...                               controls=("reinit", "random"))
      >>> ExperimentSettings.from_config(settings.get_config()) == settings
      True
    """

    rounds: int
    prune_rate: float
    epochs_per_round: int
    batch_size: int
    seeds: tuple = (0,)
    controls: tuple = ()
    rewind: str = "0it"
    scope: str = "layerwise"
    layer_rates: dict = None
    output_layer_rate: float = None
    eval_every: int = None
    verbose: int = 1
    run_config: dict = None
    title: str = None
    save_model: bool = False
    check_sparsity: int = None
    progress: str = "none"
    block: tuple = None
    block_score: str = "l2"
    resume: bool = False
    block_layers: object = "all"
    round_end: str = "epochs"
    converge_every: int = None
    converge_tol: float = None
    converge_patience: int = None

    def __post_init__(self):
        for key in ("rounds", "epochs_per_round", "batch_size"):
            _check_count(key, getattr(self, key))
        for key in ("eval_every", "check_sparsity"):
            if getattr(self, key) is not None:
                _check_count(key, getattr(self, key), "or None")
        if (isinstance(self.prune_rate, bool) or not isinstance(self.prune_rate, (int, float))
                or not 0.0 < self.prune_rate < 1.0):
            raise ValueError(f"ExperimentSettings.prune_rate must be in (0, 1), got "
                             f"{self.prune_rate!r} (0.2 prunes 20% of the survivors per round).")
        seeds = [self.seeds] if isinstance(self.seeds, int) else list(self.seeds)
        if not seeds or any(isinstance(s, bool) or int(s) != s for s in seeds):
            raise ValueError(f"ExperimentSettings.seeds must be one or more integers, got "
                             f"{self.seeds!r}.")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"ExperimentSettings.seeds repeats a seed: {self.seeds!r}; "
                             "each seed is run once.")
        self.seeds = tuple(int(s) for s in seeds)
        self.controls = controls_lib.parse_controls(self.controls)
        from keras_lottery.masks import SCOPES
        from keras_lottery.progress import PROGRESS_MODES
        from keras_lottery.schedule import parse_rewind

        from keras_lottery.convergence import make_criterion

        # raises for a malformed rewind point, or a bad round_end / converge_* setting
        make_criterion(self.round_end, self.converge_every, self.converge_tol,
                       self.converge_patience, parse_rewind(self.rewind))
        self.rewind = str(self.rewind)
        if self.scope not in SCOPES:
            raise ValueError(f"ExperimentSettings.scope must be one of {SCOPES}, got {self.scope!r}.")
        rates = dict(self.layer_rates or {})
        for name, rate in list(rates.items()) + [("output_layer_rate", self.output_layer_rate)]:
            if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                     or not 0.0 <= rate < 1.0):
                raise ValueError(f"ExperimentSettings: the rate for {name!r} must be in [0, 1), "
                                 f"got {rate!r}.")
        self.layer_rates = rates or None
        from keras_lottery import blocks as blocks_lib

        self.block = blocks_lib.parse_block(self.block)
        blocks_lib.check_block_score(self.block_score, "ExperimentSettings.block_score")
        self.block_layers = blocks_lib.check_block_layers(self.block_layers)
        if self.progress not in PROGRESS_MODES:
            raise ValueError(f"ExperimentSettings.progress must be one of {list(PROGRESS_MODES)}, "
                             f"got {self.progress!r}.")
        if self.run_config is not None and not isinstance(self.run_config, dict):
            raise ValueError(f"ExperimentSettings.run_config must be a dict or None, got "
                             f"{type(self.run_config).__name__}.")

    def get_config(self):
        """The settings as a dict of JSON types (tuples become lists)."""
        config = dataclasses.asdict(self)
        config["seeds"] = list(self.seeds)
        config["controls"] = list(self.controls)
        config["block"] = None if self.block is None else list(self.block)
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuilds settings from `get_config()`'s dict.

        Raises:
          ValueError: for a key that is not a field, naming it.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(f"ExperimentSettings has no field(s) {unknown}; fields: {sorted(fields)}.")
        config = dict(config)
        for key in ("seeds", "controls", "block"):
            if isinstance(config.get(key), list):
                config[key] = tuple(config[key])
        return cls(**config)


def _check_count(key, value, extra=""):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ExperimentSettings.{key} must be an integer >= 1{' ' + extra if extra else ''}, "
                         f"got {value!r}.")


def run_experiment(build_model, compile_model, train, val, test, out, settings, *,
                   return_trained=False):
    """Runs IMP and its controls for every seed, writing results as it goes.

    Args:
      build_model: `seed -> tf_keras model` (unwrapped, built).
      compile_model: `model -> None`, compiles it (a fresh optimizer each call).
      train, val, test: `(x, y)` array pairs.
      out: the results folder.
      settings: an `ExperimentSettings` (or its `get_config()` dict).
      return_trained: also return whether anything was trained.

    Returns:
      The summary (see `report.summarize`); with `return_trained`,
      `(summary, trained)`. A seed whose ticket and controls all hold
      finished reports made with the same `run_config` is skipped; with
      `settings.resume`, an unfinished ticket continues from its last
      finished round and finished controls are not trained again.

    Raises:
      TypeError: if `settings` is not an `ExperimentSettings` or a dict.
      ValueError: if `train`, `val` or `test` lacks labels or holds NaN / inf.
      InitializerNotFound: with the `"reinit"` control, if a trainable weight
        has no initializer to redraw it from (before any training).

    Example:
      >>> settings = ExperimentSettings(rounds=5, prune_rate=0.2, epochs_per_round=2,
      ...                               batch_size=60, controls=("reinit",))
      >>> summary = run_experiment(build, compile_fn, train, val, test, "runs/x",
      ...                          settings)   # doctest: +SKIP
    """
    if isinstance(settings, dict):
        settings = ExperimentSettings.from_config(settings)
    if not isinstance(settings, ExperimentSettings):
        raise TypeError(f"run_experiment takes its settings as one ExperimentSettings "
                        f"(e.g. kl.ExperimentSettings(rounds=10, prune_rate=0.2, "
                        f"epochs_per_round=2, batch_size=60)), got {type(settings).__name__}.")
    s = settings
    from keras_lottery.data import check_finite, check_labelled

    for name, pair in (("train", train), ("val", val), ("test", test)):
        check_labelled(pair, name)
    check_finite({"train": train, "val": val, "test": test})
    from keras_lottery import resume as resume_lib
    from keras_lottery.progress import RoundProgress

    (x, y) = train
    trained = False
    several = len(s.seeds) > 1
    for seed in s.seeds:
        dirs = {k: seed_dir(out, seed, k) for k in ("ticket",) + s.controls}
        config = dict(s.run_config or {}, seed=seed, series="ticket", batch_size=s.batch_size,
                      eval_every=s.eval_every)
        complete = {k: run_complete(d, s.rounds, dict(config, series=k)) for k, d in dirs.items()}
        if all(complete.values()):
            logger.info("seed %d: already complete in %s, skipped", seed, os.path.dirname(dirs["ticket"]))
            continue
        started = time.perf_counter()
        trained = True
        keras.utils.set_random_seed(seed)
        imp = IMP(rounds=s.rounds, prune_rate=s.prune_rate, rewind=s.rewind, scope=s.scope,
                  layer_rates=s.layer_rates, output_layer_rate=s.output_layer_rate,
                  block=s.block, block_score=s.block_score, block_layers=s.block_layers,
                  round_end=s.round_end, converge_every=s.converge_every,
                  converge_tol=s.converge_tol, converge_patience=s.converge_patience)
        model = imp.wrap(build_model(seed))
        if "reinit" in s.controls:  # a weight it cannot redraw: refused before the ticket trains
            controls_lib.weight_initializers(model)
        compile_model(model)
        per_epoch = -(-len(x) // s.batch_size)
        if imp.convergence is None:
            epochs, validation_freq = imp.epochs(per_round=s.epochs_per_round), 1
        else:  # a round's budget in chunks; validate about once per epoch of data
            epochs = imp.fit_kwargs(steps_per_round=s.epochs_per_round * per_epoch)["epochs"]
            validation_freq = max(1, per_epoch // imp.chunk_steps)
        resume_dir = os.path.join(dirs["ticket"], "resume") if s.resume else None
        start = resume_lib.initial_epoch(resume_dir) if resume_dir else 0
        callbacks = imp.callbacks(test_data=test, report_dir=dirs["ticket"], verbose=0,
                                  run_config=config, eval_every=s.eval_every, validation_data=val,
                                  check_sparsity=s.check_sparsity, resume_dir=resume_dir)
        recorder = controls_lib.TicketRecorder(callbacks)
        masks_dir = os.path.join(dirs["ticket"], "ticket_masks")
        if s.resume:  # after RoundCheckpoint, which restores a resumed run's masks
            callbacks.append(RoundMaskWriter(imp.callback, masks_dir))
        callbacks.append(RoundProgress(recorder.imp_callback, f"ticket s{seed}"
                                       if several else "ticket", mode=s.progress))
        if imp.convergence is None:
            data, steps = controls_lib.ordered_batches(x, y, s.batch_size, seed=seed,
                                                       start_epoch=start)
        else:
            from keras_lottery.convergence import chunked_batches

            data, steps = chunked_batches(x, y, s.batch_size, imp.chunk_steps, seed=seed,
                                          start_chunk=start)
        model.fit(data, steps_per_epoch=steps, epochs=epochs, initial_epoch=start,
                  validation_data=val, validation_freq=validation_freq,
                  callbacks=callbacks + [recorder], verbose=0)
        if s.resume:  # a resumed fit saw only its last rounds
            recorder.masks = load_round_masks(masks_dir, s.rounds)
        if s.save_model:
            report_lib.atomic_path(os.path.join(dirs["ticket"], "wrapped_model.keras"), model.save)
        if s.verbose:
            logger.info("seed %d: ticket done (%.0f s)", seed, time.perf_counter() - started)
        report_lib.write_summary(out, title=s.title)
        for kind in s.controls:
            if s.resume and complete[kind]:
                continue
            t0 = time.perf_counter()
            controls_lib.train_control(
                kind, model, recorder, x, y, batch_size=s.batch_size, data_seed=seed, seed=seed,
                validation_data=val, test_data=test, eval_every=s.eval_every,
                report_dir=dirs[kind], verbose=0, run_config=dict(config, series=kind),
                check_sparsity=s.check_sparsity, validation_freq=validation_freq,
                callbacks=[lambda control, kind=kind: RoundProgress(
                    control, f"{kind} s{seed}" if several else kind, mode=s.progress)])
            if s.verbose:
                logger.info("seed %d: %s control done (%.0f s)", seed, kind, time.perf_counter() - t0)
            report_lib.write_summary(out, title=s.title)
    summary = report_lib.write_summary(out, title=s.title)
    return (summary, trained) if return_trained else summary
