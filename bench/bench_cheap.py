"""What each way of finding a sparse ticket costs, side by side in one run.

For every method of examples/cheap_tickets.py (full IMP rewinding to θ0,
learning-rate rewinding, one-shot pruning, fewer larger rounds, Early-Bird
IMP when this keras_lottery has it, and the LR-rewinding variants) it runs
the same model from the same initial weights on the same data, one method
after the other in one process, and prints per target sparsity: the total
optimizer steps every round up to the ticket ran, the wall time of those
rounds, steps per second, both as a ratio to full IMP, and the ticket's test
accuracy. Steps are exact; seconds depend on the machine's load, printed with
the table (`os.getloadavg`).

Usage:
  python bench/bench_cheap.py                        # Fashion-MNIST subset, 1 seed
  python bench/bench_cheap.py --tiny                 # seconds, synthetic data; used by the tests
  python bench/bench_cheap.py --train-limit 60000 --targets 10,15 --json out.json

The documented measurement (3 seeds, full data) is examples/cheap_tickets.py's
run; see docs/cheap-tickets.md.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))


def _examples():
    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    import cheap_tickets

    return cheap_tickets


#: --tiny: 240 random 784-feature examples, a target of 2 base rounds
TINY = {"train": 240, "test": 60, "targets": (2,), "fewer_factor": 2, "batch_size": 60}


def tiny_data(seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = TINY["train"] + TINY["test"]
    x = rng.normal(size=(n, 784)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(784, 10)), axis=1).astype("int64")
    return (x[:TINY["train"]], y[:TINY["train"]]), (x[TINY["train"]:], y[TINY["train"]:])


def side_by_side(rows, methods):
    """Per target: one dict per method with steps, seconds, steps/s and ratios to full IMP."""
    ct = _examples()
    table = []
    for s in ct.summarize(rows):
        if s["method"] not in methods:
            continue
        table.append(dict(s, steps_per_s=s["steps_mean"] / s["seconds_mean"] if s["seconds_mean"] else None))
    base = {t["target_rounds"]: t for t in table if t["method"] == "imp"}
    for t in table:
        ref = base.get(t["target_rounds"])
        t["seconds_vs_imp"] = t["seconds_mean"] / ref["seconds_mean"] if ref else None
    return table


def format_table(table):
    lines = [f"{'method':<11} {'weights':>8} {'steps':>8} {'x imp':>6} {'seconds':>8} {'x imp':>6} "
             f"{'steps/s':>8} {'test acc':>9}"]
    for t in table:
        ratio = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"{t['method']:<11} {100 * t['weights_remaining']:7.1f}% {t['steps_mean']:8.0f} "
                     f"{ratio(t['steps_vs_imp']):>6} {t['seconds_mean']:8.1f} {ratio(t['seconds_vs_imp']):>6} "
                     f"{t['steps_per_s'] or 0:8.0f} {100 * t['acc_mean']:8.2f}%")
    return "\n".join(lines)


def main(argv=None):
    ct = _examples()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="synthetic data, a few steps (tests)")
    p.add_argument("--methods", default=",".join(ct.METHODS), help="(default: %(default)s)")
    p.add_argument("--targets", default="10", help="target sparsities in base rounds (default: %(default)s)")
    p.add_argument("--fewer-factor", type=int, default=ct.FEWER_FACTOR, help="(default: %(default)s)")
    p.add_argument("--epochs-per-round", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--train-limit", type=int, default=6000,
                   help="Fashion-MNIST training examples used (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.tiny:
        train, test = tiny_data(args.seed)
        targets, fewer, batch = TINY["targets"], TINY["fewer_factor"], TINY["batch_size"]
    else:
        train, test = ct.load_data(args.train_limit)
        targets, fewer, batch = tuple(int(t) for t in args.targets.split(",")), args.fewer_factor, 60
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows, runs = ct.run_methods(methods, [args.seed], train, test, args.epochs_per_round,
                                batch_size=batch, targets=targets, fewer_factor=fewer)
    wall = time.perf_counter() - started
    table = side_by_side(rows, methods)
    skipped = sorted(set(methods) - {t["method"] for t in table})
    results = {"methods": methods, "targets": list(targets), "train_examples": len(train[0]),
               "epochs_per_round": args.epochs_per_round, "table": table, "skipped": skipped,
               "rows": rows, "runs": runs,
               "wall_s": wall, "load_before": list(load_before), "load_after": list(os.getloadavg()),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "tiny": args.tiny}
    print(f"cheap tickets, {len(train[0])} training examples, {args.epochs_per_round} epoch(s) per "
          f"round, seed {args.seed}; load {load_before[0]:.1f} -> {results['load_after'][0]:.1f}")
    print(format_table(table))
    if skipped:
        print(f"skipped (not in this keras_lottery): {', '.join(skipped)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
