"""Resuming an IMP run after a crash, from its last finished round.

At the end of every round, once the new masks are written and the
survivors rewound (that is, in the exact state the next round starts from),
`RoundCheckpoint` writes to a `resume_dir`, in this order:

* `imp_round_NNN.npz`: every model variable (kernels, biases, masks, tfmot's
  bookkeeping), every optimizer variable (step counter, slots), a dynamic
  loss scale if there is one, and the θ0 / θk snapshots;
* `imp_round_NNN.json`: that checkpoint's metadata: the round to start next,
  the epoch `fit` must start at, the `IMPCallback`'s state
  (`IMPCallback.state_dict()`: finished rounds' results, k, ...), the run's
  settings, and the `.npz` file's size and SHA-256;
* `imp_checkpoint.json`: a copy of the newest metadata.

Each file is written to a temporary name in the same folder and renamed over
its target, so a process killed at any moment leaves complete files only.
The two newest round checkpoints are kept: a `.npz` that is missing,
truncated or damaged (its size or SHA-256 differ from the metadata's) is
skipped with a warning naming it, and the run resumes from the previous
complete checkpoint; when there is none, `read_checkpoint` raises an error
naming the damaged files.

Started again with the same command, the run restores that state before its
first step and trains the remaining rounds; a round that was interrupted is
trained again from its start. Keras' `fit` counts epochs from
`initial_epoch`, so pass `initial_epoch=imp.initial_epoch()` (0 when there is
nothing to resume): a mismatch raises rather than silently training the wrong
round. A checkpoint written with other settings (IMP's, the optimizer's
configuration, or the `run_config` given to the `IMPCallback`, less the keys
in `IGNORED_SETTINGS`) is refused, listing every difference.

Under `tf.distribute` every worker restores the same files and does the same
host-side reads at a round's end; only the chief (`strategy.extended.
should_checkpoint`) writes. With several machines `resume_dir` must be on
storage every worker can read (a shared file system or `gs://...`; files go
through `tf.io.gfile`).

Example:
  >>> imp = kl.IMP(rounds=10, prune_rate=0.2, rewind="500it")   # doctest: +SKIP
  >>> model = imp.wrap(model); model.compile(...)                # doctest: +SKIP
  >>> model.fit(x, y, epochs=imp.epochs(per_round=5),
  ...           callbacks=imp.callbacks(resume_dir="run/resume"),
  ...           initial_epoch=imp.initial_epoch("run/resume"))  # doctest: +SKIP
"""

import hashlib
import io
import json
import logging
import math
import os
import posixpath
import re

import numpy as np
import tensorflow as tf

from keras_lottery import blocks as blocks_lib
from keras_lottery import report as report_lib
from keras_lottery._keras import keras
from keras_lottery.callback import IMPCallback, is_chief
from keras_lottery.rewind import WeightSnapshot, base_optimizer, build_optimizer, optimizer_variables

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointError",
    "IGNORED_SETTINGS",
    "NonFiniteLossError",
    "RoundCheckpoint",
    "RoundModelSaver",
    "StopOnNonFiniteLoss",
    "format_settings_diff",
    "initial_epoch",
    "is_chief",
    "read_checkpoint",
    "settings_diff",
]

logger = logging.getLogger("keras_lottery")

CHECKPOINT_FILE = "imp_checkpoint.json"
FORMAT_VERSION = 2
_KEEP_ROUNDS = 2
_ROUND_FILE = re.compile(r"^imp_round_(\d+)\.(npz|json)$")
_WARNED = set()  # fallback warnings already given in this process

#: Keys of an `IMPCallback`'s `run_config` that do not change what is trained
#: (where results go, what is printed), and may differ on resume. `data_dir`
#: is here because the CLI records the data's SHA-256 (`data_sha256`), which
#: catches other data wherever it comes from.
IGNORED_SETTINGS = ("out", "quiet", "resume", "tensorboard", "data_dir", "command", "func",
                    "verbose", "check_sparsity")


class CheckpointError(ValueError):
    """A resume folder holds checkpoint files, but none that is complete."""


def _join(folder, name):
    if "://" in folder:
        return posixpath.join(folder, name)
    return os.path.join(folder, name)


