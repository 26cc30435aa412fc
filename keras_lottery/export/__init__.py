"""Shipping a ticket: strip the wrappers, then SavedModel, .keras / H5, TFLite.

Every exporter first strips the tfmot wrappers (`strip`), which multiplies
each kernel by its mask, so pruned weights are exact zeros in every format.
Files are written to a temporary name in the target folder and renamed, so an
error never leaves a half-written export behind; `report(out_dir=...)` (the
CLI's `--format all`) writes its whole folder that way.

TFLite variants: float; float with the sparse weight encoding
(`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`); full int8 with a representative
dataset (int8 kernels, float input and output), combinable with sparsity.
Recurrent layers convert with `unroll=True`. They run with
`ai_edge_litert.interpreter.Interpreter` where it works, else with the
deprecated `tf.lite.Interpreter` (`TFLiteModel.interpreter_name` says which
ran); `TFLiteModel` feeds each input in its own dtype and returns outputs in
the Keras order. `report` compares ticket and dense model across all formats.

The package's modules: `formats` (strip, .keras / .h5 / SavedModel, atomic
writing), `lite` (TFLite conversion, `TFLiteModel`), `sparse_ops` (`kernel_ops`:
what the converted file does with each pruned kernel: native sparse,
DENSIFY or dense), `comparison` (`report`, `format_report`); use the names
below, not the modules.

Example:
    import keras_lottery as kl
    kl.export.tflite(model, "ticket.tflite", sparse=True, int8=True,
                     representative_data=x_train[:256])
    kl.export.saved_model(model, "ticket_savedmodel/")
"""

from keras_lottery._public import present_as_package
from keras_lottery.export.formats import (
    ExportError,
    file_size,
    is_pruned,
    keras_file,
    saved_model,
    strip,
)
from keras_lottery.export.lite import (
    TFLITE_VARIANTS,
    TFLiteConversionError,
    TFLiteModel,
    tflite,
)
from keras_lottery.export.comparison import ALL_FORMATS, format_report, gzip_size, report
from keras_lottery.export.sparse_ops import kernel_ops

__all__ = [
    "ExportError",
    "TFLiteConversionError",
    "TFLITE_VARIANTS",
    "ALL_FORMATS",
    "is_pruned",
    "strip",
    "keras_file",
    "saved_model",
    "tflite",
    "TFLiteModel",
    "report",
    "format_report",
    "file_size",
    "gzip_size",
    "kernel_ops",
]

# The public names are documented (docs/api.md) and pickled as keras_lottery.export.*
present_as_package(globals())
