"""Which layers IMP prunes, and wrapping / stripping them with tfmot.

tfmot's wrapper class is not public API, so everything that recognises or
builds one lives here: the rest of the package asks `pruned_layers(model)`.
"""

import inspect
import logging

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import (
    prune_registry,
    pruning_wrapper,
)

from keras_lottery._keras import check_tf_keras_model, keras

__all__ = [
    "PrunableDepthwiseConv2D",
    "PrunableMultiHeadAttention",
    "is_prunable",
    "is_pruning_wrapper",
    "iter_layers",
    "layer_prunable_weights",
    "pruned_layers",
    "rates_with_output_layers",
    "wrap_model",
    "strip_model",
    "bypass_wrapper_ops",
    "output_layers",
    "require_imp_callbacks",
    "restore_wrapper_ops",
]

_WRAPPER_CLASS = pruning_wrapper.PruneLowMagnitude

logger = logging.getLogger("keras_lottery")


def is_pruning_wrapper(layer):
    """True if `layer` is a tfmot pruning wrapper (`PruneLowMagnitude`)."""
    return isinstance(layer, _WRAPPER_CLASS)


def is_prunable(layer):
    """True if IMP prunes weights of `layer` (Dense, Conv1D/2D/3D, Embedding, ...).

    A layer qualifies when tfmot supports it (exact class, or a `PrunableLayer`)
    and it has weights to prune: layers tfmot accepts with nothing to prune
    (Flatten, pooling, BatchNormalization, ...) are left unwrapped, so that
    biases and normalization parameters are never pruned and never pay for a
    wrapper.
    """
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return True
    if type(layer) is keras.layers.DepthwiseConv2D:  # through PrunableDepthwiseConv2D
        return True
    registry = prune_registry.PruneRegistry
    if not registry.supports(layer):
        return False
    if registry._is_rnn_layer(layer) or registry._is_mha_layer(layer):
        return True
    return bool(registry._weight_names(layer))


def layer_prunable_weights(layer):
    """The variables IMP prunes in a plain (unwrapped) layer, as its wrapper would.

    Dense / Conv kernels, Embedding tables, DepthwiseConv2D depthwise
    kernels, SeparableConv pointwise kernels, MultiHeadAttention's query /
    key / value / output kernels, an RNN cell's kernel and recurrent
    kernel: for reading a stripped ticket (export reports) with the same
    count IMP's masks have.

    Args:
      layer: a tf_keras layer (not a pruning wrapper).

    Returns:
      A list of variables, empty for a layer IMP does not prune.

    Example:
      >>> [w.name for w in layer_prunable_weights(plain.get_layer("mha"))]  # doctest: +SKIP
      ['mha/query/kernel:0', 'mha/key/kernel:0', 'mha/value/kernel:0', 'mha/attention_output/kernel:0']
    """
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return list(layer.get_prunable_weights())
    if type(layer) is keras.layers.DepthwiseConv2D:
        return [layer.depthwise_kernel]
    if type(layer) is keras.layers.MultiHeadAttention:
        return _attention_kernels(layer)
    registry = prune_registry.PruneRegistry
    if not is_prunable(layer):
        return []
    if registry._is_rnn_layer(layer):
        weights = []
        for cell in registry._get_rnn_cells(layer):
            if isinstance(cell, tfmot.sparsity.keras.PrunableLayer):
                weights.extend(cell.get_prunable_weights())
            else:
                weights.extend(getattr(cell, name)
                               for name in registry._RNN_CELLS_WEIGHTS_MAP[type(cell)])
        return weights
    return [getattr(layer, name) for name in registry._weight_names(layer)]


def iter_layers(model, inside_wrappers=False):
    """Every layer of `model`, nested models' layers included, in order.

    Args:
      model: a Keras model.
      inside_wrappers: also yield the layer inside each pruning wrapper,
        right after the wrapper.
    """
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer, inside_wrappers)
        elif inside_wrappers and is_pruning_wrapper(layer):
            yield layer.layer


