"""`keras-lottery run`: an IMP search on a built-in model and local dataset."""

import logging
import math
import os
import time

from keras_lottery.cli._args import (
    CONVERGE_DEFAULTS,
    SCOPES,
    add_block_args,
    add_local_data_args,
    add_model_arg,
    add_num_samples_arg,
    add_round_end_args,
    check_round_end_args,
    resolve_num_samples,
    round_end_config,
)

logger = logging.getLogger("keras_lottery")

DEFAULTS = dict(
    dataset="mnist1d",
    model="lenet",
    rounds=10,
    prune_rate=0.2,
    output_rate=0.1,
    rewind="0it",
    scope="layerwise",
    epochs_per_round=8,
    batch_size=60,
    optimizer="adam",
    lr=1.2e-3,
    seed=0,
    val_fraction=0.1,
    num_samples=9000,
    test_fraction=0.5,
    controls="reinit,random",
    out=os.path.join("runs", "lenet-mnist1d"),
)

# keys of vars(args) that change what is shown or where, not what is trained
OUTPUT_ONLY = ("func", "quiet", "command", "fresh", "resume", "progress", "verbose", "controls")

# what a --fresh run deletes from --out before it starts (a single run's files)
RUN_FILES = ("resume", "ticket_masks", "imp_report.json", "imp_history.csv", "ticket.npz",
             "ticket.json", "wrapped_model.keras", "tickets.png", "summary.json", "summary.csv",
             "rounds.csv")


# what a finished single run has written (a rerun that finds them all trains nothing)
FINAL_FILES = ("imp_report.json", "wrapped_model.keras", "ticket.npz", "ticket.json",
               "summary.json", "summary.csv", "rounds.csv", "tickets.png")


