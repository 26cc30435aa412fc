"""What IMP costs on top of training, measured side by side with its peers.

One command prints, for each model, on the same synthetic data and the same
initial weights:

1. step throughput (steps/s, median over epochs) of a plain tf_keras `fit` of
   the dense model, our IMP callback in its pruning rounds, tfmot's
   `ConstantSparsity` (default frequency and frequency=1), a hand-written mask
   through kernel constraints, and IMP with tfmot's own forward pass (the
   behaviour before `wrap.bypass_wrapper_ops`), each as a ratio to the dense
   fit (wall clock and process CPU time);
2. the cost of a round switch (prune + rewind + optimizer reset) in ms and as
   a fraction of the round's training time, and the tf.function traces;
3. the wall time of the whole IMP run over (R + 1) dense trainings;
4. the host memory of the snapshots (θ0, θk) and masks vs the parameters;
5. all of it again under MirroredStrategy on 2 logical CPU devices.

The variants are interleaved epoch by epoch: the IMP run is one `fit`, and at
the end of each of its epochs a callback runs one epoch of every other
variant (in a rotating order). Each variant's epochs are timed from
`on_epoch_begin` to `on_epoch_end` inside its own `fit`, so the variants see
the same machine load, and the ratios are medians of per-epoch ratios.

Usage:
  python bench/bench_imp.py                    # the documented run
  python bench/bench_imp.py --tiny             # seconds; used by the tests
  python bench/bench_imp.py --models lenet --steps 100 --json out.json

See docs/performance.md for the figures and how to read them.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import tracemalloc

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _split_cpu(n=2):
    """Two logical CPU devices for MirroredStrategy (before TF initializes)."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:  # already initialized (e.g. by the test suite's conftest)
        pass


_split_cpu()

import tensorflow_model_optimization as tfmot  # noqa: E402

import keras_lottery as kl  # noqa: E402
from keras_lottery import masks as masks_lib  # noqa: E402
from keras_lottery import models as models_lib  # noqa: E402
from keras_lottery._keras import keras  # noqa: E402
from keras_lottery.rewind import WeightSnapshot, model_state_variables  # noqa: E402
from keras_lottery.wrap import pruned_layers  # noqa: E402

#: Batch size and input shape per model. LeNet-300-100 at the paper's batch
#: 60; the convolutional nets at batch 128 on Fashion-MNIST-shaped inputs.
MODEL_SETTINGS = {
    "lenet": {"batch": 60, "shape": (784,)},
    "conv4": {"batch": 128, "shape": (28, 28, 1)},
    "resnet20": {"batch": 128, "shape": (28, 28, 1)},
}

#: Variant name -> what it is, in the order they are printed.
VARIANTS = {
    "dense": "plain tf_keras fit of the dense model (the baseline)",
    "dense_again": "a second, identical dense model (the noise floor: ideally 1.00)",
    "imp": "keras_lottery IMP in its pruning rounds (IMPCallback + UpdatePruningStep)",
    "imp_tfmot_forward": "IMP with tfmot's per-step wrapper ops kept (bypass_wrapper_ops=False)",
    "tfmot_default": "tfmot ConstantSparsity(0.2), default frequency=100",
    "tfmot_freq1": "tfmot ConstantSparsity(0.2, frequency=1)",
    "hand_mask": "dense model, fixed masks applied by kernel constraints",
}

BARS = {
    "step_ratio": 1.05,
    "switch_fraction": 0.01,
    "retraces_after_round1": 0,
    "total_ratio": 1.05,
    "snapshot_ratio": 3.0,
}

TINY = {"models": ["lenet"], "steps": 3, "rounds": 2, "epochs_per_round": 1,
        "batch": 16, "mirrored_models": ["lenet"], "mirrored_variants": ["dense", "imp"],
        # No collective ops: their instance keys would clash with other
        # MirroredStrategy objects in the same process (the test suite's).
        "mirrored_reduce_to_one_device": True}
