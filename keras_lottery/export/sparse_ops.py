"""What a converted TFLite file does with each pruned kernel, read from the file.

The converter's sparsity pass (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`)
stores a kernel with enough zeros in TFLite's sparse encoding. Whether that
makes inference faster depends on what it wrote, which this module reads
back from the flatbuffer (TFLite's schema), not from what was asked for:

- `"sparse"`: the op's filter tensor itself carries sparsity parameters
  (a native sparse tensor). The op's kernel computes on the compressed
  values; with a block map, the block shape is read from it (e.g. `1x4`
  in TFLite's (out, in) filter layout = 4 consecutive inputs of one output
  unit, a `(4, 1)` block of the Keras (in, out) kernel).
  A blocked axis that is not a multiple of the block (`ragged_block`) is
  flagged: on ai-edge-litert 2.3 both the float 1x4 and the int8 1x16
  kernels gave outputs off from Keras for such layers (docs/export.md).
- `"densify"`: the filter is the output of a `DENSIFY` op whose input is
  the sparse tensor. The interpreter expands it to a dense tensor and the
  op runs its dense kernel: a smaller file, the dense speed.
- `"dense"`: a plain dense filter.

Which engine runs the op is read from the interpreter that was built for
the file (`TFLiteModel.interpreter`): an op whose weights are inputs of a
`DELEGATE` node runs in the delegate (XNNPACK in ai-edge-litert), else on
TFLite's builtin kernel.

Example:
    lite = kl.export.TFLiteModel("ticket.tflite")
    for row in kl.export.kernel_ops(lite.content, interpreter=lite.interpreter):
        print(row["layer"], row["op"], row["storage"], row["block"], row["runs_on"])
"""

import numpy as np

from keras_lottery.export import formats
from keras_lottery.export.lite import _schema

#: TFLite op -> index of its filter (weights) input.
KERNEL_OPS = {"FULLY_CONNECTED": 1, "CONV_2D": 1, "DEPTHWISE_CONV_2D": 1,
              "TRANSPOSE_CONV": 1, "CONV_3D": 1}

SPARSE, DENSIFY, DENSE = "sparse", "densify", "dense"

_ITEMSIZE = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int16": 2, "int32": 4}

# TFLite filter layout -> Keras kernel layout, as axis permutations
# (Keras axis i is TFLite axis _TO_KERAS[op][i]).
_TO_KERAS = {"FULLY_CONNECTED": (1, 0), "CONV_2D": (1, 2, 3, 0)}


def _op_names():
    schema_fb = _schema()
    return {v: k for k, v in vars(schema_fb.BuiltinOperator).items() if not k.startswith("_")}


def _type_names():
    schema_fb = _schema()
    return {v: k.lower() for k, v in vars(schema_fb.TensorType).items() if not k.startswith("_")}


def _ints(getter, length):
    return [int(getter(i)) for i in range(length)]


def _sparsity(tensor):
    """The tensor's sparsity parameters as a dict, or None for a dense tensor."""
    sp = tensor.Sparsity()
    if sp is None:
        return None
    schema_fb = _schema()
    shape = _ints(tensor.Shape, tensor.ShapeLength())
    block_map = _ints(sp.BlockMap, sp.BlockMapLength())
    dims = []
    for d in range(sp.DimMetadataLength()):
        meta = sp.DimMetadata(d)
        dims.append("sparse_csr" if meta.Format() == schema_fb.DimensionType.SPARSE_CSR
                    else "dense")
    block = [1] * len(shape)
    for i, axis in enumerate(block_map):
        block[axis] = int(sp.DimMetadata(len(shape) + i).DenseSize())
    return {"traversal_order": _ints(sp.TraversalOrder, sp.TraversalOrderLength()),
            "block_map": block_map, "dim_formats": dims,
            "block": block if block_map else None}


def _producers(subgraph, codes):
    """tensor index -> (op index, op name) of the op writing it."""
    out = {}
    for j in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(j)
        for t in _ints(op.Outputs, op.OutputsLength()):
            out[t] = (j, codes[op.OpcodeIndex()])
    return out


def _delegated_tensors(interpreter):
    """Tensor indices a DELEGATE node takes as inputs, or None if not readable."""
    if interpreter is None:
        return None
    try:
        details = interpreter._get_ops_details()  # the only per-node view either API has
    except Exception:  # an interpreter without it: say nothing rather than guess
        return None
    delegated = set()
    for op in details:
        if op.get("op_name") == "DELEGATE":
            delegated.update(int(i) for i in op.get("inputs", ()) if int(i) >= 0)
    return delegated


def _block_text(block):
    return "x".join(str(b) for b in block) if block else None


def _keras_block(op_name, block):
    perm = _TO_KERAS.get(op_name)
    if block is None or perm is None or len(perm) != len(block):
        return None
    return tuple(block[p] for p in perm)