def pruned_layers(model):
    """The tfmot pruning wrappers of `model`, nested models included, in order."""
    return [layer for layer in iter_layers(model) if is_pruning_wrapper(layer)]


def _check_graph_model(model, path):
    if not (isinstance(model, keras.Sequential) or model._is_graph_network):
        raise ValueError(
            f"{path} is a subclassed model ({type(model).__name__}); tfmot can "
            "only wrap Sequential and Functional models. Rewrite it with the "
            "Functional API (keras.Input(...) -> layers -> keras.Model), or "
            "wrap its layers yourself.")


def wrap_model(model, schedule, layer_filter=None, convert_keras3=True):
    """Returns a copy of `model` whose prunable layers are tfmot pruning wrappers.

    The copy shares no variables with `model` but starts from the same weights.
    A Keras 3 model is first rebuilt as a tf_keras model by
    `keras_lottery.convert.to_tf_keras` (outputs checked equal, logged).

    Args:
      model: a tf_keras Sequential or Functional model (nested ones are fine),
        or a Keras 3 one of built-in layers.
      schedule: the tfmot `PruningSchedule` the wrappers are driven by
        (normally an `IMPSchedule`).
      layer_filter: optional callable `layer -> bool` to prune only some of the
        prunable layers.
      convert_keras3: convert a Keras 3 model (False: refuse it).

    Returns:
      The wrapped model.

    Raises:
      TypeError: if `model` is not a Keras model (or a Keras 3 one with
        convert_keras3=False).
      keras_lottery.convert.ConversionError: (a ValueError) naming a Keras 3
        layer that cannot be converted.
      ValueError: if it is subclassed, already wrapped, or has nothing to prune.
    """
    if convert_keras3:
        from keras_lottery.convert import is_keras3_model, to_tf_keras

        if is_keras3_model(model):
            model = to_tf_keras(model)
    check_tf_keras_model(model)
    _check_graph_model(model, "The model")
    if not model.built:
        raise ValueError(
            "The model is not built: give its first layer an input shape or "
            "call it on a batch before wrapping it.")
    for layer in iter_layers(model):
        if is_pruning_wrapper(layer):
            raise ValueError(
                f"The model is already wrapped for pruning (layer "
                f"{layer.name!r}). Wrap the original model once; to continue "
                "an IMP run, pass the wrapped model to fit directly.")
        if isinstance(layer, keras.Model):
            _check_graph_model(layer, f"Nested model {layer.name!r}")
    targets = [
        layer
        for layer in iter_layers(model)
        if not isinstance(layer, keras.Model)
        and is_prunable(layer)
        and (layer_filter is None or layer_filter(layer))
    ]
    if not targets:
        names = sorted({type(layer).__name__ for layer in iter_layers(model)})
        raise ValueError(
            "The model has no layer IMP can prune (layer types: "
            f"{', '.join(names) or 'none'}). Prunable layers are those tfmot "
            "supports with weights, e.g. Dense, Conv1D/2D/3D, "
            "SeparableConv, Embedding; subclasses of them are not supported "
            "by tfmot unless they implement tfmot's PrunableLayer.")
    target_ids = {id(layer) for layer in targets}

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        if id(layer) in target_ids:
            return _wrap_layer(_fresh_copy(layer), schedule)
        return layer.__class__.from_config(layer.get_config())

    with keras.utils.custom_object_scope({type(schedule).__name__: type(schedule)}):
        wrapped = keras.models.clone_model(model, clone_function=clone)
    _copy_weights(model, wrapped)
    filtered = [layer.name for layer in iter_layers(model)
                if not isinstance(layer, keras.Model) and is_prunable(layer)
                and id(layer) not in target_ids]
    _log_coverage(model, wrapped, filtered)
    return wrapped