def _atomic_write_bytes(path, data):
    """Writes `data` to a temporary file beside `path`, then renames it to `path`."""
    if "://" not in path:
        report_lib.atomic_write(path, data, mode="wb")
        return
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _read_bytes(path):
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _round_name(next_round, ext):
    return f"imp_round_{next_round:03d}.{ext}"


# -- settings ---------------------------------------------------------------------

def _plain(value):
    """`value` as JSON would store it (tuples -> lists, NumPy scalars -> numbers)."""
    def default(obj):
        if hasattr(obj, "item"):
            return obj.item()
        return str(obj)

    return json.loads(json.dumps(value, sort_keys=True, default=default))


def _optimizer_settings(optimizer):
    """The optimizer's class and configuration (learning rate, betas, ...), name aside."""
    if optimizer is None:
        return None
    try:
        config = dict(optimizer.get_config())
    except (NotImplementedError, AttributeError, TypeError):
        config = {}
    config.pop("name", None)
    return dict(config, **{"class": type(optimizer).__name__})


def _settings(imp_callback, model):
    """Everything a resumed run must share with the run that wrote the checkpoint."""
    state = imp_callback.state_dict()
    settings = {
        "rounds": imp_callback.schedule.rounds,
        "prune_rate": imp_callback.schedule.prune_rate,
        "rewind": str(imp_callback.rewind),
        "scope": imp_callback.scope,
        "layer_floor": imp_callback.layer_floor,
        "layer_rates": {k: float(v) for k, v in sorted(imp_callback.layer_rates.items())},
        # a run cannot change its block setting: the masks so far are made of its blocks
        **blocks_lib.block_config(getattr(imp_callback, "block", None),
                                  getattr(imp_callback, "block_score", "l2"),
                                  getattr(imp_callback, "block_exempt", ())),
        "epochs_per_round": imp_callback.epochs_per_round,
        "steps_per_epoch": state["steps_per_epoch"],
        "optimizer_config": _optimizer_settings(getattr(model, "optimizer", None)),
    }
    # only with round_end="converged": checkpoints of plain runs keep their settings
    settings.update(imp_callback._round_end_config())
    for key, value in (imp_callback.run_config or {}).items():
        if key not in IGNORED_SETTINGS and key not in settings:
            settings[key] = value
    return _plain(settings)


def _flatten(settings, prefix=""):
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value and key == "optimizer_config":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def settings_diff(saved, now, keys=None):
    """The settings that differ between a checkpoint and this run.

    Args:
      saved: the settings stored in a checkpoint (`read_checkpoint(...)["config"]`).
      now: this run's settings.
      keys: optional keys to compare (default: every key of either).

    Returns:
      A list of `(setting, saved value, value now)`, sorted by setting; a value
      missing on one side is None. The optimizer's configuration is compared
      entry by entry (`optimizer_config.learning_rate`, ...).

    Example:
      >>> settings_diff({"lr": 0.1, "seed": 0}, {"lr": 0.2, "seed": 0})
      [('lr', 0.1, 0.2)]
    """
    saved, now = _flatten(_plain(saved or {})), _flatten(_plain(now or {}))
    if keys is None:
        names = set(saved) | set(now)
    else:
        keys = set(keys)
        names = {k for k in set(saved) | set(now) if k in keys or k.split(".")[0] in keys}
    return [(k, saved.get(k), now.get(k)) for k in sorted(names) if saved.get(k) != now.get(k)]


def _show(value):
    if value is None:
        return "(not set)"
    if isinstance(value, float):
        return f"{value:.7g}"  # float32 settings (an optimizer's) read back as 0.00999999977
    return json.dumps(value)


def format_settings_diff(diff, names=None):
    """The lines `  setting: old -> new` for a `settings_diff` result.

    Args:
      diff: from `settings_diff`.
      names: optional dict setting -> how to show it (e.g. "lr" -> "--lr").
    """
    names = names or {}
    return "\n".join(f"  {names.get(k, k)}: {_show(old)} -> {_show(new)}" for k, old, new in diff)


# -- reading ------------------------------------------------------------------------

