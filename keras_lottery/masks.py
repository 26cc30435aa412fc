"""Magnitude masks: ranking the surviving weights, layer-wise or globally.

The mask arithmetic (`compute_masks`) is plain NumPy on the host, run once per
round boundary; `read_masks` / `write_masks` move masks in and out of the tfmot
wrappers' `mask` variables. Masks only ever shrink: a weight pruned once is
never ranked again.
"""

import logging

import numpy as np
import tensorflow as tf

from keras_lottery import blocks as blocks_lib
from keras_lottery.schedule import weights_remaining
from keras_lottery.wrap import pruned_layers

logger = logging.getLogger("keras_lottery")

__all__ = [
    "SCOPES",
    "LAYER_FLOOR",
    "erk_scores",
    "erk_counts",
    "PrunableWeight",
    "prunable_weights",
    "compute_masks",
    "read_masks",
    "write_masks",
    "apply_masks",
    "attach_mask_constraints",
    "sparsity_by_layer",
    "overall_weights_remaining",
    "all_weights_remaining",
]

SCOPES = ("layerwise", "global", "erk")

# Default per-layer floor in "global" / "erk" scope, as a fraction of the
# layer-wise share (1 - rate) ** round: a tensor keeps at least a tenth of
# what layer-wise pruning would keep. One global threshold can otherwise
# empty whole layers whose weights are small by initialization (wide layers'
# Glorot/He scales are smaller), which disconnects the network; ten times
# below the average density is far below what global ranking gives layers
# in the papers' ResNet / VGG runs, so the floor only binds in such cases.
LAYER_FLOOR = 0.1


class PrunableWeight:
    """One prunable weight tensor of a wrapped model and its mask variable.

    Attributes:
      name: `"<layer name>/<weight name>"`, e.g. `"dense_1/kernel"`; the key of
        every mask dictionary in keras_lottery. When a layer has several
        prunable weights of the same name (MultiHeadAttention's query, key,
        value and output `kernel`s), each keeps as many trailing parts of its
        variable's name as make it unique within the layer:
        `"mha/query/kernel"`, `"mha/key/kernel"`, ...
      layer_name: the name of the wrapped (inner) layer, the key of per-layer
        prune-rate overrides.
      weight: the kernel variable.
      mask: tfmot's mask variable for it (same shape, 0/1 values).
      layer: the wrapped (inner) layer, when known (`prunable_weights` sets
        it; `blocks.kernel_blocks` reads its type).
    """

    def __init__(self, layer_name, weight, mask, name=None, layer=None):
        self.layer_name = layer_name
        self.layer = layer
        if name is None:
            name = f"{layer_name}/{_variable_path(weight)[-1]}"
        self.name = name
        self.weight = weight
        self.mask = mask

    @property
    def size(self):
        return int(np.prod(self.weight.shape))

    def __repr__(self):
        return f"PrunableWeight({self.name!r}, shape={tuple(self.weight.shape)})"


def prunable_weights(model):
    """All prunable weights of a wrapped model, in layer order.

    Raises:
      ValueError: if the model has no pruning wrappers, or names collide.
    """
    result = []
    for wrapper in pruned_layers(model):
        if not wrapper.built:
            raise ValueError(f"Layer {wrapper.name!r} is not built yet.")
        pairs = [(weight, mask) for weight, mask, _ in wrapper.pruning_vars]
        names = _unique_names(wrapper.layer.name, [weight for weight, _ in pairs])
        for (weight, mask), name in zip(pairs, names):
            result.append(PrunableWeight(wrapper.layer.name, weight, mask, name,
                                         layer=wrapper.layer))
    if not result:
        raise ValueError(
            "The model has no pruning wrappers: wrap it first with "
            "`keras_lottery.IMP(...).wrap(model)`.")
    names = [w.name for w in result]
    if len(set(names)) != len(names):
        raise ValueError(f"Prunable weight names are not unique: {names}. Give "
                         "nested models' layers distinct names.")
    return result


def _variable_path(weight):
    """The parts of a variable's name, without the `:0` suffix."""
    return weight.name.split(":")[0].split("/")