def _match_layers(rows, plain):
    """Sets row["layer"]: the Keras layer whose kernel has the filter's shape.

    A layer whose name is a path component of the filter's or the op
    output's tensor name wins; otherwise the first unmatched layer (Keras
    order) of that kernel shape.
    """
    kernels = [(name, tuple(k.shape)) for name, k in formats.prunable_kernels(plain)]
    used = set()

    def shape_fits(row, shape):
        perm = _TO_KERAS.get(row["op"])
        filt = row["filter_shape"]
        if perm is not None and len(perm) == len(filt):
            return tuple(filt[p] for p in perm) == shape
        return int(np.prod(filt)) == int(np.prod(shape))

    for row in rows:
        parts = set()
        for name in row.pop("_names"):
            for piece in name.replace(";", "/").split("/"):
                parts.add(piece)
        by_name = [n for n, s in kernels if n in parts and n not in used and shape_fits(row, s)]
        by_shape = [n for n, s in kernels if n not in used and shape_fits(row, s)]
        chosen = (by_name or by_shape or [None])[0]
        row["layer"] = chosen
        if chosen is not None:
            used.add(chosen)


def kernel_ops(content, plain=None, interpreter=None):
    """One row per weighted op (FULLY_CONNECTED, CONV_2D, ...) of a TFLite file.

    Args:
      content: the flatbuffer bytes (`TFLiteModel.content`).
      plain: the Keras model it was converted from, to name each op's layer
        (by tensor name, else by kernel shape in layer order); optional.
      interpreter: the interpreter that runs the file
        (`TFLiteModel.interpreter`), to say which ops its delegate took;
        optional.

    Returns:
      A list of dicts, in the file's op order: `layer` (or None),
      `op`, `filter_shape` (TFLite layout), `dtype`, `storage` (`"sparse"`,
      `"densify"` or `"dense"`), `block` (e.g. `"1x4"`, TFLite layout; None
      for a dense filter or a sparse one without blocks), `keras_block` (the
      same block in the Keras kernel's axes, e.g. `(4, 1)`, for Dense and
      Conv2D), `ragged_block` (a native sparse filter whose blocked axis is
      not a multiple of the block: TFLite's block-sparse kernels gave wrong
      outputs for such layers, see docs/export.md), `stored_values` (values
      held in the file for this filter; None if its type is packed or
      unknown), `weights` (entries of the dense filter), and `runs_on`
      (`"delegate"`, `"builtin"`, or None when no interpreter was given).

    Example:
      >>> lite = kl.export.TFLiteModel(kl.export.tflite(ticket, sparse=True))  # doctest: +SKIP
      >>> [r["storage"] for r in kl.export.kernel_ops(lite.content, ticket,
      ...                                             lite.interpreter)]       # doctest: +SKIP
      ['sparse', 'sparse', 'sparse']
    """
    schema_fb = _schema()
    model = schema_fb.Model.GetRootAsModel(content, 0)
    op_names = _op_names()
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()),
                                  "CUSTOM"))
    types = _type_names()
    subgraph = model.Subgraphs(0)
    producers = _producers(subgraph, codes)
    delegated = _delegated_tensors(interpreter)
    rows = []
    for j in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(j)
        name = codes[op.OpcodeIndex()]
        if name not in KERNEL_OPS:
            continue
        inputs = _ints(op.Inputs, op.InputsLength())
        index = KERNEL_OPS[name]
        if index >= len(inputs) or inputs[index] < 0:
            continue
        filt = inputs[index]
        source, storage = filt, DENSE
        producer = producers.get(filt)
        if producer is not None and producer[1] == "DENSIFY":
            densify = subgraph.Operators(producer[0])
            source, storage = int(densify.Inputs(0)), DENSIFY
        tensor = subgraph.Tensors(filt)
        stored = subgraph.Tensors(source)
        sparsity = _sparsity(stored)
        if storage == DENSE and sparsity is not None:
            storage = SPARSE
        shape = _ints(tensor.Shape, tensor.ShapeLength())
        buffer = model.Buffers(stored.Buffer())
        itemsize = _ITEMSIZE.get(types.get(stored.Type()))
        block = sparsity["block"] if sparsity else None
        outputs = _ints(op.Outputs, op.OutputsLength())
        ragged = storage == SPARSE and block is not None and any(
            n % b for n, b in zip(shape, block))
        row = {
            "op": name,
            "filter_shape": shape,
            "dtype": types.get(tensor.Type(), str(tensor.Type())),
            "storage": storage,
            "block": _block_text(block),
            "keras_block": _keras_block(name, block),
            "ragged_block": ragged,
            "stored_values": (buffer.DataLength() // itemsize
                              if itemsize and buffer.DataLength() else None),
            "weights": int(np.prod(shape)),
            "runs_on": (None if delegated is None else
                        "delegate" if source in delegated else "builtin"),
            "_names": [subgraph.Tensors(t).Name().decode(errors="replace")
                       for t in [filt, source] + outputs],
        }
        rows.append(row)
    if plain is not None:
        _match_layers(rows, plain)
    else:
        for row in rows:
            row.pop("_names")
            row["layer"] = None
    return rows


def summary(rows):
    """Counts of the storage kinds, e.g. `{"sparse": 3, "densify": 0, "dense": 0}`."""
    counts = {SPARSE: 0, DENSIFY: 0, DENSE: 0}
    for row in rows:
        counts[row["storage"]] += 1
    return counts