def _load_meta(path):
    """(metadata, None), or (None, why it cannot be used)."""
    try:
        meta = json.loads(_read_bytes(path))
    except (ValueError, tf.errors.OpError) as err:
        return None, f"{path} is unreadable or truncated ({err})"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        return None, (f"{path} has checkpoint format {found!r}; this keras_lottery reads "
                      f"format {FORMAT_VERSION}")
    missing = [k for k in ("next_round", "initial_epoch", "data_file", "data_bytes",
                           "data_sha256", "state", "config") if k not in meta]
    if missing:
        return None, f"{path} lacks {missing}"
    return meta, None


def _load_data(resume_dir, meta):
    """(the .npz bytes, None), or (None, why they cannot be used)."""
    path = _join(resume_dir, meta["data_file"])
    if not tf.io.gfile.exists(path):
        return None, f"{path} is missing"
    data = _read_bytes(path)
    if len(data) != meta["data_bytes"]:
        return None, f"{path} is truncated ({len(data)} of {meta['data_bytes']} bytes)"
    if hashlib.sha256(data).hexdigest() != meta["data_sha256"]:
        return None, f"{path} is damaged (its SHA-256 differs from the checkpoint's)"
    return data, None


def _find_checkpoint(resume_dir):
    """(metadata, .npz bytes) of the newest complete checkpoint, or (None, None)."""
    if resume_dir is None or not tf.io.gfile.isdir(resume_dir):
        return None, None
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(resume_dir)]
    paths = [_join(resume_dir, n) for n in sorted(names, reverse=True)
             if _ROUND_FILE.match(n) and n.endswith(".json")]
    if CHECKPOINT_FILE in names:
        paths.insert(0, _join(resume_dir, CHECKPOINT_FILE))
    has_data = any(_ROUND_FILE.match(n) for n in names)
    problems, metas = [], []
    for path in paths:
        meta, why = _load_meta(path)
        if meta is None:
            problems.append(why)
        else:
            metas.append((path, meta))
    metas.sort(key=lambda pm: -int(pm[1]["next_round"]))  # stable: the pointer first
    tried = set()
    for path, meta in metas:
        if meta["data_file"] in tried:
            continue
        tried.add(meta["data_file"])
        data, why = _load_data(resume_dir, meta)
        if data is None:
            problems.append(why)
            continue
        warning = "; ".join(problems)
        if problems and warning not in _WARNED:  # once: a run reads the folder several times
            _WARNED.add(warning)
            logger.warning("IMP checkpoint: %s; resuming from the previous complete "
                           "checkpoint %s instead.", warning, _join(resume_dir, meta["data_file"]))
        return meta, data
    if problems or has_data:
        raise CheckpointError(
            f"No complete IMP checkpoint in {resume_dir}: "
            f"{'; '.join(problems) or 'round files without their metadata'}. "
            f"Delete {resume_dir} to start the run afresh (or restore the damaged "
            "files from a backup).")
    return None, None


def read_checkpoint(resume_dir):
    """The newest complete round checkpoint's metadata in `resume_dir`, or None.

    A checkpoint whose `.npz` is missing, truncated or damaged is skipped
    (with a warning naming it) in favour of the previous complete one.

    Args:
      resume_dir: the folder given to `IMP.callbacks(resume_dir=...)`.

    Returns:
      A dict with `next_round`, `initial_epoch`, `finished`, `config` (the
      run's settings), `state` (the `IMPCallback` state less the snapshots'
      values), `history` (list of round dicts) and `data_file`, or None when
      the folder holds no checkpoint.

    Raises:
      CheckpointError: (a ValueError) if the folder holds checkpoint files
        but none is complete, naming each file and what is wrong with it.
    """
    return _find_checkpoint(resume_dir)[0]


def initial_epoch(resume_dir):
    """The epoch `fit` must start at to resume the run in `resume_dir` (0: none).

    Raises:
      CheckpointError: as `read_checkpoint` does.

    Example:
      >>> model.fit(..., initial_epoch=kl.resume.initial_epoch("run/resume"))  # doctest: +SKIP
    """
    meta = read_checkpoint(resume_dir)
    return 0 if meta is None else int(meta["initial_epoch"])


# -- the model's and optimizer's variables ------------------------------------------

def _loss_scale_variables(optimizer):
    """A dynamic loss scale's state (not part of `optimizer.variables`)."""
    state = getattr(optimizer, "_loss_scale", None)
    names = ("current_loss_scale", "counter")
    if state is None or not all(isinstance(getattr(state, n, None), tf.Variable) for n in names):
        return []
    return [getattr(state, n) for n in names]


