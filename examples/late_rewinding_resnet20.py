"""Late rewinding on Fashion-MNIST with ResNet-20: IMP with k = 0 vs k > 0.

Reproduces, at CPU scale, the experiment of Frankle et al. ("Stabilizing the
Lottery Ticket Hypothesis", "Linear Mode Connectivity and the LTH"):

1. IMP with global magnitude pruning on ResNet-20, rewinding survivors to
   θ0 (k = 0, the original LTH) and to θk (late rewinding), at the same
   sparsities, same seed, same data.
2. Instability analysis of the sparsest late-rewinding ticket's mask at
   several rewind points k: two copies of θk ⊙ m trained with different data
   orders, error along the straight line between them, the error barrier per
   k, and the earliest stable k.

Writes to --out: imp_k0/ and imp_k<K>/ (per-round reports), comparison.csv,
stability.json, tickets.png, paths.png, instability.png, summary.json.

    python examples/late_rewinding_resnet20.py            # full (~25 min on 2 shared CPU cores)
    python examples/late_rewinding_resnet20.py --short    # seconds, a smoke test
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FULL = dict(train_size=2500, test_size=1000, width=16, rounds=3, prune_rate=0.5,
            epochs_per_round=3, batch_size=64, lr=0.1, warmup=0, rewind="1ep",
            candidates="0it,8it,1ep", points=11, bn_examples=1024)
SHORT = dict(train_size=256, test_size=128, width=4, rounds=1, prune_rate=0.5,
             epochs_per_round=2, batch_size=64, lr=0.05, warmup=2, rewind="2it",
             candidates="0it,2it", points=3, bn_examples=64)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="tiny version that runs in seconds")
    p.add_argument("--out", default=os.path.join("runs", "late_rewinding_resnet20"))
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: auto)")
    p.add_argument("--seed", type=int, default=0)
    for key, value in FULL.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                       help=f"(full default: {value}; short: {SHORT[key]})")
    p.add_argument("--skip-stability", action="store_true", help="only the two IMP runs")
    args = p.parse_args(argv)
    for key, value in (SHORT if args.short else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def load_data(args):
    from keras_lottery import data

    (x, y), (xt, yt) = data.load_fashion_mnist(path=args.data_dir)
    rng = np.random.default_rng(args.seed)
    train = rng.permutation(len(x))[: args.train_size]
    test = rng.permutation(len(xt))[: args.test_size]
    return (x[train], y[train]), (xt[test], yt[test])


def make_compile(args, steps_per_round):
    """SGD with momentum; warm-up, then x0.1 at 75% of a round (as the papers' step decay).

    The short version runs eagerly: for a handful of steps, tracing the train
    function of ResNet-20 costs far more than the steps themselves.
    """
    from keras_lottery._keras import keras
    from keras_lottery.lr_schedule import WarmupStepDecay

    def compile_fn(model):
        lr = WarmupStepDecay(args.lr, warmup_steps=args.warmup,
                             boundaries=[int(0.75 * steps_per_round)], gamma=0.1)
        model.compile(keras.optimizers.SGD(lr, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"],
                      run_eagerly=args.short)  # tiny runs: tracing would dominate
    return compile_fn


def run_imp(args, rewind, train, test, compile_fn, out):
    import keras_lottery as kl
    from keras_lottery._keras import keras

    keras.utils.set_random_seed(args.seed)
    model = kl.models.resnet20(input_shape=train[0].shape[1:], seed=args.seed, width=args.width)
    imp = kl.IMP(rounds=args.rounds, prune_rate=args.prune_rate, rewind=rewind, scope="global")
    wrapped = imp.wrap(model)
    compile_fn(wrapped)
    started = time.perf_counter()
    wrapped.fit(*train, batch_size=args.batch_size, epochs=imp.epochs(per_round=args.epochs_per_round),
                callbacks=imp.callbacks(test_data=test, report_dir=out, verbose=1,
                                        run_config={"rewind": rewind, "example": "late_rewinding_resnet20"}),
                verbose=0, shuffle=True)
    print(f"IMP rewind {rewind}: {time.perf_counter() - started:.0f} s")
    return imp, wrapped, model


def plot_comparison(rows, late, path, title):
    """Test accuracy vs weights remaining for k = 0 and the late rewind point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [100 * r["weights_remaining"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label in (("test_accuracy_k0", "rewind to θ0 (k = 0)"),
                       (f"test_accuracy_k{late}", f"rewind to θk (k = {late})")):
        ax.plot(x, [100 * r[key] for r in rows], "o-", label=label)
    ax.axhline(100 * rows[0]["test_accuracy_k0"], color="gray", ls="--", label="dense (round 0)")
    ax.set_xscale("log")
    ax.set_xlim(110, min(x) * 0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:.3g}" for v in x])
    ax.set_xlabel("% of weights remaining (global pruning)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    import keras_lottery as kl
    from keras_lottery import report, stability
    from keras_lottery._keras import keras

    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    train, test = load_data(args)
    steps_per_epoch = int(np.ceil(len(train[0]) / args.batch_size))
    compile_fn = make_compile(args, steps_per_epoch * args.epochs_per_round)
    print(f"ResNet-20 (width {args.width}) on {len(train[0])} Fashion-MNIST training / "
          f"{len(test[0])} test examples; {args.rounds + 1} rounds x {args.epochs_per_round} "
          f"epochs ({steps_per_epoch} steps/epoch), global pruning at {args.prune_rate}/round")

    late = str(kl.parse_rewind(args.rewind))
    runs = {}
    for rewind in ("0it", late):
        imp, wrapped, init_model = run_imp(args, rewind, train, test, compile_fn,
                                           os.path.join(args.out, f"imp_k{rewind}"))
        runs[rewind] = (imp, wrapped, init_model)
    rows = []
    for (r0, rk) in zip(runs["0it"][0].history, runs[late][0].history):
        rows.append({"round": r0.round, "weights_remaining": rk.weights_remaining,
                     "test_accuracy_k0": r0.test_accuracy, f"test_accuracy_k{late}": rk.test_accuracy,
                     "es_iter_k0": r0.early_stop_iteration,
                     f"es_iter_k{late}": rk.early_stop_iteration})
    report.write_csv(os.path.join(args.out, "comparison.csv"), rows)
    plot_comparison(rows, late, os.path.join(args.out, "tickets.png"),
                    f"ResNet-20, Fashion-MNIST ({len(train[0])} ex.), seed {args.seed}")
    print("\nround  % remaining  acc k=0   acc k=" + late)
    for row in rows:
        print(f"{row['round']:>5}  {100 * row['weights_remaining']:>11.1f}  "
              f"{100 * row['test_accuracy_k0']:>7.2f}  {100 * row[f'test_accuracy_k{late}']:>7.2f}")

    summary = {"config": {k: v for k, v in vars(args).items()}, "comparison": rows}
    if not args.skip_stability:
        masks = kl.read_masks(runs[late][1])
        keras.utils.set_random_seed(args.seed)
        search = stability.search_rewind_point(
            runs[late][2], train, test, args.candidates.split(","), epochs=args.epochs_per_round,
            batch_size=args.batch_size, compile_fn=compile_fn, masks=masks,
            num_points=args.points, bn_examples=args.bn_examples, progress=print)
        print("\n" + search.table())
        report.write_json(os.path.join(args.out, "stability.json"), search.to_dict())
        stability.plot_paths(search.rows, os.path.join(args.out, "paths.png"),
                             title=f"ticket at {100 * search.weights_remaining:.1f}% weights: "
                                   "error between two copies")
        stability.plot_instability(search, os.path.join(args.out, "instability.png"))
        summary["stability"] = {k: v for k, v in search.to_dict().items() if k != "rows"}
        summary["stability"]["rows"] = [{k: v for k, v in r.items() if k not in ("errors", "alphas")}
                                        for r in search.rows]
    summary["seconds"] = time.perf_counter() - started
    report.write_json(os.path.join(args.out, "summary.json"), summary)
    print(f"\nwrote {args.out} ({summary['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
