"""Resuming an IMP run after a crash, from its last finished round.

At the end of every round, once the new masks are written and the
survivors rewound (that is, in the exact state the next round starts from),
`RoundCheckpoint` writes to a `resume_dir`:

* `imp_round_NNN.npz`: every model variable (kernels, biases, masks, tfmot's
  bookkeeping), every optimizer variable (step counter, slots) and a dynamic
  loss scale if there is one, and the θ0 / θk snapshots;
* `imp_checkpoint.json`: the round to start next, the epoch `fit` must start
  at, the finished rounds' results, the run's settings, and the name of the
  `.npz` file above. It is written last, by an atomic rename, so a process
  killed at any moment leaves either the previous complete checkpoint or the
  new one, never a mix.

Started again with the same command, the run restores that state before its
first step and trains the remaining rounds; a round that was interrupted is
trained again from its start. Keras' `fit` counts epochs from
`initial_epoch`, so pass `initial_epoch=imp.initial_epoch()` (0 when there is
nothing to resume): a mismatch raises rather than silently training the wrong
round.

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

import io
import json
import logging
import os
import posixpath

import numpy as np
import tensorflow as tf

from keras_lottery._keras import keras
from keras_lottery.callback import IMPCallback, RoundResult, is_chief
from keras_lottery.rewind import WeightSnapshot

__all__ = [
    "CHECKPOINT_FILE",
    "RoundCheckpoint",
    "initial_epoch",
    "is_chief",
    "read_checkpoint",
]

logger = logging.getLogger("keras_lottery")

CHECKPOINT_FILE = "imp_checkpoint.json"
FORMAT_VERSION = 1
_KEEP_DATA_FILES = 2


def _join(folder, name):
    if "://" in folder:
        return posixpath.join(folder, name)
    return os.path.join(folder, name)


def _atomic_write_bytes(path, data):
    """Writes to `path + '.tmp'` then renames it over `path`."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_checkpoint(resume_dir):
    """The last complete round checkpoint's metadata in `resume_dir`, or None.

    Args:
      resume_dir: the folder given to `IMP.callbacks(resume_dir=...)`.

    Returns:
      A dict with `next_round`, `initial_epoch`, `finished`, `config`,
      `history` (list of round dicts) and `data_file`, or None when the folder
      holds no checkpoint yet.

    Raises:
      ValueError: if the checkpoint file is unreadable or from another format.
    """
    if resume_dir is None:
        return None
    path = _join(resume_dir, CHECKPOINT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        text = f.read()
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path} is not a valid IMP checkpoint ({err}). Delete "
                         f"{resume_dir} to start the run afresh.") from err
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {meta.get('format')!r}; this "
                         f"keras_lottery reads format {FORMAT_VERSION}. Delete "
                         f"{resume_dir} to start the run afresh.")
    return meta


def initial_epoch(resume_dir):
    """The epoch `fit` must start at to resume the run in `resume_dir` (0: none).

    Example:
      >>> model.fit(..., initial_epoch=kl.resume.initial_epoch("run/resume"))  # doctest: +SKIP
    """
    meta = read_checkpoint(resume_dir)
    return 0 if meta is None else int(meta["initial_epoch"])


def _run_config(imp_callback):
    return {
        "rounds": imp_callback.schedule.rounds,
        "prune_rate": imp_callback.schedule.prune_rate,
        "rewind": str(imp_callback.rewind),
        "scope": imp_callback.scope,
        "layer_rates": {k: float(v) for k, v in sorted(imp_callback.layer_rates.items())},
        "epochs_per_round": imp_callback.epochs_per_round,
        "steps_per_epoch": imp_callback._steps_per_epoch,
    }