def _slot_name(name, optimizer):
    """A slot's name without the optimizer's name scope ('Adam/m/x:0' -> 'm/x:0').

    The scope depends on where the slot was created (inside `apply_gradients`
    or by an explicit `build`), not on what it holds; a legacy optimizer
    inside a `LossScaleOptimizer` creates its slots under the loss scaler's
    `tf.cond` too ('cond_1/Adam/x/m:0'), so everything up to the optimizer's
    scope goes.
    """
    parts = name.split("/")
    for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        for attr in ("name", "_name"):
            scope = getattr(opt, attr, None)
            if isinstance(scope, str) and scope and scope in parts[:-1]:
                return "/".join(parts[parts.index(scope) + 1:])
    return name


def _snapshot_meta(snap):
    return None if snap is None else {"names": snap.names, "step": snap.step}


def _refuse_unresumable_optimizer(model):
    """Refuses, before training, what a resume could not restore exactly.

    Restoring an optimizer's slots means creating them before the first step,
    from a callback. The current API's Nadam multiplies its momentum-schedule
    product a number of times per step that depends on a Python counter
    advanced each time its update is traced, so an optimizer built before
    the first step (as a resume must) trains differently from one built
    inside it (plain tf_keras, one device: weights 3e-3 apart after 8 steps;
    tests/test_resume.py), and a resumed run could not match the
    uninterrupted one. Under a strategy with several replicas the product
    also evolves differently on each replica and training soon turns NaN
    (measured with MirroredStrategy on 2 devices, even without IMP). The
    legacy Nadam keeps it as a slot and resumes bit-identically.
    """
    optimizer = base_optimizer(model.optimizer)
    replicas = getattr(model.distribute_strategy, "num_replicas_in_sync", 1)
    if isinstance(optimizer, keras.optimizers.Nadam):
        where = f" (and under this strategy's {replicas} replicas they diverge)" if replicas > 1 else ""
        raise ValueError(
            "Resumable IMP runs (resume_dir) cannot use keras.optimizers.Nadam: re-creating "
            "its state on resume changes how often it updates its momentum-schedule product, "
            f"so the resumed run would train differently{where}. Use "
            "keras.optimizers.legacy.Nadam (or another optimizer), or run without resume_dir.")