@keras.utils.register_keras_serializable(package="keras_lottery")
class PrunableDepthwiseConv2D(keras.layers.DepthwiseConv2D, tfmot.sparsity.keras.PrunableLayer):
    """DepthwiseConv2D whose depthwise kernel tfmot prunes.

    tfmot's registry lists DepthwiseConv2D with no prunable weight, so its
    wrapper would leave the kernel dense. `wrap_model` copies each
    DepthwiseConv2D as this subclass (same config, same computation) and
    `strip_model` turns it back into a plain DepthwiseConv2D.
    """

    def get_prunable_weights(self):
        return [self.depthwise_kernel]


@keras.utils.register_keras_serializable(package="keras_lottery")
class PrunableMultiHeadAttention(keras.layers.MultiHeadAttention, tfmot.sparsity.keras.PrunableLayer):
    """MultiHeadAttention whose query, key, value and output kernels tfmot prunes.

    The same layer as tfmot prunes it, except that asking for the kernels
    first creates them: a MultiHeadAttention rebuilt from its config (as when
    a saved wrapped model is loaded) has its EinsumDense sublayers but not
    their kernels until its first call, and tfmot's wrapper asks for them when
    it is built. `strip_model` turns it back into a plain MultiHeadAttention.
    """

    def get_prunable_weights(self):
        if not hasattr(self._query_dense, "kernel"):
            _build_attention(self, self.name)
        return _attention_kernels(self)


def _attention_kernels(layer):
    """A MultiHeadAttention's query, key, value and output kernels (those built)."""
    parts = (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense)
    return [part.kernel for part in parts if hasattr(part, "kernel")]


# plain tf_keras class -> the prunable subclass `wrap_model` copies it as
_PRUNABLE_SUBCLASSES = {
    keras.layers.DepthwiseConv2D: PrunableDepthwiseConv2D,
    keras.layers.MultiHeadAttention: PrunableMultiHeadAttention,
}


def _fresh_copy(layer):
    """A copy of `layer` from its config, with its own (new) variables.

    A MultiHeadAttention copy is built right away: its query/key/value/output
    EinsumDense sublayers only create their kernels on the first call, and
    tfmot's wrapper asks for those kernels when it is built (the unbuilt copy
    failed with `'EinsumDense' object has no attribute 'kernel'`).
    """
    cls = _PRUNABLE_SUBCLASSES.get(type(layer), type(layer))
    new = cls.from_config(layer.get_config())
    if isinstance(new, keras.layers.MultiHeadAttention):
        _build_attention(new, layer.name)
    return new


def _build_attention(layer, name):
    """Creates every variable of a MultiHeadAttention layer by one call on zeros."""
    import tensorflow as tf

    if not getattr(layer, "_built_from_signature", False):
        raise ValueError(
            f"MultiHeadAttention layer {name!r} has no recorded input shapes "
            "(query_shape / value_shape are None in its config), so it cannot be "
            "copied for pruning. Call it on its inputs in the model before wrapping.")

    def zeros(shape):
        return tf.zeros([1 if d is None else d for d in tf.TensorShape(shape).as_list()])

    with tf.init_scope():
        layer(zeros(layer._query_shape), zeros(layer._value_shape), key=zeros(layer._key_shape))


def _variable_count(variables):
    seen, total = set(), 0
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            total += int(np.prod(v.shape))
    return total