FULL = {"models": ["lenet", "conv4", "resnet20"], "steps": 100, "rounds": 5,
        "epochs_per_round": 2, "batch": None, "mirrored_models": ["lenet"],
        "conv_steps": 3, "conv_epochs_per_round": 1}

logger = logging.getLogger("keras_lottery")


# -- building the variants ------------------------------------------------------


def _compile(model):
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
    return model


def _dataset(shape, batch, steps, seed=0):
    rng = np.random.default_rng(seed)
    n = batch * steps
    x = rng.normal(size=(n,) + tuple(shape)).astype("float32")
    y = rng.integers(0, 10, size=n).astype("int64")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().prefetch(2)


def _dense_copy(base):
    model = keras.models.clone_model(base)
    model.set_weights(base.get_weights())
    return _compile(model)


def _kernel_layers(model):
    return [layer for layer in model.layers if kl.is_prunable(layer)]


def _first_round_masks(base, prune_rate):
    """Layer-wise magnitude masks of round 1 for `base`'s kernels, by layer name."""
    weights, ones = {}, {}
    for layer in _kernel_layers(base):
        kernel = layer.get_weights()[0]
        weights[f"{layer.name}/kernel"] = kernel
        ones[f"{layer.name}/kernel"] = np.ones_like(kernel)
    return masks_lib.compute_masks(weights, ones, 1, prune_rate)


class _FixedMask:
    """A hand-written kernel constraint: kernel * mask after each update."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, value):
        return value * self.mask


def _hand_masked(base, masks):
    model = _dense_copy(base)
    for layer in _kernel_layers(model):
        mask = tf.Variable(masks[f"{layer.name}/kernel"], trainable=False,
                           name=f"{layer.name}_hand_mask")
        layer.kernel.assign(layer.kernel * mask)
        # Under a strategy the optimizer updates each replica's component.
        for variable in [layer.kernel] + masks_lib._component_variables(layer.kernel):
            variable._constraint = _FixedMask(mask)
    return model


def _tfmot_wrapped(base, frequency):
    kwargs = {} if frequency is None else {"frequency": frequency}
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.2, begin_step=0, **kwargs)

    def clone(layer):
        layer = layer.__class__.from_config(layer.get_config())
        if kl.is_prunable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    model = keras.models.clone_model(base, clone_function=clone)
    for src, dst in zip(base.layers, model.layers):
        (dst.layer if hasattr(dst, "pruning_vars") else dst).set_weights(src.get_weights())
    return _compile(model)


class _Peer:
    """A model trained one epoch at a time, `fit(epochs=1)` per call."""

    def __init__(self, name, model, callbacks_fn):
        self.name = name
        self.model = model
        self.callbacks_fn = callbacks_fn
        self.walls, self.cpus = [], []
        self.warmup_fit_wall = None

    def run_epoch(self, dataset, record=True):
        clock = _EpochClock()
        start = time.perf_counter()
        self.model.fit(dataset, epochs=1, verbose=0,
                       callbacks=list(self.callbacks_fn()) + [clock])
        fit_wall = time.perf_counter() - start
        if record:
            self.walls.append(clock.walls[0])
            self.cpus.append(clock.cpus[0])
        return fit_wall


def _imp_peer_callbacks():
    """IMP's callbacks for a peer that stays in a pruning round (no switch)."""
    imp = kl.IMP(rounds=1, prune_rate=0.2)
    imp.epochs(per_round=10 ** 6)
    cbs = imp.callbacks(verbose=0)
    imp.callback.bypass_wrapper_ops = False      # tfmot's own forward pass, as before
    imp.callback._supports_tf_logs = False       # and the per-step log sync, as before
    # The peer is fit one epoch at a time with fresh callbacks on a model that
    # is already pruned: allowed here, where no new run's θ0 is taken from it.
    imp.callback._refuse_pruned_start = lambda: None
    return cbs


