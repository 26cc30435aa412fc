"""The ticket itself on disk: masks, rewind weights θk and settings.

A saved ticket is what it takes to retrain the subnetwork later: the masks m,
the snapshot θk the survivors are rewound to, the architecture of the wrapped
model and the IMP settings. It is two files side by side:

- `<name>.npz`: the arrays (masks and θk), keys `mask_<i>` and `theta_<i>`;
- `<name>.json`: names, shapes, the rewind step, the settings, the model
  architecture, and the SHA-256 of the `.npz`, so a pair from two different
  saves (an interrupted one) is refused on loading.

Both are written to a temporary name and renamed.
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
    theta = getattr(callback, "theta_k", None)
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
      >>> fresh = again.build_model()                   # wrapped, at θk ⊙ m   # doctest: +SKIP
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

    def build_model(self):
        """Rebuilds the wrapped model from the stored architecture, at θk ⊙ m.

        Compile it and `fit` with `tfmot.sparsity.keras.UpdatePruningStep()` in
        the callbacks to retrain the subnetwork (masks held fixed).

        Raises:
          ValueError: if the ticket stores no architecture.
        """
        import tensorflow_model_optimization as tfmot

        from keras_lottery.imp import custom_objects

        if not self.model_json:
            raise ValueError("This ticket stores no model architecture; build the "
                             "wrapped model yourself and call ticket.apply(model).")
        with tfmot.sparsity.keras.prune_scope(), keras.utils.custom_object_scope(custom_objects()):
            model = keras.models.model_from_json(self.model_json)
        return self.apply(model)

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
          ValueError: if the files do not belong together or are malformed.
        """
        npz_path, json_path = ticket_paths(path)
        for p in (npz_path, json_path):
            if not os.path.exists(p):
                raise FileNotFoundError(
                    f"No ticket file {p}: a ticket is a .npz + .json pair written by "
                    "Ticket.save / `keras-lottery run` (ticket.npz, ticket.json).")
        with open(json_path) as f:
            try:
                meta = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{json_path} is not valid JSON: {err}") from None
        if meta.get("format") != "keras-lottery ticket":
            raise ValueError(f"{json_path} is not a keras-lottery ticket.")
        if meta.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{json_path} has ticket format version {meta['version']}; "
                             f"this keras-lottery reads up to {FORMAT_VERSION}.")
        with open(npz_path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
            raise ValueError(
                f"{npz_path} does not match {json_path} (checksum differs): the "
                "two files come from different saves, e.g. an interrupted one. "
                "Save the ticket again.")
        with np.load(io.BytesIO(data)) as arrays:
            masks = {m["name"]: arrays[f"mask_{i}"].astype(np.float32)
                     for i, m in enumerate(meta["masks"])}
            names = meta["theta"]["names"]
            values = [arrays[f"theta_{i}"] for i in range(len(names))]
        theta = WeightSnapshot(names, values, meta["theta"]["step"])
        return cls(masks, theta, meta.get("config"), meta.get("model_json"))


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
