"""`keras-lottery tune`: a keras-tuner search for the best ticket at a target weights remaining."""

import logging
import os
import time

from keras_lottery.cli._args import (
    MODELS,
    SCOPES,
    add_model_arg,
    add_num_samples_arg,
    resolve_num_samples,
)

logger = logging.getLogger("keras_lottery")

TUNER_CHOICES = ("random", "hyperband", "bayesian")
NUM_SAMPLES = 5000  # MNIST-1D examples, training + test
TRIAL_COLUMNS = (
    ("trial", "trial", "{}"),
    ("status", "status", "{}"),
    ("prune_rate", "rate", "{:.4f}"),
    ("rounds", "rounds", "{}"),
    ("rewind", "rewind", "{}"),
    ("learning_rate", "lr", "{:.2e}"),
    ("epochs_per_round", "ep/round", "{}"),
    ("weights_remaining", "remain%", "{:.1%}"),
    ("dense_val_accuracy", "dense val", "{:.4f}"),
    ("val_accuracy", "val acc", "{:.4f}"),
    ("test_accuracy", "test acc", "{:.4f}"),
    ("early_stop_iteration", "es iter", "{:.0f}"),
)


def register(subparsers):
    p = subparsers.add_parser(
        "tune",
        help="search prune rate, rewind point and learning rate for the best ticket at a target sparsity (keras-tuner)",
        description="Runs a keras-tuner search (RandomSearch, Hyperband or BayesianOptimization) "
        "in which each trial is a full IMP run down to --target weights remaining: the prune "
        "rate per round sets the number of rounds, and rewind point and learning rate vary too. "
        "Trials, their IMP reports and tickets live in keras-tuner's folder OUT/PROJECT; "
        "running the same command again resumes the search there (use --overwrite to restart).",
    )
    p.add_argument("--dataset", default="mnist1d",
                   help="mnist1d (generated), fashion_mnist (tfds, else local IDX files) or any "
                   "prepared tfds image classification dataset (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="tfds data folder / folder with the Fashion-MNIST IDX files")
    add_num_samples_arg(p, NUM_SAMPLES)
    p.add_argument("--val-fraction", type=float, default=0.1, help="training data held out for validation (default: %(default)s)")
    add_model_arg(p, "lenet", "network (default: %(default)s)", choices=MODELS[:4])
    p.add_argument("--target", type=float, default=0.1, help="weights remaining of the ticket, in (0, 1) (default: %(default)s)")
    p.add_argument("--tuner", default="random", choices=TUNER_CHOICES, help="keras-tuner algorithm (default: %(default)s)")
    p.add_argument("--max-trials", type=int, default=6, help="trials for random / bayesian (default: %(default)s)")
    p.add_argument("--max-epochs", type=int, default=9, help="hyperband: most epochs per round (default: %(default)s)")
    p.add_argument("--factor", type=int, default=3, help="hyperband: reduction factor (default: %(default)s)")
    rates = p.add_mutually_exclusive_group()
    rates.add_argument("--prune-rates", type=float, nargs="+", default=None,
                       help="per-round prune rates to try (rounds follow from --target)")
    rates.add_argument("--rounds", type=int, nargs="+", default=[2, 4],
                       help="round counts to try; each sets the rate 1 - target^(1/rounds) (default: %(default)s)")
    p.add_argument("--rewinds", nargs="+", default=["0it", "1ep"], help="rewind points to try (default: %(default)s)")
    p.add_argument("--lr-min", type=float, default=3e-4, help="lowest learning rate (log scale) (default: %(default)s)")
    p.add_argument("--lr-max", type=float, default=3e-3, help="highest learning rate (default: %(default)s)")
    p.add_argument("--epochs-per-round", type=int, default=3, help="epochs each round trains (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=60, help="(default: %(default)s)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="(default: %(default)s)")
    p.add_argument("--scope", default="layerwise", choices=list(SCOPES), help="(default: %(default)s)")
    p.add_argument("--output-rate", type=float, default=None,
                   help="per-round rate of the output layer (default: same as the others)")
    p.add_argument("--objective", default="val_accuracy",
                   help="final-round metric to optimize: val_accuracy, val_loss, ... (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initialisation (the same for every trial), the data order "
                   "and keras-tuner's choice of trials (default: %(default)s)")
    p.add_argument("--out", default="tuning", help="keras-tuner directory (default: %(default)s)")
    p.add_argument("--project", default=None, help="project name inside OUT (default: MODEL-DATASET-TARGET)")
    p.add_argument("--overwrite", action="store_true", help="start the search afresh instead of resuming")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="TensorBoard logs of every trial's rounds in DIR/trial_<id>")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.set_defaults(func=tune)
    return p


