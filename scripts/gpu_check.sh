#!/usr/bin/env bash
# gpu_check.sh: run keras-lottery's core tests and a short IMP benchmark on a GPU.
#
# Skips (exit 0, with a message) when TensorFlow sees no GPU. Set
# GPU_CHECK_FORCE=1 to run it on the CPU anyway (to check the script itself),
# GPU_CHECK_TESTS=0 to run the benchmark only, GPU_CHECK_EXAMPLES=N to change
# the benchmark's number of examples (default 4096).
# Uses $PYTHON (default: python) from the current environment; run it from
# anywhere, e.g.  source .venv/bin/activate && scripts/gpu_check.sh
#
# What it does on a GPU:
#   1. lists the GPUs TensorFlow sees;
#   2. runs the core tests (schedule, masks, wrapping, callback, IMP, mixed
#      precision, determinism, steps_per_execution / MirroredStrategy, resume),
#      so mixed_float16 runs in real float16 kernels and op determinism uses
#      the GPU's deterministic kernels;
#   3. times a short IMP run (Conv-4, synthetic 32x32x3 data, 3 rounds x 1
#      epoch) in float32 and mixed_float16 and prints steps/s per round;
#   4. runs the same IMP on 1024 examples with a SparsityGuard after every
#      batch (kept out of the timed run: its host copies would slow it) and
#      prints whether every pruned weight was exactly zero after each batch;
#      exits 1 if one was not.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

gpus=$("$PYTHON" -c 'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null | tail -n 1)
if [ "${gpus:-0}" = "0" ] && [ "${GPU_CHECK_FORCE:-0}" != "1" ]; then
    echo "gpu_check: TensorFlow sees no GPU here; skipped (set GPU_CHECK_FORCE=1 to run on the CPU)."
    exit 0
fi
echo "gpu_check: TensorFlow sees ${gpus:-0} GPU(s)."
"$PYTHON" -c 'import tensorflow as tf; [print("  ", d, tf.config.experimental.get_device_details(d)) for d in tf.config.list_physical_devices("GPU")]'

if [ "${GPU_CHECK_TESTS:-1}" != "0" ]; then
    echo "== core tests"
    core_tests=()
    for t in schedule masks wrap callback imp mixed_precision determinism distributed resume; do
        if [ -f "tests/test_$t.py" ]; then core_tests+=("tests/test_$t.py"); fi
    done
    "$PYTHON" -m pytest -q "${core_tests[@]}"
fi

echo "== short benchmark"
"$PYTHON" - "${GPU_CHECK_EXAMPLES:-4096}" <<'PY'
import sys
import time

import numpy as np
import tensorflow as tf

import keras_lottery as kl
from keras_lottery._keras import keras

rng = np.random.default_rng(0)
n = int(sys.argv[1])
x = rng.normal(size=(n, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, size=n)
print(f"device: {'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}; "
      f"Conv-4, {n} synthetic 32x32x3 examples, batch 128, 3 rounds x 1 epoch")


def conv4_imp(policy):
    """A wrapped, compiled Conv-4 under `policy`, its IMP and the epochs to fit."""
    keras.mixed_precision.set_global_policy(policy)
    imp = kl.IMP(rounds=2, prune_rate=0.2, rewind="0it", scope="global")
    model = imp.wrap(kl.models.build("conv4", input_shape=(32, 32, 3), seed=0))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    return imp, model, imp.epochs(per_round=1)


for policy in ("float32", "mixed_float16"):
    imp, model, epochs = conv4_imp(policy)
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs, callbacks=imp.callbacks(verbose=0), verbose=0)
    total = time.perf_counter() - start
    rates = ", ".join(f"r{r.round} {r.steps / r.seconds:.1f}" for r in imp.history)
    print(f"{policy:14s} steps/s per round: {rates} (round 0 includes tracing); "
          f"total {total:.1f} s; weights remaining {imp.history[-1].weights_remaining:.3f}")

# Exactness where it can fail: after every batch, before UpdatePruningStep's
# epoch-end re-masking (a check after fit would always pass).
failed = False
for policy in ("float32", "mixed_float16"):
    imp, model, epochs = conv4_imp(policy)
    callbacks = imp.callbacks(verbose=0, check_sparsity=1)
    guard = next(cb for cb in callbacks if isinstance(cb, kl.SparsityGuard))
    try:
        model.fit(x[:1024], y[:1024], batch_size=128, epochs=epochs, callbacks=callbacks, verbose=0)
        verdict = f"yes, after each of {guard.checks} batches"
    except kl.SparsityViolation as err:
        verdict, failed = f"NO: {err}", True
    print(f"{policy:14s} pruned weights exactly zero after every batch: {verdict}")
keras.mixed_precision.set_global_policy("float32")
sys.exit(1 if failed else 0)
PY
echo "gpu_check: done."
