"""The networks of the lottery-ticket papers, as tf_keras Functional models.

All take an `input_shape` so that they run on MNIST-1D (40,), Fashion-MNIST
(28, 28, 1) or CIFAR-10 (32, 32, 3). Initialization follows the papers
(Glorot normal for the small networks).
"""

from keras_lottery._keras import keras

__all__ = ["lenet_300_100", "conv_net", "MODELS", "build"]

layers = keras.layers


def lenet_300_100(input_shape=(784,), num_classes=10, seed=None):
    """LeNet-300-100: fully connected 300-100-classes with ReLU (Frankle & Carbin).

    Args:
      input_shape: shape of one example; images are flattened.
      num_classes: output units (logits; use a from_logits loss).
      seed: optional seed for the initializers.

    Returns:
      An uncompiled tf_keras Functional model named "lenet_300_100".
    """
    init = lambda i: keras.initializers.GlorotNormal(seed=None if seed is None else seed + i)  # noqa: E731
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    x = layers.Dense(300, activation="relu", kernel_initializer=init(0), name="fc1")(x)
    x = layers.Dense(100, activation="relu", kernel_initializer=init(1), name="fc2")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=init(2), name="output")(x)
    return keras.Model(inputs, outputs, name="lenet_300_100")


def conv_net(depth=2, input_shape=(32, 32, 3), num_classes=10, seed=None):
    """Conv-2/4/6: the papers' small VGG-style networks.

    Pairs of 3x3 convolutions (64, then 128, then 256 filters) each followed by
    2x2 max pooling, then fully connected 256-256-classes.

    Args:
      depth: 2, 4 or 6 convolution layers.
      input_shape: (height, width, channels); 28x28 inputs work for depth <= 6.
      num_classes: output units (logits).
      seed: optional seed for the initializers.

    Raises:
      ValueError: for a depth other than 2, 4 or 6, or a 1-D input shape.
    """
    if depth not in (2, 4, 6):
        raise ValueError(f"depth must be 2, 4 or 6 (Conv-2/4/6), got {depth!r}.")
    if len(input_shape) != 3:
        raise ValueError(f"Conv-{depth} needs image inputs (h, w, c), got {input_shape!r}.")
    counter = iter(range(100))
    init = lambda: keras.initializers.GlorotNormal(seed=None if seed is None else seed + next(counter))  # noqa: E731
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for block, filters in enumerate((64, 128, 256)[: depth // 2]):
        for j in range(2):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              kernel_initializer=init(), name=f"conv{2 * block + j + 1}")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu", kernel_initializer=init(), name="fc1")(x)
    x = layers.Dense(256, activation="relu", kernel_initializer=init(), name="fc2")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=init(), name="output")(x)
    return keras.Model(inputs, outputs, name=f"conv{depth}")


MODELS = {
    "lenet": lenet_300_100,
    "lenet_300_100": lenet_300_100,
    "conv2": lambda **kw: conv_net(depth=2, **kw),
    "conv4": lambda **kw: conv_net(depth=4, **kw),
    "conv6": lambda **kw: conv_net(depth=6, **kw),
}


def build(name, input_shape, num_classes=10, seed=None):
    """Builds a model by name ("lenet", "conv2", "conv4", "conv6").

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes, seed=seed)
