"""Block-structured masks: pruning whole blocks of a kernel at a time.

A block setting `(rows, cols)` cuts a kernel's last two axes (inputs,
outputs) into tiles of `rows` consecutive inputs by `cols` consecutive
outputs; IMP then keeps or prunes each tile as a whole. `(4, 1)` on a Dense
kernel of shape `(in, out)` groups 4 consecutive inputs of one output unit:
after TFLite transposes the kernel to `(out, in)` that is the 1x4 block its
converter stores as a native sparse FULLY_CONNECTED (docs/block-tickets.md).

Which kernels take the block (`kernel_blocks`):

- `Dense` kernels `(in, out)`: block `(rows, cols)`;
- `Conv1D` / `Conv2D` / `Conv3D` kernels `(*spatial, cin, cout)`: block
  `(1, ..., 1, rows, cols)`, i.e. `rows` consecutive input channels of one
  spatial tap for `cols` output channels;
- every other prunable weight (Embedding tables, recurrent kernels,
  attention's EinsumDense kernels, transposed / separable / depthwise
  convolutions) stays unstructured: its axes do not mean (inputs, outputs)
  in that order, so a (4, 1) tile there would not be what a runtime can use.

A kernel whose axis length is not a multiple of the block keeps a partial
last block (e.g. 30 inputs in blocks of 4: seven of 4 and one of 2). It is
one block like the others: counted as one, scored by its mean (see
`block_scores`), kept or pruned whole.

Counts are in blocks: a tensor of B blocks keeps round(B * (1 - p) ** r) of
them after round r (at least one), so with partial blocks the fraction of
*weights* kept can differ from (1 - p) ** r by less than one block's share.
"""

import numpy as np

__all__ = [
    "BLOCK_SCORES",
    "parse_block",
    "format_block",
    "kernel_blocks",
    "block_grid_shape",
    "block_scores",
    "block_alive",
    "expand_blocks",
    "is_block_structured",
    "block_config",
    "check_block_layers",
    "check_block_score",
    "BLOCK_LAYERS",
]

#: how a block's magnitude is scored: mean |w| ("l1") or root-mean-square ("l2")
BLOCK_SCORES = ("l1", "l2")


def parse_block(value):
    """A block setting as a `(rows, cols)` tuple, or None for unstructured.

    Accepts None, `"4x1"` (also `"4X1"`, `"4,1"`), or a pair of positive
    integers; `(1, 1)` and `"1x1"` mean unstructured and give None.

    Raises:
      ValueError: for anything else (a zero or negative size, one or three
        numbers, a non-integer), naming the value and the expected form.

    Example:
      >>> parse_block("4x1"), parse_block((1, 1)), parse_block(None)
      ((4, 1), None, None)
    """
    if value is None:
        return None
    original = value
    if isinstance(value, str):
        text = value.strip().lower().replace(",", "x")
        parts = text.split("x")
        try:
            value = tuple(int(p) for p in parts) if all(p.strip() for p in parts) else None
        except ValueError:
            value = None
    else:
        try:
            value = tuple(value)
        except TypeError:
            value = None
    if (value is None or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                   for v in value)):
        raise ValueError(
            f"block must be two positive integers (rows x cols of a kernel's (inputs, "
            f"outputs) axes), e.g. (4, 1) or '4x1'; got {original!r}. Use None or (1, 1) "
            "for unstructured masks.")
    value = (int(value[0]), int(value[1]))
    return None if value == (1, 1) else value


def format_block(block):
    """`(4, 1)` -> `"4x1"`; None -> None."""
    block = parse_block(block)
    return None if block is None else f"{block[0]}x{block[1]}"


def _blockable(layer):
    """True for the layers whose kernel's last two axes are (inputs, outputs)."""
    from keras_lottery._keras import keras

    layers = keras.layers
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose,
                          layers.SeparableConv1D, layers.SeparableConv2D,
                          layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        return False
    return isinstance(layer, (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D))


def kernel_blocks(entries, block, exempt=()):
    """dict weight name -> the full-rank block of each prunable weight (None: unstructured).

    Args:
      entries: `masks.PrunableWeight`s (`masks.prunable_weights(model)`); their
        wrapped layer must be reachable as `entries[i].layer`, or pass
        `(name, layer, shape)` triples.
      block: a block setting (see `parse_block`); None gives every weight None.
      exempt: names of layers whose kernels stay unstructured anyway (e.g.
        the output layer: `IMP(block_layers="hidden")`).

    Returns:
      dict name -> tuple of per-axis block sizes (same rank as the weight), or
      None for a weight left unstructured (see the module docstring).
    """
    block = parse_block(block)
    result = {}
    for entry in entries:
        if isinstance(entry, tuple):
            name, layer, shape = entry
        else:
            name, layer, shape = entry.name, entry.layer, tuple(entry.weight.shape)
        short = name.rsplit("/", 1)[-1]
        layer_name = name.rsplit("/", 1)[0] if layer is None else layer.name
        if (block is None or short != "kernel" or len(shape) < 2 or layer_name in exempt
                or not _blockable(layer)):
            result[name] = None
        else:
            result[name] = (1,) * (len(shape) - 2) + block
    return result


