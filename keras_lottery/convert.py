"""Keras 3 models of standard layers, rebuilt as tf_keras models with the same weights.

TensorFlow >= 2.16 makes Keras 3 the default `tf.keras`, but tfmot prunes
tf_keras (Keras 2) models only. `to_tf_keras` rebuilds a Keras 3 Sequential or
Functional model layer by layer with the tf_keras class of the same name,
copies every layer's weights, and checks on a random batch that both models
give the same outputs. A layer it cannot rebuild (a custom layer, a layer
tf_keras does not have, an option tf_keras does not know) raises an error
naming that layer.

Keras 3 is imported only when a Keras 3 model is actually passed in.
"""

import inspect
import logging
import sys

import numpy as np

from keras_lottery._keras import keras

__all__ = ["ACTIVATIONS", "ConversionError", "is_keras3_model", "to_tf_keras"]

logger = logging.getLogger("keras_lottery")

# keyword arguments every tf_keras layer accepts through `Layer.__init__`.
_BASE_LAYER_KWARGS = {
    "name", "trainable", "dtype", "dynamic", "input_dim", "input_shape",
    "batch_input_shape", "batch_size", "weights", "activity_regularizer", "autocast",
}


class ConversionError(ValueError):
    """A Keras 3 model (or one of its layers) cannot be rebuilt with tf_keras."""


def is_keras3_model(obj):
    """True if `obj` is a Keras 3 (`keras` 3.x) model; never imports Keras 3 itself.

    A Keras 3 object can only exist once `keras` 3 was imported, so the test
    looks it up in `sys.modules` (subclasses defined anywhere count too).
    """
    keras3 = sys.modules.get("keras")
    if keras3 is None or not str(getattr(keras3, "__version__", "")).startswith("3"):
        return False
    model_cls = getattr(keras3, "Model", None)
    return model_cls is not None and isinstance(obj, model_cls)


def _is_empty(value):
    return value is None or value is False or value == {} or value == [] or value == ()


def _init_params(cls):
    """Explicit keyword names of `cls.__init__` and of the bases it forwards **kwargs to."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= {n: p for n, p in params.items()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}.keys()
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    names.discard("self")
    return names


def _defaults(cls):
    """Default values of the keyword arguments of `cls.__init__` (Keras 3 side)."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}


def _allowed_kwargs(cls):
    names = _init_params(cls)
    if issubclass(cls, keras.layers.Layer):
        names |= _BASE_LAYER_KWARGS
    if issubclass(cls, keras.layers.RNN):
        names |= {"zero_output_for_mask"}  # read from **kwargs (Bidirectional sets it)
    return names