class RoundCheckpoint(keras.callbacks.Callback):
    """Writes a checkpoint at every round's end and restores it when fit starts again.

    `IMP.callbacks(resume_dir=...)` adds it right after the `IMPCallback`; add
    it yourself only when you build the callbacks by hand, and then after the
    `IMPCallback` it serves.

    Args:
      imp_callback: the run's `IMPCallback`.
      resume_dir: folder (local or `gs://`) for the checkpoint files.

    Raises:
      TypeError: if `imp_callback` is not an `IMPCallback`.
      ValueError: for an empty `resume_dir`; when fit starts, if the checkpoint
        in `resume_dir` belongs to a run with other settings (every difference
        is listed, `setting: saved -> now`), another model or another optimizer.
      CheckpointError: (a ValueError) when fit starts, if `resume_dir` holds
        checkpoint files but none is complete.
      RuntimeError: if fit starts at another epoch than the checkpoint's
        (pass `initial_epoch=imp.initial_epoch()`), or the callback order is wrong.

    Example:
      >>> cb = IMPCallback(IMPSchedule(3, 0.2), epochs_per_round=2)  # doctest: +SKIP
      >>> model.fit(x, y, epochs=8, initial_epoch=initial_epoch("ckpt"),
      ...           callbacks=[UpdatePruningStep(), cb,
      ...                      RoundCheckpoint(cb, "ckpt")])       # doctest: +SKIP
    """

    def __init__(self, imp_callback, resume_dir):
        super().__init__()
        if not isinstance(imp_callback, IMPCallback):
            raise TypeError(f"imp_callback must be an IMPCallback, got {imp_callback!r}.")
        if not resume_dir:
            raise ValueError(f"resume_dir must be a folder path, got {resume_dir!r}.")
        self.imp_callback = imp_callback
        self.resume_dir = os.fspath(resume_dir)
        self.restored_round = None
        self._expected_epoch = None
        self._rounds_saved = 0
        self._settings = None

    # -- Keras hooks ----------------------------------------------------------

    def on_train_begin(self, logs=None):
        imp = self.imp_callback
        if imp.theta0 is None:
            raise RuntimeError(
                "RoundCheckpoint ran before its IMPCallback started: put it after "
                "the IMPCallback in fit's callbacks (IMP.callbacks() does).")
        _refuse_unresumable_optimizer(self.model)
        # Read before any step: a learning rate that callbacks change during
        # training must compare as it was compiled.
        self._settings = _settings(imp, self.model)
        self._expected_epoch = 0
        meta, data = _find_checkpoint(self.resume_dir)
        self._rounds_saved = len(imp.history)
        if meta is None:
            return
        self._restore(meta, data)
        self._rounds_saved = len(imp.history)
        self._expected_epoch = int(meta["initial_epoch"])

    def on_epoch_begin(self, epoch, logs=None):
        if self._expected_epoch is None:
            return
        expected, self._expected_epoch = self._expected_epoch, None
        if epoch != expected:
            raise RuntimeError(
                f"fit started at epoch {epoch}, but the checkpoint in {self.resume_dir} "
                f"resumes at epoch {expected} (round {self.imp_callback.round}). Pass "
                "initial_epoch=imp.initial_epoch() (or keras_lottery.resume."
                "initial_epoch(resume_dir)) to fit.")

    def on_epoch_end(self, epoch, logs=None):
        if len(self.imp_callback.history) > self._rounds_saved:
            self._save()
            self._rounds_saved = len(self.imp_callback.history)

    # -- writing --------------------------------------------------------------

    def _save(self):
        """Writes the state the next round starts from (runs on every worker)."""
        imp = self.imp_callback
        model = self.model
        state = imp.state_dict()
        next_round = len(state["history"])
        finished = next_round > imp.schedule.rounds
        # Every worker reads the same variables in the same order (reading a
        # sync-on-read variable may need all workers); only the chief writes.
        model_vars = list(model.weights)
        opt_vars = optimizer_variables(model.optimizer)
        scale_vars = _loss_scale_variables(model.optimizer)
        arrays = {}
        for prefix, variables in (("model", model_vars), ("optimizer", opt_vars),
                                  ("loss_scale", scale_vars)):
            for i, v in enumerate(variables):
                arrays[f"{prefix}/{i}"] = np.asarray(v.numpy())
        theta0, theta_k = state["theta0"], state["theta_k"]
        theta_k_is_theta0 = theta_k is theta0 and theta0 is not None
        for prefix, snap in (("theta0", theta0), ("theta_k", theta_k)):
            if snap is not None and not (prefix == "theta_k" and theta_k_is_theta0):
                for i, value in enumerate(snap.values):
                    arrays[f"{prefix}/{i}"] = value
        if not is_chief(model):
            return
        data_file = _round_name(next_round, "npz")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        tf.io.gfile.makedirs(self.resume_dir)
        _atomic_write_bytes(_join(self.resume_dir, data_file), data)
        meta = {
            "format": FORMAT_VERSION,
            "next_round": next_round,
            "initial_epoch": state["next_epoch"],
            "finished": finished,
            "config": self._settings if self._settings is not None else _settings(imp, model),
            "model_variables": [v.name for v in model_vars],
            # without the name scope: a resumed run creates the slots under another one
            "optimizer_variables": [_slot_name(v.name, model.optimizer) for v in opt_vars],
            "loss_scale_variables": len(scale_vars),
            "state": {
                "round": state["round"],
                "rewind_steps": state["rewind_steps"],
                "steps_per_epoch": state["steps_per_epoch"],
                "next_epoch": state["next_epoch"],
                "theta0": _snapshot_meta(theta0),
                # rewind "0it": θk is θ0, stored once
                "theta_k": "theta0" if theta_k_is_theta0 else _snapshot_meta(theta_k),
            },
            "history": state["history"],
            "data_file": data_file,
            "data_bytes": len(data),
            "data_sha256": hashlib.sha256(data).hexdigest(),
        }
        text = (json.dumps(_plain(meta), indent=1) + "\n").encode()
        _atomic_write_bytes(_join(self.resume_dir, _round_name(next_round, "json")), text)
        _atomic_write_bytes(_join(self.resume_dir, CHECKPOINT_FILE), text)
        self._remove_old_files(next_round)
        logger.info("IMP checkpoint: round %d saved to %s", next_round - 1, self.resume_dir)

    def _remove_old_files(self, next_round):
        """Keeps the newest `_KEEP_ROUNDS` round checkpoints (older ones are never read),
        and removes temporary files a killed process left (only the chief writes here)."""
        for name in tf.io.gfile.listdir(self.resume_dir):
            name = name.rstrip("/")
            match = _ROUND_FILE.match(name)
            stale = name.endswith(".tmp") or (name.startswith(".tmp-") and (
                name.endswith(CHECKPOINT_FILE) or _ROUND_FILE.search(name.split("-")[-1])))
            if stale or (match and int(match.group(1)) <= next_round - _KEEP_ROUNDS):
                tf.io.gfile.remove(_join(self.resume_dir, name))

    # -- reading --------------------------------------------------------------

    def _restore(self, meta, data):
        imp = self.imp_callback
        model = self.model
        diff = settings_diff(meta["config"], self._settings)
        if diff:
            raise ValueError(
                f"The checkpoint in {self.resume_dir} is from a run with other "
                f"settings (setting: saved -> now):\n{format_settings_diff(diff)}\n"
                "Resume with the same settings as before, use a new resume_dir to "
                f"start another run, or delete {self.resume_dir} to start over.")
        model_vars = list(model.weights)
        if [v.name for v in model_vars] != meta["model_variables"]:
            raise ValueError(
                f"The checkpoint in {self.resume_dir} was written for another model "
                "(its variables differ). Use a new resume_dir for this model.")
        with np.load(io.BytesIO(data)) as npz:
            arrays = {k: npz[k] for k in npz.files}

        for i, v in enumerate(model_vars):
            v.assign(arrays[f"model/{i}"])
        optimizer = model.optimizer
        opt_vars = optimizer_variables(optimizer)
        if len(opt_vars) != len(meta["optimizer_variables"]):
            build_optimizer(optimizer, model)
            opt_vars = optimizer_variables(optimizer)
        now = [_slot_name(v.name, optimizer) for v in opt_vars]
        saved_names = [_slot_name(n, optimizer) for n in meta["optimizer_variables"]]
        shapes_ok = all(tuple(v.shape) == arrays[f"optimizer/{i}"].shape
                        for i, v in enumerate(opt_vars)) if now == saved_names else False
        if not shapes_ok:
            raise ValueError(
                f"The checkpoint in {self.resume_dir} was written with another "
                f"optimizer (variables {saved_names[:4]}... vs {now[:4]}...). "
                "Compile with the same optimizer, or use a new resume_dir.")
        for i, v in enumerate(opt_vars):
            v.assign(arrays[f"optimizer/{i}"])
        scale_vars = _loss_scale_variables(optimizer)
        if len(scale_vars) == meta["loss_scale_variables"]:
            for i, v in enumerate(scale_vars):
                v.assign(arrays[f"loss_scale/{i}"])

        saved = meta["state"]

        def snapshot(key):
            info = saved[key]
            if info is None:
                return None
            values = [arrays[f"{key}/{i}"] for i in range(len(info["names"]))]
            return WeightSnapshot(info["names"], values, info["step"])

        theta0 = snapshot("theta0")
        theta_k = theta0 if saved["theta_k"] == "theta0" else snapshot("theta_k")
        imp.load_state({"round": saved["round"], "history": meta["history"],
                        "rewind_steps": saved["rewind_steps"],
                        "steps_per_epoch": saved["steps_per_epoch"],
                        "next_epoch": saved.get("next_epoch", meta["initial_epoch"]),
                        "theta0": theta0, "theta_k": theta_k})
        self.restored_round = int(meta["next_round"])
        if meta["finished"]:
            logger.info("IMP checkpoint in %s: the run had finished all %d rounds; "
                        "nothing left to train.", self.resume_dir, imp.schedule.rounds + 1)
        else:
            logger.info("IMP checkpoint in %s: resuming at round %d (epoch %d).",
                        self.resume_dir, self.restored_round, meta["initial_epoch"])