def block_grid_shape(shape, block):
    """The number of blocks along each axis (a partial last block counts as one)."""
    return tuple(-(-int(s) // int(b)) for s, b in zip(shape, block))


def _tiles(array, block, fill):
    """`array` padded with `fill` to whole blocks and reshaped to (g0, b0, g1, b1, ...)."""
    grid = block_grid_shape(array.shape, block)
    padded = np.pad(array, [(0, g * b - s) for s, g, b in zip(array.shape, grid, block)],
                    constant_values=fill)
    tiled = []
    for g, b in zip(grid, block):
        tiled += [g, b]
    return padded.reshape(tiled), grid


def block_scores(weights, block, score="l2"):
    """Each block's magnitude: mean |w| ("l1") or sqrt(mean w**2) ("l2").

    The mean over the block's real entries, so a partial last block is
    scored on the same scale as full ones (for full blocks this ranks
    exactly as the block's L1 or L2 norm).

    Returns:
      float64 array of the block-grid shape.
    """
    check_block_score(score)
    values = np.asarray(weights, np.float64)
    values = np.abs(values) if score == "l1" else values * values
    sums, grid = _tiles(values, block, 0.0)
    counts, _ = _tiles(np.ones(values.shape), block, 0.0)
    axes = tuple(range(1, 2 * len(grid), 2))
    mean = sums.sum(axis=axes) / counts.sum(axis=axes)
    return mean if score == "l1" else np.sqrt(mean)


def block_alive(mask, block, name="weight"):
    """Which blocks survive: a block is alive when all its weights are.

    Raises:
      ValueError: if some block is partly pruned (the mask was not made
        with this block setting: a run cannot change its block setting).
    """
    alive = np.asarray(mask) > 0.5
    # padding is neutral: True for "all alive", False for "any alive"
    full, grid = _tiles(alive, block, True)
    part, _ = _tiles(alive, block, False)
    axes = tuple(range(1, 2 * len(grid), 2))
    every, some = full.all(axis=axes), part.any(axis=axes)
    if np.any(some & ~every):
        raise ValueError(
            f"The mask of {name!r} is not made of whole {'x'.join(map(str, block))} blocks "
            f"({int(np.sum(some & ~every))} block(s) are partly pruned): it was not made "
            "with this block setting. Keep the block setting a run started with, or start "
            "a new run from the dense model.")
    return every


def expand_blocks(grid_mask, block, shape):
    """A block-grid 0/1 array repeated back to a weight mask of `shape`."""
    result = np.asarray(grid_mask, np.float32)
    for axis, b in enumerate(block):
        result = np.repeat(result, b, axis=axis)
    return np.ascontiguousarray(result[tuple(slice(0, int(s)) for s in shape)])


def is_block_structured(mask, block):
    """True if every block of `mask` is all ones or all zeros."""
    try:
        block_alive(mask, block)
    except ValueError:
        return False
    return True


def check_block_score(score, what="block_score"):
    """`score` if it is one of `BLOCK_SCORES`; raises ValueError naming `what` otherwise."""
    if score not in BLOCK_SCORES:
        raise ValueError(f"{what} must be one of {BLOCK_SCORES}, got {score!r}.")
    return score


BLOCK_LAYERS = ("all", "hidden")


def check_block_layers(value):
    """`"all"`, `"hidden"` or a list of layer names; raises ValueError otherwise."""
    if isinstance(value, str):
        if value not in BLOCK_LAYERS:
            raise ValueError(f"block_layers must be one of {BLOCK_LAYERS} or a list of layer "
                             f"names, got {value!r}.")
        return value
    try:
        names = [str(n) for n in value]
    except TypeError:
        raise ValueError(f"block_layers must be one of {BLOCK_LAYERS} or a list of layer "
                         f"names, got {value!r}.") from None
    return names


def block_config(block, block_score="l2", exempt=()):
    """The block setting as report / checkpoint entries (JSON-ready).

    Returns:
      `{"block": "4x1", "block_score": score}` (the block as `format_block`
      writes it, as the CLI's `--block` takes it), or `{"block": None,
      "block_score": None}` for unstructured masks (the score is unused then,
      so it does not make two unstructured runs differ).
    """
    block = format_block(block)
    if block is None:
        return {"block": None, "block_score": None}
    config = {"block": block, "block_score": block_score}
    if exempt:
        config["block_exempt"] = sorted(exempt)
    return config
