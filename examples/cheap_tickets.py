"""Cheaper tickets: what each way of finding a sparse ticket costs, and what it is worth.

LeNet-300-100 on Fashion-MNIST (Adam 1.2e-3, batch 60; the papers' rates: 20%
of the hidden layers' and 10% of the output layer's surviving weights per
round), every method from the same initial weights per seed:

- `imp`: full IMP, rewinding the survivors to θ0 every round (Frankle & Carbin);
- `lr`: learning-rate rewinding (`rewind="lr"`, Renda et al. 2020): the trained
  survivors are kept, the optimizer is reset and its step set back to 0;
- `oneshot`: one pruning round straight to the final sparsity, rewound to θ0;
- `fewer`: fewer, larger rounds (five base rounds' pruning at once, rewound to θ0);
- `earlybird`: IMP whose rounds end once the mask has converged
  (`round_end="converged"`), when this version of keras_lottery has it;
- `lr_oneshot`, `lr_fewer`, `lr_earlybird`: one-shot, fewer larger rounds and Early-Bird with
  learning-rate rewinding instead of rewinding to θ0.

The ticket at a target sparsity is the round that reaches it; its accuracy is
the test accuracy at that round's end (each round trains the same
`--epochs-per-round`, so the ticket is trained to completion of a round's
budget). Its cost is every optimizer step run to get there, rounds 0..r
(finding the mask and training the ticket). Two targets share one run: the
10.8% ticket is round 10 of the run that goes on to 3.6% at round 15.

    python examples/cheap_tickets.py --epochs-per-round 1 --seeds 3 --out runs/cheap
    python examples/cheap_tickets.py --methods imp,lr --train-limit 2000   # quick

Writes `<out>/cheap_tickets.json` (one row per method, seed and target, plus
the per-round history) and `<out>/cheap_tickets.png` (accuracy vs steps).
"""

import argparse
import inspect
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASE_RATE, OUTPUT_RATE = 0.2, 0.1
#: target sparsities in base rounds: 10 rounds = 10.8% of the weights, 15 = 3.6%
TARGET_ROUNDS = (10, 15)
#: base rounds merged into one round by the `fewer` method (divides every target)
FEWER_FACTOR = 5
METHODS = ("imp", "lr", "oneshot", "fewer", "earlybird", "lr_oneshot", "lr_fewer", "lr_earlybird")

logger = logging.getLogger("cheap_tickets")


def merged_rate(rate, rounds):
    """The per-round rate that prunes as much in one round as `rounds` rounds at `rate`."""
    return 1.0 - (1.0 - rate) ** rounds


def has_round_end():
    """True when `IMP` takes `round_end` (Early-Bird rounds)."""
    import keras_lottery as kl

    return "round_end" in inspect.signature(kl.IMP).parameters


