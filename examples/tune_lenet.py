"""Tune IMP for LeNet-300-100: the best ticket at 10% weights remaining, found by keras-tuner.

Each trial is a whole IMP run down to the target: keras-tuner's RandomSearch
picks the prune rate per round (and so the number of rounds), the rewind
point and the learning rate; the trial reports the final ticket's validation
accuracy. Data come through `keras_lottery.data.load` (tfds pipelines, local
MNIST-1D / Fashion-MNIST when offline). The search folder is keras-tuner's:
run the script again and it resumes; `--overwrite` starts afresh.

    python examples/tune_lenet.py                       # MNIST-1D, 8 trials
    python examples/tune_lenet.py --dataset fashion_mnist --epochs-per-round 2
    tensorboard --logdir tuning/lenet-mnist1d/best_tensorboard
"""

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_lottery as kl  # noqa: E402
from keras_lottery import data, models, report  # noqa: E402
from keras_lottery._keras import keras  # noqa: E402
from keras_lottery.tuning import TicketRandomSearch  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist1d", help="mnist1d, fashion_mnist or a tfds name")
    p.add_argument("--target", type=float, default=0.1, help="weights remaining of the ticket")
    p.add_argument("--rounds", type=int, nargs="+", default=[2, 3, 5],
                   help="round counts to try (each gives a prune rate 1 - target^(1/rounds))")
    p.add_argument("--rewinds", nargs="+", default=["0it", "1ep"])
    p.add_argument("--max-trials", type=int, default=8)
    p.add_argument("--epochs-per-round", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--num-samples", type=int, default=5000, help="MNIST-1D examples")
    p.add_argument("--out", default="tuning")
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    common = dict(batch_size=args.batch_size, num_samples=args.num_samples)
    train, info = data.load(args.dataset, split="train[:90%]", with_info=True, **common)
    val = data.load(args.dataset, split="train[90%:]", shuffle=False, **common)
    test = data.load(args.dataset, split="test", shuffle=False, **common)

    def build(hp):
        # the paper's LeNet-300-100; the same seed for every trial
        return models.lenet_300_100(info.input_shape, num_classes=info.num_classes, seed=0)

    project = f"lenet-{args.dataset}"
    tuner = TicketRandomSearch(
        build, target_weights_remaining=args.target, rounds=args.rounds, rewinds=args.rewinds,
        learning_rate=(3e-4, 3e-3), epochs_per_round=args.epochs_per_round, optimizer="adam",
        output_layer_rate=None, max_trials=args.max_trials, directory=args.out,
        project_name=project, overwrite=args.overwrite, seed=0)
    tuner.search(train, validation_data=val, test_data=test, verbose=0)

    rows = tuner.results()
    best = tuner.best_ticket()
    print(report.format_table(rows, columns=[
        ("trial", "trial", "{}"), ("prune_rate", "rate", "{:.4f}"), ("rounds", "rounds", "{}"),
        ("rewind", "rewind", "{}"), ("learning_rate", "lr", "{:.2e}"),
        ("weights_remaining", "remain%", "{:.1%}"), ("dense_val_accuracy", "dense val", "{:.4f}"),
        ("val_accuracy", "val acc", "{:.4f}"), ("test_accuracy", "test acc", "{:.4f}")]))
    print(f"\nbest: trial {best['trial']}: prune rate {best['prune_rate']:.4f} x {best['rounds']} rounds, "
          f"rewind {best['rewind']}, learning rate {best['learning_rate']:.2e}: val accuracy "
          f"{best['score']:.4f}, test accuracy {best['metrics'].get('test_accuracy', float('nan')):.4f}")

    # Retrain the best setting once more with TensorBoard on, to look at its rounds.
    keras.utils.set_random_seed(0)
    imp = kl.IMP(rounds=best["rounds"], prune_rate=best["prune_rate"], rewind=best["rewind"])
    model = imp.wrap(build(None))
    model.compile(keras.optimizers.Adam(best["learning_rate"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    log_dir = os.path.join(args.out, project, "best_tensorboard")
    model.fit(train, epochs=imp.epochs(per_round=best["epochs_per_round"]), validation_data=val,
              verbose=0, callbacks=imp.callbacks(test_data=test, verbose=0, tensorboard_dir=log_dir))
    print(f"\nbest setting retrained: TensorBoard logs in {log_dir}\n{imp.table()}")
    return best


if __name__ == "__main__":
    main()
