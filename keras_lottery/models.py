"""The networks of the lottery-ticket papers, as tf_keras Functional models.

All take an `input_shape` so that they run on MNIST-1D (40,), Fashion-MNIST
(28, 28, 1) or CIFAR-10 (32, 32, 3). Initialization follows the papers
(Glorot normal for the small networks).
"""

from keras_lottery._keras import keras

__all__ = ["lenet_300_100", "conv_net", "MODELS", "build", "OPTIMIZERS", "make_optimizer",
           "compile_classifier"]

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
    """Builds a model by name ("lenet", "conv2", "conv4", "conv6", "resnet20", "vgg16").

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes, seed=seed)


# -- deep networks of "Stabilizing the LTH" / "Linear Mode Connectivity" -------


def _he_init(seed, counter):
    """He-normal initializers, each with its own seed derived from `seed`."""
    return lambda: keras.initializers.HeNormal(seed=None if seed is None else seed + next(counter))


def _check_image_shape(name, input_shape):
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image inputs (height, width, channels), got "
                         f"{tuple(input_shape)!r}; e.g. (28, 28, 1) or (32, 32, 3).")


def _regularizer(weight_decay):
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _conv_bn(x, filters, kernel, stride, name, init, reg, relu=True, bn_momentum=0.9):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer=init(), kernel_regularizer=reg, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def resnet20(input_shape=(32, 32, 3), num_classes=10, seed=None, width=16, weight_decay=0.0,
             bn_momentum=0.9):
    """ResNet-20 for CIFAR-style inputs (He et al. 2016), with batch norm.

    A 3x3 convolution, then three stages of three basic blocks (two 3x3
    convolutions with batch norm each) with `width`, 2*`width` and 4*`width`
    filters; the first block of stages 2 and 3 halves the resolution, and its
    shortcut is a 1x1 convolution with batch norm. Global average pooling and a
    dense output layer. Convolutions have no bias (batch norm follows), so the
    prunable weights are the 21 convolution kernels and the output kernel
    (about 0.27M weights at width 16). Runs on 28x28x1 and 32x32x3 inputs.

    Args:
      input_shape: (height, width, channels).
      num_classes: output units (logits; use a from_logits loss).
      seed: optional seed for the He-normal initializers.
      width: filters of the first stage (16 in the paper).
      weight_decay: optional L2 coefficient on the kernels (the papers use 1e-4).
      bn_momentum: batch-norm moving-average momentum. 0.9 (not Keras' 0.99)
        matches the papers' PyTorch default (momentum 0.1 there) and lets the
        moving statistics follow short trainings and rewinds.

    Returns:
      An uncompiled tf_keras Functional model named "resnet20".

    Raises:
      ValueError: for a non-image input shape, a width < 1 or a negative
        weight decay.

    Example:
      >>> model = resnet20((28, 28, 1))   # doctest: +SKIP
    """
    _check_image_shape("ResNet-20", input_shape)
    if int(width) != width or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}.")
    init = _he_init(seed, iter(range(1000)))
    reg = _regularizer(weight_decay)
    inputs = keras.Input(shape=tuple(input_shape))
    bn = dict(bn_momentum=bn_momentum)
    x = _conv_bn(inputs, width, 3, 1, "stem", init, reg, **bn)
    for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(1, 4):
            name = f"stage{stage}_block{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            y = _conv_bn(x, filters, 3, stride, f"{name}_a", init, reg, **bn)
            y = _conv_bn(y, filters, 3, 1, f"{name}_b", init, reg, relu=False, **bn)
            if stride != 1 or x.shape[-1] != filters:
                x = _conv_bn(x, filters, 1, stride, f"{name}_shortcut", init, reg, relu=False, **bn)
            x = layers.Add(name=f"{name}_add")([x, y])
            x = layers.ReLU(name=f"{name}_out")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=init(), kernel_regularizer=reg,
                           name="output")(x)
    return keras.Model(inputs, outputs, name="resnet20")


VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16(input_shape=(32, 32, 3), num_classes=10, seed=None, width_multiplier=1.0,
          weight_decay=0.0, bn_momentum=0.9):
    """VGG-16 for CIFAR-style inputs, with batch norm (as in Frankle et al.).

    Thirteen 3x3 convolutions (64-64, 128-128, 256x3, 512x3, 512x3), each
    followed by batch norm and ReLU, with 2x2 max pooling after the first four
    groups; then global average pooling and one dense output layer (about
    14.7M weights). On 28x28 inputs the pools give 14, 7, 3 and 1 pixels.

    Args:
      input_shape: (height, width, channels), at least 16x16.
      num_classes: output units (logits).
      seed: optional seed for the He-normal initializers.
      width_multiplier: scales every layer's filters (e.g. 0.25 for fast tests).
      weight_decay: optional L2 coefficient on the kernels.
      bn_momentum: batch-norm momentum (0.9, the papers' PyTorch default).

    Returns:
      An uncompiled tf_keras Functional model named "vgg16".

    Raises:
      ValueError: for a non-image or too small input shape, or a bad multiplier.
    """
    _check_image_shape("VGG-16", input_shape)
    if min(input_shape[:2]) < 16:
        raise ValueError(f"VGG-16 pools four times and needs inputs of at least 16x16, "
                         f"got {tuple(input_shape)!r}.")
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier!r}.")
    init = _he_init(seed, iter(range(1000)))
    reg = _regularizer(weight_decay)
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    conv, pool = 0, 0
    for item in VGG16_PLAN:
        if item == "M":
            pool += 1
            x = layers.MaxPooling2D(2, name=f"pool{pool}")(x)
            continue
        conv += 1
        x = _conv_bn(x, max(1, int(round(item * width_multiplier))), 3, 1, f"conv{conv}", init, reg,
                     bn_momentum=bn_momentum)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=init(), kernel_regularizer=reg,
                           name="output")(x)
    return keras.Model(inputs, outputs, name="vgg16")


MODELS["resnet20"] = resnet20
MODELS["vgg16"] = vgg16
__all__ += ["resnet20", "vgg16", "DEEP_MODELS"]

# models for which global magnitude pruning is the default (Frankle et al.
# prune deep networks globally: layer sizes differ by orders of magnitude)
DEEP_MODELS = ("resnet20", "vgg16")


OPTIMIZERS = ("adam", "sgd")


def make_optimizer(name, learning_rate):
    """The papers' optimizers: `"adam"` (Adam) or `"sgd"` (SGD, momentum 0.9).

    Args:
      name: "adam" or "sgd".
      learning_rate: a float or a `LearningRateSchedule`.

    Raises:
      ValueError: for another name.
    """
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")


def compile_classifier(model, optimizer="adam", learning_rate=1.2e-3, **compile_kwargs):
    """Compiles a logits classifier: `make_optimizer`, sparse categorical
    cross-entropy from logits, accuracy.

    Args:
      model: the (wrapped) model to compile.
      optimizer: "adam" or "sgd".
      learning_rate: a float or a `LearningRateSchedule`.
      **compile_kwargs: passed on to `model.compile`.

    Returns:
      `model`.
    """
    model.compile(make_optimizer(optimizer, learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"],
                  **compile_kwargs)
    return model