def register(subparsers):
    p = subparsers.add_parser(
        "run",
        help="find a lottery ticket and train its controls; print ticket vs control per round",
        description="Iterative magnitude pruning with rewinding on a built-in model, then the "
        "ticket's controls (--controls: the same masks randomly re-initialised, and/or random "
        "masks), each trained like the ticket on batches whose order is a function of "
        "(--seed, epoch). Prints one table: % weights remaining, the ticket's test accuracy, "
        "each control's, and the gap. The ticket's report (imp_report.json, imp_history.csv) "
        "and its last finished round's wrapped model (wrapped_model.keras) are rewritten "
        "atomically in --out after every round, each control's report in "
        "OUT/seed_<s>/<control>/; summary.json and tickets.png (ticket and controls against "
        "% weights) follow. Started again with the same command, a run continues where it "
        "stopped (a finished one prints its table and trains nothing); --fresh starts over.",
    )
    add_local_data_args(p, DEFAULTS["dataset"], "local dataset (default: %(default)s, generated locally)")
    add_model_arg(p, DEFAULTS["model"], "network (default: %(default)s = LeNet-300-100)")
    p.add_argument("--rounds", type=int, default=DEFAULTS["rounds"], help="pruning rounds after the dense round 0 (default: %(default)s)")
    p.add_argument("--prune-rate", type=float, default=DEFAULTS["prune_rate"], help="fraction of surviving weights pruned per round (default: %(default)s)")
    p.add_argument("--output-rate", type=float, default=DEFAULTS["output_rate"],
                   help="per-round rate of the output layer (default: %(default)s, half the rate as in the paper; negative: same as --prune-rate)")
    p.add_argument("--rewind", default=DEFAULTS["rewind"], help="rewind point: 0it (θ0), 500it, 2ep; lr, lr:500it: learning-rate rewinding (keep the trained survivors, reset the optimizer, rewind only its step / LR schedule to 0 or k) (default: %(default)s)")
    p.add_argument("--scope", default=None, choices=list(SCOPES),
                   help="magnitude ranking scope (default: global for the deep nets resnet20/vgg16, "
                   f"as in the papers; {DEFAULTS['scope']} otherwise)")
    add_block_args(p)
    p.add_argument("--epochs-per-round", type=int, default=DEFAULTS["epochs_per_round"], help="epochs trained in each round (default: %(default)s)")
    add_round_end_args(p)
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="(default: %(default)s)")
    p.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=["adam", "sgd"], help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed (default: %(default)s)")
    add_num_samples_arg(p, DEFAULTS["num_samples"])
    p.add_argument("--test-fraction", type=float, default=None,
                   help="MNIST-1D examples kept for the test set (default: "
                   f"{DEFAULTS['test_fraction']}, i.e. 4500 test examples for the default "
                   "--num-samples)")
    p.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"], help="training data held out for validation (default: %(default)s)")
    p.add_argument("--out", default=DEFAULTS["out"], help="report folder (default: %(default)s)")
    p.add_argument("--controls", default=DEFAULTS["controls"], metavar="reinit,random|none",
                   help="controls of the ticket trained after it, with the same data order and "
                   "steps: reinit (same masks, weights drawn afresh from the initializers), "
                   "random (random masks with the same per-layer sparsity, weights from the "
                   "rewind point); none: the ticket only (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="repeat for N seeds (--seed, --seed+1, ...) and report mean and spread; "
                   "results go to OUT/seed_<s>/<series>/ (a rerun skips the seeds that finished)")
    p.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                   help="evaluate the validation data every STEPS steps inside a round for the "
                   "early-stopping iteration (default: at epoch ends only)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard logs to DIR: a point per round (weights remaining, "
                   "accuracies, early-stop iteration), mask histograms, per-epoch curves")
    p.add_argument("--fresh", action="store_true",
                   help="start over: delete this --out's previous run (its resume checkpoints, "
                   "reports, ticket, model and control results) before training")
    p.add_argument("--resume", action="store_true",
                   help="accepted for compatibility; resuming is the default: every finished "
                   "round is checkpointed to OUT/resume, and the same command started again "
                   "continues a killed run from its last finished round, bit-identical to an "
                   "uninterrupted run (a changed setting is refused; --fresh starts over)")
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "round", "epoch", "none"],
                   help="auto (default): on a terminal one line per round updating in place "
                   "(epoch, step, loss, ETA), then the round's row; otherwise (CI, pipes, log "
                   "files) one plain line per round. bar / round force either; epoch: a plain "
                   "line per epoch too; none: only the final table")
    p.add_argument("--steps-per-execution", type=int, default=None, metavar="N",
                   help="training steps per call of Keras' train function (fewer Python "
                   f"round trips; the same batches and results). Default: {STEPS_PER_EXECUTION}, "
                   "or 1 with --check-sparsity / --eval-every, which act between calls")
    p.add_argument("--quiet", action="store_true", help="print only the final table (--progress none)")
    p.add_argument("--check-sparsity", type=int, default=None, metavar="N",
                   help="check after every N-th batch that each pruned weight is exactly zero "
                   "(keras_lottery.SparsityGuard); stops with an error naming the layer, the "
                   "count and the step (cost: docs/concepts/exactness.md)")
    p.set_defaults(func=run)
    return p


STEPS_PER_EXECUTION = 25


def _flag(key):
    return "--" + key.replace("_", "-")


def check_out(out):
    """Creates --out, or explains why it cannot be a folder (before any training)."""
    path = os.path.abspath(out)
    part = path
    while True:
        if os.path.exists(part) and not os.path.isdir(part):
            where = "is a file" if part == path else f"lies under {part}, which is a file"
            raise ValueError(f"--out {out} {where}, not a folder: pass a folder path "
                             "(it is created if missing).")
        parent = os.path.dirname(part)
        if parent == part:
            break
        part = parent
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out} cannot be created ({err.strerror}): pass a folder "
                         "you can write to.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} is not writable: pass a folder you can write to.")