def _log_coverage(source, wrapped, filtered=()):
    """Logs one line: which layers stay dense, and what share of the parameters is prunable.

    `filtered`: names of prunable layers the user's `layer_filter` left out,
    told apart from the layers tfmot cannot prune.
    """
    prunable = _variable_count(w for wrapper in pruned_layers(wrapped)
                               for w, _, _ in wrapper.pruning_vars)
    total = _variable_count(source.weights)
    dense = []
    for layer in iter_layers(wrapped):
        if isinstance(layer, keras.Model):
            continue
        inner = layer.layer if is_pruning_wrapper(layer) else layer
        pruned = ({id(w) for w, _, _ in layer.pruning_vars}
                  if is_pruning_wrapper(layer) else set())
        kernels = [w for w in inner.trainable_weights
                   if len(w.shape) >= 2 and id(w) not in pruned
                   and "bias" not in w.name.split("/")[-1]]
        if kernels and inner.name not in filtered:
            short = sorted({w.name.split("/")[-1].split(":")[0] for w in kernels})
            dense.append(f"{inner.name} ({type(inner).__name__}: {', '.join(short)})")
    def listed(names):
        return ", ".join(names[:6]) + (f", ... ({len(names) - 6} more)" if len(names) > 6 else "")

    left_out = (f"; {len(filtered)} layers left dense by layer_filter: {listed(list(filtered))}"
                if filtered else "")
    logger.info(
        "Pruning %d layers: %.1f%% of the model's %d parameters are prunable; %s%s. "
        "Biases and normalization parameters are never pruned.",
        len(pruned_layers(wrapped)), 100.0 * prunable / max(total, 1), total,
        f"{len(dense)} layers keep dense kernels (tfmot cannot prune them): {listed(dense)}"
        if dense else "no layer keeps a dense kernel", left_out)


def _wrap_layer(layer, schedule):
    """A tfmot pruning wrapper around `layer`, computing in the layer's own dtype.

    The wrapper is given the inner layer's dtype policy: under a global mixed
    policy, a layer the user kept in float32 (e.g. `Dense(..., dtype="float32")`
    as the output head) would otherwise get a float16 wrapper whose mask is read
    as float16 and multiplied with the float32 kernel (a `TypeError` in tfmot's
    mask op).
    """
    policy = layer.dtype_policy
    if not getattr(layer, "_autocast", True):
        # Embedding keeps its table out of autocasting under a mixed policy
        # (its variables are never cast): the wrapper, whose mask would be
        # read as float16 against that float32 table, computes in the
        # variable dtype. The layer still casts its own outputs.
        policy = policy.variable_dtype
    return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, dtype=policy)


def _copy_weights(source, wrapped):
    """Copies weights layer by layer (the wrappers add mask variables)."""
    src_layers = [l for l in iter_layers(source) if not isinstance(l, keras.Model)]
    dst_layers = [l for l in iter_layers(wrapped) if not isinstance(l, keras.Model)]
    if len(src_layers) != len(dst_layers):
        raise RuntimeError(
            "Internal error: wrapped model has a different layer structure "
            f"({len(dst_layers)} vs {len(src_layers)} layers).")
    for src, dst in zip(src_layers, dst_layers):
        inner = dst.layer if is_pruning_wrapper(dst) else dst
        inner.set_weights(src.get_weights())


def strip_model(model):
    """Returns a plain Keras model: wrappers removed, pruned weights exact zeros.

    Each kernel is multiplied by its mask before stripping, because tfmot's
    `strip_pruning` returns the inner layers as they are. tfmot's result also
    shares its variables with the wrapped model, so the returned model is a
    copy with its own variables: training the wrapped model further leaves
    it unchanged.

    Args:
      model: a model wrapped by `wrap_model`.

    Returns:
      A plain tf_keras model with the same architecture minus the wrappers.
    """
    for wrapper in pruned_layers(model):
        for weight, mask, _ in wrapper.pruning_vars:
            weight.assign(weight * mask)
    stripped = tfmot.sparsity.keras.strip_pruning(model)

    def plain(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=plain)
        plain_classes = {sub: base for base, sub in _PRUNABLE_SUBCLASSES.items()}
        new = plain_classes.get(type(layer), type(layer)).from_config(layer.get_config())
        if isinstance(new, keras.layers.MultiHeadAttention):
            _build_attention(new, layer.name)  # so set_weights finds every kernel
        return new

    copy = keras.models.clone_model(stripped, clone_function=plain)
    copy.set_weights(stripped.get_weights())
    return copy