def _optimizer_variables(optimizer):
    variables = optimizer.variables
    if callable(variables):
        variables = variables()
    return list(variables)


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
    or by an explicit `build`), not on what it holds.
    """
    for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        for attr in ("name", "_name"):
            scope = getattr(opt, attr, None)
            if isinstance(scope, str) and scope and name.startswith(scope + "/"):
                return name[len(scope) + 1:]
    return name


def _build_optimizer(optimizer, model):
    """Creates the optimizer's slots now (a fresh process has none before step 1)."""
    if getattr(optimizer, "inner_optimizer", None) is not None:
        _build_optimizer(optimizer.inner_optimizer, model)
        return
    if hasattr(optimizer, "build") and not getattr(optimizer, "_built", False):
        optimizer.build(model.trainable_variables)
    elif hasattr(optimizer, "_create_all_weights"):
        optimizer._create_all_weights(model.trainable_variables)


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
      ValueError: for an empty `resume_dir`; when fit starts, if the checkpoint in `resume_dir` belongs to
        a run with other settings or another model.
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

    # -- Keras hooks ----------------------------------------------------------

    def on_train_begin(self, logs=None):
        imp = self.imp_callback
        if imp.theta0 is None:
            raise RuntimeError(
                "RoundCheckpoint ran before its IMPCallback started: put it after "
                "the IMPCallback in fit's callbacks (IMP.callbacks() does).")
        self._expected_epoch = 0
        meta = read_checkpoint(self.resume_dir)
        self._rounds_saved = len(imp.history)
        if meta is None:
            return
        self._restore(meta)
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
        finished = len(imp.history) > imp.schedule.rounds
        next_round = len(imp.history)
        # Every worker reads the same variables in the same order (reading a
        # sync-on-read variable may need all workers); only the chief writes.
        model_vars = list(model.weights)
        opt_vars = _optimizer_variables(model.optimizer)
        scale_vars = _loss_scale_variables(model.optimizer)
        arrays = {}
        for prefix, variables in (("model", model_vars), ("optimizer", opt_vars),
                                  ("loss_scale", scale_vars)):
            for i, v in enumerate(variables):
                arrays[f"{prefix}/{i}"] = np.asarray(v.numpy())
        theta_k_is_theta0 = imp.theta_k is imp.theta0 and imp.theta0 is not None
        for prefix, snap in (("theta0", imp.theta0), ("theta_k", imp.theta_k)):
            if snap is not None and not (prefix == "theta_k" and theta_k_is_theta0):
                for i, value in enumerate(snap.values):
                    arrays[f"{prefix}/{i}"] = value
        if not is_chief(model):
            return
        data_file = f"imp_round_{next_round:03d}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        tf.io.gfile.makedirs(self.resume_dir)
        _atomic_write_bytes(_join(self.resume_dir, data_file), buffer.getvalue())
        meta = {
            "format": FORMAT_VERSION,
            "next_round": next_round,
            "initial_epoch": next_round * imp.epochs_per_round,
            "finished": finished,
            "rewind_steps": imp._k,
            "config": _run_config(imp),
            "model_variables": [v.name for v in model_vars],
            "optimizer_variables": [v.name for v in opt_vars],
            "loss_scale_variables": len(scale_vars),
            "theta0": None if imp.theta0 is None else {"names": imp.theta0.names, "step": imp.theta0.step},
            # rewind "0it": θk is θ0, stored once
            "theta_k": ("theta0" if theta_k_is_theta0 else None if imp.theta_k is None
                        else {"names": imp.theta_k.names, "step": imp.theta_k.step}),
            "history": imp.history_rows(),
            "data_file": data_file,
        }
        _atomic_write_bytes(_join(self.resume_dir, CHECKPOINT_FILE),
                            (json.dumps(meta, indent=1) + "\n").encode())
        self._remove_old_files(next_round)
        logger.info("IMP checkpoint: round %d saved to %s", next_round - 1, self.resume_dir)

    def _remove_old_files(self, next_round):
        for name in tf.io.gfile.listdir(self.resume_dir):
            name = name.rstrip("/")
            if name.endswith(".tmp"):
                tf.io.gfile.remove(_join(self.resume_dir, name))
            elif name.startswith("imp_round_") and name.endswith(".npz"):
                try:
                    index = int(name[len("imp_round_"):-len(".npz")])
                except ValueError:
                    continue
                if index <= next_round - _KEEP_DATA_FILES:
                    tf.io.gfile.remove(_join(self.resume_dir, name))

    # -- reading --------------------------------------------------------------

    def _restore(self, meta):
        imp = self.imp_callback
        model = self.model
        config = _run_config(imp)
        saved = meta["config"]
        diff = sorted(k for k in set(config) | set(saved) if config.get(k) != saved.get(k))
        if diff:
            details = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {config.get(k)!r}" for k in diff)
            raise ValueError(
                f"The checkpoint in {self.resume_dir} is from a run with other settings "
                f"({details}). Run with the same settings, or use a new resume_dir "
                "(or delete this one) to start afresh.")
        model_vars = list(model.weights)
        if [v.name for v in model_vars] != meta["model_variables"]:
            raise ValueError(
                f"The checkpoint in {self.resume_dir} was written for another model "
                "(its variables differ). Use a new resume_dir for this model.")
        path = _join(self.resume_dir, meta["data_file"])
        with tf.io.gfile.GFile(path, "rb") as f:
            with np.load(io.BytesIO(f.read())) as npz:
                arrays = {k: npz[k] for k in npz.files}

        for i, v in enumerate(model_vars):
            v.assign(arrays[f"model/{i}"])
        optimizer = model.optimizer
        opt_vars = _optimizer_variables(optimizer)
        if len(opt_vars) != len(meta["optimizer_variables"]):
            _build_optimizer(optimizer, model)
            opt_vars = _optimizer_variables(optimizer)
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

        def snapshot(key):
            info = meta[key]
            if info is None:
                return None
            values = [arrays[f"{key}/{i}"] for i in range(len(info["names"]))]
            return WeightSnapshot(info["names"], values, info["step"])

        imp.theta0 = snapshot("theta0")
        imp.theta_k = imp.theta0 if meta["theta_k"] == "theta0" else snapshot("theta_k")
        imp.history = [RoundResult.from_dict(row) for row in meta["history"]]
        imp.round = min(int(meta["next_round"]), imp.schedule.rounds)
        imp._k = meta["rewind_steps"]
        imp._reset_round_state()
        self.restored_round = int(meta["next_round"])
        if meta["finished"]:
            logger.info("IMP checkpoint in %s: the run had finished all %d rounds; "
                        "nothing left to train.", self.resume_dir, imp.schedule.rounds + 1)
        else:
            logger.info("IMP checkpoint in %s: resuming at round %d (epoch %d).",
                        self.resume_dir, self.restored_round, meta["initial_epoch"])