def check_learning_rate(flag, value, default):
    """Raises ValueError unless `value` is a positive finite number (shared by the CLIs)."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{flag} {value} is not a learning rate: pass a positive finite "
                         f"number (the default is {default}).")


def check_args(args):
    """Refuses settings that cannot train, naming the value and the fix (before any work).

    Raises:
      ValueError: for a learning rate that is not a positive finite number, a
        batch size, epoch count, sample count or validation fraction out of
        range, `--data-dir` with MNIST-1D, or an `--out` that cannot be a folder.
      FileNotFoundError: for a `--data-dir` that is not a folder.
    """
    check_learning_rate("--lr", args.lr, DEFAULTS["lr"])
    for key in ("batch_size", "epochs_per_round", "rounds"):
        if getattr(args, key) < 1:
            raise ValueError(f"{_flag(key)} must be >= 1, got {getattr(args, key)}.")
    if args.eval_every is not None and args.eval_every < 1:
        raise ValueError(f"--eval-every must be >= 1 (steps), got {args.eval_every}.")
    if getattr(args, "check_sparsity", None) is not None and args.check_sparsity < 1:
        raise ValueError(f"--check-sparsity must be >= 1 (batches), got {args.check_sparsity}.")
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction} "
                         f"(default {DEFAULTS['val_fraction']}).")
    if args.test_fraction is not None:
        if args.dataset != "mnist1d":
            raise ValueError(f"--test-fraction {args.test_fraction} applies to --dataset mnist1d "
                             f"only ({args.dataset} has its own test set): drop it.")
        if not 0.0 < args.test_fraction < 1.0:
            raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction} "
                             f"(default {DEFAULTS['test_fraction']}).")
    if args.steps_per_execution is not None and args.steps_per_execution < 1:
        raise ValueError(f"--steps-per-execution must be >= 1, got {args.steps_per_execution}.")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}.")
    check_round_end_args(args)
    resolve_num_samples(args, DEFAULTS["num_samples"])  # recorded in the run config: the value used
    if args.data_dir is not None:
        if args.dataset != "fashion_mnist":
            raise ValueError(f"--data-dir {args.data_dir} applies to --dataset fashion_mnist "
                             f"only ({args.dataset} is generated): drop it, or pass "
                             "--dataset fashion_mnist.")
        if not os.path.isdir(args.data_dir):
            raise FileNotFoundError(
                f"--data-dir {args.data_dir} is not a folder: pass the folder holding the "
                "Fashion-MNIST IDX .gz files, or leave it out to use the system copy.")
    for flag in ("block_score", "block_layers"):
        if getattr(args, "block", None) is None and getattr(args, flag, None) is not None:
            raise ValueError(f"{_flag(flag)} {getattr(args, flag)} applies to block masks: pass "
                             "--block too (e.g. --block 4x1), or drop it.")
    if getattr(args, "block", None) is not None:  # recorded in the run config: the values used
        args.block_score = args.block_score or "l2"
        args.block_layers = args.block_layers or "all"
    check_out(args.out)


def load_data(args):
    """(train, val, test) array pairs, checked: finite, and every class in training."""
    import numpy as np

    from keras_lottery import data

    if args.dataset == "mnist1d":
        fraction = DEFAULTS["test_fraction"] if args.test_fraction is None else args.test_fraction
        (x, y), test = data.load_mnist1d(num_samples=args.num_samples, seed=42,
                                         train_split=1.0 - fraction)
    else:
        (x, y), test = data.load_local(args.dataset, args.num_samples, args.data_dir)
    train, val = data.split_validation(x, y, args.val_fraction)
    data.check_finite({"x_train": train[0], "x_val": val[0], "x_test": test[0]})
    classes = int(max(train[1].max(), val[1].max(), test[1].max())) + 1
    missing = sorted(set(range(classes)) - set(np.unique(train[1]).tolist()))
    if missing:
        raise ValueError(f"The training split ({len(train[0])} examples) has no example of "
                         f"class(es) {missing}: pass a larger --num-samples.")
    return train, val, test


def _check_resume(resume_dir, config):
    """Refuses, before training, a --resume whose checkpoint has other settings."""
    from keras_lottery import resume

    meta = resume.read_checkpoint(resume_dir)
    if meta is None:
        return
    keys = [k for k in config if k not in resume.IGNORED_SETTINGS]
    if config.get("round_end") == "converged":
        # the checkpoint's epochs_per_round is the IMPCallback's: a round's budget in
        # chunks of --converge-every steps, not --epochs-per-round's epochs of data;
        # RoundCheckpoint compares it (and refuses a changed budget) before any step
        keys.remove("epochs_per_round")
    diff = resume.settings_diff(meta["config"], {k: config[k] for k in keys}, keys=keys)
    if diff:
        names = {k: _flag(k) for k in keys}
        names["data_sha256"] = "data (SHA-256)"
        raise ValueError(
            f"{resume_dir} holds an earlier run of this --out with other settings "
            f"(setting: before -> now):\n{resume.format_settings_diff(diff, names)}\n"
            "Run the same command as "
            "before (same flags) to continue it, pass a new --out to start another run, "
            f"or pass --fresh to start this one over (it deletes {resume_dir} and the old "
            "results).")


def parse_controls(text):
    """`--controls`: "reinit,random" -> ("reinit", "random"); "none" or "" -> ()."""
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    from keras_lottery import controls

    return controls.parse_controls(text)


def steps_per_execution(args):
    """`--steps-per-execution`, or its default: 1 where a callback must act after every batch."""
    if args.steps_per_execution is not None:
        return args.steps_per_execution
    if args.check_sparsity is not None or args.eval_every is not None:
        return 1
    if getattr(args, "round_end", "epochs") == "converged":  # a divisor of the check interval
        return math.gcd(STEPS_PER_EXECUTION, round_end_config(args)["converge_every"])
    return STEPS_PER_EXECUTION


def run_config(args):
    """The settings recorded in the reports and compared on resume (no output-only flags)."""
    config = {k: v for k, v in vars(args).items()
              if k not in OUTPUT_ONLY and k != "round_end" and k not in CONVERGE_DEFAULTS}
    config.update(round_end_config(args))
    if args.dataset == "mnist1d" and args.test_fraction is None:
        config["test_fraction"] = DEFAULTS["test_fraction"]  # the value used, not "default"
    return config


def progress_mode(args):
    return "none" if args.quiet else args.progress


def clear_run(out):
    """`--fresh`: deletes the previous run's files from `out` (only the files a run writes).

    Everything is removed by name: `RUN_FILES` and the `seed_<s>` folders
    (the controls' and the seeds' reports); any other file in `out` is left
    alone, and a symbolic link is removed, not followed.

    Returns:
      The names removed.
    """
    from keras_lottery.report import remove_outputs

    names = list(RUN_FILES)
    if os.path.isdir(out):
        names += sorted(n for n in os.listdir(out) if n.startswith("seed_")
                        and os.path.isdir(os.path.join(out, n)))
    return remove_outputs(out, names)


def print_result(args, summary, started, trained):
    from keras_lottery import report

    print()
    if "ticket" in summary and len(summary) > 1:
        print(report.format_comparison(summary))
    elif args.seeds is None:  # the ticket alone: its per-round table
        rows = report.read_json(os.path.join(args.out, "imp_report.json"))["history"]
        columns = list(report.TABLE_COLUMNS)
        if len({row.get("steps") for row in rows}) > 1:  # Early-Bird rounds: their lengths
            columns.insert(1, ("steps", "steps", "{:d}"))
        print(report.format_table(rows, columns))
    else:
        print(report.format_summary(summary))
    took = time.perf_counter() - started
    note = f"{took:.0f} s" if trained else f"finished before, nothing trained; {took:.0f} s"
    print(f"\nreport: {os.path.join(args.out, 'summary.json')}  plot: "
          f"{os.path.join(args.out, 'tickets.png')}  ({note})")


def run_seeds(args):
    """--seeds N: IMP and its controls for every seed, then the summary."""
    from keras_lottery import data, experiment, models

    started = time.perf_counter()
    kinds = parse_controls(args.controls)
    if args.tensorboard:
        logger.warning("--tensorboard applies to single runs (no --seeds); ignored.")
    seeds = range(args.seed, args.seed + args.seeds)
    train, val, test = load_data(args)
    num_classes = int(train[1].max()) + 1
    if args.fresh:
        clear_run(args.out)
    from keras_lottery.report import remove_stale_temporaries

    for name in remove_stale_temporaries(args.out):  # a killed run's half-written files
        logger.info("removed %s (a temporary file of an interrupted run)", os.path.join(args.out, name))

    def build(seed):
        return models.build(args.model, input_shape=train[0].shape[1:], num_classes=num_classes, seed=seed)

    def compile_model(model):
        models.compile_classifier(model, args.optimizer, args.lr,
                                  steps_per_execution=steps_per_execution(args))

    config = run_config(args)
    config["steps_per_execution"] = steps_per_execution(args)
    config["data_sha256"] = data.data_fingerprint(*train, *val, *test)
    logger.info("IMP: %s on %s, %d rounds x %d epochs, seeds %s, controls %s -> %s",
                args.model, args.dataset, args.rounds + 1, args.epochs_per_round, list(seeds),
                ",".join(kinds) or "none", args.out)
    settings = experiment.ExperimentSettings(
        rounds=args.rounds, prune_rate=args.prune_rate, epochs_per_round=args.epochs_per_round,
        batch_size=args.batch_size, seeds=seeds, controls=kinds, rewind=args.rewind,
        scope=args.scope,
        output_layer_rate=None if args.output_rate is None or args.output_rate < 0 else args.output_rate,
        **_block_kwargs(args), **round_end_config(args),
        eval_every=args.eval_every, verbose=0 if args.quiet else 1, run_config=config,
        title=f"{args.model} on {args.dataset}: IMP, rewind {args.rewind}", save_model=True,
        check_sparsity=args.check_sparsity, progress=progress_mode(args))
    summary, trained = experiment.run_experiment(build, compile_model, train, val, test, args.out,
                                                 settings, return_trained=True)
    print_result(args, summary, started, trained)
    return 0


def _block_kwargs(args):
    """IMP's block settings from --block / --block-score (nothing when unstructured)."""
    if getattr(args, "block", None) is None:
        return {}
    return {"block": args.block, "block_score": args.block_score,
            "block_layers": args.block_layers}


