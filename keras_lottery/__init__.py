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
"""

from keras_lottery import data, models, report
from keras_lottery import convert, progress, tensorboard  # tuning: import keras_lottery.tuning (keras-tuner)
from keras_lottery.convert import to_tf_keras
from keras_lottery.progress import ProgressLogger
from keras_lottery.callback import IMPCallback, RoundResult
from keras_lottery.guard import SparsityGuard, SparsityViolation
from keras_lottery.imp import IMP, custom_objects, load_wrapped_model
from keras_lottery.masks import (
    apply_masks,
    compute_masks,
    overall_weights_remaining,
    read_masks,
    sparsity_by_layer,
    write_masks,
)
from keras_lottery.rewind import WeightSnapshot, reset_optimizer, rewind_step
from keras_lottery.schedule import IMPSchedule, RewindPoint, parse_rewind, weights_remaining
from keras_lottery.wrap import is_prunable, pruned_layers, strip_model, wrap_model
from keras_lottery import export
from keras_lottery import resume
from keras_lottery.resume import RoundCheckpoint
from keras_lottery.ticket import Ticket, load_ticket, save_ticket

from keras_lottery import stability
from keras_lottery.lr_schedule import WarmupStepDecay
from keras_lottery import controls, early_stop, experiment
from keras_lottery.controls import ControlCallback, TicketRecorder, train_control

__version__ = "0.1.0"

__all__ = [
    "ControlCallback",
    "TicketRecorder",
    "controls",
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