def _convert_object(value, where):
    """Converts a serialized Keras 3 object (initializer, regularizer, ...) for tf_keras."""
    if isinstance(value, list):
        return [_convert_object(v, where) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("class_name") == "DTypePolicy" or value.get("class_name") == "FloatDTypePolicy":
        return value["config"]["name"]
    if "class_name" in value and "config" in value:
        module = value.get("module") or ""
        if value.get("registered_name") not in (None, value["class_name"]) or (
                module and not module.startswith("keras")):
            raise ConversionError(
                f"{where} uses the custom object {value.get('registered_name') or value['class_name']!r}"
                f" (module {module!r}); only built-in Keras objects can be converted.")
        kind = module.split(".")[-1] if module else ""
        target = {"initializers": keras.initializers, "regularizers": keras.regularizers,
                  "constraints": keras.constraints, "activations": keras.activations}.get(kind)
        config = value["config"]
        if target is not None:
            cls = getattr(target, value["class_name"], None)
            if cls is None:
                raise ConversionError(
                    f"{where} uses {kind[:-1]} {value['class_name']!r}, which tf_keras does not have.")
            if isinstance(config, dict) and inspect.isclass(cls):
                config = _filter_kwargs(cls, config, f"{where} ({value['class_name']})")
        return {"class_name": value["class_name"],
                "config": {k: _convert_object(v, where) for k, v in config.items()}
                if isinstance(config, dict) else config}
    return {k: _convert_object(v, where) for k, v in value.items()}


# Keras 3 configs resolve some defaults that tf_keras layers only imply:
# an unknown option with one of these values changes nothing.
_IMPLICIT_DEFAULTS = {"data_format": ("channels_last",)}

# Options Keras 3 renamed: layer class -> {Keras 3 name: tf_keras name}
_RENAMED_OPTIONS = {"LeakyReLU": {"negative_slope": "alpha"}}


def _same(a, b):
    try:
        return bool(a == b)
    except Exception:
        return False


def _filter_kwargs(cls, config, where, source_cls=None):
    """Keeps the options tf_keras's `cls` knows; drops unknown ones left at their default."""
    allowed = _allowed_kwargs(cls)
    defaults = _defaults(source_cls) if source_cls is not None else {}
    kept = {}
    for key, value in config.items():
        if key in allowed:
            kept[key] = value
        elif (not _is_empty(value) and not (key in defaults and _same(defaults[key], value))
              and value not in _IMPLICIT_DEFAULTS.get(key, ())):
            raise ConversionError(
                f"{where}: option {key}={value!r} has no tf_keras equivalent in "
                f"{cls.__name__}; remove it from the Keras 3 model or build the layer with tf_keras.")
    return kept


# --- activations ---------------------------------------------------------
# Keras 3 serializes a built-in activation as its name. tf_keras knows some of
# those names with the same meaning; others it lacks ("hard_silu", "relu6",
# "leaky_relu", ...) and one means something else: Keras 3's "hard_sigmoid" is
# relu6(x + 3) / 6, tf_keras's is clip(0.2 x + 0.5, 0, 1). Each Keras 3 name
# is therefore mapped to a tf_keras name with the same function, or to one of
# the functions below, registered with tf_keras as "keras_lottery>NAME" (a
# converted model saved to a file loads wherever keras_lottery is imported).

def _tf():
    import tensorflow as tf

    return tf


def _register(fn):
    return keras.utils.register_keras_serializable(package="keras_lottery")(fn)


@_register
def relu6(x):
    """min(max(x, 0), 6), Keras 3's `relu6`."""
    return _tf().nn.relu6(x)


@_register
def leaky_relu(x):
    """Keras 3's `leaky_relu` (negative slope 0.2)."""
    return _tf().nn.leaky_relu(x, alpha=0.2)


@_register
def hard_sigmoid(x):
    """Keras 3's `hard_sigmoid`: relu6(x + 3) / 6 (tf_keras's has slope 0.2)."""
    return _tf().nn.relu6(x + 3.0) * (1.0 / 6.0)


@_register
def hard_silu(x):
    """Keras 3's `hard_silu` / `hard_swish`: x * relu6(x + 3) / 6."""
    return x * hard_sigmoid(x)


@_register
def celu(x):
    """Keras 3's `celu` (alpha 1)."""
    tf = _tf()
    return tf.maximum(x, 0.0) + tf.math.expm1(tf.minimum(x, 0.0))


@_register
def hard_tanh(x):
    """Keras 3's `hard_tanh`: clip(x, -1, 1)."""
    return _tf().clip_by_value(x, -1.0, 1.0)


@_register
def log_softmax(x):
    """Keras 3's `log_softmax` over the last axis."""
    return _tf().nn.log_softmax(x, axis=-1)


@_register
def log_sigmoid(x):
    """Keras 3's `log_sigmoid`."""
    return _tf().math.log_sigmoid(x)


@_register
def tanh_shrink(x):
    """Keras 3's `tanh_shrink`: x - tanh(x)."""
    return x - _tf().tanh(x)


@_register
def soft_shrink(x):
    """Keras 3's `soft_shrink` (threshold 0.5)."""
    tf = _tf()
    return tf.where(x > 0.5, x - 0.5, tf.where(x < -0.5, x + 0.5, tf.zeros_like(x)))


@_register
def hard_shrink(x):
    """Keras 3's `hard_shrink` (threshold 0.5)."""
    tf = _tf()
    return tf.where(tf.abs(x) > 0.5, x, tf.zeros_like(x))


@_register
def squareplus(x):
    """Keras 3's `squareplus` (b = 4): (x + sqrt(x^2 + 4)) / 2."""
    tf = _tf()
    return (x + tf.sqrt(tf.square(x) + 4.0)) / 2.0


@_register
def sparse_plus(x):
    """Keras 3's `sparse_plus`: 0, (x + 1)^2 / 4, x for x <= -1, |x| < 1, x >= 1."""
    tf = _tf()
    return tf.where(x <= -1.0, tf.zeros_like(x), tf.where(x < 1.0, 0.25 * tf.square(x + 1.0), x))


@_register
def sparse_sigmoid(x):
    """Keras 3's `sparse_sigmoid`: clip((x + 1) / 2, 0, 1)."""
    return _tf().clip_by_value(0.5 * (x + 1.0), 0.0, 1.0)


@_register
def glu(x):
    """Keras 3's `glu` over the last axis: a * sigmoid(b), [a, b] = split(x)."""
    tf = _tf()
    a, b = tf.split(x, 2, axis=-1)
    return a * tf.sigmoid(b)


# Keras 3 activation name -> tf_keras activation identifier.
ACTIVATIONS = {
    **{name: name for name in ("relu", "softmax", "elu", "selu", "softplus", "softsign",
                               "tanh", "sigmoid", "exponential", "linear", "mish", "gelu")},
    "swish": "swish",
    "silu": "swish",
    "hard_swish": "keras_lottery>hard_silu",
    **{fn.__name__: f"keras_lottery>{fn.__name__}"
       for fn in (relu6, leaky_relu, hard_sigmoid, hard_silu, celu, hard_tanh, log_softmax,
                  log_sigmoid, tanh_shrink, soft_shrink, hard_shrink, squareplus,
                  sparse_plus, sparse_sigmoid, glu)},
}

# options whose value is an activation, in the layers tf_keras has
_ACTIVATION_KEYS = ("activation", "recurrent_activation")


_USER_FUNCTION = (
    "{where}: {key} is {what}, your own Python function, not a built-in activation, so "
    "it cannot be converted to tf_keras. Use a built-in activation name (known: {known}), "
    "or build the layer with tf_keras and the same function.")


def _convert_activation(value, key, where):
    known = ", ".join(sorted(ACTIVATIONS))
    if isinstance(value, dict) and value.get("class_name") == "function":
        value = value.get("config")  # Keras 3 serializes a def'd function so
        if isinstance(value, str) and value not in ACTIVATIONS:
            raise ConversionError(_USER_FUNCTION.format(where=where, key=key, what=repr(value),
                                                        known=known))
    elif isinstance(value, dict) and set(value) == {"value"}:
        # a lambda: Keras 3 stores its marshalled bytecode
        raise ConversionError(_USER_FUNCTION.format(where=where, key=key, what="a lambda",
                                                    known=known))
    if not isinstance(value, str):
        return value
    if value not in ACTIVATIONS:
        raise ConversionError(
            f"{where}: {key}={value!r} has no tf_keras equivalent (known Keras 3 "
            f"activations: {known}). Use one of those, or build the layer with tf_keras.")
    return ACTIVATIONS[value]


def _attention_config(layer, config, where):
    """Adds the input shapes tf_keras's MultiHeadAttention needs to rebuild itself."""
    shapes = getattr(layer, "_build_shapes_dict", None) or {}
    query = shapes.get("query_shape")
    value = shapes.get("value_shape")
    if query is None or value is None:
        raise ConversionError(
            f"{where} is not built (its input shapes are unknown); call the model on "
            "its inputs (or build it with keras.Input) before converting.")
    key = shapes.get("key_shape") or value
    return dict(config, query_shape=list(query), value_shape=list(value), key_shape=list(key))


# Keras 3 layers of the built-in module that run user code, so their config
# cannot be rebuilt by tf_keras.
_USER_CODE_LAYERS = ("Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer")


def _tf_keras_layer_scale():
    from tf_keras.src.applications.convnext import LayerScale

    return LayerScale


# Layers defined inside Keras 3's keras.applications (not among its built-in
# layers) that tf_keras's applications define with the same config and weights.
_APPLICATION_LAYERS = {
    ("keras.src.applications.convnext", "LayerScale"): _tf_keras_layer_scale,
}


def _convert_application_layer(layer, cls, where):
    config = {k: _convert_object(v, where) for k, v in layer.get_config().items()}
    config = _filter_kwargs(cls, config, where, source_cls=type(layer))
    try:
        return cls.from_config(config)
    except Exception as err:
        raise ConversionError(f"{where}: tf_keras could not rebuild it from its config "
                              f"({type(err).__name__}: {err}).") from err


def _layer_config(layer, cls, config, where):
    """A Keras 3 layer's config as tf_keras's `cls` takes it: activations mapped,
    objects converted, renamed options renamed, Keras-3-only defaults dropped."""
    for key in _ACTIVATION_KEYS:
        if key in config:
            config[key] = _convert_activation(config[key], key, where)
    config = {k: _convert_object(v, where) for k, v in config.items()}
    for keras3_key, tf_keras_key in _RENAMED_OPTIONS.get(type(layer).__name__, {}).items():
        if keras3_key in config:
            config[tf_keras_key] = config.pop(keras3_key)
    return _filter_kwargs(cls, config, where, source_cls=type(layer))


def _tf_keras_class(layer, where):
    """The tf_keras class of a built-in Keras 3 `layer`, or a ConversionError naming it."""
    cls_name = type(layer).__name__
    module = type(layer).__module__ or ""
    if not module.startswith("keras.src.layers") and not module.startswith("keras.layers"):
        raise ConversionError(
            f"{where} from `{module}` is not a built-in Keras layer, so it cannot be "
            "converted to tf_keras. Rewrite it as a tf_keras layer (import tf_keras as keras) "
            "and build the model with tf_keras.")
    if cls_name in _USER_CODE_LAYERS:
        raise ConversionError(
            f"{where} wraps your own Python code, so it is not a built-in layer "
            "and cannot be converted to tf_keras. Replace it with built-in layers, "
            "or rewrite it as a tf_keras layer (import tf_keras as keras) and build "
            "the model with tf_keras.")
    cls = getattr(keras.layers, cls_name, None)
    if cls is None or not inspect.isclass(cls):
        raise ConversionError(
            f"{where} has no tf_keras counterpart (tf_keras.layers.{cls_name} does not "
            "exist). Replace it with layers tf_keras has, or build the model with tf_keras.")
    return cls


def _convert_layer(layer):
    """A new tf_keras layer equivalent to the Keras 3 `layer` (weights not yet copied)."""
    cls_name = type(layer).__name__
    where = f"Layer {layer.name!r} ({cls_name})"
    module = type(layer).__module__ or ""
    application_layer = _APPLICATION_LAYERS.get((module, cls_name))
    if application_layer is not None:
        return _convert_application_layer(layer, application_layer(), where)
    cls = _tf_keras_class(layer, where)
    config = _layer_config(layer, cls, layer.get_config(), where)
    # a wrapper's inner layer(s) (TimeDistributed, Bidirectional) are checked and
    # converted as layers too: their configs went on as they were, Keras-3-only
    # options and activation names included
    forward = getattr(layer, "layer", None) or getattr(layer, "forward_layer", None)
    for key, inner in (("layer", forward), ("backward_layer", getattr(layer, "backward_layer", None))):
        spec = config.get(key)
        if isinstance(spec, dict) and isinstance(spec.get("config"), dict) and inner is not None:
            inner_where = f"Layer {inner.name!r} ({type(inner).__name__}) inside {where}"
            inner_cls = _tf_keras_class(inner, inner_where)
            spec["config"] = _layer_config(inner, inner_cls, inner.get_config(), inner_where)
    if cls_name == "MultiHeadAttention":  # tf_keras's from_config reads these
        config = _attention_config(layer, config, where)
    try:
        return cls.from_config(config)
    except Exception as err:
        raise ConversionError(f"{where}: tf_keras could not rebuild it from its config "
                              f"({type(err).__name__}: {err}).") from err


def _copy_layer_weights(src, dst):
    values = src.get_weights()
    if len(values) != len(dst.weights) or any(
            tuple(v.shape) != tuple(w.shape) for v, w in zip(values, dst.weights)):
        raise ConversionError(
            f"Layer {src.name!r} ({type(src).__name__}): its Keras 3 weights "
            f"{[tuple(v.shape) for v in values]} do not match the tf_keras layer's "
            f"{[tuple(w.shape) for w in dst.weights]}.")
    dst.set_weights(values)


def _input_from_config(config):
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    if shape is None:
        raise ConversionError(f"Input {config.get('name')!r} has no shape.")
    return keras.Input(batch_shape=tuple(shape), dtype=config.get("dtype"),
                       sparse=bool(config.get("sparse")), ragged=bool(config.get("ragged")),
                       name=config.get("name"))


def _convert_sequential(model):
    config = model.get_config()
    first = config["layers"][0] if config["layers"] else None
    if first is None or first.get("class_name") != "InputLayer":
        if not model.built or not model.inputs:
            raise ConversionError(
                f"Sequential model {model.name!r} is not built: give it a keras.Input(...) "
                "first layer or call it on a batch before converting.")
        shape = tuple(model.inputs[0].shape)
        layers = [keras.Input(batch_shape=shape, dtype=model.inputs[0].dtype)]
    else:
        layers = [_input_from_config(first["config"])]
    pairs = []
    for layer in model.layers:
        new = _convert_any(layer)
        pairs.append((layer, new))
        layers.append(new)
    result = keras.Sequential(layers, name=model.name)
    for src, dst in pairs:
        if not _is_model(src):
            _copy_layer_weights(src, dst)
    return result


def _is_model(layer):
    return is_keras3_model(layer)


def _resolve(value, tensors):
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        name, node, index = value["config"]["keras_history"]
        try:
            return tensors[(name, node)][index]
        except KeyError:
            raise ConversionError(f"Internal: tensor from layer {name!r} node {node} not built yet.") from None
    if isinstance(value, list):
        return [_resolve(v, tensors) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, tensors) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, tensors) for k, v in value.items()}
    return value


