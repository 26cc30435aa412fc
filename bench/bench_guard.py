"""What `SparsityGuard` costs, measured side by side in one run.

Four variants of the same IMP fit (LeNet-300-100 on 784-feature synthetic
data, batch 60, one pruning round done so the guard has pruned weights to
check) are timed epoch by epoch in a rotating order, so they see the same
machine load: no guard, and `SparsityGuard(every=N)` for N = 100, 10, 1.
Each line is the median epoch time and its ratio to the unguarded fit.

Usage:
  python bench/bench_guard.py              # the documented run
  python bench/bench_guard.py --tiny       # seconds; used by the tests
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_lottery as kl  # noqa: E402
from keras_lottery._keras import keras  # noqa: E402
from keras_lottery.models import compile_classifier, lenet_300_100  # noqa: E402


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _pruned_model(x, y):
    """A LeNet after a 2-round IMP fit (50% of its weights pruned, masks enforced)."""
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_classifier(imp.wrap(lenet_300_100(seed=0)), "adam", 1.2e-3)
    epochs = imp.epochs(per_round=1)
    model.fit(x, y, batch_size=60, epochs=epochs, callbacks=imp.callbacks(verbose=0), verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for the tests")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per variant")
    parser.add_argument("--samples", type=int, default=6000)
    args = parser.parse_args(argv)
    if args.tiny:
        args.epochs, args.samples = 2, 600
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, 784)).astype("float32")
    y = rng.integers(0, 10, size=args.samples)
    settings = [("no guard", None), ("every=100", 100), ("every=10", 10), ("every=1", 1)]
    runs = []
    for label, every in settings:
        # Later fits of the same model reuse its traced train step, in which
        # the mask constraints keep pruned weights at zero.
        model = _pruned_model(x, y)
        guard = [] if every is None else [kl.SparsityGuard(every=every)]
        runs.append((label, model, guard, _EpochTimer()))
    for i in range(args.epochs):
        for label, model, guard, timer in runs[i % len(runs):] + runs[:i % len(runs)]:
            model.fit(x, y, batch_size=60, epochs=1, callbacks=guard + [timer], verbose=0)
    base = statistics.median(runs[0][3].times)
    print(f"{'variant':<10} {'median epoch s':>15} {'ratio':>7}  (LeNet-300-100, batch 60, "
          f"{args.samples} samples, {args.epochs} epochs each, 50% pruned)")
    for label, model, guard, timer in runs:
        if guard and guard[0].checks:
            assert guard[0].weights_checked > 0  # it did see pruned weights
        med = statistics.median(timer.times)
        print(f"{label:<10} {med:>15.3f} {med / base:>7.2f}")


if __name__ == "__main__":
    main()
