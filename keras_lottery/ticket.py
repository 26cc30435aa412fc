"""The ticket itself on disk: masks, rewind weights θk and settings.

A saved ticket is what it takes to retrain the subnetwork later: the masks m,
the snapshot θk the survivors are rewound to, the architecture of the wrapped
model and the IMP settings. It is two files side by side:

- `<name>.npz`: the arrays (masks and θk), keys `mask_<i>` and `theta_<i>`;
- `<name>.json`: names, shapes, the rewind step, the settings, the model
  architecture, and the SHA-256 of the `.npz`, so a pair from two different
  saves (an interrupted one) is refused on loading.

Both are written to a temporary name and renamed. Loading checks every field
it reads and names the file and the field when one is missing or malformed.

Retraining a ticket continues from the rewind step k: `build_model(optimizer=...)`
compiles and sets the optimizer's step counter to k, `set_optimizer_step`
does it for a model compiled by hand, and `callbacks()` does it when `fit`
begins, so a learning-rate schedule goes on from k, as in IMP's rounds.
"""

import hashlib
import io
import json
import logging
import os

import numpy as np

from keras_lottery import masks as masks_lib
from keras_lottery import report as report_lib
from keras_lottery._keras import check_tf_keras_model, keras
from keras_lottery.rewind import WeightSnapshot, model_state_variables

__all__ = ["Ticket", "save_ticket", "load_ticket", "ticket_paths"]

logger = logging.getLogger("keras_lottery")

FORMAT_VERSION = 1