def _pick(spec, tensors):
    """Resolves a Functional config's input_layers / output_layers entry."""
    if isinstance(spec, dict):
        return {k: _pick(v, tensors) for k, v in spec.items()}
    if len(spec) == 3 and isinstance(spec[0], str):
        name, node, index = spec
        return tensors[(name, node)][index]
    return [_pick(s, tensors) for s in spec]


# Keras 3 records arithmetic on tensors (`x + 3.0`, `x * y`, as in
# MobileNetV3's hard sigmoid) as operations of `keras.ops` in the functional
# graph; tf_keras records the same TensorFlow op as a TFOpLambda layer.
_OPERATIONS = {
    "Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Divide": "divide",
    "TrueDivide": "divide", "Maximum": "maximum", "Minimum": "minimum", "Power": "pow",
    "Negative": "negative", "Abs": "abs", "Absolute": "abs", "Square": "square",
    "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Tanh": "tanh", "Sigmoid": "sigmoid",
    "Relu": "relu", "Relu6": "relu6", "Matmul": "matmul",
}


def _convert_operation(entry, tensors):
    import tensorflow as tf

    op_name = entry["class_name"]
    where = f"Operation {entry['name']!r} (keras.ops {op_name}, module {entry.get('module')!r})"
    extra = {k: v for k, v in (entry.get("config") or {}).items() if k != "name"}
    fn_name = _OPERATIONS.get(op_name)
    if fn_name is None or extra:
        raise ConversionError(
            f"{where} has no conversion to tf_keras (converted: elementwise "
            f"{', '.join(sorted(_OPERATIONS))}). Express it with a built-in layer "
            "(e.g. keras.layers.Add, Multiply, Activation) or build the model with tf_keras.")
    fn = {"pow": tf.pow, "relu": tf.nn.relu, "relu6": tf.nn.relu6, "sigmoid": tf.sigmoid,
          "matmul": tf.linalg.matmul}.get(fn_name) or getattr(tf.math, fn_name)
    for node_index, node in enumerate(entry.get("inbound_nodes", [])):
        args = _resolve(node.get("args", []), tensors)
        kwargs = _resolve(node.get("kwargs", {}), tensors)
        try:
            outputs = fn(*args, **kwargs)
        except Exception as err:
            raise ConversionError(f"{where}: applying tf.{fn_name} to its inputs failed "
                                  f"({type(err).__name__}: {err}).") from err
        tensors[(entry["name"], node_index)] = tf.nest.flatten(outputs)