def run(args):
    check_args(args)
    if args.scope is None:  # deep networks are pruned globally (Frankle et al.)
        from keras_lottery.models import DEEP_MODELS

        args.scope = "global" if args.model in DEEP_MODELS else DEFAULTS["scope"]
    kinds = parse_controls(args.controls)
    if args.seeds is not None:
        return run_seeds(args)
    import keras_lottery as kl
    from keras_lottery import data, experiment, report, resume
    from keras_lottery._keras import keras
    from keras_lottery.ticket import ticket_paths

    started = time.perf_counter()
    imp = kl.IMP(rounds=args.rounds, prune_rate=args.prune_rate, rewind=args.rewind, scope=args.scope,
                 output_layer_rate=None if args.output_rate is None or args.output_rate < 0 else args.output_rate,
                 **_block_kwargs(args), **round_end_config(args))
    if imp.convergence is None:
        epochs = imp.epochs(per_round=args.epochs_per_round)
    (x, y), val, test = load_data(args)
    if imp.convergence is not None:
        # a round's budget: --epochs-per-round epochs of data, in chunks of --converge-every steps
        epochs = imp.fit_kwargs(steps_per_round=args.epochs_per_round * -(-len(x) // args.batch_size))["epochs"]
    config = run_config(args)
    config["steps_per_execution"] = steps_per_execution(args)
    config["data_sha256"] = data.data_fingerprint(x, y, *val, *test)
    resume_dir = os.path.join(args.out, "resume")
    masks_dir = os.path.join(args.out, "ticket_masks")
    for name in report.remove_stale_temporaries(args.out):  # a killed run's half-written files
        logger.info("removed %s (a temporary file of an interrupted run)", os.path.join(args.out, name))
    if args.fresh:
        removed = clear_run(args.out)
        if removed and not args.quiet:
            print(f"--fresh: removed {', '.join(removed)} from {args.out}")
    _check_resume(resume_dir, config)
    start = resume.initial_epoch(resume_dir)
    control_dirs = {kind: experiment.seed_dir(args.out, args.seed, kind) for kind in kinds}
    ticket_done = start >= epochs
    todo = [k for k in kinds if not (ticket_done and experiment.run_complete(
        control_dirs[k], args.rounds, dict(config, series=k)))]
    title = f"{args.model} on {args.dataset}: IMP, rewind {args.rewind}"
    if ticket_done and not todo and all(os.path.exists(os.path.join(args.out, name))
                                        for name in FINAL_FILES):
        # a finished run: its table again, nothing built or trained (a run killed while
        # writing its ticket or summary goes on below: nothing to train, files to write)
        print_result(args, report.summarize(report.collect_runs(args.out)), started, trained=False)
        return 0
    keras.utils.set_random_seed(args.seed)
    num_classes = int(max(y.max(), val[1].max(), test[1].max())) + 1
    model = kl.models.build(args.model, input_shape=x.shape[1:], num_classes=num_classes, seed=args.seed)
    model = imp.wrap(model)
    kl.models.compile_classifier(model, args.optimizer, args.lr,
                                 steps_per_execution=steps_per_execution(args))
    model_path = os.path.join(args.out, "wrapped_model.keras")
    callbacks = imp.callbacks(test_data=test, report_dir=args.out, verbose=0, run_config=config,
                              eval_every=args.eval_every, validation_data=val,
                              tensorboard_dir=args.tensorboard, resume_dir=resume_dir,
                              check_sparsity=args.check_sparsity)
    # the trained model of each round, saved before IMP prunes and rewinds it
    saver = resume.RoundModelSaver(imp.callback, model_path)
    callbacks.insert(callbacks.index(imp.callback), saver)
    if not any(isinstance(cb, resume.StopOnNonFiniteLoss) for cb in callbacks):
        callbacks.insert(0, resume.StopOnNonFiniteLoss(imp.callback))
    # after RoundCheckpoint (which restores a resumed run's round and masks)
    callbacks.append(experiment.RoundMaskWriter(imp.callback, masks_dir))
    callbacks.append(kl.progress.RoundProgress(imp.callback, "ticket", mode=progress_mode(args)))
    # Epoch e's batches are a permutation that depends only on (seed, e): a
    # resumed run trains on exactly the batches an uninterrupted one does.
    if imp.convergence is None:
        data, steps = kl.controls.ordered_batches(x, y, args.batch_size, seed=args.seed, start_epoch=start)
    else:  # the same stream, in chunks: chunk c starts at its batch whatever the start
        data, steps = kl.convergence.chunked_batches(x, y, args.batch_size, imp.chunk_steps,
                                                     seed=args.seed, start_chunk=start)
    logger.info("IMP: %s on %s, %d rounds x %d epochs, %d training examples, controls %s -> %s%s",
                args.model, args.dataset, args.rounds + 1, args.epochs_per_round, len(x),
                ",".join(kinds) or "none", args.out,
                f" (resumed at epoch {start})" if 0 < start < epochs else "")
    # with chunk epochs, validate about once per epoch of data, not at every check
    validation_freq = 1 if imp.convergence is None else max(
        1, -(-len(x) // args.batch_size) // imp.chunk_steps)
    model.fit(data, steps_per_epoch=steps, epochs=epochs, validation_data=val,
              validation_freq=validation_freq, callbacks=callbacks, initial_epoch=start, verbose=0)
    # The saver wrote the last round's model as it ended: saving it again here would
    # store other metric states than a run killed after that round stores.
    if not os.path.exists(model_path) or (not ticket_done and saver.saved_round != args.rounds):
        report.atomic_path(model_path, model.save)
    ticket_stem = os.path.join(args.out, "ticket")
    # a run killed after its last checkpoint, before or while writing the ticket, writes it now
    if not ticket_done or not all(os.path.exists(p) for p in ticket_paths(ticket_stem)):
        kl.save_ticket(ticket_stem, model, imp, config=config)  # ticket.npz + ticket.json
    if todo:
        recorder = kl.TicketRecorder(imp.callback)
        recorder.masks = experiment.load_round_masks(masks_dir, args.rounds)
        for kind in todo:
            kl.train_control(
                kind, model, recorder, x, y, batch_size=args.batch_size, data_seed=args.seed,
                seed=args.seed, validation_data=val, test_data=test, eval_every=args.eval_every,
                report_dir=control_dirs[kind], verbose=0, run_config=dict(config, series=kind),
                check_sparsity=args.check_sparsity, validation_freq=validation_freq,
                callbacks=[lambda control, kind=kind: kl.progress.RoundProgress(
                    control, kind, mode=progress_mode(args))])
    summary = report.write_summary(args.out, title=title)
    print_result(args, summary, started, trained=True)
    return 0
