"""When is a sparse TFLite ticket faster? Dense vs unstructured vs block tickets, side by side.

One run converts the same network in several variants and times them
interleaved (every repetition visits every variant in a rotating order, so
they see the same machine load):

- dense float, and float sparse (`EXPERIMENTAL_SPARSITY`) tickets with the
  same nonzero count pruned by magnitude: unstructured, and in blocks of
  (4, 1) = 4 consecutive inputs of one output unit (Keras (in, out) kernel
  axes; TFLite's 1x4), and (1, 4) along the output axis;
- int8 (full integer) dense and int8 + sparse with several block shapes
  (unstructured, 4x1, 8x1, 16x1, 1x16), to see whether any gives an int8
  sparse model faster than int8 dense;
- dense float and int8 on TFLite's builtin kernels without XNNPACK, the
  kernels a runtime without that delegate would use;
- a Conv-2 with (1, 1, 4, 1) blocks on its convolution kernels (4
  consecutive input channels of one output channel);
- ragged blocks (section `ragged`, not timed): layers whose input size is
  not a multiple of the block, against Keras and against int8 dense.

For each: file bytes, batch-1 and batch-128 latency (medians over the
repetitions of each repetition's median) and their ratios to the dense model
of the same precision, and what the converted file holds per layer, read
back with `kl.export.kernel_ops` (native sparse tensor with its block, a
DENSIFY op, or dense; delegate or builtin kernel).

The LeNet tickets come from `kl.IMP(block=...)` (unstructured: `block=None`)
on Fashion-MNIST (5 rounds pruning 37% of the survivors, 1 epoch each, 6,000
training images; 0.63^5 = 9.9% of the weights left); `--magnitude` (and
`--tiny`) prune the initial weights by magnitude instead. The Conv-2 kernels
are always pruned by magnitude (training it here would take too long);
latency and the converter's choices depend only on where the zeros are.

Usage:
  python bench/bench_tflite_sparse.py              # the documented run
  python bench/bench_tflite_sparse.py --tiny       # seconds; used by the tests
  python bench/bench_tflite_sparse.py --json out.json --threads 2 --magnitude

See docs/export.md ("When a sparse ticket is faster") for the figures.
"""

import argparse
import json
import os
import platform
import statistics
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_lottery as kl  # noqa: E402
from keras_lottery._keras import keras  # noqa: E402
from keras_lottery.models import conv_net, lenet_300_100  # noqa: E402

FULL = {"sparsity": 0.9, "rounds": 15, "invokes": 40, "batches": (1, 128),
        "lenet_input": 784, "conv_shape": (28, 28, 1), "conv_invokes": 4,
        "int8_blocks": ["unstructured", (4, 1), (8, 1), (16, 1), (1, 16)], "extra": True}
# the smoke test's: small inputs, and no builtin-kernel / 1x4 / Conv-2 unstructured rows
TINY = {"sparsity": 0.9, "rounds": 2, "invokes": 3, "batches": (1, 16),
        "lenet_input": 64, "conv_shape": (8, 8, 4), "conv_invokes": 2,
        "int8_blocks": [(16, 1)], "extra": False}


# -- pruned weights ---------------------------------------------------------------------


