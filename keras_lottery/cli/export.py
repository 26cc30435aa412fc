"""`keras-lottery export RUN_OR_MODEL`: ship a ticket as SavedModel, .keras/H5 or TFLite."""

import os

from keras_lottery.cli._args import add_local_data_args

FORMATS = ["savedmodel", "keras", "h5", "tflite", "all"]


def register(subparsers):
    p = subparsers.add_parser(
        "export",
        help="export a ticket: SavedModel, .keras/.h5, TFLite (float, --sparse, --int8), or all with a report",
        description="Strips the pruning wrappers (pruned weights become exact zeros) and "
        "writes the ticket in one format. RUN_OR_MODEL is the --out folder of "
        "`keras-lottery run` (its wrapped_model.keras and dataset are used) or a "
        ".keras/.h5 model file. `--format all` writes every format for the ticket "
        "and a dense reference into the --out folder, with export_report.json and "
        "a printed size / accuracy / latency table; it is written into a temporary "
        "folder beside --out and renamed over it only when every format succeeded, so "
        "a failed export leaves the previous one intact and nothing partial. Single "
        "files are written to a temporary name and renamed. Recurrent models (LSTM, "
        "GRU) need --unroll for TFLite.",
    )
    p.add_argument("source", metavar="RUN_OR_MODEL", help="run folder or .keras/.h5 model file")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="savedmodel (folder), keras / h5 (file), tflite (file), all (folder + report)")
    p.add_argument("--out", required=True, help="output file (keras, h5, tflite) or folder (savedmodel, all)")
    p.add_argument("--sparse", action="store_true", help="tflite: sparse weight encoding (EXPERIMENTAL_SPARSITY)")
    p.add_argument("--int8", action="store_true",
                   help="tflite: full int8 quantization, calibrated on training inputs")
    p.add_argument("--int8-scales", default="auto", choices=["auto", "per-channel", "per-tensor"],
                   help="int8 weight scales (default: %(default)s = per-tensor with --sparse, "
                   "per-channel without)")
    p.add_argument("--unroll", action="store_true",
                   help="tflite / all: unroll recurrent layers (LSTM, GRU, SimpleRNN) over "
                   "their fixed number of time steps, so they convert (or --batch-size)")
    p.add_argument("--select-tf-ops", action="store_true",
                   help="tflite: allow TensorFlow ops TFLite lacks (SELECT_TF_OPS); the "
                   "file then needs an interpreter with the Flex delegate")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="tflite: convert for a fixed batch size N (recurrent layers become "
                   "fused sequence ops; the file takes batches of N only)")
    p.add_argument("--representative", default=None, metavar="X.npy",
                   help="calibration inputs for --int8 (default: the run's training data)")
    add_local_data_args(p, None, "dataset for calibration / the report when RUN_OR_MODEL is a "
                        "model file")
    p.add_argument("--dense", default=None, metavar="MODEL",
                   help="all: dense model file to compare against (default: the ticket "
                   "with its zeros refilled at random, for sizes and latency only)")
    p.add_argument("--repeats", type=int, default=50, help="all: timed TFLite runs per batch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="all: TFLite interpreter threads for the latency figures "
                   "(default: %(default)s)")
    p.add_argument("--allow-dense", action="store_true",
                   help="export even a model that was never pruned (as a dense model)")
    p.add_argument("--quiet", action="store_true", help="print less")
    p.set_defaults(func=export)
    return p


def _load_source(source):
    """(model, run config or {}) for a run folder or a model file."""
    from keras_lottery import report as report_lib
    from keras_lottery.imp import load_wrapped_model

    if not os.path.exists(source):
        raise FileNotFoundError(f"{source} does not exist: pass the --out folder of a "
                                "`keras-lottery run` or a .keras/.h5 model file.")
    config = {}
    path = source
    if os.path.isdir(source):
        path = os.path.join(source, "wrapped_model.keras")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{source} is a folder without wrapped_model.keras: pass the --out "
                "folder of a finished `keras-lottery run`, or a model file.")
        report_path = os.path.join(source, "imp_report.json")
        if os.path.exists(report_path):
            config = report_lib.read_json(report_path).get("config", {})
    elif os.path.splitext(source)[1].lower() not in (".keras", ".h5"):
        raise ValueError(f"{source} is not a .keras or .h5 file nor a run folder.")
    return _load_model(path, load_wrapped_model), config


def _load_model(path, load):
    """`load(path)`, with a truncated or corrupt file reported as such, naming it."""
    from keras_lottery.export import ExportError

    try:
        return load(path, compile=False)
    except (ValueError, TypeError) as err:
        if "zip" not in str(err).lower() and "file signature" not in str(err).lower():
            raise  # a readable file holding something else: its own message
        cause = err
    except Exception as err:  # zipfile.BadZipFile, h5py's OSError, EOFError, ...
        cause = err
    size = os.path.getsize(path)
    raise ExportError(
        f"Cannot read the model file {path} ({size:,} bytes): it is truncated or not a "
        f"Keras model ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}). "
        "If a run was interrupted while saving it, re-run or resume the run; otherwise "
        "pass a complete .keras/.h5 file.") from cause