def _convert_functional(model):
    import tensorflow as tf

    config = model.get_config()
    tensors = {}
    for entry in config["layers"]:
        name = entry["name"]
        if entry["class_name"] == "InputLayer":
            tensors[(name, 0)] = [_input_from_config(entry["config"])]
            continue
        if (entry.get("module") or "").startswith("keras.src.ops"):
            _convert_operation(entry, tensors)
            continue
        layer = model.get_layer(name)
        new = _convert_any(layer)
        for node_index, node in enumerate(entry.get("inbound_nodes", [])):
            args = _resolve(node.get("args", []), tensors)
            kwargs = _resolve(node.get("kwargs", {}), tensors)
            # Keras 3 records the `training` default it saw while building
            # (e.g. True for RandomFlip); passed on, tf_keras would pin it.
            kwargs.pop("training", None)
            try:
                outputs = new(*args, **kwargs)
            except Exception as err:
                raise ConversionError(
                    f"Layer {name!r} ({type(layer).__name__}): calling the tf_keras version on "
                    f"its inputs failed ({type(err).__name__}: {err}).") from err
            tensors[(name, node_index)] = tf.nest.flatten(outputs)
        if not _is_model(layer) and entry.get("inbound_nodes"):
            _copy_layer_weights(layer, new)
    inputs = _pick(config["input_layers"], tensors)
    outputs = _pick(config["output_layers"], tensors)
    return keras.Model(inputs, outputs, name=model.name)


