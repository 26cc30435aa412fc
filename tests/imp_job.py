"""One small IMP run in a process of its own, and helpers to start it.

The resume, determinism and multi-worker tests start this file with
`subprocess` (it does not import conftest: it sets up its own TensorFlow with
one CPU device). Run directly:

  python tests/imp_job.py --out DIR [--resume-dir DIR] [--hang-at between:R |
      mid:R:B] [--multi-worker] [--deterministic] [--seed N]

It writes DIR/result-<task>.npz (final masks and all model variables) and
DIR/result-<task>.json (per-round history without wall times), where <task>
is "single" or "worker<i>", and its report to DIR/report-<task>. A
"{task}" in --resume-dir is replaced by the task name. With --hang-at it
writes DIR/hanging and sleeps at that point, for the test to SIGKILL it:
`between:R` right after round R's checkpoint was written, `mid:R:B` after
batch B of round R's last epoch.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROUNDS = 3
PRUNE_RATE = 0.5
EPOCHS_PER_ROUND = 2
REWIND = "4it"
GLOBAL_BATCH = 40
NUM_TRAIN = 240
JOB_TIMEOUT = 300  # seconds; generous for a loaded shared machine

HERE = os.path.abspath(__file__)


# -- the job ------------------------------------------------------------------

def make_data(seed=0):
    """A small learnable 10-class problem on 40 features (fixed, seed 0)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_TRAIN + 60, 40)).astype("float32")
    w = rng.normal(size=(40, 10)).astype("float32")
    y = np.argmax(x @ w, axis=1).astype("int64")
    return (x[:NUM_TRAIN], y[:NUM_TRAIN]), (x[NUM_TRAIN:], y[NUM_TRAIN:])


def build_model(keras, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((40,))
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(16, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(10, name="output")(x)
    return keras.Model(inputs, outputs)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="One small IMP run (test helper).")
    p.add_argument("--out", required=True)
    p.add_argument("--resume-dir", default=None)
    p.add_argument("--hang-at", default=None)
    p.add_argument("--multi-worker", action="store_true")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    import tensorflow as tf

    task = "single"
    strategy = None
    if args.multi_worker:
        # TF_CONFIG (set by the caller) names the cluster and this task.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = f"worker{json.loads(os.environ['TF_CONFIG'])['task']['index']}"
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()

    import numpy as np

    import keras_lottery as kl
    from keras_lottery._keras import keras

    (x, y), val = make_data()
    imp = kl.IMP(rounds=ROUNDS, prune_rate=PRUNE_RATE, rewind=REWIND)
    if strategy is not None:
        with strategy.scope():
            model = _build_and_compile(imp, keras, args.seed)
    else:
        model = _build_and_compile(imp, keras, args.seed)
    epochs = imp.epochs(per_round=EPOCHS_PER_ROUND)
    resume_dir = args.resume_dir.format(task=task) if args.resume_dir else None
    callbacks = imp.callbacks(verbose=0, resume_dir=resume_dir,
                              report_dir=os.path.join(args.out, f"report-{task}"))
    if args.hang_at:
        callbacks.append(_hang_callback(args.hang_at, os.path.join(args.out, "hanging")))
    start = imp.initial_epoch() if resume_dir else 0
    # Shuffled every epoch, but epoch e's order depends only on (seed, e), so a
    # resumed run sees the batches an uninterrupted one sees.
    data, steps = kl.controls.ordered_batches(x, y, GLOBAL_BATCH, seed=0, start_epoch=start)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    fit_started = time.perf_counter()
    model.fit(data.with_options(options), steps_per_epoch=steps, epochs=epochs,
              validation_data=val, callbacks=callbacks, initial_epoch=start, verbose=0)

    arrays = {f"mask:{k}": v for k, v in kl.read_masks(model).items()}
    arrays.update({f"weight:{i}": v.numpy() for i, v in enumerate(model.weights)})
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, f"result-{task}.npz"), **arrays)
    rows = [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in imp.history]
    with open(os.path.join(args.out, f"result-{task}.json"), "w") as f:
        json.dump({"history": rows, "initial_epoch": start,
                   "setup_seconds": fit_started - started,
                   "fit_seconds": time.perf_counter() - fit_started}, f)
    return 0


def _build_and_compile(imp, keras, seed):
    model = imp.wrap(build_model(keras, seed))
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
    return model


def _hang_callback(spec, marker):
    """A callback that writes `marker` and sleeps at the point `spec` names."""
    from keras_lottery._keras import keras

    kind, round_index, *rest = spec.split(":")
    last_epoch = (int(round_index) + 1) * EPOCHS_PER_ROUND - 1
    batch_index = int(rest[0]) if rest else None

    def hang():
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(JOB_TIMEOUT)
        sys.exit(f"not killed within {JOB_TIMEOUT} s")

    class Hang(keras.callbacks.Callback):
        epoch = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            if kind == "between" and epoch == last_epoch:
                hang()

        def on_train_batch_end(self, batch, logs=None):
            if kind == "mid" and self.epoch == last_epoch and batch == batch_index:
                hang()

    return Hang()


# -- helpers for the tests ----------------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(out, *flags, env=None, log_name="log"):
    """Starts the job in a new process (its output goes to OUT/<log_name>.txt)."""
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(out, f"{log_name}.txt"), "w")
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.Popen([sys.executable, HERE, "--out", str(out), *flags],
                            stdout=log, stderr=subprocess.STDOUT, env=full_env)
    proc.log_path = log.name
    log.close()
    return proc


def log_tail(proc, lines=25):
    with open(proc.log_path) as f:
        return "".join(f.readlines()[-lines:])


def finish(proc, timeout=JOB_TIMEOUT):
    """Waits for a job; kills it and raises with its log if it fails or hangs."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise AssertionError(f"job ran over {timeout} s:\n{log_tail(proc)}")
    if rc != 0:
        raise AssertionError(f"job failed (rc={rc}):\n{log_tail(proc)}")


def kill(proc):
    """SIGKILLs a job if it is still running, and reaps it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def wait_for(path, proc, timeout=JOB_TIMEOUT):
    """Waits until `path` exists (raises if the job ends or time runs out)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"job ended (rc={proc.returncode}) before "
                                 f"{os.path.basename(path)}:\n{log_tail(proc)}")
        if time.monotonic() > deadline:
            kill(proc)
            raise AssertionError(f"no {path} after {timeout} s:\n{log_tail(proc)}")
        time.sleep(0.2)


def load(out, task="single"):
    """(arrays, info) a finished job wrote: masks/weights and its history."""
    import numpy as np

    with np.load(os.path.join(out, f"result-{task}.npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    with open(os.path.join(out, f"result-{task}.json")) as f:
        info = json.load(f)
    return arrays, info


_REFERENCE = {}


def start_reference(root):
    """Starts the uninterrupted deterministic single-process run (once per session)."""
    if "proc" not in _REFERENCE:
        _REFERENCE["out"] = os.path.join(str(root), "reference")
        _REFERENCE["proc"] = start(_REFERENCE["out"], "--deterministic")
    return _REFERENCE["proc"]


def reference(root):
    """(arrays, info) of the uninterrupted deterministic single-process run."""
    proc = start_reference(root)
    try:
        finish(proc)
    finally:
        kill(proc)
    return load(_REFERENCE["out"])


if __name__ == "__main__":
    sys.exit(main())
