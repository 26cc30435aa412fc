"""Does recomputing batch-norm statistics on the interpolation path matter?

Trains two copies of a dense ResNet-20 from the same θ0 with different data
orders (Fashion-MNIST subset, the settings of late_rewinding_resnet20.py), then
evaluates the test error along the straight line between them twice: with the
BN moving statistics recomputed at every point (keras_lottery's default) and
with the interpolated statistics. Writes bn_check.json and bn_check.png.

    python examples/stability_bn_check.py --out runs/bn_check
    python examples/stability_bn_check.py --short      # seconds
"""

import argparse
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true")
    p.add_argument("--out", default=os.path.join("runs", "bn_check"))
    p.add_argument("--train-size", type=int, default=2500)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--points", type=int, default=11)
    p.add_argument("--bn-examples", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.short:
        args.train_size, args.test_size, args.epochs, args.points, args.bn_examples = 128, 64, 1, 3, 64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_lottery import data, models, report, stability
    from keras_lottery._keras import keras
    from keras_lottery.lr_schedule import WarmupStepDecay

    (x, y), (xt, yt) = data.load_fashion_mnist()
    rng = np.random.default_rng(args.seed)
    train = rng.permutation(len(x))[: args.train_size]
    test = rng.permutation(len(xt))[: args.test_size]
    x, y, xt, yt = x[train], y[train], xt[test], yt[test]
    steps = int(np.ceil(len(x) / args.batch_size)) * args.epochs

    def compile_fn(model):
        lr = WarmupStepDecay(args.lr, boundaries=[int(0.75 * steps)])
        model.compile(keras.optimizers.SGD(lr, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"],
                      run_eagerly=args.short)

    keras.utils.set_random_seed(args.seed)
    model = models.resnet20(x.shape[1:], seed=args.seed, width=4 if args.short else 16)
    result = stability.instability_analysis(
        model, (x, y), (xt, yt), steps=steps, seeds=(1, 2), batch_size=args.batch_size,
        compile_fn=compile_fn, num_points=args.points, bn_examples=args.bn_examples)
    a, b = result.models
    plain = stability.evaluate_path(a, b, xt, yt, num_points=args.points, bn_data=None)
    out = {"recomputed": result.path.to_dict(), "interpolated": plain.to_dict(),
           "config": vars(args), "seconds": result.seconds}
    os.makedirs(args.out, exist_ok=True)
    report.write_json(os.path.join(args.out, "bn_check.json"), out)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, path in (("BN statistics recomputed per point", result.path),
                        ("BN statistics interpolated", plain)):
        ax.plot(path.alphas, [100 * e for e in path.errors], "o-", ms=3,
                label=f"{label} (barrier {100 * path.barrier:.1f} pp)")
    ax.set_xlabel("interpolation α (0 = copy A, 1 = copy B)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"dense ResNet-20 from θ0, two data orders ({steps} steps each)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "bn_check.png"), dpi=110)
    plt.close(fig)
    print(f"barrier with BN recomputed: {100 * result.path.barrier:.2f} pp; "
          f"with interpolated BN statistics: {100 * plain.barrier:.2f} pp")
    print("errors (recomputed):   ", " ".join(f"{100 * e:.1f}" for e in result.path.errors))
    print("errors (interpolated): ", " ".join(f"{100 * e:.1f}" for e in plain.errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
