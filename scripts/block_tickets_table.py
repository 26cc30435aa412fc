"""Table and figure of docs/block-tickets.md from `keras-lottery run --seeds N` folders.

Usage:
    python scripts/block_tickets_table.py ROOT [--figure docs/figures/block_tickets.png]
        [--rounds 10,15] [--variants 'name=label;name=label']

ROOT holds one `keras-lottery run --seeds N --out ROOT/<name>` folder per
variant (each with its summary.json). Prints, per variant and series, the
test accuracy (mean ± sample std over seeds, and min-max) at the chosen
rounds, the dense network (round 0 of the first variant), and the gaps.
"""

import argparse
import json
import os

DEFAULT_VARIANTS = (
    "unstructured=unstructured ticket",
    "b4x1-l1=4x1 block ticket (L1)",
    "b4x1-l2=4x1 block ticket (L2)",
    "b4x1-l1-hidden=4x1 block ticket (L1) with the output layer unstructured",
    "b4x1-l1-lrr=4x1 block ticket (L1) with learning-rate rewinding",
    "b4x1-l2-lrr=4x1 block ticket (L2) with learning-rate rewinding",
)


def load(root, name):
    path = os.path.join(root, name, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["summary"]


def cell(stats):
    return (f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f} "
            f"({100 * stats['min']:.1f}-{100 * stats['max']:.1f})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--figure", default=None)
    p.add_argument("--rounds", default="10,15")
    p.add_argument("--variants", default=";".join(DEFAULT_VARIANTS),
                   help="NAME=LABEL;NAME=LABEL;... (folders under ROOT and their labels)")
    args = p.parse_args(argv)
    rounds = [int(r) for r in args.rounds.split(",")]
    variants = [v.split("=", 1) for v in args.variants.split(";")]
    curves = []
    dense = None
    print("| variant | series | seeds | " + " | ".join(
        f"round {r}: % weights, test acc % (mean ± std (min-max))" for r in rounds) + " |")
    print("|---|---|---|" + "---|" * len(rounds))
    for name, label in variants:
        summary = load(args.root, name)
        if summary is None:
            print(f"| {label} | (not run) | | " + " | " * len(rounds))
            continue
        for series, rows in summary.items():
            by_round = {row["round"]: row for row in rows}
            if dense is None and 0 in by_round:
                dense = by_round[0]
            cells = []
            for r in rounds:
                row = by_round.get(r)
                cells.append("-" if row is None else
                             f"{100 * row['weights_remaining']['mean']:.1f}%: {cell(row['test_accuracy'])}")
            seeds = max(row["n_seeds"] for row in rows)
            text = label if series == "ticket" else f"{label}: {series} control"
            print(f"| {text} | {series} | {seeds} | " + " | ".join(cells) + " |")
            curves.append((text, [(100 * by_round[r]["weights_remaining"]["mean"],
                                   100 * by_round[r]["test_accuracy"]["mean"],
                                   100 * by_round[r]["test_accuracy"]["std"])
                                  for r in sorted(by_round) if r > 0]))
    if dense is not None:
        print(f"| dense network (round 0) | - | {dense['n_seeds']} | "
              + " | ".join(f"100%: {cell(dense['test_accuracy'])}" for _ in rounds) + " |")
    # per round: one column per series, mean ± std over seeds
    columns = []
    for name, label in variants:
        summary = load(args.root, name)
        for series, rows in (summary or {}).items():
            columns.append((label if series == "ticket" else f"{label}: {series}",
                            {row["round"]: row for row in rows}))
    if columns:
        first = columns[0][1]
        print()
        print("| round | % weights | " + " | ".join(c for c, _ in columns) + " |")
        print("|---:|---:|" + "---:|" * len(columns))
        for r in sorted(first):
            cells = ["-" if r not in rows else
                     f"{100 * rows[r]['test_accuracy']['mean']:.2f} ± {100 * rows[r]['test_accuracy']['std']:.2f}"
                     for _, rows in columns]
            print(f"| {r} | {100 * first[r]['weights_remaining']['mean']:.1f} | " + " | ".join(cells) + " |")
    if args.figure and curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5))
        for text, points in curves:
            xs, ys, es = zip(*points)
            ax.errorbar(xs, ys, yerr=es, marker="o", markersize=3, capsize=2, label=text)
        if dense is not None:
            ax.axhline(100 * dense["test_accuracy"]["mean"], color="k", linestyle=":",
                       label="dense network")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("% of prunable weights remaining (log scale)")
        ax.set_ylabel("test accuracy % (mean ± std over seeds)")
        ax.set_title("LeNet-300-100 on Fashion-MNIST: block vs unstructured tickets")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=120)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