def _unique_names(layer_name, weights):
    """`"<layer>/<suffix>"` names, each suffix the shortest tail of the
    variable's name that is unique among the layer's prunable weights.

    A layer whose weights have distinct last parts gets today's names
    (`dense_1/kernel`), so saved tickets and reports stay valid.
    """
    paths = [_variable_path(w) for w in weights]
    longest = max((len(p) for p in paths), default=1)
    for depth in range(1, longest + 1):
        tails = ["/".join(p[-depth:]) for p in paths]
        if len(set(tails)) == len(tails):
            return [f"{layer_name}/{t}" for t in tails]
    return [f"{layer_name}/{'/'.join(p)}" for p in paths]


def _keep_count(size, rate, round_index, survivors):
    keep = int(round(size * weights_remaining(rate, round_index)))
    return max(1, min(keep, survivors)) if survivors else 0


def _top_k_mask(magnitudes, alive, keep):
    """Mask keeping the `keep` largest magnitudes among `alive` (stable ties)."""
    flat = np.where(alive.ravel(), magnitudes.ravel(), -np.inf)
    order = np.argsort(-flat, kind="stable")
    new = np.zeros(flat.shape, np.float32)
    new[order[:keep]] = 1.0
    return new.reshape(magnitudes.shape)


def compute_masks(weights, masks, round_index, prune_rate, scope="layerwise",
                  layer_rates=None, layer_of=None, layer_floor=LAYER_FLOOR, blocks=None,
                  block_score="l2"):
    """Magnitude masks for round `round_index` from the current weights.

    Only surviving weights (mask == 1) are ranked, so masks only shrink. The
    number kept is computed from the layer's (or the model's) total size, not
    compounded from the last round, so weights remaining stay within one
    weight of (1 - rate) ** round_index.

    In "global" and "erk" scope no weight tensor is left empty: each keeps at
    least `layer_floor` times the fraction layer-wise pruning would keep
    ((1 - rate) ** round_index), and at least one weight, as long as it has
    that many survivors. A tensor held at its floor is logged (a warning on
    the "keras_lottery" logger, naming it); the other tensors give up the
    weights the floor takes, so the total is unchanged.

    With `blocks`, a tensor given a block is ranked and counted in whole
    blocks (see `keras_lottery.blocks`): each block is scored by
    `block_score`, the counts above (the layer-wise share, the global total,
    ERK's per-tensor densities, the floor) are numbers of blocks, and the new
    mask keeps or prunes every block whole. Tensors without a block (None,
    or missing from `blocks`) are ranked weight by weight as usual, and in
    global scope compete with the blocks on the same scale (a weight is a
    1x1 block).

    Args:
      weights: dict name -> ndarray of current weight values.
      masks: dict name -> ndarray of current 0/1 masks (same keys and shapes).
      round_index: the round the new masks are for (>= 1).
      prune_rate: per-round rate for layers without an override.
      scope: "layerwise" (each layer keeps the same fraction), "global" (one
        magnitude threshold across all layers without an override) or "erk"
        (Erdős–Rényi-kernel, Evci et al. 2020: each tensor keeps a fraction
        proportional to (sum of its dimensions) / (product of its
        dimensions), scaled so the total matches, capped at its survivors;
        within a tensor the largest magnitudes are kept).
      layer_rates: optional dict layer name -> rate, pruned layer-wise at that
        rate in any scope (the papers prune the output layer at half rate).
      layer_of: dict weight name -> layer name (default: the part before "/").
      layer_floor: in "global" / "erk" scope, the least fraction of the
        layer-wise share each tensor keeps, in [0, 1] (default 0.1: global
        ranking may move up to 90% of a tensor's share to other tensors; 0
        turns the floor off except for the one weight every tensor keeps).
      blocks: optional dict weight name -> per-axis block sizes (a tuple of
        the weight's rank, e.g. `(4, 1)` for a Dense kernel, from
        `blocks.kernel_blocks`) or None (unstructured).
      block_score: how a block is ranked: `"l2"` (root-mean-square of its
        weights, the default) or `"l1"` (mean |w|).

    Returns:
      dict name -> new float32 0/1 mask.

    Raises:
      ValueError: for an unknown scope or block score, a bad rate, floor or
        block, an override naming no prunable layer, or a current mask that
        is not made of whole blocks.

    Example:
      >>> w = {"d/kernel": np.array([[0.1, -3.0], [2.0, 0.5]])}
      >>> m = {"d/kernel": np.ones((2, 2))}
      >>> compute_masks(w, m, 1, 0.5)["d/kernel"].tolist()
      [[0.0, 1.0], [1.0, 0.0]]
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}.")
    if set(weights) != set(masks):
        raise ValueError("weights and masks must have the same keys.")
    if isinstance(layer_floor, bool) or not isinstance(layer_floor, (int, float)) or not (
            0.0 <= layer_floor <= 1.0):
        raise ValueError(f"layer_floor must be a fraction in [0, 1], got {layer_floor!r}.")
    layer_rates = dict(layer_rates or {})
    layer_of = layer_of or {name: name.rsplit("/", 1)[0] for name in weights}
    unknown = set(layer_rates) - set(layer_of.values())
    if unknown:
        raise ValueError(
            f"layer_rates names layers that are not pruned: {sorted(unknown)}; "
            f"prunable layers are {sorted(set(layer_of.values()))}.")
    for name, rate in [("prune_rate", prune_rate)] + list(layer_rates.items()):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Rate for {name!r} must be in [0, 1), got {rate!r}.")

    blocks_lib.check_block_score(block_score)
    blocks = _check_blocks(blocks or {}, weights)

    new_masks = {}
    shared = []
    for name in weights:
        block = blocks.get(name)
        if block is None:
            alive = np.asarray(masks[name]) > 0.5
            magnitudes = np.abs(np.asarray(weights[name], np.float64))
        else:  # rank the block grid: each entry is one block
            alive = blocks_lib.block_alive(masks[name], block, name)
            magnitudes = blocks_lib.block_scores(weights[name], block, block_score)
        layer = layer_of[name]
        if scope == "layerwise" or layer in layer_rates:
            rate = layer_rates.get(layer, prune_rate)
            keep = _keep_count(alive.size, rate, round_index, int(alive.sum()))
            new_masks[name] = _top_k_mask(magnitudes, alive, keep)
        else:
            shared.append((name, magnitudes, alive))
    if shared:
        total = sum(alive.size for _, _, alive in shared)
        survivors = sum(int(alive.sum()) for _, _, alive in shared)
        keep = _keep_count(total, prune_rate, round_index, survivors)
        density = weights_remaining(prune_rate, round_index)
        floors = {name: min(int(alive.sum()), max(1, int(np.ceil(layer_floor * density * alive.size))))
                  for name, _, alive in shared}
        allocate = _allocate_global if scope == "global" else _allocate_erk
        shapes = {name: tuple(np.shape(weights[name])) or (1,) for name, _, _ in shared}
        new_masks.update(allocate(shared, keep, floors, shapes))
        at_floor = [name for name, _, _ in shared if int(new_masks[name].sum()) == floors[name]]
        plain = _unfloored_counts(shared, keep, scope, shapes) if at_floor else {}
        held = [name for name in at_floor if plain[name] < floors[name]]
        if held:
            sizes = {name: alive.size for name, _, alive in shared}
            logger.warning(
                "%s scope, round %d: %d weight tensor(s) would keep less than the "
                "per-layer floor (%.3g of the layer-wise share, %.3g%% of each tensor) "
                "and are held at it: %s.%s", {"global": "Global", "erk": "ERK"}[scope], round_index,
                len(held), layer_floor, 100.0 * layer_floor * density,
                ", ".join(f"{n} ({plain[n]} of {sizes[n]} weights -> {floors[n]})"
                          for n in held),
                " Pass scope='erk' for a per-layer allocation that keeps every layer "
                "alive by design." if scope == "global" else "")
    result = {}
    for name in weights:
        block = blocks.get(name)
        result[name] = (new_masks[name] if block is None else
                        blocks_lib.expand_blocks(new_masks[name], block, np.shape(weights[name])))
    return result


def _check_blocks(blocks, weights):
    unknown = set(blocks) - set(weights)
    if unknown:
        raise ValueError(f"blocks names weights that are not given: {sorted(unknown)}.")
    for name, block in blocks.items():
        if block is None:
            continue
        shape = np.shape(weights[name])
        if (len(block) != len(shape) or any(isinstance(b, bool) or int(b) != b or b < 1
                                            for b in block)):
            raise ValueError(f"Block {block!r} for {name!r} must give a positive block size "
                             f"for each of its {len(shape)} axes (shape {shape}).")
    return {name: None if block is None or all(b == 1 for b in block) else tuple(int(b) for b in block)
            for name, block in blocks.items()}


def _allocate_global(shared, keep, floors, shapes=None):
    """One magnitude ranking over every tensor; each first keeps its floor.

    Reserving each tensor's `floor` largest survivors first and ranking the
    rest globally gives each tensor max(floor, its count above one common
    threshold): the global ranking wherever the floor does not bind.
    """
    reserved = {name: _top_k_mask(m, a, floors[name]) > 0.5 for name, m, a in shared}
    rest = max(0, keep - sum(floors.values()))
    flat_mags = np.concatenate([m.ravel() for _, m, _ in shared])
    flat_rest = np.concatenate([(a & ~reserved[n]).ravel() for n, _, a in shared])
    flat_mask = _top_k_mask(flat_mags, flat_rest, rest)
    result, start = {}, 0
    for name, magnitudes, _ in shared:
        stop = start + magnitudes.size
        part = flat_mask[start:stop].reshape(magnitudes.shape)
        result[name] = np.maximum(part, reserved[name].astype(np.float32))
        start = stop
    return result


def erk_scores(shapes):
    """dict name -> Erdős–Rényi-kernel score (sum of dims) / (product of dims)."""
    return {name: float(sum(shape)) / float(np.prod(shape)) for name, shape in shapes.items()}


def erk_counts(shapes, keep, lower, upper, units=None):
    """Per-tensor counts proportional to the ERK score, summing to `keep`.

    Each tensor gets clip(eps * score * size, lower, upper), eps chosen (by
    bisection) so the counts sum to `keep`; a tensor capped at `upper` (its
    survivors, at most all its weights) gives the excess to the others.
    Integer counts come from the largest remainders.

    `units` (optional dict name -> count) replaces a tensor's size by the
    number of units it is pruned in (its blocks): the density still follows
    the ERK score of its weight shape, and the counts are in units.
    """
    names = list(shapes)
    units = units or {}
    size = np.array([float(units.get(n, np.prod(shapes[n]))) for n in names])
    scores = erk_scores(shapes)
    score = np.array([scores[n] for n in names]) * size
    low = np.array([float(lower[n]) for n in names])
    high = np.array([float(upper[n]) for n in names])

    def counts(eps):
        return np.clip(eps * score, low, high)

    lo, hi = 0.0, float(np.max(high / score)) if len(names) else 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if counts(mid).sum() < keep:
            lo = mid
        else:
            hi = mid
    real = counts(hi)
    whole = np.maximum(np.floor(real), low).astype(np.int64)
    missing = int(keep - whole.sum())
    if missing > 0:
        room = whole < high
        order = np.argsort(-(real - whole) + np.where(room, 0.0, np.inf), kind="stable")
        for i in order[:missing]:
            if whole[i] < high[i]:
                whole[i] += 1
    return {n: int(c) for n, c in zip(names, whole)}


def _allocate_erk(shared, keep, floors, shapes):
    upper = {name: int(a.sum()) for name, _, a in shared}
    units = {name: a.size for name, _, a in shared}
    counts = erk_counts(shapes, keep, floors, upper, units)
    return {name: _top_k_mask(m, a, counts[name]) for name, m, a in shared}


def _unfloored_counts(shared, keep, scope, shapes):
    """How many weights of each tensor the allocation would keep without the floor."""
    if scope == "global":
        flat = np.concatenate([np.where(a, m, -np.inf).ravel() for _, m, a in shared])
        if keep <= 0:
            return {name: 0 for name, _, _ in shared}
        threshold = np.partition(flat, flat.size - keep)[flat.size - keep]
        return {name: int(np.sum(a & (m >= threshold))) for name, m, a in shared}
    upper = {n: int(a.sum()) for n, _, a in shared}
    units = {n: a.size for n, _, a in shared}
    return erk_counts(shapes, keep, {n: 0 for n in shapes}, upper, units)


def read_masks(model):
    """dict weight name -> current 0/1 mask (float32 ndarray) of a wrapped model."""
    return {w.name: w.mask.numpy().astype(np.float32) for w in prunable_weights(model)}


def write_masks(model, masks):
    """Writes masks into the wrappers' mask variables and zeroes pruned weights.

    Works in a `tf.distribute` strategy's cross-replica context (e.g. from a
    callback): the assignment reaches every replica.

    Raises:
      ValueError: for missing names or wrong shapes.
    """
    entries = prunable_weights(model)
    missing = {w.name for w in entries} - set(masks)
    if missing:
        raise ValueError(f"No mask given for {sorted(missing)}.")
    for w in entries:
        mask = np.asarray(masks[w.name], np.float32)
        if tuple(mask.shape) != tuple(w.mask.shape):
            raise ValueError(f"Mask for {w.name!r} has shape {mask.shape}, "
                             f"expected {tuple(w.mask.shape)}.")
        w.mask.assign(tf.constant(mask, dtype=w.mask.dtype))
    apply_masks(model)


def apply_masks(model):
    """Sets every pruned weight to exactly zero (weight <- weight * mask)."""
    for w in prunable_weights(model):
        w.weight.assign(w.weight * tf.cast(w.mask, w.weight.dtype))


class _MaskConstraint:
    """Variable constraint re-applying the mask right after each optimizer step."""

    def __init__(self, mask, previous=None):
        self.mask = mask
        self.previous = previous

    def __call__(self, value):
        if self.previous is not None:
            value = self.previous(value)
        # where, not multiply: a NaN or inf at a pruned position (a diverging
        # step) must still come out as exactly zero
        return tf.where(self.mask > 0, value, tf.zeros_like(value))


def _component_variables(variable):
    """Every variable object an optimizer may read the constraint of.

    That is the variable itself, the per-device components of a distributed
    variable, and, under a mixed-precision policy, the float32 variable inside
    each `AutoCastVariable` (the optimizer updates, and reads the constraint
    of, the inner variable: a constraint on the wrapper alone is never run).
    """
    found = [variable]
    values = getattr(variable, "values", None)
    if values is not None and not callable(values):
        found.extend(values)
    elif callable(values):
        try:
            found.extend(values())
        except TypeError:
            pass
    result = []
    for var in found:
        while var is not None and all(var is not r for r in result):
            result.append(var)
            var = getattr(var, "_variable", None)  # AutoCastVariable's inner variable
    return result


def attach_mask_constraints(model):
    """Makes the optimizer re-apply each mask right after every update.

    tfmot's wrapper multiplies kernels by their masks at the start of each
    forward pass, so between an optimizer step and the next forward pass a
    pruned weight holds `-lr * gradient`, which callbacks, checkpoints and
    exports would see. Keras applies a variable's `constraint` right after the
    optimizer update, so masking there keeps pruned weights exactly zero after
    every step. Any constraint the user set (e.g. MaxNorm) still runs first.

    tf.Variable exposes no setter for `constraint`, hence `_constraint`; this
    is the only place keras_lottery touches it.
    """
    for w in prunable_weights(model):
        for variable in _component_variables(w.weight):
            current = getattr(variable, "_constraint", None)
            if isinstance(current, _MaskConstraint):
                continue
            if hasattr(variable, "_constraint"):
                variable._constraint = _MaskConstraint(w.mask, current)


def sparsity_by_layer(model):
    """dict weight name -> fraction of weights remaining (mask ones / size)."""
    return {name: float(m.mean()) for name, m in read_masks(model).items()}


def overall_weights_remaining(model):
    """Fraction of all prunable weights remaining, over every wrapped layer."""
    masks = read_masks(model)
    total = sum(m.size for m in masks.values())
    return float(sum(m.sum() for m in masks.values()) / total)


def all_weights_remaining(model):
    """Fraction of ALL the model's parameters that are not pruned.

    Unlike `overall_weights_remaining` (prunable weights only), the
    denominator is every weight of the model as Keras counts it (biases,
    normalization parameters and statistics, layers tfmot cannot prune such
    as DepthwiseConv2D), without the wrappers' own mask / threshold / step
    variables; the pruned weights are the mask zeros.

    Raises:
      ValueError: if the model has no pruning wrappers.
    """
    entries = prunable_weights(model)
    bookkeeping = set()
    for wrapper in pruned_layers(model):
        inner = {id(v) for v in wrapper.layer.weights}
        bookkeeping |= {id(v) for v in wrapper.weights if id(v) not in inner}
    seen, total = set(), 0
    for v in model.weights:
        if id(v) in bookkeeping or id(v) in seen:
            continue
        seen.add(id(v))
        total += int(np.prod(v.shape))
    pruned = sum(int(w.mask.shape.num_elements()) - int(np.sum(w.mask.numpy() > 0.5))
                 for w in entries)
    return float((total - pruned) / total)