@tf.custom_gradient
def _with_dense_gradient(table):
    """Identity whose gradient is a dense tensor, never `IndexedSlices`."""

    def grad(upstream):
        return tf.convert_to_tensor(upstream)

    return tf.identity(table), grad


def rates_with_output_layers(model, layer_rates, output_layer_rate):
    """`layer_rates` plus `output_layer_rate` for every layer of `output_layers(model)`.

    An explicit `layer_rates` entry wins; `layer_rates` itself is not changed.

    Args:
      model: a wrapped model.
      layer_rates: dict layer name -> per-round rate.
      output_layer_rate: the output layers' rate, or None (no entries added).

    Returns:
      A new dict layer name -> per-round rate.
    """
    rates = dict(layer_rates)
    if output_layer_rate is not None:
        for wrapper in output_layers(model):
            rates.setdefault(wrapper.layer.name, output_layer_rate)
    return rates


def output_layers(model):
    """The pruning wrappers nearest to each output of `model`, in output order.

    Walks the layer graph back from every output tensor through layers that
    are not pruned (activations, reshapes, normalisation, nested models) and
    stops at the first pruning wrapper on each path. A two-headed model gives
    both heads' last Dense layers; a residual branch merging into the output
    gives one wrapper per branch.

    Args:
      model: a wrapped Functional or Sequential model.

    Returns:
      A list of wrappers without repeats (empty if no path meets one).
    """
    found, seen = [], set()

    def visit(tensor, outer):
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return
        layer, node_index, tensor_index = history
        key = (id(layer), node_index, tensor_index, id(outer))
        if key in seen:
            return
        seen.add(key)
        if is_pruning_wrapper(layer):
            if all(layer is not f for f in found):
                found.append(layer)
            return
        node = layer._inbound_nodes[node_index]
        inputs = tf.nest.flatten(node.keras_inputs)
        if isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False):
            inner = dict(zip((id(t) for t in layer.inputs), inputs))
            visit(tf.nest.flatten(layer.outputs)[tensor_index], (inner, outer))
            return
        if not inputs and outer is not None:  # an InputLayer of a nested model
            mapping, parent = outer
            if id(tensor) in mapping:
                visit(mapping[id(tensor)], parent)
            return
        for t in inputs:
            visit(t, outer)

    for tensor in tf.nest.flatten(getattr(model, "outputs", None) or []):
        visit(tensor, None)
    if not found:
        wrappers = pruned_layers(model)
        return wrappers[-1:]
    return found


_MISSING_CALLBACKS = (
    "Layer {name!r} is wrapped for IMP, but fit runs without the IMP callbacks: "
    "nothing would keep its masks, and tfmot's wrapper stops at an in-graph "
    "assertion. Pass them to fit: model.fit(..., epochs=imp.epochs(per_round=N), "
    "callbacks=imp.callbacks()). To train a finished ticket without IMP, strip "
    "it first (keras_lottery.strip_model) or use keras_lottery.Ticket.")


def _checked_call(wrapper):
    """tfmot's forward pass, refusing training outside an IMP fit (see `require_imp_callbacks`)."""
    original = type(wrapper).call.__get__(wrapper)

    def call(inputs, training=None, **kwargs):
        if training is True and not getattr(wrapper, "_keras_lottery_in_fit", False):
            raise RuntimeError(_MISSING_CALLBACKS.format(name=wrapper.layer.name))
        return original(inputs, training=training, **kwargs)

    call._keras_lottery_checked = True
    return call