def _build_peers(base, masks, prune_rate, names):
    peers = []
    for name in names:
        if name in ("dense", "dense_again"):
            peers.append(_Peer(name, _dense_copy(base), list))
        elif name == "hand_mask":
            peers.append(_Peer(name, _hand_masked(base, masks), list))
        elif name in ("tfmot_default", "tfmot_freq1"):
            model = _tfmot_wrapped(base, None if name == "tfmot_default" else 1)
            peers.append(_Peer(name, model, lambda: [tfmot.sparsity.keras.UpdatePruningStep()]))
        elif name == "imp_tfmot_forward":
            imp = kl.IMP(rounds=1, prune_rate=prune_rate)
            model = _compile(imp.wrap(base))
            masks_lib.write_masks(model, {w.name: masks[w.name]
                                          for w in masks_lib.prunable_weights(model)})
            peers.append(_Peer(name, model, _imp_peer_callbacks))
        else:
            raise ValueError(f"Unknown variant {name!r}; choose from {list(VARIANTS)}.")
    return peers


# -- timing callbacks -----------------------------------------------------------------


class _EpochClock(keras.callbacks.Callback):
    """Wall and process-CPU time of each epoch, and the train function's traces."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True
        self.walls, self.cpus, self.traces, self.functions = [], [], [], []
        self.begin_stamps = []

    def on_epoch_begin(self, epoch, logs=None):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self.begin_stamps.append(self._wall)

    def on_epoch_end(self, epoch, logs=None):
        self.walls.append(time.perf_counter() - self._wall)
        self.cpus.append(time.process_time() - self._cpu)
        function = self.model.train_function
        self.functions.append(id(function))
        self.traces.append(int(function.experimental_get_tracing_count()))


class _Mark(keras.callbacks.Callback):
    """Time stamps at each epoch end (placed around IMPCallback)."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True
        self.stamps = []

    def on_epoch_end(self, epoch, logs=None):
        self.stamps.append(time.perf_counter())


class _Conductor(keras.callbacks.Callback):
    """At each IMP epoch end, runs one epoch of every peer (rotating order)."""

    def __init__(self, peers, dataset):
        super().__init__()
        self._supports_tf_logs = True
        self.peers, self.dataset = peers, dataset
        self.seconds = self.cpu_seconds = 0.0

    def on_epoch_end(self, epoch, logs=None):
        start, cpu_start = time.perf_counter(), time.process_time()
        shift = epoch % len(self.peers) if self.peers else 0
        for peer in self.peers[shift:] + self.peers[:shift]:
            peer.run_epoch(self.dataset)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu_start


def _time_method(obj, name, sink, cpu_sink):
    """Wraps `obj.name` so each call's wall and CPU durations go to the sinks."""
    method = getattr(obj, name, None)
    if method is None:
        return False

    def timed(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)
            cpu_sink.append(time.process_time() - cpu)

    setattr(obj, name, timed)
    return True


# -- one section: a model under a strategy ---------------------------------------------


def _median(values):
    return float(statistics.median(values)) if values else None


def _ratios(values, reference):
    return [a / b for a, b in zip(values, reference) if b > 0]


