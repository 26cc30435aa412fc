"""Conv-2/4/6 on Fashion-MNIST: winning tickets vs random re-init and random pruning.

The setting of Frankle & Carbin (2019), for Conv-2/4/6 (there on CIFAR-10): Adam
(2e-4 for Conv-2, 3e-4 for Conv-4/6 as in the paper, the default; or --lr), batch 60,
layer-wise IMP pruning 15% of each convolution's and 20% of each fully
connected layer's surviving weights per round (output layer 10%), rewinding
to θ0, with both controls trained in the same data order and steps.

    python examples/conv_fashion_mnist.py --depth 2 --epochs-per-round 1 --rounds 8 --seeds 2
    keras-lottery report runs/conv2-fashion-mnist

Convolutions cost far more than LeNet's dense layers on a CPU: use
--train-limit for a quick look.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

CONV_RATE = 0.15
FC_RATE = 0.2
OUTPUT_RATE = 0.1


def layer_rates(depth):
    """Per-layer rates: conv layers 15%, fc1/fc2 20% (the default), output 10%."""
    rates = {f"conv{i + 1}": CONV_RATE for i in range(depth)}
    rates["output"] = OUTPUT_RATE
    return rates


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0], out=None, epochs_per_round=1, rounds=8)
    p.add_argument("--depth", type=int, default=2, choices=[2, 4, 6], help="Conv-2/4/6 (default: %(default)s)")
    p.set_defaults(lr=None)
    args = p.parse_args(argv)
    if args.lr is None:  # the paper's Adam rates: 2e-4 for Conv-2, 3e-4 for Conv-4/6
        args.lr = 2e-4 if args.depth == 2 else 3e-4
    args.out = args.out or os.path.join("runs", f"conv{args.depth}-fashion-mnist")

    def build_model(seed):
        from keras_lottery import models

        return models.conv_net(depth=args.depth, input_shape=(28, 28, 1), num_classes=10, seed=seed)

    return _common.main(args, build_model, f"Conv-{args.depth} on Fashion-MNIST, IMP rewind to θ0",
                        layer_rates=layer_rates(args.depth), prune_rate=FC_RATE)


if __name__ == "__main__":
    main()
