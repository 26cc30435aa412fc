"""The model zoo: keras.applications models (tf_keras and Keras 3) through one IMP round.

Each case builds a model with 32x32 inputs and weights=None, wraps it with
`kl.IMP(rounds=1, prune_rate=0.5)`, trains round 0 and round 1 for a few
steps on random data with `SparsityGuard(every=1)` (every pruned weight is
checked to be exactly zero after every batch), then exports a sparse TFLite
file and compares its logits with the Keras model's. A model keras_lottery
cannot take must be refused before training with a message naming the
layer; the table records that message.

Usage:
    python bench/zoo.py                    # every case, a markdown table
    python bench/zoo.py --only MobileNetV2 --only "tiny MHA block"

tests/test_zoo.py runs a representative subset of these cases.
"""

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_lottery as kl  # noqa: E402
from keras_lottery._keras import keras  # noqa: E402

SHAPE = (32, 32, 3)
CLASSES = 10


def _keras3():
    import keras as keras3

    if not keras3.__version__.startswith("3"):
        raise ImportError("Keras 3 is not installed")
    return keras3


def _apps(flavour):
    return keras.applications if flavour == "tf_keras" else _keras3().applications


def application(name, **kwargs):
    """A builder for `keras.applications.<name>` at 32x32 with weights=None."""

    def build(flavour):
        # seeded like the hand-built models, so reruns give the same weights and TFLite diffs
        (keras if flavour == "tf_keras" else _keras3()).utils.set_random_seed(0)
        # logits out (no softmax), so the TFLite comparison sees the raw outputs
        return getattr(_apps(flavour), name)(input_shape=SHAPE, weights=None, classes=CLASSES,
                                             classifier_activation=None, **kwargs)

    return build