def run_section(model_name, strategy, cfg, variants):
    """Benchmarks one model under one strategy; returns a JSON-ready dict."""
    settings = MODEL_SETTINGS[model_name]
    batch = cfg["batch"] or settings["batch"]
    shape = settings["shape"]
    conv = model_name != "lenet"
    steps = (cfg.get("conv_steps") if conv else None) or cfg["steps"]
    per_round = (cfg.get("conv_epochs_per_round") if conv else None) or cfg["epochs_per_round"]
    rounds, prune_rate = cfg["rounds"], 0.2
    epochs = (rounds + 1) * per_round
    rewind_k = max(1, steps // 2)
    dataset = _dataset(shape, batch, steps)

    keras.utils.set_random_seed(0)
    base = models_lib.build(model_name, shape, seed=0)
    masks = _first_round_masks(base, prune_rate)
    with strategy.scope():
        peers = _build_peers(base, masks, prune_rate, [v for v in variants if v != "imp"])
        imp = kl.IMP(rounds=rounds, prune_rate=prune_rate, rewind=f"{rewind_k}it")
        imp_model = _compile(imp.wrap(base))
    dense_model = next(p.model for p in peers if p.name == "dense")

    # Warm-up: every peer traces its train function and runs one epoch.
    for peer in peers:
        peer.warmup_fit_wall = peer.run_epoch(dataset, record=False)

    clock, before, after = _EpochClock(), _Mark(), _Mark()
    conductor = _Conductor(peers, dataset)
    imp.epochs(per_round=per_round)
    callbacks = imp.callbacks(verbose=0)
    update_step = next(c for c in callbacks
                       if isinstance(c, tfmot.sparsity.keras.UpdatePruningStep))
    imp_cb = imp.callback
    next_round_times, next_round_cpus = [], []
    has_next_round = _time_method(imp_cb, "_next_round", next_round_times, next_round_cpus)
    callbacks = [clock, update_step, before, imp_cb, after, conductor]
    start, cpu_start = time.perf_counter(), time.process_time()
    imp_model.fit(dataset, epochs=epochs, verbose=0, callbacks=callbacks)
    fit_wall = time.perf_counter() - start
    imp_cpu = time.process_time() - cpu_start - conductor.cpu_seconds
    setup_s = clock.begin_stamps[0] - start
    imp_wall = fit_wall - conductor.seconds

    # 1. throughput in the pruning rounds (epochs of rounds >= 1).
    pruning = [e for e in range(epochs) if e // per_round >= 1]
    dense = next(p for p in peers if p.name == "dense")
    throughput = {}
    series = {"imp": (clock.walls, clock.cpus)}
    series.update({p.name: (p.walls, p.cpus) for p in peers})
    for name in variants:
        walls, cpus = series[name]
        walls_p = [walls[e] for e in pruning]
        cpus_p = [cpus[e] for e in pruning]
        dense_w = [dense.walls[e] for e in pruning]
        dense_c = [dense.cpus[e] for e in pruning]
        median_wall = _median(walls_p)
        throughput[name] = {
            "epochs_measured": len(walls_p),
            "median_epoch_s": median_wall,
            "steps_per_s": steps / median_wall,
            "ratio_wall": _median(_ratios(walls_p, dense_w)),
            "ratio_cpu": _median(_ratios(cpus_p, dense_c)),
            "ratio_of_medians": median_wall / _median(dense_w),
        }

    # 2. round switches: IMPCallback's whole epoch-end work at round ends.
    round_ends = [r * per_round + per_round - 1 for r in range(rounds + 1)]
    epoch_end = [after.stamps[e] - before.stamps[e] for e in range(epochs)]
    switch_s = [epoch_end[e] for e in round_ends[:-1]]
    round_train_s = [sum(clock.walls[r * per_round:(r + 1) * per_round]) for r in range(rounds + 1)]
    fractions = [s / round_train_s[r] for r, s in enumerate(switch_s)]
    after_round1 = round_ends[1]
    traces = {
        "after_first_epoch": clock.traces[0],
        "after_round1": clock.traces[after_round1],
        "final": clock.traces[-1],
        "retraces_after_first_epoch": clock.traces[-1] - clock.traces[0],
        "retraces_after_round1": clock.traces[-1] - clock.traces[after_round1],
        "same_function_throughout": len(set(clock.functions)) == 1,
    }
    switch = {
        "count": len(switch_s),
        "ms": [1e3 * s for s in switch_s],
        "median_ms": 1e3 * _median(switch_s),
        "max_ms": 1e3 * max(switch_s),
        "prune_rewind_reset_ms": [1e3 * s for s in next_round_times] if has_next_round else None,
        "prune_rewind_reset_cpu_ms": [1e3 * s for s in next_round_cpus] if has_next_round else None,
        "round_train_cpu_s": [sum(clock.cpus[r * per_round:(r + 1) * per_round]) for r in range(rounds + 1)],
        "round_train_s": round_train_s,
        "fraction_of_round": fractions,
        "max_fraction_of_round": max(fractions),
        # The bar holds for rounds of at least this many steps at this speed:
        "min_round_steps_for_bar": int(np.ceil(
            max(switch_s) / BARS["switch_fraction"] / _median(clock.walls) * steps)),
    }

    # 3. the whole IMP run vs (R + 1) dense trainings: measured apart (below).
    imp_epochs_s = sum(clock.walls)
    total = _total_run(base, strategy, dataset, rounds, per_round, prune_rate, str(imp.rewind))
    total["interleaved"] = {
        # The interleaved run, for diagnosis: its time between epochs is
        # distorted by the other variants' fits nested in its callbacks.
        "imp_fit_wall_s": fit_wall,
        "peer_seconds_excluded": conductor.seconds,
        "imp_wall_s": imp_wall,
        "imp_cpu_s": imp_cpu,
        "imp_epochs_s": imp_epochs_s,
        "imp_outside_epochs_s": imp_wall - imp_epochs_s,
        # ... of which: fit start to the first epoch (incl. θ0 capture), and
        # IMPCallback's epoch-end work (round bookkeeping and switches).
        "imp_setup_s": setup_s,
        "imp_callback_epoch_end_s": sum(epoch_end),
        "epochs_ratio_paired": sum(clock.walls[1:]) / sum(dense.walls[1:]),
    }

    # 4. host memory of the snapshots and masks vs the parameters.
    entries = masks_lib.prunable_weights(imp_model)
    param_bytes = int(sum(np.asarray(v.numpy()).nbytes for v in dense_model.weights))
    theta0 = imp_cb.theta0
    theta_k = imp_cb.theta_k if imp_cb.theta_k is not theta0 else None
    mask_bytes = int(sum(w.mask.numpy().nbytes for w in entries))
    tracemalloc.start()
    probe = WeightSnapshot.capture(imp_model, step=0)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    weights = {w.name: w.weight.numpy() for w in entries}
    current = masks_lib.read_masks(imp_model)
    tracemalloc.start()
    masks_lib.compute_masks(weights, current, rounds, prune_rate, "global")
    _, mask_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    snapshot_bytes = theta0.nbytes + (theta_k.nbytes if theta_k is not None else 0)
    memory = {
        "param_bytes": param_bytes,
        "theta0_bytes": theta0.nbytes,
        "theta_k_bytes": theta_k.nbytes if theta_k is not None else 0,
        "mask_bytes_per_replica": mask_bytes,
        "replicas": strategy.num_replicas_in_sync,
        "snapshot_measured_bytes": int(held),
        "snapshot_accounted_bytes": probe.nbytes,
        "mask_computation_peak_bytes": int(mask_peak),
        "ratio": (snapshot_bytes + mask_bytes) / param_bytes,
    }

    wrappers = pruned_layers(imp_model)
    return {
        "model": model_name,
        "strategy": ("MirroredStrategy" if isinstance(strategy, tf.distribute.MirroredStrategy)
                     else "single device"),
        "replicas": strategy.num_replicas_in_sync,
        "batch": batch,
        "steps_per_epoch": steps,
        "rounds": rounds,
        "epochs_per_round": per_round,
        "rewind": str(imp.rewind),
        "params": int(dense_model.count_params()),
        "throughput": throughput,
        "round_switch": switch,
        "traces": traces,
        "total": total,
        "memory": memory,
        "imp": {
            "weights_remaining": [r.weights_remaining for r in imp_cb.history],
            "steps_per_round": [r.steps for r in imp_cb.history],
            "bypassed_wrappers": sum("call" in w.__dict__ for w in wrappers),
            "wrappers": len(wrappers),
            "state_variable_bytes": int(sum(v.numpy().nbytes for v in model_state_variables(imp_model))),
        },
    }


def _total_run(base, strategy, dataset, rounds, per_round, prune_rate, rewind):
    """A whole IMP run against R + 1 whole dense trainings, nothing nested.

    Fresh models on both sides, so each pays its trace once: the dense
    trainings are R + 1 `fit` calls of a round's epochs on one dense model
    (half before the IMP run, half after, against load drift), the IMP run is
    one `fit` of all rounds with `imp.callbacks()`.
    """
    with strategy.scope():
        dense = _dense_copy(base)
        imp = kl.IMP(rounds=rounds, prune_rate=prune_rate, rewind=rewind)
        model = _compile(imp.wrap(base))
    imp.epochs(per_round=per_round)
    walls, cpus = [], []

    def dense_training():
        wall, cpu = time.perf_counter(), time.process_time()
        dense.fit(dataset, epochs=per_round, verbose=0)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)

    before = (rounds + 1) // 2
    for _ in range(before):
        dense_training()
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=(rounds + 1) * per_round, verbose=0,
              callbacks=imp.callbacks(verbose=0))
    imp_wall, imp_cpu = time.perf_counter() - wall, time.process_time() - cpu
    for _ in range(rounds + 1 - before):
        dense_training()
    return {
        "imp_wall_s": imp_wall,
        "imp_cpu_s": imp_cpu,
        "imp_rounds_finished": len(imp.history),
        "dense_trainings": len(walls),
        "dense_training_walls_s": walls,
        "dense_training_cpus_s": cpus,
        "dense_trainings_s": sum(walls),
        "ratio": imp_wall / sum(walls),
        # The same in process CPU time, which a loaded machine's scheduling
        # delays do not inflate (judge by it when the load exceeds the cores).
        "ratio_cpu": imp_cpu / sum(cpus),
    }