def plan(method, targets=TARGET_ROUNDS, fewer_factor=FEWER_FACTOR, converge_tol=None):
    """The IMP runs a method needs: a list of (IMP kwargs, {round index: target}).

    `converge_tol` sets the Early-Bird methods' tolerance (None: IMP's default).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose from {list(METHODS)}.")
    last = max(targets)
    rewind = "lr" if method.startswith("lr") else "0it"
    base = method[3:] if method.startswith("lr_") else method
    if base in ("imp", "lr", "earlybird"):
        kwargs = dict(rounds=last, prune_rate=BASE_RATE, output_layer_rate=OUTPUT_RATE,
                      rewind=rewind)
        if base == "earlybird":
            kwargs["round_end"] = "converged"
            if converge_tol is not None:
                kwargs["converge_tol"] = converge_tol
        return [(kwargs, {t: t for t in targets})]
    if base == "oneshot":
        return [(dict(rounds=1, prune_rate=merged_rate(BASE_RATE, t),
                      output_layer_rate=merged_rate(OUTPUT_RATE, t), rewind=rewind), {1: t})
                for t in targets]
    bad = [t for t in targets if t % fewer_factor]
    if bad:
        raise ValueError(f"fewer merges {fewer_factor} rounds; targets {bad} are not multiples.")
    return [(dict(rounds=last // fewer_factor, prune_rate=merged_rate(BASE_RATE, fewer_factor),
                  output_layer_rate=merged_rate(OUTPUT_RATE, fewer_factor), rewind=rewind),
             {t // fewer_factor: t for t in targets})]


def run_imp(imp_kwargs, seed, train, test, epochs_per_round, batch_size, lr, check_sparsity=None):
    """One IMP run from seed `seed`'s initial weights; returns its per-round history (dicts)."""
    import tensorflow as tf

    import keras_lottery as kl
    from keras_lottery import models

    tf.keras.utils.set_random_seed(seed)
    imp = kl.IMP(**imp_kwargs)
    model = imp.wrap(models.lenet_300_100(input_shape=train[0].shape[1:], num_classes=10, seed=seed))
    models.compile_classifier(model, "adam", lr)
    if getattr(imp, "convergence", None) is None:
        epochs = imp.epochs(per_round=epochs_per_round)
        callbacks = imp.callbacks(test_data=test, verbose=0, check_sparsity=check_sparsity)
        model.fit(train[0], train[1], batch_size=batch_size, epochs=epochs, callbacks=callbacks,
                  verbose=0, shuffle=True)
    else:
        # Early-Bird: fit epochs are chunks of converge_every steps on endless data, a
        # round's budget (epochs_per_round epochs of data) is an upper bound
        from keras_lottery.convergence import chunked_batches

        per_epoch = -(-len(train[0]) // batch_size)
        kwargs = imp.fit_kwargs(steps_per_round=epochs_per_round * per_epoch)
        data, _ = chunked_batches(train[0], train[1], batch_size, kwargs["steps_per_epoch"], seed=seed)
        callbacks = imp.callbacks(test_data=test, verbose=0, check_sparsity=check_sparsity)
        model.fit(data, callbacks=callbacks, verbose=0, **kwargs)
    return [r.to_dict() for r in imp.history]


def ticket_rows(method, seed, history, targets):
    """One row per target: the round that reached it, its accuracy and its cumulative cost."""
    rows = []
    for rnd, target in targets.items():
        if rnd >= len(history):
            continue
        upto = history[: rnd + 1]
        rows.append({
            "method": method, "seed": seed, "target_rounds": target, "round": rnd,
            "weights_remaining": history[rnd]["weights_remaining"],
            "test_accuracy": history[rnd]["test_accuracy"],
            "steps": int(sum(h["steps"] for h in upto)),
            "seconds": float(sum(h["seconds"] or 0.0 for h in upto)),
        })
    return rows


def run_methods(methods, seeds, train, test, epochs_per_round, batch_size=60, lr=1.2e-3,
                targets=TARGET_ROUNDS, check_sparsity=None, fewer_factor=FEWER_FACTOR,
                partial_path=None, converge_tol=None):
    """Runs every method for every seed; returns (ticket rows, per-run histories).

    With `partial_path`, the rows and runs so far are rewritten there after every
    run, so a stopped measurement keeps its finished runs (`--merge` reads it).
    """
    rows, runs = [], []
    for seed in seeds:
        for method in methods:
            if method.endswith("earlybird") and not has_round_end():
                logger.warning("earlybird skipped: this keras_lottery has no IMP(round_end=...).")
                continue
            for imp_kwargs, run_targets in plan(method, targets, fewer_factor, converge_tol):
                started = time.perf_counter()
                history = run_imp(imp_kwargs, seed, train, test, epochs_per_round, batch_size, lr,
                                  check_sparsity)
                wall = time.perf_counter() - started
                found = ticket_rows(method, seed, history, run_targets)
                rows.extend(found)
                runs.append({"method": method, "seed": seed, "imp": imp_kwargs, "wall_s": wall,
                             "history": history})
                if partial_path:
                    with open(partial_path, "w") as f:
                        json.dump({"args": {"partial": True}, "rows": rows, "runs": runs}, f)
                for row in found:
                    logger.info("seed %d %-9s %5.1f%% weights: test acc %.4f, %d steps, %.0f s",
                                seed, method, 100 * row["weights_remaining"],
                                row["test_accuracy"], row["steps"], row["seconds"])
    return rows, runs


def summarize(rows):
    """Mean, spread (max - min) and count per (method, target), with cost relative to `imp`."""
    import numpy as np

    groups = {}
    for row in rows:
        groups.setdefault((row["method"], row["target_rounds"]), []).append(row)
    out = []
    for (method, target), group in groups.items():
        acc = np.array([r["test_accuracy"] for r in group])
        steps = np.array([r["steps"] for r in group], float)
        secs = np.array([r["seconds"] for r in group])
        out.append({"method": method, "target_rounds": target, "n": len(group),
                    "weights_remaining": float(np.mean([r["weights_remaining"] for r in group])),
                    "acc_mean": float(acc.mean()), "acc_spread": float(acc.max() - acc.min()),
                    "acc_min": float(acc.min()), "acc_max": float(acc.max()),
                    "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                    "steps_mean": float(steps.mean()), "seconds_mean": float(secs.mean())})
    base = {s["target_rounds"]: s for s in out if s["method"] == "imp"}
    for s in out:
        ref = base.get(s["target_rounds"])
        s["steps_vs_imp"] = s["steps_mean"] / ref["steps_mean"] if ref else None
        s["acc_vs_imp"] = s["acc_mean"] - ref["acc_mean"] if ref else None
    order = {m: i for i, m in enumerate(METHODS)}
    out.sort(key=lambda s: (s["target_rounds"], order.get(s["method"], 99)))
    return out


def format_summary(summary):
    lines = [f"{'method':<10} {'weights':>8} {'test acc (mean ± spread)':>25} {'steps':>9} "
             f"{'vs imp':>7} {'Δacc vs imp':>12} {'time s':>8}"]
    for s in summary:
        vs = "" if s["steps_vs_imp"] is None else f"{s['steps_vs_imp']:.2f}"
        dacc = "" if s["acc_vs_imp"] is None else f"{100 * s['acc_vs_imp']:+.2f}"
        lines.append(f"{s['method']:<10} {100 * s['weights_remaining']:7.1f}% "
                     f"{100 * s['acc_mean']:17.2f} ± {100 * s['acc_spread'] / 2:4.2f} "
                     f"{s['steps_mean']:9.0f} {vs:>7} {dacc:>12} {s['seconds_mean']:8.1f}")
    return "\n".join(lines)


def markdown_table(summary, dense=None):
    """The summary as a Markdown table (docs/cheap-tickets.md): mean ± std over seeds, range."""
    lines = ["| method | % weights | ticket test acc % (mean ± std) | min–max | total steps | "
             "steps vs IMP | Δ acc vs IMP (points) | seconds (mean) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    if dense is not None:
        lines.append(f"| dense (round 0) | 100.0 | {100 * dense['acc_mean']:.2f} ± "
                     f"{100 * dense['acc_std']:.2f} | {100 * dense['acc_min']:.2f}–"
                     f"{100 * dense['acc_max']:.2f} | {dense['steps']:.0f} | | | |")
    for s in summary:
        vs = "" if s["steps_vs_imp"] is None else f"{s['steps_vs_imp']:.2f}"
        dacc = "" if s["acc_vs_imp"] is None else f"{100 * s['acc_vs_imp']:+.2f}"
        lines.append(f"| {s['method']} | {100 * s['weights_remaining']:.1f} | "
                     f"{100 * s['acc_mean']:.2f} ± {100 * s['acc_std']:.2f} | "
                     f"{100 * s['acc_min']:.2f}–{100 * s['acc_max']:.2f} | {s['steps_mean']:.0f} | "
                     f"{vs} | {dacc} | {s['seconds_mean']:.0f} |")
    return "\n".join(lines)


def dense_baseline(runs):
    """Round 0 (the dense network, trained one round) over the `imp` runs' seeds."""
    import numpy as np

    acc = np.array([r["history"][0]["test_accuracy"] for r in runs if r["method"] == "imp"])
    if not len(acc):
        return None
    steps = [r["history"][0]["steps"] for r in runs if r["method"] == "imp"][0]
    return {"acc_mean": float(acc.mean()), "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "acc_min": float(acc.min()), "acc_max": float(acc.max()), "steps": steps}


def plot(rows, path, title=None):
    """Test accuracy of each ticket vs the optimizer steps spent on it (seed means, seed points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(rows)
    markers = {"imp": "o", "lr": "s", "oneshot": "^", "fewer": "D", "earlybird": "v",
               "lr_oneshot": "<", "lr_fewer": ">", "lr_earlybird": "P"}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, method in enumerate(m for m in METHODS if any(r["method"] == m for r in rows)):
        color = f"C{i}"
        pts = [r for r in rows if r["method"] == method]
        ax.scatter([r["steps"] for r in pts], [100 * r["test_accuracy"] for r in pts],
                   color=color, alpha=0.35, s=14, marker=markers.get(method, "o"))
        means = [s for s in summary if s["method"] == method]
        for s in means:
            ax.errorbar(s["steps_mean"], 100 * s["acc_mean"], yerr=100 * s["acc_spread"] / 2,
                        color=color, marker=markers.get(method, "o"), ms=7, capsize=3,
                        label=method if s is means[0] else None)
            ax.annotate(f"{100 * s['weights_remaining']:.1f}%", (s["steps_mean"], 100 * s["acc_mean"]),
                        textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
    ref = next((s for s in summary if s["method"] == "imp" and s["target_rounds"] == 10), None)
    if ref is not None:  # the bar: within 0.3 points of IMP at 10.8%, <= 50% of its steps
        ax.axhline(100 * ref["acc_mean"] - 0.3, color="gray", ls=":", lw=1,
                   label="bar: IMP's 10.8% accuracy - 0.3, half its steps")
        ax.axvline(0.5 * ref["steps_mean"], color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("total optimizer steps to find and train the ticket (log)")
    ax.set_ylabel("test accuracy of the ticket (%)")
    ax.set_title(title or "Cheaper tickets: accuracy vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_data(train_limit=None, data_dir=None):
    from keras_lottery import data

    (x, y), (xt, yt) = data.load_fashion_mnist(path=data_dir)
    if train_limit:
        x, y = x[:train_limit], y[:train_limit]
    return (x, y), (xt, yt)


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated methods (default: %(default)s)")
    p.add_argument("--epochs-per-round", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default: %(default)s)")
    p.add_argument("--first-seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--targets", default=",".join(map(str, TARGET_ROUNDS)),
                   help="target sparsities in base rounds of 20%%/10%% (default: %(default)s = "
                   "10.8%% and 3.6%% of the weights)")
    p.add_argument("--fewer-factor", type=int, default=FEWER_FACTOR,
                   help="base rounds merged into one by fewer / lr_fewer (default: %(default)s)")
    p.add_argument("--converge-tol", type=float, default=None,
                   help="Early-Bird methods' mask-distance tolerance (default: IMP's converge_tol)")
    p.add_argument("--batch-size", type=int, default=60, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=1.2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="train on the first N training examples only (the test set stays whole)")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test examples")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--out", default=os.path.join("runs", "cheap-tickets"), help="(default: %(default)s)")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="train nothing: merge earlier cheap_tickets.json files (e.g. a method run "
                   "later) into <out>, with one table and figure")
    return p


def merge(paths, out, title=None):
    """Joins the rows and runs of several cheap_tickets.json files into `out`."""
    rows, runs, parts = [], [], []
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        rows.extend(part["rows"])
        runs.extend(part["runs"])
        parts.append(part["args"])
    summary = summarize(rows)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cheap_tickets.json"), "w") as f:
        json.dump({"args": {"merged": parts}, "rows": rows, "summary": summary, "runs": runs}, f,
                  indent=1)
    plot(rows, os.path.join(out, "cheap_tickets.png"), title=title)
    print(format_summary(summary))
    print()
    print(markdown_table(summary, dense_baseline(runs)))
    return {"rows": rows, "summary": summary, "runs": runs}


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout)
    if args.merge:
        return merge(args.merge, args.out, title=f"LeNet-300-100 on Fashion-MNIST, "
                     f"{args.epochs_per_round} epoch(s)/round")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    targets = tuple(int(t) for t in args.targets.split(","))
    train, test = load_data(args.train_limit, args.data_dir)
    if args.test_limit:
        test = (test[0][: args.test_limit], test[1][: args.test_limit])
    started = time.time()
    os.makedirs(args.out, exist_ok=True)
    rows, runs = run_methods(methods, range(args.first_seed, args.first_seed + args.seeds), train,
                             test, args.epochs_per_round, args.batch_size, args.lr, targets,
                             fewer_factor=args.fewer_factor,
                             partial_path=os.path.join(args.out, "partial.json"),
                             converge_tol=args.converge_tol)
    summary = summarize(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cheap_tickets.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows, "summary": summary, "runs": runs}, f, indent=1)
    plot(rows, os.path.join(args.out, "cheap_tickets.png"),
         title=f"LeNet-300-100 on Fashion-MNIST, {args.epochs_per_round} epoch(s)/round, "
               f"{args.seeds} seed(s)")
    print(format_summary(summary))
    print(f"\nresults: {args.out}; wall time {time.time() - started:.0f} s")
    return {"rows": rows, "summary": summary, "runs": runs}


if __name__ == "__main__":
    main()