def block_prune(kernel, fraction, block=None):
    """`kernel` with its weakest `fraction` zeroed, in blocks or one by one.

    Args:
      kernel: a Dense (in, out) or Conv (h, w, in, out) kernel.
      fraction: share of the kernel's blocks (or weights) set to zero.
      block: None (unstructured), or a block over the kernel's last two
        axes `(inputs, outputs)`, e.g. (4, 1) = 4 consecutive inputs of one
        output unit; a Conv kernel's spatial axes are blocks of 1. Blocks
        at a ragged edge are partial; they are scored by their mean |w|.

    Returns:
      The pruned kernel (a new array).
    """
    kernel = np.asarray(kernel)
    if block is None or tuple(block) == (1, 1):
        threshold = np.quantile(np.abs(kernel), fraction)
        return np.where(np.abs(kernel) > threshold, kernel, 0).astype(kernel.dtype)
    bi, bo = block
    *lead, n_in, n_out = kernel.shape
    pad_in, pad_out = -n_in % bi, -n_out % bo
    mag = np.pad(np.abs(kernel), [(0, 0)] * len(lead) + [(0, pad_in), (0, pad_out)])
    count = np.pad(np.ones_like(kernel), [(0, 0)] * len(lead) + [(0, pad_in), (0, pad_out)])
    shape = tuple(lead) + ((n_in + pad_in) // bi, bi, (n_out + pad_out) // bo, bo)
    score = mag.reshape(shape).sum(axis=(-3, -1)) / count.reshape(shape).sum(axis=(-3, -1))
    keep = score > np.quantile(score, fraction)
    mask = np.repeat(np.repeat(keep, bi, axis=-2), bo, axis=-1)[..., :n_in, :n_out]
    return (kernel * mask).astype(kernel.dtype)


def pruned_copy(model, fraction, block=None, conv_block=None):
    """A copy of `model` with Dense kernels pruned in `block` and Conv kernels in `conv_block`.

    A Conv kernel's block runs along its input channels, so a layer whose
    input channels are fewer than the block (a first layer on 1-channel
    images) is pruned unstructured, as is every kernel when block is None.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        kernel_block = None
        if isinstance(layer, keras.layers.Dense):
            kernel_block = block
        elif isinstance(layer, keras.layers.Conv2D):
            kernel_block = conv_block
        else:
            continue
        weights = layer.get_weights()
        if kernel_block is not None and weights[0].shape[-2] < kernel_block[0]:
            kernel_block = None
        weights[0] = block_prune(weights[0], fraction, kernel_block)
        layer.set_weights(weights)
    return copy


def _imp_has_blocks():
    import inspect

    return "block" in inspect.signature(kl.IMP).parameters


def imp_ticket(model, x, y, block, rounds=5, prune_rate=0.37):
    """A ticket from `kl.IMP(block=block)` on (x, y), 1 epoch per round, stripped."""
    from keras_lottery.models import compile_classifier

    imp = kl.IMP(rounds=rounds, prune_rate=prune_rate, block=block)
    wrapped = compile_classifier(imp.wrap(keras.models.clone_model(model)), "adam", 1.2e-3)
    wrapped.fit(x, y, batch_size=60, epochs=imp.epochs(per_round=1),
                callbacks=imp.callbacks(verbose=0), verbose=0)
    return kl.export.strip(wrapped)


# -- variants ------------------------------------------------------------------------------


def _label(block):
    return "unstructured" if block is None or block == "unstructured" else \
        "x".join(str(b) for b in block)


def lenet_variants(config, train=None):
    """(name, group, Keras model, sparse, int8, xnnpack) for the LeNet section.

    With `train` = (x, y), the tickets come from IMP on it, else from
    magnitude pruning of the initial weights.
    """
    fraction = config["sparsity"]
    dense = lenet_300_100((config["lenet_input"],), seed=0)

    def ticket(block):
        if train is not None:
            return imp_ticket(dense, train[0], train[1], block)
        return pruned_copy(dense, fraction, block)

    unstructured, b41 = ticket(None), ticket((4, 1))
    extra = config["extra"]
    rows = [("dense float", "float", dense, False, False, True)]
    rows += [("dense float, builtin", "float", dense, False, False, False)] if extra else []
    rows += [("unstructured float", "float", unstructured, True, False, True),
             ("block 4x1 float", "float", b41, True, False, True)]
    rows += [("block 1x4 float", "float", ticket((1, 4)), True, False, True)] if extra else []
    rows += [("dense int8", "int8", dense, False, True, True)]
    rows += [("dense int8, builtin", "int8", dense, False, True, False)] if extra else []
    for block in config["int8_blocks"]:
        block = None if block == "unstructured" else tuple(block)
        model = unstructured if block is None else b41 if block == (4, 1) else ticket(block)
        rows.append((f"{_label(block)} int8 sparse", "int8", model, True, True, True))
    return rows


def conv_variants(config):
    fraction = config["sparsity"]
    dense = conv_net(2, config["conv_shape"], seed=0)
    rows = [("Conv-2 dense float", "float", dense, False, False, True)]
    if config["extra"]:
        rows.append(("Conv-2 unstructured float", "float", pruned_copy(dense, fraction), True,
                     False, True))
    rows.append(("Conv-2 block 4x1 float", "float",
                 pruned_copy(dense, fraction, (4, 1), (4, 1)), True, False, True))
    return rows


def _convert(model, sparse, int8, x_cal):
    # ragged blocks (LeNet's 300 / 100 inputs in 1x16 int8 blocks) are measured on purpose
    return kl.export.tflite(model, sparse=sparse, int8=int8,
                            representative_data=x_cal if int8 else None, allow_dense=True,
                            allow_ragged_blocks=True)


# -- timing --------------------------------------------------------------------------------


def time_interleaved(runners, batches, rounds, invokes_of):
    """{name: {batch: [median ms per round]}}: every round visits every runner, rotated."""
    times = {name: {b: [] for b in batches} for name, _, _ in runners}
    for r in range(rounds):
        order = runners[r % len(runners):] + runners[:r % len(runners)]
        for name, lite, xs in order:
            for b in batches:
                times[name][b].append(1e3 * lite.latency(xs[b], invokes_of(name, b), warmup=2))
    return times


def run_section(title, variants, config, x_cal, inputs, threads, invokes):
    runners, rows = [], []
    for name, group, model, sparse, int8, xnnpack in variants:
        content = _convert(model, sparse, int8, x_cal)
        lite = kl.export.TFLiteModel(content, threads, xnnpack=xnnpack)
        kernels = kl.export.kernel_ops(content, model, lite.interpreter)
        xs = {b: inputs[:b] for b in config["batches"]}
        keras_logits = model.predict(inputs[:64], verbose=0)
        diff = float(np.max(np.abs(lite.predict(inputs[:64]) - keras_logits)))
        runners.append((name, lite, xs))
        rows.append({"variant": name, "group": group, "sparse": sparse, "int8": int8,
                     "bytes": len(content), "interpreter": lite.interpreter_name,
                     "zeros": _zero_fraction(model), "max_abs_logit_diff": diff,
                     "kernels": kernels})
    times = time_interleaved(runners, config["batches"], config["rounds"],
                             lambda name, b: invokes)
    base = {}
    for row in rows:
        row["latency_ms"] = {str(b): statistics.median(times[row["variant"]][b])
                             for b in config["batches"]}
        row["latency_rounds_ms"] = {str(b): times[row["variant"]][b] for b in config["batches"]}
        base.setdefault(row["group"], row)
    dense_float = rows[0]
    for row in rows:
        ref = base[row["group"]]
        row["reference"] = ref["variant"]
        row["latency_ratio"] = {b: row["latency_ms"][b] / ref["latency_ms"][b]
                                for b in row["latency_ms"]}
        row["bytes_vs_dense_float"] = row["bytes"] / dense_float["bytes"]
    return {"title": title, "rows": rows}


def _zero_fraction(model):
    kernels = [k for _, k in kl.export.formats.prunable_kernels(model)]
    return float(sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels))


def _mlp(n_in, hidden):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((n_in,))
    h = inputs
    for i, units in enumerate(hidden):
        h = keras.layers.Dense(units, activation="relu", name=f"fc{i + 1}")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="output")(h))


def ragged_section(n=512):
    """Native block-sparse layers whose inputs are not whole blocks vs ones that are.

    Float (4, 1) blocks: TFLite vs Keras logits. int8 (16, 1) blocks: the
    int8 + sparse file vs the int8 dense file of the same weights (the same
    quantization, so only the sparse kernel differs).
    """
    rng = np.random.default_rng(0)
    rows = []
    for n_in, hidden, block, int8 in ((786, (302, 102), (4, 1), False),
                                      (784, (300, 100), (4, 1), False),
                                      (784, (300, 100), (16, 1), True),
                                      (784, (320, 112), (16, 1), True)):
        x = rng.normal(size=(n, n_in)).astype("float32")
        model = pruned_copy(_mlp(n_in, hidden), 0.9, block)
        content = _convert(model, True, int8, x[:256])
        out = kl.export.TFLiteModel(content).predict(x)
        ref = (kl.export.TFLiteModel(_convert(model, False, True, x[:256])).predict(x) if int8
               else model.predict(x, verbose=0))
        kernels = kl.export.kernel_ops(content, model)
        rows.append({"model": "-".join(str(d) for d in (n_in,) + hidden + (10,)),
                     "block": _label(block), "int8": int8,
                     "against": "int8 dense file" if int8 else "Keras",
                     "storage": [f"{k['storage']} {k['block']}" for k in kernels],
                     "ragged": [k["ragged_block"] for k in kernels],
                     "max_abs_diff": float(np.max(np.abs(out - ref))),
                     "logit_scale": float(np.max(np.abs(ref))),
                     "argmax_agreement": float(np.mean(out.argmax(1) == ref.argmax(1)))})
    return rows


# -- report --------------------------------------------------------------------------------


def _ops_text(kernels):
    parts = []
    for k in kernels:
        kind = k["storage"] + (f" {k['block']}" if k["block"] else "") + \
            (" ragged" if k["ragged_block"] else "")
        parts.append(f"{k['layer'] or '?'}: {kind}, {k['runs_on'] or '?'}")
    return "; ".join(parts)


def format_report(results):
    lines = [f"TFLite sparse tickets, {results['interpreter']}, {results['threads']} thread(s), "
             f"{results['rounds']} interleaved rounds; ms = median over rounds of each round's "
             "median invoke; ratio = to the dense model of the same precision (and its "
             "interpreter: the first row of its group); max|Δ| = largest |TFLite - Keras| "
             "logit on 64 inputs; ragged = a blocked axis not a multiple of the block"]
    batches = results["batches"]
    for section in results["sections"]:
        lines += ["", section["title"]]
        header = f"{'variant':<28}{'zeros':>7}{'bytes':>11}{'vs dense':>9}{'max|Δ|':>9}"
        for b in batches:
            header += f"{f'ms b{b}':>10}{'ratio':>7}"
        lines.append(header + "  ops per layer (storage, block in TFLite's (out, in) axes, engine)")
        for row in section["rows"]:
            line = (f"{row['variant']:<28}{row['zeros']:>7.1%}{row['bytes']:>11,}"
                    f"{row['bytes_vs_dense_float']:>9.1%}{row['max_abs_logit_diff']:>9.1e}")
            for b in batches:
                line += f"{row['latency_ms'][str(b)]:>10.4f}{row['latency_ratio'][str(b)]:>7.2f}"
            lines.append(line + "  " + _ops_text(row["kernels"]))
    if results.get("ragged"):
        lines += ["", "Ragged blocks: native block-sparse layers whose input size is or is not a "
                  "whole number of blocks (90% pruned, 512 normal inputs)",
                  f"{'model':<18}{'block':>7}{'dtype':>7}  {'against':<16}{'ragged layers':>14}"
                  f"{'max|Δ|':>9}{'max|logit|':>11}{'argmax agree':>14}"]
        for r in results["ragged"]:
            lines.append(f"{r['model']:<18}{r['block']:>7}{'int8' if r['int8'] else 'float':>7}  "
                         f"{r['against']:<16}{sum(r['ragged']):>14}{r['max_abs_diff']:>9.3f}"
                         f"{r['logit_scale']:>11.3f}{r['argmax_agreement']:>14.1%}")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for the tests")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--sections", default=None,
                        help="comma-separated subset of lenet,conv,ragged (default: all; "
                        "--tiny: lenet,conv)")
    parser.add_argument("--magnitude", action="store_true",
                        help="LeNet tickets by magnitude pruning of the initial weights "
                        "instead of kl.IMP(block=...) on Fashion-MNIST")
    parser.add_argument("--train-samples", type=int, default=6000,
                        help="Fashion-MNIST training images for the IMP tickets")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config = dict(TINY if args.tiny else FULL)
    if args.rounds:
        config["rounds"] = args.rounds
    use_imp = not (args.tiny or args.magnitude) and (args.sections is None or
                                                      "lenet" in args.sections.split(","))
    if use_imp and not _imp_has_blocks():
        raise SystemExit("This keras-lottery has no kl.IMP(block=...); pass --magnitude.")
    rng = np.random.default_rng(0)
    n = max(config["batches"])
    train = None
    if use_imp:
        from keras_lottery import data as data_lib

        (x_train, y_train), (x_test, _) = data_lib.load_local("fashion_mnist")
        x_train = x_train.reshape(len(x_train), -1)[:args.train_samples]
        train = (x_train, y_train[:args.train_samples])
        x = x_test.reshape(len(x_test), -1)[:max(n, 256)].astype("float32")
        how = "tickets from kl.IMP on Fashion-MNIST, 5 rounds at 37%"
    else:
        x = rng.normal(size=(max(n, 256), config["lenet_input"])).astype("float32")
        how = f"{config['sparsity']:.0%} of each kernel pruned by magnitude"
    chosen = (args.sections or ("lenet,conv" if args.tiny else "lenet,conv,ragged")).split(",")
    unknown = set(chosen) - {"lenet", "conv", "ragged"}
    if unknown:
        raise SystemExit(f"Unknown section(s) {sorted(unknown)}; choose from lenet, conv, ragged.")
    sections = []
    if "lenet" in chosen:
        sections.append(run_section(
            f"LeNet-300-100 ({config['lenet_input']} inputs), {how}",
            lenet_variants(config, train), config, x[:256], x, args.threads, config["invokes"]))
    if "conv" in chosen:
        xc = rng.normal(size=(max(n, 64),) + tuple(config["conv_shape"])).astype("float32")
        sections.append(run_section(
            f"Conv-2 on {config['conv_shape']} inputs, {config['sparsity']:.0%} of each kernel "
            "pruned by magnitude; conv blocks along input channels", conv_variants(config),
            config, xc[:64], xc, args.threads, config["conv_invokes"]))
    probe = kl.export.TFLiteModel(_convert(_mlp(4, (4,)), False, False, None))
    interpreter = probe.interpreter_name
    results = {"interpreter": interpreter.split(" (")[0], "threads": args.threads,
               "rounds": config["rounds"], "batches": list(config["batches"]),
               "lenet_tickets": "kl.IMP(block=...) on Fashion-MNIST" if use_imp else
               "magnitude pruning",
               "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
               "python": sys.version.split()[0], "sections": sections,
               "ragged": ragged_section() if "ragged" in chosen else []}
    print(format_report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