def _data(args, config):
    """((x_train, y_train), (x_test, y_test)) from --dataset or the run's config, or None."""
    dataset = args.dataset or config.get("dataset")
    if not dataset:
        return None
    from keras_lottery import data as data_lib

    # the same split as `keras-lottery run`: its validation part is the tail
    (x, y), test = data_lib.load_local(dataset, config.get("num_samples", 5000),
                                       args.data_dir or config.get("data_dir"))
    train, _ = data_lib.split_validation(x, y, config.get("val_fraction", 0.1))
    return train, test


def _representative(args, data):
    import numpy as np

    if args.representative:
        if not os.path.exists(args.representative):
            raise FileNotFoundError(f"No representative data at {args.representative} "
                                    "(a .npy array of training inputs).")
        return np.load(args.representative)
    if data is not None:
        return data[0][0][:256]
    return None


def export(args):
    from keras_lottery import export as export_lib

    if (args.sparse or args.int8) and args.format not in ("tflite", "all"):
        raise ValueError("--sparse and --int8 apply to --format tflite only.")
    if args.unroll and args.format not in ("tflite", "all"):
        raise ValueError("--unroll applies to --format tflite and all only.")
    if args.batch_size is not None and args.format != "tflite":
        raise ValueError("--batch-size applies to --format tflite only.")
    if args.select_tf_ops and args.format != "tflite":
        raise ValueError("--select-tf-ops applies to --format tflite only (--format all "
                         "runs every TFLite file, and no interpreter here has the Flex "
                         "delegate such files need; use --unroll).")
    per_channel = {"auto": None, "per-channel": True, "per-tensor": False}[args.int8_scales]
    model, config = _load_source(args.source)
    needs_data = args.format == "all" or args.int8
    data = _data(args, config) if needs_data else None
    rep = _representative(args, data) if needs_data else None
    if args.int8 and rep is None:
        raise ValueError("--int8 needs representative data to calibrate: pass a run folder "
                         "(its dataset is used), --dataset NAME, or --representative X.npy.")
    if args.format == "all":
        if data is None:
            raise ValueError("--format all evaluates on test data: pass a run folder, or "
                             "--dataset NAME for a model file.")
        dense = None
        if args.dense:
            dense, _ = _load_source(args.dense)
        result = export_lib.report(model, data[1], dense_model=dense, representative_data=rep,
                                   out_dir=args.out, repeats=args.repeats,
                                   num_threads=args.threads,
                                   allow_dense=args.allow_dense, per_channel=per_channel,
                                   unroll=args.unroll)
        print(export_lib.format_report(result))
        print(f"\nexports: {os.path.join(args.out, 'ticket')}  report: "
              f"{os.path.join(args.out, 'export_report.json')}")
        return 0
    if args.format == "savedmodel":
        path = export_lib.saved_model(model, args.out, allow_dense=args.allow_dense)
    elif args.format in ("keras", "h5"):
        ext = "." + args.format
        if os.path.splitext(args.out)[1].lower() != ext:
            raise ValueError(f"--format {args.format} writes a {ext} file: end --out in {ext}.")
        path = export_lib.keras_file(model, args.out, allow_dense=args.allow_dense)
    else:
        export_lib.tflite(model, args.out, sparse=args.sparse, int8=args.int8,
                          representative_data=rep, allow_dense=args.allow_dense,
                          per_channel=per_channel, unroll=args.unroll,
                          select_tf_ops=args.select_tf_ops, batch_size=args.batch_size)
        path = args.out
    size = export_lib.file_size(path)
    if not args.quiet:
        variant = "".join([" int8" if args.int8 else "", " sparse" if args.sparse else ""])
        print(f"wrote {args.format}{variant}: {path} ({size / 1024:,.1f} KB)")
        if args.format == "tflite":
            _print_kernels(path, model, export_lib, args.allow_dense)
    return 0


def _print_kernels(path, model, export_lib, allow_dense):
    """What the written file does with each weighted layer (read back from it)."""
    with open(path, "rb") as f:
        content = f.read()
    try:
        interpreter = export_lib.TFLiteModel(content).interpreter
    except RuntimeError:  # Flex ops: nothing here runs it; the file still says its storage
        interpreter = None
    plain = export_lib.strip(model, allow_dense)
    for k in export_lib.kernel_ops(content, plain, interpreter):
        block = f" {k['block']} blocks" if k["block"] else ""
        engine = {"delegate": ", XNNPACK", "builtin": ", builtin kernel", None: ""}[k["runs_on"]]
        how = {"sparse": f"native sparse{block}", "densify": "DENSIFY + dense kernel",
               "dense": "dense"}[k["storage"]]
        warn = (" (warning: not a whole number of blocks; TFLite's block-sparse kernel gave "
                "wrong outputs for such layers, see docs/export.md)" if k["ragged_block"] else "")
        print(f"  {k['layer'] or '?'}: {k['op']} {k['dtype']}, {how}{engine}{warn}")