def ticket_paths(path):
    """(npz path, json path) for a ticket named `path`.

    `path` may be the common stem (`runs/x/ticket`), either file
    (`ticket.npz`, `ticket.json`) or a folder holding `ticket.npz`.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "ticket")
    stem, ext = os.path.splitext(path)
    if ext not in (".npz", ".json"):
        stem = path
    return stem + ".npz", stem + ".json"


def _theta_source(source):
    """The θk `WeightSnapshot` held by an IMP, an IMPCallback or a snapshot."""
    if source is None or isinstance(source, WeightSnapshot):
        return source
    callback = getattr(source, "callback", source)
    # θk; for learning-rate rewinding the trained survivors the last round started from
    theta = getattr(callback, "ticket_weights", getattr(callback, "theta_k", None))
    if theta is None:
        raise ValueError(
            f"{type(source).__name__} holds no rewind snapshot θk yet: pass the "
            "IMP (or IMPCallback) after `fit` has run past the rewind point.")
    return theta


class Ticket:
    """A lottery ticket: masks m, rewind weights θk and the settings that found it.

    Args:
      masks: dict weight name (`"fc1/kernel"`) -> 0/1 array.
      theta: `WeightSnapshot` of the wrapped model's state at the rewind step
        (unmasked values; masks are applied when the ticket is applied).
      config: dict of settings (IMP config, dataset, ...), JSON-serializable.
      model_json: the wrapped model's architecture (`model.to_json()`), so
        `build_model()` can rebuild it; None if unknown.

    Example:
      >>> ticket = Ticket.from_model(model, imp)        # doctest: +SKIP
      >>> ticket.save("runs/lenet/ticket")              # doctest: +SKIP
      >>> again = load_ticket("runs/lenet/ticket")      # doctest: +SKIP
      >>> fresh = again.build_model(optimizer=opt, loss=loss)  # θk ⊙ m, step k  # doctest: +SKIP
      >>> fresh.fit(x, y, epochs=2, callbacks=again.callbacks())  # doctest: +SKIP
    """

    def __init__(self, masks, theta, config=None, model_json=None):
        self.masks = {name: np.asarray(m, np.float32) for name, m in masks.items()}
        if not isinstance(theta, WeightSnapshot):
            raise TypeError(f"theta must be a WeightSnapshot, got {type(theta).__name__}.")
        self.theta = theta
        self.config = dict(config or {})
        self.model_json = model_json

    @classmethod
    def from_model(cls, model, theta=None, config=None):
        """The ticket in a wrapped model, with θk from `theta`.

        Args:
          model: a model wrapped by `IMP.wrap` / `wrap_model`.
          theta: an `IMP` or `IMPCallback` after `fit` (its θk is taken), or a
            `WeightSnapshot`; None uses the model's current (trained) weights,
            which is then a ticket for fine-tuning rather than rewinding.
          config: optional settings to store; an IMP's own config is added.

        Raises:
          ValueError: if the model has no pruning wrappers or no θk exists yet.
        """
        check_tf_keras_model(model)
        masks = masks_lib.read_masks(model)  # raises for an unwrapped model
        snapshot = _theta_source(theta)
        if snapshot is None:
            logger.warning("No θk given: the ticket stores the current trained "
                           "weights as its rewind point.")
            snapshot = WeightSnapshot.capture(model, step=-1)
        settings = {}
        imp_like = theta if hasattr(theta, "get_config") and hasattr(theta, "schedule") else None
        if imp_like is not None:
            settings.update(imp_like.get_config())
        settings.update(config or {})
        return cls(masks, snapshot, settings, model.to_json())

    # -- facts ----------------------------------------------------------------

    @property
    def weights_remaining(self):
        """Fraction of the prunable weights the masks keep."""
        total = sum(m.size for m in self.masks.values())
        return float(sum(m.sum() for m in self.masks.values()) / total) if total else 1.0

    @property
    def step(self):
        """The rewind step k of θk (-1 when the trained weights were stored)."""
        return self.theta.step

    def __repr__(self):
        return (f"Ticket({len(self.masks)} masks, {self.weights_remaining:.1%} weights "
                f"remaining, θk at step {self.step})")

    # -- using it ---------------------------------------------------------------

    def apply(self, model):
        """Writes the masks into a wrapped model and rewinds it to θk ⊙ m.

        Also attaches the mask constraints, so pruned weights stay exactly
        zero after every optimizer step when the subnetwork is retrained.

        Raises:
          ValueError: if the model's prunable weights or variables differ
            from the ticket's (a different architecture).
        """
        names = [w.name for w in masks_lib.prunable_weights(model)]
        if sorted(names) != sorted(self.masks):
            raise ValueError(
                f"The ticket's masks are for {sorted(self.masks)}, but the model's "
                f"prunable weights are {sorted(names)}: apply it to the same "
                "architecture (see Ticket.build_model()).")
        variables = model_state_variables(model)
        shapes = [tuple(v.shape) for v in variables]
        if shapes != [tuple(v.shape) for v in self.theta.values]:
            raise ValueError(
                f"The ticket's θk holds {len(self.theta.values)} variables that do "
                f"not match the model's {len(variables)} ({shapes}): apply it to the "
                "same architecture (see Ticket.build_model()).")
        masks_lib.write_masks(model, self.masks)
        # Variable names gain suffixes when a model is rebuilt in the same
        # process; order and shapes identify them, so rename the snapshot.
        theta = WeightSnapshot([v.name for v in variables], self.theta.values, self.theta.step)
        theta.restore(model, self.masks)
        masks_lib.attach_mask_constraints(model)
        return model

    def build_model(self, optimizer=None, loss=None, metrics=None, **compile_kwargs):
        """Rebuilds the wrapped model from the stored architecture, at θk ⊙ m.

        With `optimizer`, the model is also compiled and its optimizer's step
        counter set to the rewind step k (`set_optimizer_step`), so a
        learning-rate schedule continues from k, as in IMP's own rounds.
        Without it, compile the model yourself and then call
        `ticket.set_optimizer_step(model)` (or fit with `ticket.callbacks()`,
        which does it at the start of `fit`): a fresh optimizer starts at step
        0, and a schedule would restart from its first value.

        Retrain with `ticket.callbacks()` (tfmot's `UpdatePruningStep` and the
        step counter; masks held fixed).

        Args:
          optimizer: optional optimizer instance or name to compile with.
          loss, metrics, **compile_kwargs: passed to `model.compile` with
            `optimizer`.

        Returns:
          The wrapped model, its masks written and weights at θk ⊙ m (compiled
          and at step k when `optimizer` is given).

        Raises:
          ValueError: if the ticket stores no architecture, or compile
            arguments are given without `optimizer`.

        Example:
          >>> fresh = ticket.build_model(optimizer=keras.optimizers.SGD(schedule),
          ...                            loss=loss, metrics=["accuracy"])  # doctest: +SKIP
          >>> fresh.fit(x, y, epochs=2, callbacks=ticket.callbacks())      # doctest: +SKIP
        """
        import tensorflow_model_optimization as tfmot

        from keras_lottery.imp import custom_objects

        if optimizer is None and (loss is not None or metrics is not None or compile_kwargs):
            raise ValueError("Pass optimizer= too to compile in build_model (or compile the "
                             "returned model yourself, then call ticket.set_optimizer_step(model)).")
        if not self.model_json:
            raise ValueError("This ticket stores no model architecture; build the "
                             "wrapped model yourself and call ticket.apply(model).")
        with tfmot.sparsity.keras.prune_scope(), keras.utils.custom_object_scope(custom_objects()):
            model = keras.models.model_from_json(self.model_json)
        self.apply(model)
        if optimizer is not None:
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **compile_kwargs)
            self.set_optimizer_step(model)
        return model

    def set_optimizer_step(self, model):
        """Sets the compiled model's optimizer step counter to the rewind step k.

        IMP trains every round from θk with the optimizer at step k; a
        retrained ticket should too, or a learning-rate schedule (warmup,
        decay) restarts at step 0. Call it after `compile` and before `fit`.
        A ticket holding trained weights (step -1) leaves the counter as is.

        Args:
          model: the compiled model (or its optimizer).

        Returns:
          The step the optimizer is now at.

        Raises:
          ValueError: if `model` is not compiled.
        """
        optimizer = getattr(model, "optimizer", None) if isinstance(model, keras.Model) else model
        if optimizer is None or not hasattr(optimizer, "iterations"):
            raise ValueError("Compile the model before ticket.set_optimizer_step(model) "
                             "(its optimizer's step counter is set to the rewind step k).")
        if self.step >= 0:
            optimizer.iterations.assign(self.step)
        return int(optimizer.iterations.numpy())

    def callbacks(self, check_sparsity=None):
        """The callbacks to retrain the ticket with (pass them to `fit`).

        tfmot's `UpdatePruningStep` (needed by every wrapped model), a
        callback that sets the optimizer to step k at the start of the first
        `fit` if it is still at step 0 (see `set_optimizer_step`), and, with
        `check_sparsity=N`, a `SparsityGuard(every=N)` checking after every
        N-th batch that each pruned weight is exactly zero (`True`: every
        batch).

        Returns:
          A list of Keras callbacks.
        """
        import tensorflow_model_optimization as tfmot

        callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), _StartAtStep(self)]
        if check_sparsity:
            from keras_lottery.guard import SparsityGuard

            callbacks.append(SparsityGuard(every=1 if check_sparsity is True else check_sparsity))
        return callbacks

    # -- disk -------------------------------------------------------------------

    def save(self, path):
        """Writes `<path>.npz` and `<path>.json` atomically; returns the two paths."""
        npz_path, json_path = ticket_paths(path)
        mask_names = list(self.masks)
        arrays = {f"mask_{i}": self.masks[n].astype(np.uint8) for i, n in enumerate(mask_names)}
        arrays.update({f"theta_{i}": v for i, v in enumerate(self.theta.values)})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
        meta = {
            "format": "keras-lottery ticket",
            "version": FORMAT_VERSION,
            "npz": os.path.basename(npz_path),
            "npz_sha256": hashlib.sha256(data).hexdigest(),
            "weights_remaining": self.weights_remaining,
            "masks": [{"name": n, "shape": list(self.masks[n].shape),
                       "remaining": float(self.masks[n].mean())} for n in mask_names],
            "theta": {"step": self.theta.step, "names": self.theta.names},
            "config": self.config,
            "model_json": self.model_json,
        }
        report_lib.atomic_write(npz_path, data, mode="wb")
        report_lib.write_json(json_path, meta)
        return npz_path, json_path

    @classmethod
    def load(cls, path):
        """Reads a ticket written by `save` (see `ticket_paths` for `path`).

        Raises:
          FileNotFoundError: if either file is missing.
          ValueError: if the files do not belong together or are malformed
            (not JSON, truncated, not a ticket, a missing or mistyped field, an
            `.npz` that is not the one the `.json` describes), naming the file
            and what is wrong.
        """
        npz_path, json_path = ticket_paths(path)
        for p in (npz_path, json_path):
            if not os.path.exists(p):
                raise FileNotFoundError(
                    f"No ticket file {p}: a ticket is a .npz + .json pair written by "
                    "Ticket.save / `keras-lottery run` (ticket.npz, ticket.json).")
        meta = _read_meta(json_path)
        with open(npz_path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != meta["npz_sha256"]:
            raise ValueError(
                f"{npz_path} does not match {json_path} (checksum differs): the "
                "two files come from different saves, an interrupted one, or the "
                ".npz was truncated or changed. Save the ticket again.")
        masks, values = _read_arrays(data, meta, npz_path, json_path)
        theta = WeightSnapshot(meta["theta"]["names"], values, meta["theta"]["step"])
        return cls(masks, theta, meta.get("config"), meta.get("model_json"))


_SAVE_AGAIN = "Save the ticket again (Ticket.save / save_ticket / `keras-lottery run`)."


def _field(meta, key, types, json_path, where="", optional=False):
    """`meta[key]`, checked to be one of `types`; a ValueError naming the file otherwise."""
    label = f"{where}{key!r}"
    if key not in meta:
        if optional:
            return None
        raise ValueError(f"{json_path}: the ticket metadata has no {label} field. {_SAVE_AGAIN}")
    value = meta[key]
    if optional and value is None:
        return None
    bad_bool = isinstance(value, bool) and bool not in types
    if not isinstance(value, types) or bad_bool:
        names = " or ".join(t.__name__ for t in types)
        raise ValueError(f"{json_path}: {label} should be a {names}, got "
                         f"{type(value).__name__} {str(value)[:60]!r}. {_SAVE_AGAIN}")
    return value


def _read_meta(json_path):
    """The checked metadata of a ticket's `.json` (every field `load` reads)."""
    try:
        with open(json_path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{json_path} cannot be read as a ticket's JSON: {err}") from None
    if not text.strip():
        raise ValueError(f"{json_path} is empty (an interrupted save?). {_SAVE_AGAIN}")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_path} is not valid JSON (truncated, or not a ticket's "
                         f".json): {err}. {_SAVE_AGAIN}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{json_path} holds a JSON {type(meta).__name__}, not a ticket's "
                         f"metadata (a JSON object with 'format': 'keras-lottery ticket').")
    if meta.get("format") != "keras-lottery ticket":
        raise ValueError(f"{json_path} is not a keras-lottery ticket (its 'format' is "
                         f"{meta.get('format')!r}, not 'keras-lottery ticket').")
    version = _field(meta, "version", (int,), json_path)
    if version > FORMAT_VERSION:
        raise ValueError(f"{json_path} has ticket format version {version}; "
                         f"this keras-lottery reads up to {FORMAT_VERSION}.")
    _field(meta, "npz_sha256", (str,), json_path)
    for i, entry in enumerate(_field(meta, "masks", (list,), json_path)):
        if not isinstance(entry, dict):
            raise ValueError(f"{json_path}: 'masks'[{i}] should be an object with 'name' and "
                             f"'shape', got {type(entry).__name__}. {_SAVE_AGAIN}")
        _field(entry, "name", (str,), json_path, where=f"'masks'[{i}].")
        shape = _field(entry, "shape", (list,), json_path, where=f"'masks'[{i}].")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"{json_path}: 'masks'[{i}].'shape' should be a list of sizes, "
                             f"got {shape!r}. {_SAVE_AGAIN}")
    theta = _field(meta, "theta", (dict,), json_path)
    _field(theta, "step", (int,), json_path, where="'theta'.")
    names = _field(theta, "names", (list,), json_path, where="'theta'.")
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{json_path}: 'theta'.'names' should be a list of variable names. "
                         f"{_SAVE_AGAIN}")
    _field(meta, "config", (dict,), json_path, optional=True)
    _field(meta, "model_json", (str,), json_path, optional=True)
    return meta