# -- the trained model of the last finished round -----------------------------------

class RoundModelSaver(keras.callbacks.Callback):
    """Saves the wrapped model as each round ends, before IMP prunes and rewinds it.

    The file (written to a temporary name beside `path`, then renamed) holds
    the last finished round's trained network, so an interrupted run can be
    exported (`keras-lottery export`). Put it after tfmot's
    `UpdatePruningStep` (which re-masks the kernels at an epoch's end) and
    before the `IMPCallback` it follows in `fit`'s callbacks.

    Args:
      imp_callback: the run's `IMPCallback` (for the round length).
      path: the `.keras` (or `.h5`) file to write.

    Raises:
      TypeError: if `imp_callback` is not an `IMPCallback`.

    Example:
      >>> cbs = imp.callbacks(); i = cbs.index(imp.callback)          # doctest: +SKIP
      >>> cbs.insert(i, RoundModelSaver(imp.callback, "run/wrapped_model.keras"))  # doctest: +SKIP
    """

    def __init__(self, imp_callback, path):
        super().__init__()
        if not isinstance(imp_callback, IMPCallback):
            raise TypeError(f"imp_callback must be an IMPCallback, got {imp_callback!r}.")
        self.imp_callback = imp_callback
        self.path = os.fspath(path)
        self.saved_round = None  # the round whose model `path` holds (None: none saved yet)

    def on_epoch_end(self, epoch, logs=None):
        if self.imp_callback.round_ends_at(epoch):
            if is_chief(self.model):
                report_lib.atomic_path(self.path, self.model.save)
            self.saved_round = int(self.imp_callback.round)