def _convert_any(layer):
    if _is_model(layer):
        kind = type(layer).__name__
        if kind == "Sequential":
            return _convert_sequential(layer)
        if kind == "Functional" or getattr(layer, "_is_graph_network", False) or (
                type(layer).__module__.startswith("keras.src.models") and kind == "Model"):
            return _convert_functional(layer)
        raise ConversionError(
            f"Model {layer.name!r} is a subclassed Keras 3 model ({kind} from "
            f"`{type(layer).__module__}`); only Sequential and Functional models of "
            "built-in layers can be converted. Build it with tf_keras's Functional API.")
    return _convert_layer(layer)


def _sample_inputs(model, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for tensor in model.inputs:
        shape = [batch] + [d if d is not None else 8 for d in tuple(tensor.shape)[1:]]
        dtype = np.dtype(getattr(tensor.dtype, "name", tensor.dtype))
        if np.issubdtype(dtype, np.integer):
            samples.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            samples.append(rng.normal(size=shape).astype(dtype))
    return samples


def to_tf_keras(model, check=True, atol=1e-5, rtol=1e-4):
    """Rebuilds a Keras 3 model as a tf_keras model with the same weights.

    Args:
      model: a Keras 3 Sequential or Functional model of built-in layers
        (nested Sequential / Functional models are fine). A tf_keras model is
        returned unchanged.
      check: compare both models' outputs (inference mode) on a random batch.
      atol, rtol: tolerances of that comparison.

    Returns:
      A tf_keras model (uncompiled: compile it with tf_keras optimizers).

    Raises:
      ConversionError: (a ValueError) naming the layer that cannot be
        converted — a custom or subclassed layer, a layer tf_keras lacks, an
        option tf_keras does not know — or when the outputs differ.
      TypeError: if `model` is neither a Keras 3 nor a tf_keras model.

    Example:
      >>> import keras                                    # Keras 3
      >>> k3 = keras.Sequential([keras.Input((40,)), keras.layers.Dense(10)])
      >>> model = to_tf_keras(k3)                         # doctest: +SKIP
      >>> model = kl.IMP(rounds=3, prune_rate=0.2).wrap(k3)   # converts too  # doctest: +SKIP
    """
    if isinstance(model, keras.Model):
        return model
    if not is_keras3_model(model):
        raise TypeError(f"Expected a Keras 3 or tf_keras model, got {type(model).__name__}.")
    converted = _convert_any(model)
    n_layers = len(converted.layers)
    if not check:
        logger.info("Converted Keras 3 model %r to tf_keras (%d layers, weights copied; "
                    "outputs not checked).", model.name, n_layers)
        return converted
    import tensorflow as tf

    samples = _sample_inputs(model)
    feed = samples[0] if len(samples) == 1 else samples
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):  # a model of dict inputs takes them keyed by name
        feed = tf.nest.pack_sequence_as(struct, samples)

    expected = [np.asarray(t) for t in tf.nest.flatten(model(feed, training=False))]
    got = [np.asarray(t) for t in tf.nest.flatten(converted(feed, training=False))]
    diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(expected, got))
    if len(expected) != len(got) or not all(
            a.shape == b.shape and np.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(expected, got)):
        raise ConversionError(
            f"The tf_keras rebuild of Keras 3 model {model.name!r} gives different outputs "
            f"(max |difference| {diff:.3g}); it is not used. Build the model with tf_keras.")
    logger.info("Converted Keras 3 model %r to tf_keras (%d layers, weights copied); "
                "outputs checked equal on a random batch (max |difference| %.2g). "
                "Compile the result with tf_keras optimizers.", model.name, n_layers, diff)
    return converted