def require_imp_callbacks(model, active=None):
    """Makes training the wrapped `model` without `IMPCallback` a clear error.

    `IMP.wrap` installs the check: when a training step is traced (the
    first step of `fit`) a wrapper whose IMP fit has not begun raises a
    `RuntimeError` naming the layer and the fix, instead of tfmot's in-graph
    assertion about `UpdatePruningStep`. `IMPCallback` marks the model as in
    an IMP fit from `on_train_begin` to `on_train_end` (`active`).
    Inference (`predict`, `evaluate`) is never affected.

    Args:
      model: a model wrapped by `wrap_model`.
      active: None installs the check; True / False marks an IMP fit as
        begun / ended.
    """
    for wrapper in pruned_layers(model):
        if active is None:
            if "call" not in wrapper.__dict__:
                wrapper.call = _checked_call(wrapper)
        else:
            wrapper._keras_lottery_in_fit = bool(active)


def _lean_call(wrapper, dense_gradients=False):
    """The inner layer's own forward pass, for `bypass_wrapper_ops`."""
    inner = wrapper.layer
    accepts_training = "training" in inspect.getfullargspec(inner.call).args
    table = getattr(inner, "embeddings", None) if dense_gradients else None

    def forward(inputs, training, kwargs):
        if accepts_training:
            return inner.call(inputs, training=training, **kwargs)
        return inner.call(inputs, **kwargs)

    def call(inputs, training=None, **kwargs):
        if table is None:
            return forward(inputs, training, kwargs)
        # The lookup reads the table through an identity with a dense
        # gradient. object.__setattr__ skips Keras' attribute tracking, so the
        # layer's weights are untouched; the variable is back right after.
        object.__setattr__(inner, "embeddings", _with_dense_gradient(table))
        try:
            return forward(inputs, training, kwargs)
        finally:
            object.__setattr__(inner, "embeddings", table)

    call._keras_lottery_lean = True
    return call


def bypass_wrapper_ops(model, dense_embedding_gradients=False):
    """Drops tfmot's per-step bookkeeping from the wrappers' forward pass.

    On every call (training and inference) tfmot's wrapper increments its
    `pruning_step`, asserts it is >= 1, evaluates the schedule inside a
    `tf.cond`, and assigns `kernel * mask` to the kernel; under a
    `tf.distribute` strategy that assignment is also an all-reduce of every
    kernel. With an `IMPSchedule` the schedule never prunes in-graph, and once
    `masks.attach_mask_constraints` has made the optimizer re-apply each mask
    right after every update (and `write_masks` / `WeightSnapshot.restore`
    mask kernels whenever masks or weights change), all of that is redundant.
    This makes each wrapper call its inner layer directly, so a training step
    costs the dense step plus one mask multiply per kernel.

    Only wrappers driven by an `IMPSchedule` are changed (a stock tfmot
    schedule still needs its in-graph mask updates). It takes effect when the
    model's train/test functions are next traced (`fit` traces on its first
    step), leaves masks, weights and the layer's config untouched, and
    `pruning_step` then stops advancing. Undo with `restore_wrapper_ops`.

    Args:
      model: a model wrapped by `wrap_model`.
      dense_embedding_gradients: give embedding tables a dense gradient
        instead of `IndexedSlices`. Needed with the legacy optimizers
        (`keras.optimizers.legacy.*`), which refuse to run a variable's
        constraint (here: the mask) after a sparse update. Costs one dense
        table-sized gradient per step.

    Returns:
      The number of wrappers changed.

    Example:
      >>> masks.attach_mask_constraints(model)   # doctest: +SKIP
      >>> bypass_wrapper_ops(model)              # doctest: +SKIP
    """
    from keras_lottery.schedule import IMPSchedule

    changed = 0
    for wrapper in pruned_layers(model):
        if not isinstance(wrapper.pruning_schedule, IMPSchedule):
            continue
        if not getattr(wrapper.__dict__.get("call"), "_keras_lottery_lean", False):
            wrapper.call = _lean_call(wrapper, dense_embedding_gradients)
        changed += 1
    return changed


def restore_wrapper_ops(model):
    """Gives every wrapper tfmot's own forward pass back (see `bypass_wrapper_ops`)."""
    for wrapper in pruned_layers(model):
        if getattr(wrapper.__dict__.get("call"), "_keras_lottery_lean", False):
            del wrapper.call