def _read_arrays(data, meta, npz_path, json_path):
    """(masks, θk values) from a ticket's `.npz` bytes, checked against its metadata."""
    if not data.startswith(b"PK"):  # np.load would take any other bytes for a pickle
        raise ValueError(f"{npz_path} is not an .npz (zip) file; the ticket's arrays are "
                         f"missing. {_SAVE_AGAIN}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            stored = dict(arrays.items())
    except Exception as err:  # BadZipFile, a truncated member, a pickle, ...
        raise ValueError(f"{npz_path} cannot be read as a ticket's arrays "
                         f"({type(err).__name__}: {err}). {_SAVE_AGAIN}") from None
    masks = {}
    for i, entry in enumerate(meta["masks"]):
        key = f"mask_{i}"
        if key not in stored:
            raise ValueError(f"{npz_path} has no array {key} for mask {entry['name']!r} "
                             f"listed in {json_path}. {_SAVE_AGAIN}")
        if list(stored[key].shape) != list(entry["shape"]):
            raise ValueError(f"{npz_path}: {key} has shape {list(stored[key].shape)}, but "
                             f"{json_path} gives mask {entry['name']!r} shape {entry['shape']}. "
                             f"{_SAVE_AGAIN}")
        masks[entry["name"]] = stored[key].astype(np.float32)
    values = []
    for i, name in enumerate(meta["theta"]["names"]):
        key = f"theta_{i}"
        if key not in stored:
            raise ValueError(f"{npz_path} has no array {key} for θk variable {name!r} listed "
                             f"in {json_path}. {_SAVE_AGAIN}")
        values.append(stored[key])
    return masks, values


class _StartAtStep(keras.callbacks.Callback):
    """Puts a fresh optimizer at the ticket's rewind step k when `fit` begins,
    and keeps the pruned weights at zero through the fit (`callback.enforce_masks`:
    also under a legacy optimizer with an Embedding, and after `use_ema`'s
    final overwrite)."""

    def __init__(self, ticket):
        super().__init__()
        self.ticket = ticket

    def on_train_begin(self, logs=None):
        from keras_lottery.callback import enforce_masks

        if int(self.model.optimizer.iterations.numpy()) == 0:
            self.ticket.set_optimizer_step(self.model)
        enforce_masks(self.model)

    def on_train_end(self, logs=None):
        from keras_lottery.rewind import mask_moving_averages

        # use_ema: fit has just written the moving averages, taken before the
        # mask constraint ran, into the weights
        mask_moving_averages(self.model.optimizer, self.model)


def save_ticket(path, model, theta=None, config=None):
    """Saves the ticket of a wrapped model: `<path>.npz` + `<path>.json`.

    Args:
      path: the stem (`runs/x/ticket`) or the `.npz` / `.json` name.
      model: the wrapped model after IMP.
      theta: the `IMP` / `IMPCallback` (for θk) or a `WeightSnapshot`.
      config: optional extra settings to store.

    Returns:
      The `Ticket` saved.

    Example:
      >>> kl.save_ticket("runs/x/ticket", model, imp)   # doctest: +SKIP
    """
    ticket = Ticket.from_model(model, theta, config)
    ticket.save(path)
    return ticket


def load_ticket(path):
    """Loads a ticket saved by `save_ticket` (stem, either file, or its folder)."""
    return Ticket.load(path)
