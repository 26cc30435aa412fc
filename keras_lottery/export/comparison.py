"""The export report: ticket vs dense model in every format (size, accuracy, latency).

`report(..., out_dir=...)` writes the whole export (ticket/, dense/,
export_report.json) into a temporary folder beside `out_dir` and renames it
over `out_dir` only when every format succeeded, so `out_dir` holds either
the previous complete export or the new one, never a mix or a partial one.
"""

import gzip
import io
import os
import shutil
import tarfile
import tempfile

import numpy as np

from keras_lottery import report as report_lib
from keras_lottery._keras import check_tf_keras_model, keras
from keras_lottery.export import formats as writers
from keras_lottery.export import lite
from keras_lottery.export import sparse_ops
from keras_lottery.wrap import pruned_layers, strip_model

ALL_FORMATS = ("keras", "h5", "savedmodel") + tuple(lite.TFLITE_VARIANTS)

# Bytes per weight byte each format takes, at most (dense storage; int8 a
# quarter), for the free-space check before a whole export is written.
_SIZE_FACTORS = {"keras": 1.1, "h5": 1.1, "savedmodel": 1.2, "tflite": 1.05,
                 "tflite_sparse": 1.05, "tflite_int8": 0.3, "tflite_int8_sparse": 0.3}

# What `report` writes into out_dir; a folder holding anything else is not
# replaced (it may be a run folder or the user's own files).
EXPORT_ENTRIES = ("ticket", "dense", "export_report.json")


def gzip_size(path):
    """Bytes after gzip -9 (a folder is tarred first, with fixed metadata)."""
    if os.path.isdir(path):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for d, dirs, files in sorted(os.walk(path)):
                dirs.sort()
                for f in sorted(files):
                    full = os.path.join(d, f)
                    info = tar.gettarinfo(full, arcname=os.path.relpath(full, path))
                    info.mtime = 0
                    with open(full, "rb") as fh:
                        tar.addfile(info, fh)
        data = buffer.getvalue()
    else:
        with open(path, "rb") as f:
            data = f.read()
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _layer_table(plain):
    rows = []
    for name, arrays in writers.prunable_arrays(plain):
        size = sum(int(a.size) for a in arrays)
        nonzero = sum(int(np.count_nonzero(a)) for a in arrays)
        rows.append({"layer": name, "weights": size, "nonzero": nonzero,
                     "remaining": nonzero / size if size else 1.0})
    return rows


def _dense_stand_in(plain):
    """The ticket with its zero kernel entries refilled by a fresh initialization.

    Biases and every other weight are the ticket's, so the converter keeps
    the same tensors (it drops all-zero biases, which would flatter the
    dense sizes); only the zeros are gone. Good for sizes and latency.
    """
    dense = keras.models.clone_model(plain)  # fresh initializers
    for layer, source in zip(dense.layers, plain.layers):
        values = []
        for fresh, kept in zip(layer.get_weights(), source.get_weights()):
            values.append(np.where(kept == 0, fresh, kept) if kept.ndim >= 2 else kept)
        layer.set_weights(values)
    return dense


def _first(outputs):
    return outputs[0] if isinstance(outputs, list) else outputs


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, list) else [outputs]


def _accuracy(logits, y):
    y = np.asarray(y).reshape(-1)
    return float(np.mean(np.argmax(_first(logits), axis=-1) == y))


def _max_diff(a, b):
    return float(max(np.max(np.abs(x - y)) for x, y in zip(_as_list(a), _as_list(b))))


def _export_all(plain, folder, formats_, calibration, per_channel=None, unroll=False):
    """Writes each format of a plain model into `folder`; returns name -> path."""
    written = {}
    for name in formats_:
        if name == "keras":
            written[name] = writers.save_keras_file(plain, os.path.join(folder, "model.keras"))
        elif name == "h5":
            written[name] = writers.save_keras_file(plain, os.path.join(folder, "model.h5"))
        elif name == "savedmodel":
            written[name] = writers.save_saved_model(plain, os.path.join(folder, "savedmodel"))
        elif name in lite.TFLITE_VARIANTS:
            sparse, int8 = lite.TFLITE_VARIANTS[name]
            path = os.path.join(folder, f"{name}.tflite")
            lite.convert(plain, path, sparse, int8, calibration if int8 else None, per_channel,
                         unroll=unroll)
            written[name] = path
        else:
            raise ValueError(f"Unknown export format {name!r}; choose from "
                             f"{', '.join(ALL_FORMATS)}.")
    return written