def _check(args):
    if not 0.0 < args.target < 1.0:
        raise ValueError(f"--target must be in (0, 1), got {args.target}.")
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}.")
    if args.max_trials < 1 or args.epochs_per_round < 1 or args.batch_size < 1:
        raise ValueError("--max-trials, --epochs-per-round and --batch-size must be >= 1.")
    if args.rounds is not None and min(args.rounds) < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}.")
    from keras_lottery.cli.run import check_learning_rate, check_out

    check_learning_rate("--lr-min", args.lr_min, 3e-4)
    check_learning_rate("--lr-max", args.lr_max, 3e-3)
    if args.lr_min > args.lr_max:
        raise ValueError(f"--lr-min {args.lr_min} is above --lr-max {args.lr_max}: swap them.")
    resolve_num_samples(args, NUM_SAMPLES)
    check_out(args.out)
    if not args.objective.startswith(("val_", "test_")):
        raise ValueError(f"--objective must be a validation or test metric (val_accuracy, "
                         f"val_loss, test_accuracy, ...), got {args.objective!r}.")


def load_splits(args):
    """(train, val, test) tf.data pipelines and the DataInfo of the training split."""
    from keras_lottery import data

    cut = int(round(100 * (1 - args.val_fraction)))
    common = dict(batch_size=args.batch_size, data_dir=args.data_dir, num_samples=args.num_samples)
    train, info = data.load(args.dataset, split=f"train[:{cut}%]", seed=args.seed, with_info=True, **common)
    val = data.load(args.dataset, split=f"train[{cut}%:]", shuffle=False, **common)
    test = data.load(args.dataset, split="test", shuffle=False, **common)
    return train, val, test, info


def tune(args):
    _check(args)
    from keras_lottery import models, report
    from keras_lottery.tuning import make_tuner

    started = time.perf_counter()
    train, val, test, info = load_splits(args)
    project = args.project or f"{args.model}-{args.dataset}-{args.target:g}"

    def build(hp):
        return models.build(args.model, input_shape=info.input_shape,
                            num_classes=info.num_classes or 10, seed=args.seed)

    kwargs = dict(objective=args.objective, rewinds=args.rewinds,
                  learning_rate=(args.lr_min, args.lr_max), epochs_per_round=args.epochs_per_round,
                  optimizer=args.optimizer, scope=args.scope, output_layer_rate=args.output_rate,
                  init_seed=args.seed, seed=args.seed + 1,  # keras-tuner takes a seed of 0 for "none"
                  directory=args.out, project_name=project, overwrite=args.overwrite,
                  tensorboard_dir=args.tensorboard)
    if args.prune_rates is not None:
        kwargs["prune_rates"] = args.prune_rates
    else:
        kwargs["rounds"] = args.rounds
    if args.tuner == "hyperband":
        kwargs.update(max_epochs=args.max_epochs, factor=args.factor)
    else:
        kwargs.update(max_trials=args.max_trials)
    tuner = make_tuner(args.tuner, build, args.target, **kwargs)
    logger.info("tune: %s on %s (%s), target %.3g weights remaining, %s search -> %s",
                args.model, args.dataset, info.source, args.target, args.tuner,
                os.path.join(args.out, project))
    tuner.search(train, validation_data=val, test_data=test, verbose=0 if args.quiet else 1)

    rows = tuner.results()
    best = tuner.best_ticket()
    path = os.path.join(args.out, project, "best_ticket.json")
    report.write_json(path, {"best": best, "trials": rows, "config": {
        k: v for k, v in vars(args).items() if k not in ("func", "quiet", "command")}})
    print()
    print(report.format_table(rows, columns=TRIAL_COLUMNS))
    print(f"\nbest: trial {best['trial']}: prune_rate {best['prune_rate']:.4f} x {best['rounds']} "
          f"rounds, rewind {best['rewind']}, learning_rate {best['learning_rate']:.3g} -> "
          f"{args.objective} {best['score']:.4f}")
    print(f"ticket: {os.path.join(best['trial_dir'], 'ticket.keras')}  summary: {path}  "
          f"({time.perf_counter() - started:.0f} s)")
    return 0