# -- the whole run ---------------------------------------------------------------------


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run_benchmark(cfg, on_section=None):
    """Runs every section of `cfg`; returns a JSON-ready dict of all figures.

    Args:
      cfg: settings (see `TINY`, `FULL`, `config_from_args`).
      on_section: optional callable given each section's dict when it is done.
    """
    variants = cfg.get("variants") or list(VARIANTS)
    for required in ("dense", "imp"):
        if required not in variants:
            raise ValueError(f"variants must include {required!r}, got {variants}.")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"Unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}.")
    models = [m for m in cfg["models"] if m in models_lib.MODELS]
    missing = [m for m in cfg["models"] if m not in models_lib.MODELS]
    results = {
        "config": dict(cfg, variants=variants),
        "missing_models": missing,
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "tf_keras": keras.__version__,
            "tfmot": tfmot.__version__,
            "cpus": os.cpu_count(),
        },
        "load_before": _load(),
        "sections": [],
    }
    start = time.perf_counter()
    level = logger.level
    logger.setLevel(logging.ERROR)  # the peers' IMP callbacks warn about epochs
    try:
        plans = [(m, tf.distribute.get_strategy()) for m in models]
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
        if len(devices) == 2:
            cross_device_ops = (tf.distribute.ReductionToOneDevice()
                                if cfg.get("mirrored_reduce_to_one_device") else None)
            mirrored = tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
            plans += [(m, mirrored) for m in cfg.get("mirrored_models", []) if m in models]
        else:
            results["mirrored_skipped"] = "fewer than 2 logical CPU devices"
        for model_name, strategy in plans:
            chosen = variants
            if strategy.num_replicas_in_sync > 1 and cfg.get("mirrored_variants"):
                chosen = [v for v in variants if v in cfg["mirrored_variants"]]
            section = run_section(model_name, strategy, cfg, chosen)
            section["load_after"] = _load()
            results["sections"].append(section)
            if on_section is not None:
                on_section(section)
    finally:
        logger.setLevel(level)
    results["load_after"] = _load()
    results["seconds"] = time.perf_counter() - start
    return results


