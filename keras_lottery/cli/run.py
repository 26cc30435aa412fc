"""`keras-lottery run`: an IMP search on a built-in model and local dataset."""

import logging
import os
import time

logger = logging.getLogger("keras_lottery")

DEFAULTS = dict(
    dataset="mnist1d",
    model="lenet",
    rounds=8,
    prune_rate=0.2,
    output_rate=0.1,
    rewind="0it",
    scope="layerwise",
    epochs_per_round=10,
    batch_size=60,
    optimizer="adam",
    lr=1.2e-3,
    seed=0,
    val_fraction=0.1,
    out=os.path.join("runs", "lenet-mnist1d"),
)


def register(subparsers):
    p = subparsers.add_parser(
        "run",
        help="run an IMP lottery-ticket search and print the per-round table",
        description="Iterative magnitude pruning with rewinding on a built-in model. "
        "Every round runs inside one model.fit; the report (imp_report.json, "
        "imp_history.csv, tickets.png, the final wrapped model) is rewritten in "
        "--out after every round, so an interrupted run keeps its finished rounds.",
    )
    p.add_argument("--dataset", default=DEFAULTS["dataset"], choices=["mnist1d", "fashion_mnist"],
                   help="local dataset (default: %(default)s, generated locally)")
    p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST IDX .gz files")
    p.add_argument("--model", default=DEFAULTS["model"],
                   choices=["lenet", "conv2", "conv4", "conv6", "resnet20", "vgg16"],
                   help="network (default: %(default)s = LeNet-300-100)")
    p.add_argument("--rounds", type=int, default=DEFAULTS["rounds"], help="pruning rounds after the dense round 0 (default: %(default)s)")
    p.add_argument("--prune-rate", type=float, default=DEFAULTS["prune_rate"], help="fraction of surviving weights pruned per round (default: %(default)s)")
    p.add_argument("--output-rate", type=float, default=DEFAULTS["output_rate"],
                   help="per-round rate of the output layer (default: %(default)s, half the rate as in the paper; negative: same as --prune-rate)")
    p.add_argument("--rewind", default=DEFAULTS["rewind"], help="rewind point: 0it (θ0), 500it, 2ep (default: %(default)s)")
    p.add_argument("--scope", default=None, choices=["layerwise", "global"],
                   help="magnitude ranking scope (default: global for the deep nets resnet20/vgg16, "
                   f"as in the papers; {DEFAULTS['scope']} otherwise)")
    p.add_argument("--epochs-per-round", type=int, default=DEFAULTS["epochs_per_round"], help="epochs trained in each round (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="(default: %(default)s)")
    p.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=["adam", "sgd"], help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=5000, help="MNIST-1D examples, train+test (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"], help="training data held out for validation (default: %(default)s)")
    p.add_argument("--out", default=DEFAULTS["out"], help="report folder (default: %(default)s)")
    p.add_argument("--controls", default=None, metavar="reinit,random",
                   help="also train these controls of the ticket (same mask, random re-init; "
                   "random mask, same per-layer sparsity) with the same data order and steps; "
                   "results go to OUT/seed_<s>/<series>/ plus OUT/summary.* and tickets.png")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="repeat for N seeds (--seed, --seed+1, ...) and report mean and spread")
    p.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                   help="evaluate the validation data every STEPS steps inside a round for the "
                   "early-stopping iteration (default: at epoch ends only)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard logs to DIR: a point per round (weights remaining, "
                   "accuracies, early-stop iteration), mask histograms, per-epoch curves")
    p.add_argument("--resume", action="store_true",
                   help="checkpoint every finished round to OUT/resume; started again with the "
                   "same command, a killed run continues from its last finished round")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.set_defaults(func=run)
    return p


def load_data(args):
    from keras_lottery import data

    (x, y), test = data.load_local(args.dataset, args.num_samples, args.data_dir)
    train, val = data.split_validation(x, y, args.val_fraction)
    return train, val, test