# -- a loss that is no longer finite -----------------------------------------------

class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or weights)."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops `fit` with an error at the first NaN or infinite training loss or weight.

    Each batch's loss is checked one batch late (the previous batch's loss
    is read when the next one ends, so the device never waits for the
    host), the epoch's mean loss at its end, and then the trainable weights
    (one reduction on the device): NaN inputs through a ReLU leave the loss
    finite but turn the first layer's weights NaN. Put it first in `fit`'s
    callbacks: then the round that diverged is neither recorded nor pruned
    from, and the reports, checkpoints and saved model keep the finished rounds.

    Args:
      imp_callback: optional `IMPCallback`, to name the round in the error.

    Raises:
      NonFiniteLossError: (a FloatingPointError) from `fit`, naming the
        epoch, batch, round and the likely causes.

    Example:
      >>> model.fit(ds, callbacks=[StopOnNonFiniteLoss(imp.callback)] + imp.callbacks())  # doctest: +SKIP
    """

    def __init__(self, imp_callback=None):
        super().__init__()
        self._supports_tf_logs = True
        self.imp_callback = imp_callback
        self._pending = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._pending = None

    def on_train_batch_end(self, batch, logs=None):
        previous, self._pending = self._pending, (batch, (logs or {}).get("loss"))
        if previous is not None:
            self._check(*previous)

    def on_epoch_end(self, epoch, logs=None):
        if self._pending is not None:
            self._check(*self._pending)
        self._pending = None
        if logs and "loss" in logs:
            self._check(None, logs["loss"])
        # NaN inputs through a ReLU leave the loss finite but the weights NaN
        variables = list(self.model.trainable_variables)
        if variables and not bool(tf.reduce_all(tf.stack(
                [tf.reduce_all(tf.math.is_finite(v)) for v in variables]))):
            name = next(v.name for v in variables if not np.isfinite(v.numpy()).all())
            raise NonFiniteLossError(
                f"The weights {name} became non-finite (NaN or inf) by the end of "
                f"{self._where(None)}, while the loss stayed finite; training stopped, the "
                "finished rounds' results are kept. Check the inputs for NaN/inf values "
                "(a ReLU hides them from the loss) and lower the learning rate.")

    def _where(self, batch):
        where = f"epoch {self._epoch}" + ("" if batch is None else f", batch {batch}")
        if self.imp_callback is not None:
            where += f" (IMP round {self.imp_callback.round})"
        return where

    def _check(self, batch, loss):
        if loss is None:
            return
        value = float(np.asarray(loss))
        if math.isfinite(value):
            return
        raise NonFiniteLossError(
            f"The training loss became {value} at {self._where(batch)}; training stopped, the "
            "finished rounds' results are kept. Check the inputs for NaN/inf values "
            "and lower the learning rate (or clip gradients).")