def attention_block(flavour, seq=8, dim=16, heads=2):
    """A tiny transformer block: MHA, residual, LayerNorm, MLP, pooled Dense head."""
    k = keras if flavour == "tf_keras" else _keras3()
    k.utils.set_random_seed(0)
    inputs = k.Input((seq, dim))
    x = k.layers.MultiHeadAttention(heads, dim // heads, name="mha")(inputs, inputs)
    x = k.layers.LayerNormalization(name="ln1")(k.layers.Add()([inputs, x]))
    h = k.layers.Dense(2 * dim, activation="gelu", name="mlp_in")(x)
    x = k.layers.LayerNormalization(name="ln2")(k.layers.Add()([x, k.layers.Dense(dim, name="mlp_out")(h)]))
    x = k.layers.GlobalAveragePooling1D()(x)
    return k.Model(inputs, k.layers.Dense(CLASSES, name="head")(x), name="attention_block")


def convnext_like(flavour, stages=(2, 2, 2), width=16):
    """A small ConvNeXt-style net: patchify stem, (depthwise 7x7, LN, 4x MLP, layer scale) blocks.

    Layer scale (a 1e-6 gamma on every block's output) is what makes
    ConvNeXt's deep blocks small in magnitude; under one global threshold
    their kernels were the first to be emptied.
    """
    k = keras if flavour == "tf_keras" else _keras3()
    k.utils.set_random_seed(0)
    L = k.layers
    inputs = k.Input(SHAPE)
    x = L.Conv2D(width, 2, strides=2, name="stem")(inputs)
    for s, depth in enumerate(stages):
        if s:
            x = L.LayerNormalization(epsilon=1e-6, name=f"down{s}_ln")(x)
            width *= 2
            x = L.Conv2D(width, 2, strides=2, name=f"down{s}")(x)
        for b in range(depth):
            y = L.DepthwiseConv2D(7, padding="same", name=f"s{s}b{b}_dw")(x)
            y = L.LayerNormalization(epsilon=1e-6, name=f"s{s}b{b}_ln")(y)
            y = L.Dense(4 * width, activation="gelu", name=f"s{s}b{b}_pw1")(y)
            # weights shrink with depth, as trained ConvNeXts' late blocks do
            y = L.Dense(width, name=f"s{s}b{b}_pw2",
                        kernel_initializer=k.initializers.RandomNormal(stddev=0.02 / (1 + 3 * s)))(y)
            x = L.Add()([x, y])
    x = L.GlobalAveragePooling2D()(x)
    x = L.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    return k.Model(inputs, L.Dense(CLASSES, name="head")(x), name="convnext_like")


def lambda_model(flavour):
    k = keras if flavour == "tf_keras" else _keras3()
    return k.Sequential([k.Input(SHAPE), k.layers.Lambda(lambda t: t * 2.0, name="twice"),
                         k.layers.Flatten(), k.layers.Dense(CLASSES)])


def custom_layer_model(flavour):
    k = keras if flavour == "tf_keras" else _keras3()

    class Scale(k.layers.Layer):
        def call(self, t):
            return t * 2.0

    return k.Sequential([k.Input(SHAPE), Scale(name="my_scale"), k.layers.Flatten(),
                         k.layers.Dense(CLASSES)])


# (name, builder(flavour) -> model, input shape, options); small and fast first
CASES = [
    ("tiny MHA block", attention_block, (8, 16), {}),
    ("ConvNeXt-like global", convnext_like, SHAPE, {"scope": "global"}),
    ("ConvNeXt-like erk", convnext_like, SHAPE, {"scope": "erk"}),
    ("Lambda layer", lambda_model, SHAPE, {}),
    ("custom layer", custom_layer_model, SHAPE, {}),
    ("MobileNetV2 alpha 0.35", application("MobileNetV2", alpha=0.35), SHAPE, {}),
    ("MobileNetV3Small", application("MobileNetV3Small"), SHAPE, {}),
    ("VGG16", application("VGG16"), SHAPE, {}),
    ("ConvNeXtTiny global", application("ConvNeXtTiny"), SHAPE, {"scope": "global"}),
    ("ConvNeXtTiny erk", application("ConvNeXtTiny"), SHAPE, {"scope": "erk"}),
    ("ResNet50", application("ResNet50"), SHAPE, {}),
    ("EfficientNetB0", application("EfficientNetB0"), SHAPE, {}),
    ("DenseNet121", application("DenseNet121"), SHAPE, {}),
    ("NASNetMobile", application("NASNetMobile"), SHAPE, {}),
]
FLAVOURS = ("tf_keras", "keras3")


def run_case(name, build, input_shape, flavour, steps=2, batch=4, scope="layerwise",
             export=True):
    """One zoo case: wrap, 1 round at 50% with per-batch sparsity checks, sparse TFLite.

    Returns:
      dict with model, flavour, status ("works" / "refused"), message,
      prunable / all remaining (fractions), min_layer (the smallest
      per-tensor fraction remaining), dead (tensors at 0%), tflite_diff
      (max |TFLite - Keras| logits), guard_checks, seconds.
    """
    start = time.perf_counter()
    row = {"model": name, "flavour": flavour, "scope": scope}
    held = _FloorWarnings()
    logging.getLogger("keras_lottery").addHandler(held)
    try:
        return _run_case(row, start, held, build, input_shape, flavour, steps, batch, scope, export)
    finally:
        logging.getLogger("keras_lottery").removeHandler(held)


class _FloorWarnings(logging.Handler):
    """Collects the masks' per-layer floor warnings of one case."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        if "per-layer floor" in record.getMessage():
            self.messages.append(record.getMessage())


def _run_case(row, start, held, build, input_shape, flavour, steps, batch, scope, export):
    model = build(flavour)
    imp = kl.IMP(rounds=1, prune_rate=0.5, scope=scope)
    try:
        wrapped = imp.wrap(model)
    except (ValueError, TypeError) as err:
        return dict(row, status="refused", message=f"{type(err).__name__}: {err}",
                    seconds=time.perf_counter() - start)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch,) + tuple(input_shape)).astype("float32")
    y = rng.integers(0, CLASSES, steps * batch)
    row["wrap_s"] = time.perf_counter() - start
    wrapped.compile(keras.optimizers.SGD(0.01),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0, check_sparsity=1)
    guard = next(c for c in callbacks if isinstance(c, kl.SparsityGuard))
    wrapped.fit(x, y, batch_size=batch, epochs=epochs, callbacks=callbacks, verbose=0,
                shuffle=False)
    row["fit_s"] = time.perf_counter() - start - row["wrap_s"]
    by_layer = kl.sparsity_by_layer(wrapped)
    row.update(
        status="works", message="",
        prunable=kl.overall_weights_remaining(wrapped),
        all=kl.masks.all_weights_remaining(wrapped),
        min_layer=min(by_layer.values()),
        dead=sorted(n for n, v in by_layer.items() if v == 0.0),
        by_layer=by_layer,
        tensors=len(by_layer),
        held=held.messages[0].split("held at it: ")[1].split(". Pass")[0].rstrip(".") if held.messages else "",
        guard_checks=guard.checks, steps=steps * epochs,
    )
    if export:
        content = kl.export.tflite(wrapped, sparse=True)
        lite = kl.export.TFLiteModel(content)
        expected = kl.strip_model(wrapped)(x, training=False).numpy()
        got = np.asarray(lite.predict(x))
        row["tflite_diff"] = float(np.max(np.abs(got - expected)))
        # untrained deep nets (BatchNorm statistics still at their initial
        # values) can give huge logits: the difference relative to them
        row["logit_scale"] = float(np.max(np.abs(expected)))
        row["tflite_rel_diff"] = row["tflite_diff"] / max(row["logit_scale"], 1e-30)
    row["seconds"] = time.perf_counter() - start
    return row


def format_table(rows):
    lines = ["| model | flavour | result | % weights remaining (prunable / all) | "
             "smallest tensor % | TFLite max abs diff | s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["status"] == "works":
            result = "works" + (f", {len(r['dead'])} tensors at 0%" if r["dead"] else "")
            if r.get("held"):
                result += f", {r['held'].count(' -> ')} of {r['tensors']} tensors held at the floor"
            remaining = f"{100 * r['prunable']:.1f} / {100 * r['all']:.1f}"
            smallest = f"{100 * r['min_layer']:.1f}"
            diff = f"{r['tflite_diff']:.1e}" if "tflite_diff" in r else "-"
            if r.get("tflite_diff", 0) > 1e-4 and "logit_scale" in r:
                diff += (f" (logits up to {r['logit_scale']:.1e}: relative "
                         f"{r['tflite_rel_diff']:.1e})")
        else:
            message = r["message"].replace("|", "\\|").replace("\n", " ")
            result = f"{r['status']}: {message[:220]}"
            remaining = smallest = diff = "-"
        lines.append(f"| {r['model']} | {r['flavour']} | {result} | {remaining} | {smallest} | "
                     f"{diff} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="case name (repeatable)")
    parser.add_argument("--flavour", action="append", choices=FLAVOURS)
    parser.add_argument("--steps", type=int, default=2, help="training steps per round")
    parser.add_argument("--jsonl", help="also append each row to this file as it finishes")
    args = parser.parse_args(argv)
    rows = []
    for name, build, shape, options in CASES:
        if args.only and name not in args.only:
            continue
        for flavour in args.flavour or FLAVOURS:
            try:
                row = run_case(name, build, shape, flavour, steps=args.steps, **options)
            except Exception as err:  # a failure after wrapping: recorded, not hidden
                row = {"model": name, "flavour": flavour, "status": "FAILED",
                       "message": f"{type(err).__name__}: {err}", "seconds": 0.0}
            rows.append(row)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps({k: v for k, v in row.items() if k != "by_layer"}) + "\n")
            print(f"{name} [{flavour}]: {row['status']} ({row['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