def run_seeds(args):
    """--seeds / --controls: IMP and its controls for every seed, then the summary."""
    from keras_lottery import controls, experiment, models, report

    started = time.perf_counter()
    kinds = controls.parse_controls(args.controls)
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}.")
    ignored = [flag for flag, on in (("--resume", getattr(args, "resume", False)),
                                     ("--tensorboard", getattr(args, "tensorboard", None))) if on]
    if ignored:
        logger.warning("%s apply to single runs; with --seeds/--controls a rerun of the same "
                       "command skips the seeds that finished instead.", " and ".join(ignored))
    seeds = range(args.seed, args.seed + (args.seeds or 1))
    train, val, test = load_data(args)
    num_classes = int(train[1].max()) + 1

    def build(seed):
        return models.build(args.model, input_shape=train[0].shape[1:], num_classes=num_classes, seed=seed)

    def compile_model(model):
        models.compile_classifier(model, args.optimizer, args.lr)

    config = {k: v for k, v in vars(args).items() if k not in ("func", "quiet", "command")}
    logger.info("IMP: %s on %s, %d rounds x %d epochs, seeds %s, controls %s -> %s",
                args.model, args.dataset, args.rounds + 1, args.epochs_per_round, list(seeds),
                ",".join(kinds) or "none", args.out)
    summary = experiment.run_experiment(
        build, compile_model, train, val, test, args.out, rounds=args.rounds,
        prune_rate=args.prune_rate, epochs_per_round=args.epochs_per_round,
        batch_size=args.batch_size, seeds=seeds, controls=kinds, rewind=args.rewind,
        scope=args.scope,
        output_layer_rate=None if args.output_rate is None or args.output_rate < 0 else args.output_rate,
        eval_every=args.eval_every, verbose=0 if args.quiet else 1, run_config=config,
        title=f"{args.model} on {args.dataset}: IMP, rewind {args.rewind}", save_model=True)
    print()
    print(report.format_summary(summary))
    print(f"\nreport: {os.path.join(args.out, 'summary.json')}  plot: "
          f"{os.path.join(args.out, 'tickets.png')}  ({time.perf_counter() - started:.0f} s)")
    return 0


def run(args):
    if args.scope is None:  # deep networks are pruned globally (Frankle et al.)
        from keras_lottery.models import DEEP_MODELS

        args.scope = "global" if args.model in DEEP_MODELS else DEFAULTS["scope"]
    if args.controls is not None or args.seeds is not None:
        return run_seeds(args)
    import keras_lottery as kl
    from keras_lottery._keras import keras

    started = time.perf_counter()
    imp = kl.IMP(rounds=args.rounds, prune_rate=args.prune_rate, rewind=args.rewind, scope=args.scope,
                 output_layer_rate=None if args.output_rate is None or args.output_rate < 0 else args.output_rate)
    epochs = imp.epochs(per_round=args.epochs_per_round)
    (x, y), val, test = load_data(args)
    keras.utils.set_random_seed(args.seed)
    model = kl.models.build(args.model, input_shape=x.shape[1:], num_classes=int(y.max()) + 1, seed=args.seed)
    model = imp.wrap(model)
    kl.models.compile_classifier(model, args.optimizer, args.lr)
    config = {k: v for k, v in vars(args).items() if k not in ("func", "quiet", "command")}
    resume_dir = os.path.join(args.out, "resume") if getattr(args, "resume", False) else None
    logger.info("IMP: %s on %s, %d rounds x %d epochs, %d training examples -> %s",
                args.model, args.dataset, args.rounds + 1, args.epochs_per_round, len(x), args.out)
    model.fit(x, y, batch_size=args.batch_size, epochs=epochs, validation_data=val,
              # progress first, so an epoch's line comes before the round's table row
              callbacks=[kl.ProgressLogger(epochs_per_round=args.epochs_per_round, rounds=args.rounds)]
              + imp.callbacks(test_data=test, report_dir=args.out,
                              verbose=0 if args.quiet else 1, run_config=config,
                              eval_every=args.eval_every, validation_data=val,
                              tensorboard_dir=args.tensorboard,
                              resume_dir=resume_dir),
              initial_epoch=imp.initial_epoch() if resume_dir else 0,
              verbose=0, shuffle=True)
    model.save(os.path.join(args.out, "wrapped_model.keras"))
    kl.save_ticket(os.path.join(args.out, "ticket"), model, imp, config=config)  # ticket.npz + ticket.json
    plot = imp.plot(os.path.join(args.out, "tickets.png"),
                    title=f"{args.model} on {args.dataset}: IMP, rewind {args.rewind}")
    print()
    print(imp.table())
    print(f"\nreport: {os.path.join(args.out, 'imp_report.json')}  plot: {plot}  "
          f"({time.perf_counter() - started:.0f} s)")
    return 0
