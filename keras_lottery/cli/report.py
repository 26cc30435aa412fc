"""`keras-lottery report RUN_DIR`: reprint the table and redraw the plots of a run."""

import os


def register(subparsers):
    p = subparsers.add_parser(
        "report",
        help="print the per-round table of a finished (or interrupted) run and redraw its plot",
        description="Reads the results saved in RUN_DIR and redraws them. For a single run "
        "(RUN_DIR/imp_report.json) it prints the per-round table and writes RUN_DIR/tickets.png. "
        "For a run with --seeds / --controls (RUN_DIR/seed_<s>/<series>/imp_report.json) it "
        "rewrites RUN_DIR/summary.json, summary.csv (mean, std, min, max over seeds), "
        "rounds.csv (every round of every run) and tickets.png (ticket vs controls, error "
        "bars over seeds), and prints the summary table.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `keras-lottery run --out`")
    p.add_argument("--plot", default=None, help="where to write the PNG (default: RUN_DIR/tickets.png)")
    p.add_argument("--title", default=None, help="figure title")
    p.set_defaults(func=report)
    return p


def _has_seed_runs(run_dir):
    return os.path.isdir(run_dir) and any(
        name.startswith("seed_") and os.path.isdir(os.path.join(run_dir, name))
        for name in os.listdir(run_dir))


def report(args):
    from keras_lottery import report as report_lib

    run_dir = args.run_dir
    if _has_seed_runs(run_dir):
        summary = report_lib.write_summary(run_dir, plot=False)
        print(report_lib.format_summary(summary))
        if "ticket" in summary and len(summary) > 1:  # as `keras-lottery run` ends
            print()
            print(report_lib.format_comparison(summary))
        plot = report_lib.plot_summary(summary, args.plot or os.path.join(run_dir, "tickets.png"),
                                       title=args.title)
        print(f"summary: {os.path.join(run_dir, 'summary.json')}  plot: {plot}")
        return 0
    path = os.path.join(run_dir, "imp_report.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No IMP report at {path}: pass the --out folder of a `keras-lottery run`.")
    _, rows = report_lib.read_report(path)
    print(report_lib.format_table(rows))
    if rows:
        plot = report_lib.plot_history(rows, args.plot or os.path.join(run_dir, "tickets.png"),
                                       title=args.title)
        print(f"plot: {plot}")
    return 0