def _check_out_dir(out_dir):
    """Refuses an out_dir that holds anything but a previous export."""
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"Cannot write the export folder {out_dir}: a file of that name exists.")
    if os.path.isdir(out_dir):
        other = sorted(set(os.listdir(out_dir)) - set(EXPORT_ENTRIES))
        if other:
            raise ValueError(
                f"{out_dir} holds files that are not a previous export ({', '.join(other[:5])}"
                f"{', ...' if len(other) > 5 else ''}); the export replaces its folder as a "
                "whole, so choose a new or empty folder (or a previous export's).")
    return out_dir


def _slice(arrays, n):
    return [np.resize(a, (n,) + a.shape[1:]) for a in arrays]


def report(model, test_data, dense_model=None, representative_data=None, out_dir=None,
           formats=ALL_FORMATS, latency_batches=(1, 128), repeats=50, num_threads=1,
           allow_dense=False, per_channel=None, unroll=False):
    """Exports ticket and dense model in every format and compares them.

    With `out_dir` the whole export is atomic: everything is written into a
    temporary folder beside `out_dir`, which replaces `out_dir` only after
    every format of both models and the report were written. On any error
    (a converter failure, a full disk) `out_dir` keeps its previous content
    and no temporary folder is left.

    Args:
      model: the wrapped (or stripped) ticket.
      test_data: `(x_test, y_test)`, integer labels; x as for `TFLiteModel`
        (an array, or a list / dict of arrays for several inputs; integer
        inputs such as token ids are fed as integers). The models output
        logits or probabilities (argmax is taken); for a model with several
        outputs, accuracy is that of the first output (Keras order) and
        `max_abs_logit_diff` covers all outputs.
      dense_model: the dense model to compare against (same architecture, e.g.
        the round-0 network). If None, the ticket with its pruned kernel
        entries refilled from a fresh initialization stands in: valid for
        sizes and latency only, so dense accuracies are then left out.
      representative_data: calibration inputs for the int8 variants (needed
        if `formats` has any).
      out_dir: folder for `ticket/`, `dense/` and `export_report.json`
        (replaced as a whole; refused if it holds anything else); a
        temporary folder (deleted afterwards) if None.
      formats: subset of `ALL_FORMATS`.
      latency_batches: batch sizes timed with the TFLite interpreter.
      repeats: timed invocations per batch size (the median is reported).
      num_threads: interpreter threads (in the report as `num_threads`, with
        each variant's `interpreter`).
      allow_dense: see `strip`.
      per_channel: int8 quantization granularity, see `tflite`.
      unroll: convert recurrent layers unrolled, see `tflite`.

    Returns:
      The report dict (also written to `out_dir/export_report.json`); print
      it with `format_report`. Each `tflite` row holds the ticket's and the
      dense model's latency per batch (`latency_ms`, `dense_latency_ms`,
      `latency_ratio` = ticket / dense), the interpreter and thread count,
      and `kernels`: per weighted op of the ticket's converted file, read
      back from the flatbuffer and the interpreter (`kernel_ops`), whether
      its filter is a native sparse tensor (with its block shape), goes
      through a DENSIFY op, or is dense, and whether the delegate or the
      builtin kernel runs it; `kernel_storage` counts them.

    Raises:
      ValueError: bad formats, missing or misshaped representative data for
        int8, a model without a ticket, test data that does not fit the
        model, or an `out_dir` holding other files.
      ExportError: too little disk space (the previous export stays).

    Example:
      >>> result = kl.export.report(model, (x_test, y_test), out_dir="export")  # doctest: +SKIP
      >>> print(kl.export.format_report(result))                               # doctest: +SKIP
    """
    formats_ = list(formats)
    unknown = [f for f in formats_ if f not in ALL_FORMATS]
    if unknown:
        raise ValueError(f"Unknown export format(s) {unknown}; choose from {list(ALL_FORMATS)}.")
    if out_dir is not None:
        out_dir = _check_out_dir(out_dir)
    needs_int8 = any(lite.TFLITE_VARIANTS.get(f, (0, 0))[1] for f in formats_)
    if needs_int8 and representative_data is None:
        raise ValueError("The int8 formats need representative_data (e.g. x_train[:256]); "
                         "pass it or leave tflite_int8* out of `formats`.")
    plain = writers.strip(model, allow_dense)
    calibration = lite.calibration_batches(representative_data, plain) if needs_int8 else None
    x_test, y_test = test_data
    x_arrays = lite.model_inputs(x_test, plain, "test_data's x")
    x_keras = x_arrays[0] if len(x_arrays) == 1 else x_arrays
    dense_given = dense_model is not None
    if dense_given:
        check_tf_keras_model(dense_model, "dense model")
        dense_plain = (strip_model(dense_model) if pruned_layers(dense_model)
                       else writers.without_training_state(dense_model))
    else:
        dense_plain = _dense_stand_in(plain)
    keras_logits = plain.predict(x_keras, batch_size=256, verbose=0)
    dense_logits = dense_plain.predict(x_keras, batch_size=256, verbose=0)
    layers = _layer_table(plain)
    dense_layers = _layer_table(dense_plain)
    if out_dir is not None:  # before minutes of conversions, not after
        weights = writers.weight_bytes(plain) + writers.weight_bytes(dense_plain)
        writers.check_free_space(out_dir, int(
            weights * sum(_SIZE_FACTORS[f] for f in formats_)) + writers._SPACE_MARGIN_BYTES)

    def build(folder):
        ticket_files = _export_all(plain, os.path.join(folder, "ticket"), formats_, calibration,
                                   per_channel, unroll)
        dense_files = _export_all(dense_plain, os.path.join(folder, "dense"), formats_,
                                  calibration, per_channel, unroll)
        dense_float_tflite = (writers.file_size(dense_files["tflite"]) if "tflite" in dense_files
                              else None)
        files, tflite_rows, interpreters = [], [], []
        for name in formats_:
            t_path, d_path = ticket_files[name], dense_files[name]
            row = {"format": name, "bytes": writers.file_size(t_path),
                   "gzip_bytes": gzip_size(t_path),
                   "dense_bytes": writers.file_size(d_path), "dense_gzip_bytes": gzip_size(d_path),
                   "file": os.path.relpath(t_path, folder)}
            row["ratio"] = row["bytes"] / row["dense_bytes"]
            row["gzip_ratio"] = row["gzip_bytes"] / row["dense_gzip_bytes"]
            if dense_float_tflite and name in lite.TFLITE_VARIANTS:
                row["ratio_vs_dense_float_tflite"] = row["bytes"] / dense_float_tflite
            files.append(row)
            if name not in lite.TFLITE_VARIANTS:
                continue
            t_lite = lite.TFLiteModel(t_path, num_threads)
            d_lite = lite.TFLiteModel(d_path, num_threads)
            for model_lite in (t_lite, d_lite):
                if model_lite.interpreter_name not in interpreters:
                    interpreters.append(model_lite.interpreter_name)
            t_out, d_out = t_lite.predict(x_arrays), d_lite.predict(x_arrays)
            entry = {
                "variant": name,
                "interpreter": t_lite.interpreter_name,
                "dense_interpreter": d_lite.interpreter_name,
                "int8_scales": (None if not lite.TFLITE_VARIANTS[name][1] else
                                "per-channel" if (per_channel if per_channel is not None
                                                  else not lite.TFLITE_VARIANTS[name][0])
                                else "per-tensor"),
                "accuracy": _accuracy(t_out, y_test),
                "keras_accuracy": _accuracy(keras_logits, y_test),
                "max_abs_logit_diff": _max_diff(t_out, keras_logits),
                "dense_accuracy": _accuracy(d_out, y_test) if dense_given else None,
                "dense_keras_accuracy": _accuracy(dense_logits, y_test) if dense_given else None,
                "dense_max_abs_logit_diff": _max_diff(d_out, dense_logits),
                "latency_ms": {}, "dense_latency_ms": {},
            }
            for batch in latency_batches:
                xb = _slice(x_arrays, batch)
                entry["latency_ms"][str(batch)] = 1e3 * t_lite.latency(xb, repeats)
                entry["dense_latency_ms"][str(batch)] = 1e3 * d_lite.latency(xb, repeats)
            entry["latency_ratio"] = {b: entry["latency_ms"][b] / entry["dense_latency_ms"][b]
                                      for b in entry["latency_ms"]}
            entry["num_threads"] = num_threads
            # read back from the converted file: native sparse, DENSIFY or dense per layer
            entry["kernels"] = sparse_ops.kernel_ops(t_lite.content, plain, t_lite.interpreter)
            entry["kernel_storage"] = sparse_ops.summary(entry["kernels"])
            tflite_rows.append(entry)
        result = {
            "model": plain.name,
            "interpreters": interpreters,
            "num_threads": num_threads,
            "latency_repeats": repeats,
            "dense_reference": ("given dense model" if dense_given else
                                "the ticket with its zeros refilled from a fresh "
                                "initialization (sizes and latency only; no dense accuracy)"),
            "test_examples": int(len(x_arrays[0])),
            "keras_accuracy": _accuracy(keras_logits, y_test),
            "dense_keras_accuracy": _accuracy(dense_logits, y_test) if dense_given else None,
            "layers": layers,
            "nonzero_params": sum(r["nonzero"] for r in layers),
            "prunable_params": sum(r["weights"] for r in layers),
            "total_params": int(plain.count_params()),
            "dense_nonzero_params": sum(r["nonzero"] for r in dense_layers),
            "files": files,
            "tflite": tflite_rows,
        }
        result["weights_remaining"] = (result["nonzero_params"] / result["prunable_params"]
                                       if result["prunable_params"] else 1.0)
        # every parameter counts; the pruned ones are the prunable weights' zeros
        pruned = result["prunable_params"] - result["nonzero_params"]
        result["all_weights_remaining"] = ((result["total_params"] - pruned) / result["total_params"]
                                           if result["total_params"] else 1.0)
        report_lib.write_json(os.path.join(folder, "export_report.json"), result)
        return result

    if out_dir is None:
        folder = tempfile.mkdtemp(prefix="keras-lottery-export-")
        try:
            return build(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    results = []
    try:
        writers.write_dir_atomically(out_dir, lambda tmp: results.append(build(tmp)))
    except writers.ExportError as err:
        raise writers.ExportError(f"{err} Nothing of this export was kept; {out_dir} is as "
                                  "it was before.", err.errno) from err
    return results[0]



def _kb(n):
    return f"{n / 1024:,.1f}"


def format_report(result):
    """The export report as printable tables (layers, files, TFLite).

    Args:
      result: the dict `report` returns (or its export_report.json, read back).

    Returns:
      The text, lines joined by newlines.
    """
    lines = [f"model {result['model']}: {result['nonzero_params']:,} of "
             f"{result['prunable_params']:,} prunable weights nonzero "
             f"({result['weights_remaining']:.1%}); "
             + (f"{result['all_weights_remaining']:.1%} of all {result['total_params']:,} "
                "parameters remaining" if "all_weights_remaining" in result else
                f"{result['total_params']:,} parameters in all"),
             f"dense reference: {result['dense_reference']}", ""]
    lines.append(f"{'layer':<24}{'weights':>10}{'nonzero':>10}{'remaining':>11}")
    for r in result["layers"]:
        lines.append(f"{r['layer']:<24}{r['weights']:>10,}{r['nonzero']:>10,}{r['remaining']:>11.1%}")
    lines.append("")
    lines.append(f"{'format':<20}{'KB':>10}{'dense KB':>10}{'ratio':>8}{'gz KB':>10}"
                 f"{'dense gz KB':>12}{'gz ratio':>9}{'vs dense float tflite':>23}")
    for r in result["files"]:
        vs = r.get("ratio_vs_dense_float_tflite")
        lines.append(f"{r['format']:<20}{_kb(r['bytes']):>10}{_kb(r['dense_bytes']):>10}"
                     f"{r['ratio']:>8.1%}{_kb(r['gzip_bytes']):>10}{_kb(r['dense_gzip_bytes']):>12}"
                     f"{r['gzip_ratio']:>9.1%}{'-' if vs is None else f'{vs:.1%}':>23}")
    if result["tflite"]:
        batches = list(result["tflite"][0]["latency_ms"])
        lines.append("")
        lines.append(f"TFLite interpreter(s): {' / '.join(result['interpreters'])}; "
                     f"{result['num_threads']} "
                     f"thread(s), median of {result['latency_repeats']} runs; Keras ticket "
                     f"accuracy {result['keras_accuracy']:.4f}"
                     + ("" if result["dense_keras_accuracy"] is None else
                        f", Keras dense {result['dense_keras_accuracy']:.4f}"))
        header = f"{'variant':<20}{'acc':>8}{'dense acc':>10}{'max|Δlogit|':>13}"
        for b in batches:
            header += f"{f'ms/b{b}':>10}{f'dense ms/b{b}':>14}{'ratio':>7}"
        lines.append(header + "  int8 scales  interpreter")
        for r in result["tflite"]:
            dense_acc = "-" if r["dense_accuracy"] is None else f"{r['dense_accuracy']:.4f}"
            line = (f"{r['variant']:<20}{r['accuracy']:>8.4f}{dense_acc:>10}"
                    f"{r['max_abs_logit_diff']:>13.2e}")
            for b in batches:
                ratio = r["latency_ms"][b] / r["dense_latency_ms"][b]
                line += f"{r['latency_ms'][b]:>10.3f}{r['dense_latency_ms'][b]:>14.3f}{ratio:>7.2f}"
            kind = r["interpreter"].split("(")[-1].split(";")[0].rstrip(")")
            lines.append(line + f"  {r.get('int8_scales') or '-':<11}  {kind}")
        if any(r.get("kernels") for r in result["tflite"]):
            lines.append("")
            lines.extend(format_kernels(result["tflite"]))
    return "\n".join(lines)


def format_kernels(tflite_rows):
    """Lines of the per-layer kernel table (`kernels` of each report TFLite row).

    storage: `sparse` = a native sparse filter tensor (the op's kernel runs
    on the compressed values), `densify` = a DENSIFY op expands it and the
    dense kernel runs, `dense` = stored dense. runs on: the interpreter's
    delegate (XNNPACK) or TFLite's builtin kernel.
    """
    lines = ["TFLite kernels of the ticket, read from each converted file (sparse = native "
             "sparse tensor; densify = DENSIFY op + dense kernel)",
             f"{'variant':<20}{'layer':<16}{'op':<18}{'dtype':<9}{'storage':<9}"
             f"{'block':>7}{'Keras block':>13}{'stored/weights':>16}  runs on"]
    for r in tflite_rows:
        for k in r.get("kernels") or []:
            stored = ("-" if k["stored_values"] is None else
                      f"{k['stored_values'] / k['weights']:.1%}")
            keras_block = "-" if k["keras_block"] is None else \
                "x".join(str(b) for b in k["keras_block"])
            lines.append(f"{r['variant']:<20}{k['layer'] or '?':<16}{k['op']:<18}{k['dtype']:<9}"
                         f"{k['storage']:<9}{k['block'] or '-':>7}{keras_block:>13}{stored:>16}"
                         f"  {k['runs_on'] or '?'}")
    for r in tflite_rows:
        for k in r.get("kernels") or []:
            if k.get("ragged_block"):
                lines.append(
                    f"warning: {r['variant']} {k['layer'] or k['op']}: filter {k['filter_shape']} "
                    f"is not a whole number of {k['block']} blocks; TFLite's block-sparse kernel "
                    "gave wrong outputs for such layers (docs/export.md): check max|Δlogit|, or "
                    "give the layer a multiple of the block as its input size.")
    return lines
