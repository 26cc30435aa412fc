"""`keras-lottery report RUN_DIR`: reprint the table and redraw the plot of a run."""

import os


def register(subparsers):
    p = subparsers.add_parser(
        "report",
        help="print the per-round table of a finished (or interrupted) run and redraw its plot",
        description="Reads RUN_DIR/imp_report.json, prints the per-round table and "
        "writes RUN_DIR/tickets.png (or --plot PATH).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `keras-lottery run --out`")
    p.add_argument("--plot", default=None, help="where to write the PNG (default: RUN_DIR/tickets.png)")
    p.set_defaults(func=report)
    return p


def report(args):
    from keras_lottery import report as report_lib

    path = os.path.join(args.run_dir, "imp_report.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No IMP report at {path}: pass the --out folder of a `keras-lottery run`.")
    payload = report_lib.read_json(path)
    rows = payload["history"]
    print(report_lib.format_table(rows))
    if rows:
        plot = report_lib.plot_history(rows, args.plot or os.path.join(args.run_dir, "tickets.png"))
        print(f"plot: {plot}")
    return 0
