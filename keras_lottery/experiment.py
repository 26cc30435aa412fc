"""A lottery-ticket experiment: IMP and its controls over several seeds.

For each seed: build and wrap the network, find the ticket with IMP in one
`fit` (data in a fixed order), then train each control (`reinit`, `random`)
with the same data order and steps. Results go to

    OUT/seed_<s>/<series>/imp_report.json, imp_history.csv   (series: ticket, reinit, random)
    OUT/summary.json, OUT/summary.csv, OUT/rounds.csv, OUT/tickets.png

and are rewritten after every round / run, so an interrupted experiment keeps
what it finished; a rerun skips seeds whose runs are all complete.
"""

import logging
import os
import time

from keras_lottery import controls as controls_lib
from keras_lottery import report as report_lib
from keras_lottery._keras import keras
from keras_lottery.imp import IMP

__all__ = ["RoundMaskWriter", "load_round_masks", "run_complete", "run_experiment", "seed_dir"]

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


def run_experiment(build_model, compile_model, train, val, test, out, *, rounds, prune_rate,
                   epochs_per_round, batch_size, seeds=(0,), controls=(), rewind="0it",
                   scope="layerwise", layer_rates=None, output_layer_rate=None, eval_every=None,
                   verbose=1, run_config=None, title=None, save_model=False,
                   check_sparsity=None, progress="none", return_trained=False, block=None,
                   block_score="l1"):
    """Runs IMP and its controls for every seed, writing results as it goes.

    Args:
      build_model: `seed -> tf_keras model` (unwrapped, built).
      compile_model: `model -> None`, compiles it (a fresh optimizer each call).
      train, val, test: `(x, y)` array pairs.
      out: the results folder.
      rounds, prune_rate, rewind, scope, layer_rates, output_layer_rate: as for `IMP`.
      epochs_per_round, batch_size: training length and batch size of each round.
      seeds: the seeds; each sets the initialization, data order and control draws.
      controls: names from `controls.CONTROLS`.
      eval_every: steps between validation evaluations inside a round (the
        early-stopping iteration's resolution); None: at epoch ends only.
      verbose: 1 logs a line per finished run.
      run_config: extra settings recorded in every report.
      title: figure title.
      save_model: also save each seed's wrapped ticket model.
      check_sparsity: optional N: a `SparsityGuard(every=N)` on the ticket's
        and every control's fit (see `IMP.callbacks`).
      progress: a `progress.RoundProgress` mode for every fit ("none": silent).
      return_trained: also return whether anything was trained.
      block, block_score: block-structured masks, as for `IMP`.

    Returns:
      The summary (see `report.summarize`); with `return_trained`,
      `(summary, trained)`. A seed whose ticket and controls all hold
      finished reports made with the same `run_config` is skipped.

    Raises:
      ValueError: if `train`, `val` or `test` lacks labels or holds NaN / inf.
      InitializerNotFound: with the `"reinit"` control, if a trainable weight
        has no initializer to redraw it from (before any training).
    """
    controls = controls_lib.parse_controls(controls)
    seeds = list(seeds)
    from keras_lottery.data import check_finite, check_labelled

    for name, pair in (("train", train), ("val", val), ("test", test)):
        check_labelled(pair, name)
    check_finite({"train": train, "val": val, "test": test})
    from keras_lottery.progress import RoundProgress

    (x, y) = train
    trained = False
    for seed in seeds:
        dirs = {s: seed_dir(out, seed, s) for s in ("ticket",) + controls}
        if all(run_complete(d, rounds, dict(run_config or {}, seed=seed))
               for d in dirs.values()):
            logger.info("seed %d: already complete in %s, skipped", seed, os.path.dirname(dirs["ticket"]))
            continue
        started = time.perf_counter()
        trained = True
        keras.utils.set_random_seed(seed)
        imp = IMP(rounds=rounds, prune_rate=prune_rate, rewind=rewind, scope=scope,
                  layer_rates=layer_rates, output_layer_rate=output_layer_rate,
                  block=block, block_score=block_score)
        model = imp.wrap(build_model(seed))
        if "reinit" in controls:  # a weight it cannot redraw: refused before the ticket trains
            controls_lib.weight_initializers(model)
        compile_model(model)
        epochs = imp.epochs(per_round=epochs_per_round)
        config = dict(run_config or {}, seed=seed, series="ticket", batch_size=batch_size,
                      eval_every=eval_every)
        callbacks = imp.callbacks(test_data=test, report_dir=dirs["ticket"], verbose=0,
                                  run_config=config, eval_every=eval_every, validation_data=val,
                                  check_sparsity=check_sparsity)
        recorder = controls_lib.TicketRecorder(callbacks)
        callbacks.append(RoundProgress(recorder.imp_callback, f"ticket s{seed}"
                                       if len(seeds) > 1 else "ticket", mode=progress))
        data, steps = controls_lib.ordered_batches(x, y, batch_size, seed=seed)
        model.fit(data, steps_per_epoch=steps, epochs=epochs,
                  validation_data=val, callbacks=callbacks + [recorder], verbose=0)
        if save_model:
            report_lib.atomic_path(os.path.join(dirs["ticket"], "wrapped_model.keras"), model.save)
        if verbose:
            logger.info("seed %d: ticket done (%.0f s)", seed, time.perf_counter() - started)
        report_lib.write_summary(out, title=title)
        for kind in controls:
            t0 = time.perf_counter()
            controls_lib.train_control(
                kind, model, recorder, x, y, batch_size=batch_size, data_seed=seed, seed=seed,
                validation_data=val, test_data=test, eval_every=eval_every,
                report_dir=dirs[kind], verbose=0, run_config=dict(config, series=kind),
                check_sparsity=check_sparsity,
                callbacks=[lambda control, kind=kind: RoundProgress(
                    control, f"{kind} s{seed}" if len(seeds) > 1 else kind, mode=progress)])
            if verbose:
                logger.info("seed %d: %s control done (%.0f s)", seed, kind, time.perf_counter() - t0)
            report_lib.write_summary(out, title=title)
    summary = report_lib.write_summary(out, title=title)
    return (summary, trained) if return_trained else summary
