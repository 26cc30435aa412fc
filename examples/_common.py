"""Shared command line and data handling of the Fashion-MNIST examples."""

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parser(description, out, epochs_per_round, rounds):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs-per-round", type=int, default=epochs_per_round,
                   help="epochs trained in every round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=rounds,
                   help="pruning rounds after the dense round 0 (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds 0..N-1 (default: %(default)s)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed (default: %(default)s)")
    p.add_argument("--controls", default="reinit,random",
                   help="comma-separated controls, or 'none' (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=100,
                   help="steps between validation evaluations, the early-stopping "
                   "iteration's resolution (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=60, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=1.2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="use only the first N training and test examples (quick trials)")
    p.add_argument("--val-size", type=int, default=5000,
                   help="training examples held out for validation (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--out", default=out, help="results folder (default: %(default)s)")
    return p


def load_data(args):
    from keras_lottery import data

    (x, y), (xt, yt) = data.load_fashion_mnist(path=args.data_dir)
    if args.train_limit:
        x, y = x[: args.train_limit], y[: args.train_limit]
        xt, yt = xt[: args.train_limit], yt[: args.train_limit]
    n_val = min(args.val_size, len(x) // 5)
    train, val = data.split_validation(x, y, n_val / len(x))
    return train, val, (xt, yt)


def main(args, build_model, title, layer_rates=None, output_layer_rate=None, prune_rate=0.2):
    """Runs the experiment described by `args` and prints the summary table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    from keras_lottery import experiment, models, report

    started = time.time()
    train, val, test = load_data(args)
    controls = () if args.controls in (None, "", "none") else args.controls

    def compile_model(model):
        models.compile_classifier(model, "adam", args.lr)

    config = {k: v for k, v in vars(args).items()}
    logging.getLogger("keras_lottery").info(
        "%s: %d train / %d val / %d test examples, %d rounds x %d epochs, seeds %s, controls %s -> %s",
        title, len(train[0]), len(val[0]), len(test[0]), args.rounds + 1, args.epochs_per_round,
        list(range(args.first_seed, args.first_seed + args.seeds)), controls or "none", args.out)
    settings = experiment.ExperimentSettings(
        rounds=args.rounds, prune_rate=prune_rate, epochs_per_round=args.epochs_per_round,
        batch_size=args.batch_size, seeds=range(args.first_seed, args.first_seed + args.seeds),
        controls=controls, layer_rates=layer_rates, output_layer_rate=output_layer_rate,
        eval_every=args.eval_every, run_config=config, title=title)
    summary = experiment.run_experiment(build_model, compile_model, train, val, test, args.out,
                                        settings)
    print(report.format_summary(summary))
    print(f"\nresults: {args.out} (summary.json, summary.csv, rounds.csv, tickets.png); "
          f"wall time {time.time() - started:.0f} s")
    return summary