# -- printing ---------------------------------------------------------------------------


def _ok(value, bar, higher_is_worse=True):
    if value is None:
        return "n/a"
    return "meets" if (value <= bar if higher_is_worse else value >= bar) else "MISSES"


def format_report(results):
    """The human-readable report of `run_benchmark`'s results."""
    lines = []
    env = results["environment"]
    lines.append(f"keras-lottery IMP benchmark  (TF {env['tensorflow']}, tf_keras "
                 f"{env['tf_keras']}, tfmot {env['tfmot']}, {env['cpus']} CPUs)")
    lines.append(f"load average before: {results['load_before']}  after: {results['load_after']}  "
                 f"run time: {results['seconds']:.0f} s")
    if results["missing_models"]:
        lines.append(f"not run (not in keras_lottery.models): {', '.join(results['missing_models'])}")
    for s in results["sections"]:
        lines.append("")
        lines.append(format_section(s))
    return "\n".join(lines)


def format_section(s):
    """The report of one section (a model under a strategy)."""
    lines = []
    lines.append(f"== {s['model']} ({s['params']:,} params), batch {s['batch']}, "
                 f"{s['steps_per_epoch']} steps/epoch, {s['rounds']} rounds x "
                 f"{s['epochs_per_round']} epochs, rewind {s['rewind']}, "
                 f"{s['strategy']} ({s['replicas']} replica{'s' if s['replicas'] > 1 else ''}); "
                 f"load after {s['load_after']}")
    lines.append(f"1. step throughput in pruning rounds (median of "
                 f"{s['throughput']['dense']['epochs_measured']} interleaved epochs)")
    lines.append(f"   {'variant':<19}{'steps/s':>9}{'wall x':>8}{'cpu x':>8}  what")
    for name, row in s["throughput"].items():
        lines.append(f"   {name:<19}{row['steps_per_s']:>9.1f}{row['ratio_wall']:>8.3f}"
                     f"{row['ratio_cpu']:>8.3f}  {VARIANTS[name]}")
    imp_row = s["throughput"]["imp"]
    lines.append(f"   bar: IMP step <= {BARS['step_ratio']}x dense: wall "
                 f"{imp_row['ratio_wall']:.3f} ({_ok(imp_row['ratio_wall'], BARS['step_ratio'])}), "
                 f"cpu {imp_row['ratio_cpu']:.3f} ({_ok(imp_row['ratio_cpu'], BARS['step_ratio'])})")
    sw, tr = s["round_switch"], s["traces"]
    detail = ""
    if sw["prune_rewind_reset_ms"]:
        cpu_fraction = max(c / 1e3 / sw["round_train_cpu_s"][r]
                           for r, c in enumerate(sw["prune_rewind_reset_cpu_ms"]))
        detail = (f" (prune+rewind+reset alone: median {_median(sw['prune_rewind_reset_ms']):.1f} ms, "
                  f"{_median(sw['prune_rewind_reset_cpu_ms']):.1f} ms CPU = max "
                  f"{100 * cpu_fraction:.2f}% of a round's CPU)")
    lines.append(f"2. round switch: {sw['count']} switches, median {sw['median_ms']:.1f} ms, "
                 f"max {sw['max_ms']:.1f} ms{detail}; max {100 * sw['max_fraction_of_round']:.2f}% "
                 f"of this benchmark's round ({_ok(sw['max_fraction_of_round'], BARS['switch_fraction'])} "
                 f"< {100 * BARS['switch_fraction']:.0f}%); under 1% for rounds of >= "
                 f"{sw['min_round_steps_for_bar']:,} steps")
    lines.append(f"   tf.function traces of train_function: {tr['after_first_epoch']} after the first "
                 f"epoch, {tr['after_round1']} after round 1, {tr['final']} at the end: "
                 f"{tr['retraces_after_round1']} retraces after round 1 "
                 f"({_ok(tr['retraces_after_round1'], 0)}), same function object: "
                 f"{tr['same_function_throughout']}")
    t = s["total"]
    i = t["interleaved"]
    lines.append(f"3. total: a whole IMP run {t['imp_wall_s']:.2f} s / {t['dense_trainings']} whole dense "
                 f"trainings {t['dense_trainings_s']:.2f} s = {t['ratio']:.3f} "
                 f"({_ok(t['ratio'], BARS['total_ratio'])} <= {BARS['total_ratio']}); in CPU time "
                 f"{t['imp_cpu_s']:.2f} s / {sum(t['dense_training_cpus_s']):.2f} s = {t['ratio_cpu']:.3f} "
                 f"({_ok(t['ratio_cpu'], BARS['total_ratio'])})")
    lines.append(f"   interleaved run: epochs after the first (paired with the dense peer) "
                 f"{i['epochs_ratio_paired']:.3f}; outside its epochs {i['imp_outside_epochs_s']:.2f} s "
                 f"(fit setup {i['imp_setup_s']:.2f} s, IMPCallback epoch ends "
                 f"{i['imp_callback_epoch_end_s']:.2f} s, rest {i['imp_outside_epochs_s'] - i['imp_setup_s'] - i['imp_callback_epoch_end_s']:.2f} s)")
    m = s["memory"]
    lines.append(f"4. host memory: params {m['param_bytes'] / 2**20:.2f} MiB; theta0 "
                 f"{m['theta0_bytes'] / 2**20:.2f} MiB, theta_k {m['theta_k_bytes'] / 2**20:.2f} MiB, "
                 f"masks {m['mask_bytes_per_replica'] / 2**20:.2f} MiB/replica -> "
                 f"{m['ratio']:.2f}x params ({_ok(m['ratio'], BARS['snapshot_ratio'])} <= "
                 f"{BARS['snapshot_ratio']:.0f}x); a snapshot measured by tracemalloc "
                 f"{m['snapshot_measured_bytes'] / 2**20:.2f} MiB (accounted "
                 f"{m['snapshot_accounted_bytes'] / 2**20:.2f}); transient peak of a global "
                 f"mask computation {m['mask_computation_peak_bytes'] / 2**20:.2f} MiB")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="IMP's cost next to plain training and tfmot (docs/performance.md).")
    parser.add_argument("--tiny", action="store_true",
                        help="a seconds-long run for the tests (LeNet, 3 steps/epoch, 2 rounds)")
    parser.add_argument("--models", help="comma-separated, from " + ", ".join(MODEL_SETTINGS))
    parser.add_argument("--mirrored-models",
                        help="models also run under MirroredStrategy (comma-separated; '' for none)")
    parser.add_argument("--steps", type=int, help="steps per epoch for LeNet")
    parser.add_argument("--conv-steps", type=int, help="steps per epoch for conv4/resnet20")
    parser.add_argument("--rounds", type=int, help="IMP rounds after the dense one")
    parser.add_argument("--epochs-per-round", type=int)
    parser.add_argument("--variants", help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the final report (not each section as it finishes)")
    return parser.parse_args(argv)


def config_from_args(args):
    cfg = dict(TINY if args.tiny else FULL)
    if args.models:
        cfg["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.mirrored_models is not None:
        cfg["mirrored_models"] = [m.strip() for m in args.mirrored_models.split(",") if m.strip()]
    for key in ("steps", "conv_steps", "rounds", "epochs_per_round"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.variants:
        cfg["variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [m for m in cfg["models"] if m not in MODEL_SETTINGS]
    if unknown:
        raise SystemExit(f"Unknown model(s) {unknown}; choose from {list(MODEL_SETTINGS)}.")
    if cfg["rounds"] < 1 or cfg["epochs_per_round"] < 1 or cfg["steps"] < 2:
        raise SystemExit("--rounds and --epochs-per-round must be >= 1 and --steps >= 2.")
    return cfg


def main(argv=None):
    args = parse_args(argv)

    def progress(section):
        print(format_section(section) + "\n", flush=True)

    results = run_benchmark(config_from_args(args), on_section=None if args.quiet else progress)
    print(format_report(results), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
