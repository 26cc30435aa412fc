"""`keras-lottery reproduce NAME`: one of the papers' experiments, with its protocol."""

import argparse
import logging
import os
import time

logger = logging.getLogger("keras_lottery")


def register(subparsers):
    # keras_lottery.reproduce imports no TensorFlow: the names and notes are read at once
    from keras_lottery import reproduce

    p = subparsers.add_parser(
        "reproduce",
        help="one of the papers' experiments (lenet, conv2/4/6, resnet20, vgg16) with its protocol",
        description="Runs one of the papers' experiments with the paper's protocol (network, "
        "optimizer, learning rate and schedule, batch size, training length, pruning rates and "
        "scope, series and controls, seeds) and compares the result with the paper's numbers "
        "(labelled with the dataset the paper used). Writes OUT/summary.json, comparison.csv, "
        "report.md and figure.png, each series' reports under OUT/runs/, and prints the per-round "
        "table and the comparison. Started again with the same command it continues where it "
        "stopped; --fresh starts over. Budgets: 'paper' (default) is the paper's protocol "
        "unchanged (long runs, meant for a GPU); 'small' is a CPU-sized variant that changes, per "
        "experiment:\n\n" + reproduce.describe().split("\n\nData:")[0],
        formatter_class=_Formatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME",
                   help=f"the experiment: {', '.join(reproduce.PROTOCOLS)} (see --list)")
    p.add_argument("--list", dest="list_protocols", action="store_true",
                   help="list the experiments, what each runs and what --budget small changes")
    p.add_argument("--budget", default="paper", metavar="|".join(reproduce.BUDGETS),
                   help="paper (default): the paper's protocol; small: the CPU-sized variant "
                   "described above")
    p.add_argument("--dataset", default="fashion_mnist", metavar="|".join(reproduce.DATASETS),
                   help="fashion_mnist (default; the local IDX files) or cifar10 (through "
                   "tfds.load: a prepared copy in --data-dir or tfds' default folder)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the Fashion-MNIST IDX .gz files, or tfds' data folder for cifar10")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="seeds 0..N-1 instead of the budget's")
    p.add_argument("--out", default=None, help="results folder (default: runs/reproduce-NAME-BUDGET)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: delete this --out's previous results first")
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "round", "epoch", "none"],
                   help="as for keras-lottery run (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="print only the final tables")
    p.set_defaults(func=run)
    return p


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's per-experiment lines as written."""


def run(args):
    from keras_lottery import reproduce

    if args.list_protocols:
        print(reproduce.describe())
        return 0
    if not args.name:
        raise ValueError("reproduce needs an experiment NAME: one of "
                         f"{', '.join(reproduce.PROTOCOLS)} (keras-lottery reproduce --list).")
    plan = reproduce.resolve(args.name, budget=args.budget, dataset=args.dataset, seeds=args.seeds)
    out = args.out or os.path.join("runs", f"reproduce-{plan.name}-{plan.budget}")
    from keras_lottery.cli.run import check_out

    check_out(out)
    started = time.perf_counter()
    result = reproduce.run(plan, out, data_dir=args.data_dir, fresh=args.fresh,
                           progress="none" if args.quiet else args.progress,
                           verbose=not args.quiet)
    print()
    print(reproduce.format_rounds(plan, result["series"]))
    print()
    print(reproduce.format_comparison_rows(result["comparison"]))
    print(f"\nreport: {os.path.join(out, 'report.md')}  summary: {os.path.join(out, 'summary.json')}  "
          f"figure: {os.path.join(out, 'figure.png')}  ({time.perf_counter() - started:.0f} s)")
    return 0
