"""keras-lottery: lottery tickets for Keras by iterative magnitude pruning.

Example:
    import tf_keras as keras
    import keras_lottery as kl

    imp = kl.IMP(rounds=10, prune_rate=0.2, rewind="500it", scope="global")
    model = imp.wrap(my_model)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss, ["accuracy"])
    model.fit(ds, epochs=imp.epochs(per_round=5), validation_data=val_ds,
              callbacks=imp.callbacks())
    print(imp.table())

Importing the package is cheap: TensorFlow is imported the first time a name
that needs it is used (`kl.IMP`, `from keras_lottery import IMP`, ...), through
the module-level `__getattr__` below (PEP 562). Every submodule of the package
(`kl.masks`, `kl.report`, ...) is reachable the same way.
"""

import importlib
import importlib.util
import os

# tfmot prunes tf_keras (Keras 2) models: make `tf.keras` tf_keras for code that
# imports TensorFlow after this package, as the eager import used to.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"

# public name -> the submodule that defines it
_ATTRIBUTES = {
    "to_tf_keras": "convert",
    "ProgressLogger": "progress",
    "IMPCallback": "callback",
    "RoundResult": "callback",
    "SparsityGuard": "guard",
    "SparsityViolation": "guard",
    "IMP": "imp",
    "custom_objects": "imp",
    "load_wrapped_model": "imp",
    "apply_masks": "masks",
    "compute_masks": "masks",
    "parse_block": "blocks",
    "overall_weights_remaining": "masks",
    "all_weights_remaining": "masks",
    "read_masks": "masks",
    "sparsity_by_layer": "masks",
    "write_masks": "masks",
    "WeightSnapshot": "rewind",
    "reset_optimizer": "rewind",
    "rewind_step": "rewind",
    "IMPSchedule": "schedule",
    "RewindPoint": "schedule",
    "parse_rewind": "schedule",
    "weights_remaining": "schedule",
    "is_prunable": "wrap",
    "pruned_layers": "wrap",
    "strip_model": "wrap",
    "wrap_model": "wrap",
    "RoundCheckpoint": "resume",
    "RoundModelSaver": "resume",
    "StopOnNonFiniteLoss": "resume",
    "NonFiniteLossError": "resume",
    "CheckpointError": "resume",
    "Ticket": "ticket",
    "load_ticket": "ticket",
    "save_ticket": "ticket",
    "WarmupStepDecay": "lr_schedule",
    "ControlCallback": "controls",
    "TicketRecorder": "controls",
    "train_control": "controls",
    "ExperimentSettings": "experiment",
    "run_experiment": "experiment",
    "ConvergenceCriterion": "convergence",
    "MaskConvergence": "convergence",
    "chunked_batches": "convergence",
}

# public submodules (tuning needs keras-tuner: `import keras_lottery.tuning`)
_SUBMODULES = (
    "controls", "convergence", "convert", "data", "early_stop", "experiment", "export", "models",
    "progress", "report", "resume", "stability", "tensorboard",
)

__all__ = [
    "ControlCallback",
    "ExperimentSettings",
    "run_experiment",
    "TicketRecorder",
    "controls",
    "convergence",
    "ConvergenceCriterion",
    "MaskConvergence",
    "chunked_batches",
    "early_stop",
    "experiment",
    "train_control",
    "ProgressLogger",
    "convert",
    "progress",
    "tensorboard",
    "to_tf_keras",
    "WarmupStepDecay",
    "stability",
    "IMP",
    "IMPCallback",
    "IMPSchedule",
    "RewindPoint",
    "RoundCheckpoint",
    "RoundModelSaver",
    "StopOnNonFiniteLoss",
    "NonFiniteLossError",
    "CheckpointError",
    "all_weights_remaining",
    "RoundResult",
    "SparsityGuard",
    "SparsityViolation",
    "Ticket",
    "WeightSnapshot",
    "apply_masks",
    "compute_masks",
    "custom_objects",
    "data",
    "export",
    "is_prunable",
    "load_ticket",
    "load_wrapped_model",
    "models",
    "overall_weights_remaining",
    "parse_block",
    "parse_rewind",
    "pruned_layers",
    "read_masks",
    "report",
    "resume",
    "reset_optimizer",
    "rewind_step",
    "save_ticket",
    "sparsity_by_layer",
    "strip_model",
    "weights_remaining",
    "wrap_model",
    "write_masks",
]


def __getattr__(name):
    """Imports a public name's submodule on first use (PEP 562).

    Raises:
      AttributeError: for a name the package does not have.
    """
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(f"{__name__}.{_ATTRIBUTES[name]}"), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
