"""`keras-lottery stability`: instability analysis and the earliest stable rewind point."""

import logging
import os
import time

from keras_lottery.cli._args import (
    add_local_data_args,
    add_model_arg,
    add_num_samples_arg,
    resolve_num_samples,
)

logger = logging.getLogger("keras_lottery")

DEFAULTS = dict(
    dataset="mnist1d",
    model="lenet",
    candidates="0it,100it,500it,1ep,2ep",
    epochs=4,
    batch_size=60,
    optimizer="sgd",
    lr=0.1,
    warmup=0,
    threshold=0.02,
    points=30,
    bn_examples=2048,
    num_samples=5000,
    seed=0,
    out=os.path.join("runs", "stability"),
)


def register(subparsers):
    p = subparsers.add_parser(
        "stability",
        help="instability analysis per rewind point k; pick the earliest stable k",
        description="Trains the network once from θ0 (keeping θk for every candidate k), "
        "then for each k trains two copies of θk (optionally masked: a subnetwork) with "
        "different data orders to the end of training and evaluates test error at --points "
        "points on the straight line between them. Instability = highest error on the path "
        "minus the mean of the endpoints' errors. Prints a table, picks the earliest k below "
        "--threshold, and writes stability.json, instability.png and paths.png to --out. "
        "Batch-norm statistics are recomputed on training batches at every point.",
    )
    add_local_data_args(p, DEFAULTS["dataset"], "local dataset (default: %(default)s)")
    add_model_arg(p, DEFAULTS["model"], "network (default: %(default)s)")
    p.add_argument("--candidates", default=DEFAULTS["candidates"],
                   help="comma-separated rewind points k (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                   help="training length; copies from k train to its end (default: %(default)s)")
    p.add_argument("--weights-remaining", type=float, default=None, metavar="FRACTION",
                   help="analyse a subnetwork: one-shot global magnitude mask of the trained "
                   "dense weights keeping FRACTION of them (default: the dense network)")
    p.add_argument("--threshold", type=float, default=DEFAULTS["threshold"],
                   help="largest error barrier called stable, as a fraction (default: %(default)s "
                   "= 2 percentage points)")
    p.add_argument("--points", type=int, default=DEFAULTS["points"],
                   help="points on the interpolation path (default: %(default)s)")
    p.add_argument("--seeds", default="1,2", help="the two data-order seeds (default: %(default)s)")
    p.add_argument("--bn-examples", type=int, default=DEFAULTS["bn_examples"],
                   help="training examples for recomputing BN statistics per point; 0 keeps the "
                   "interpolated statistics (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="(default: %(default)s)")
    p.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=["adam", "sgd"],
                   help="(default: %(default)s, with momentum 0.9)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=DEFAULTS["warmup"],
                   help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--train-size", type=int, default=None, help="use only this many training examples")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on only this many test examples")
    add_num_samples_arg(p, DEFAULTS["num_samples"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="initialization seed (default: %(default)s)")
    p.add_argument("--out", default=DEFAULTS["out"], help="report folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.set_defaults(func=run)
    return p


def _load(args):
    from keras_lottery import data

    train, test = data.load_local(args.dataset, args.num_samples, args.data_dir)
    if args.train_size:
        train = (train[0][: args.train_size], train[1][: args.train_size])
    if args.test_size:
        test = (test[0][: args.test_size], test[1][: args.test_size])
    return train, test


def run(args):
    from keras_lottery import models, report, stability
    from keras_lottery._keras import keras
    from keras_lottery.lr_schedule import WarmupStepDecay

    started = time.perf_counter()
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"--seeds must be two different integers such as 1,2; got {args.seeds!r}.")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}.")
    from keras_lottery.cli.run import check_learning_rate, check_out

    check_learning_rate("--lr", args.lr, DEFAULTS["lr"])
    resolve_num_samples(args, DEFAULTS["num_samples"])
    check_out(args.out)
    train, test = _load(args)
    keras.utils.set_random_seed(args.seed)
    model = models.build(args.model, input_shape=train[0].shape[1:],
                         num_classes=int(train[1].max()) + 1, seed=args.seed)

    def compile_fn(m):
        lr = WarmupStepDecay(args.lr, warmup_steps=args.warmup)
        models.compile_classifier(m, args.optimizer, lr)

    logger.info("stability: %s on %s (%d training examples), %d epochs, candidates %s -> %s",
                args.model, args.dataset, len(train[0]), args.epochs, ",".join(candidates), args.out)
    result = stability.search_rewind_point(
        model, train, test, candidates, epochs=args.epochs, batch_size=args.batch_size,
        compile_fn=compile_fn, weights_remaining=args.weights_remaining, threshold=args.threshold,
        seeds=seeds, num_points=args.points, bn_examples=args.bn_examples,
        progress=None if args.quiet else logger.info)
    os.makedirs(args.out, exist_ok=True)
    payload = dict(result.to_dict(), config={k: v for k, v in vars(args).items()
                                             if k not in ("func", "quiet", "command")})
    report.write_json(os.path.join(args.out, "stability.json"), payload)
    stability.plot_instability(result, os.path.join(args.out, "instability.png"),
                               title=f"{args.model} on {args.dataset}, "
                                     f"{100 * result.weights_remaining:.1f}% weights: "
                                     f"earliest stable k = {result.chosen}")
    stability.plot_paths(result.rows, os.path.join(args.out, "paths.png"),
                         title=f"{args.model} on {args.dataset}: error between two copies")
    print()
    print(result.table())
    print(f"\ndense network from θ0: test accuracy {100 * result.dense_accuracy:.2f}%; "
          f"earliest stable rewind point (instability < {100 * args.threshold:g} points): "
          f"{result.chosen or 'none of the candidates'}")
    print(f"report: {os.path.join(args.out, 'stability.json')}  "
          f"({time.perf_counter() - started:.0f} s)")
    return 0
