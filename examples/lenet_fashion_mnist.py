"""LeNet-300-100 on Fashion-MNIST: winning tickets vs random re-init and random pruning.

The setting of Frankle & Carbin (2019), for LeNet-300-100 (there on MNIST): Adam
1.2e-3, batch 60, layer-wise IMP pruning 20% of the hidden layers' and 10% of
the output layer's surviving weights per round, rewinding to θ0; every seed
also trains the two controls with the same data order and steps.

    python examples/lenet_fashion_mnist.py --epochs-per-round 2 --rounds 10 --seeds 3
    keras-lottery report runs/lenet-fashion-mnist      # table + figure again

The paper trains 50K iterations per round (~55 epochs); --epochs-per-round
trades fidelity for time.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def build_model(seed):
    from keras_lottery import models

    return models.lenet_300_100(input_shape=(28, 28, 1), num_classes=10, seed=seed)


def main(argv=None):
    args = _common.parser(__doc__.splitlines()[0], out=os.path.join("runs", "lenet-fashion-mnist"),
                          epochs_per_round=2, rounds=10).parse_args(argv)
    return _common.main(args, build_model, "LeNet-300-100 on Fashion-MNIST, IMP rewind to θ0",
                        output_layer_rate=0.1, prune_rate=0.2)


if __name__ == "__main__":
    main()
