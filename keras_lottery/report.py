"""IMP results on disk and on screen: JSON, CSV, the per-round table, plots.

Every file is written to a temporary name and renamed, so a run that is
interrupted never leaves a half-written report behind.
"""

import csv
import errno
import io
import json
import os
import re
import shutil
import tempfile

__all__ = [
    "DiskFullError",
    "atomic_path",
    "atomic_write",
    "remove_stale_temporaries",
    "remove_outputs",
    "write_json",
    "read_json",
    "read_report",
    "write_csv",
    "format_table",
    "plot_history",
    "save_figure",
    "collect_runs",
    "summarize",
    "write_summary",
    "plot_summary",
    "format_summary",
    "format_comparison",
    "SUMMARY_METRICS",
    "SERIES_STYLE",
]

TABLE_COLUMNS = [
    ("round", "round", "{:d}"),
    ("weights_remaining", "% weights", "{:.1%}"),
    ("all_weights_remaining", "% all params", "{:.1%}"),
    ("val_accuracy", "val acc", "{:.4f}"),
    ("test_accuracy", "test acc", "{:.4f}"),
    ("early_stop_iteration", "early-stop it", "{:d}"),
    ("seconds", "seconds", "{:.1f}"),
]


def _read_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which races with threads.
_UMASK = _read_umask()


def shared_mode(mode=0o666):
    """`mode` minus the process umask: what open() / mkdir() would give.

    mkstemp / mkdtemp create private (0600 / 0700) entries; reports and
    exports are meant to be shared, so temporary files get this mode before
    they are renamed into place.
    """
    return mode & ~_UMASK


class DiskFullError(OSError):
    """A file could not be written: the disk (or the user's quota) is full.

    Raised by `atomic_path` (and so by every report, checkpoint and model
    write) in place of the writer's own error (`OSError` from `write`,
    zipfile or h5py, TensorFlow's `ResourceExhaustedError`), naming the
    file; `errno` is ENOSPC and `filename` the file. Nothing was left
    half-written: the file keeps its previous content, if any.
    """

    def __str__(self):  # the message, not OSError's "[Errno 28] None: 'path'"
        return str(self.args[0]) if self.args else super().__str__()


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _is_disk_full(err):
    return (getattr(err, "errno", None) in _DISK_FULL_ERRNOS
            or "No space left on device" in str(err) or "Disk quota exceeded" in str(err))


def _disk_full_error(err, path):
    error = DiskFullError(
        f"The disk is full: {path} could not be written ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else 'no space left'}). Nothing was left "
        "half-written (the file keeps its previous content, if any): free some space, or "
        "write somewhere else, and run the command again (`keras-lottery run` continues "
        "from its last finished round).")
    error.errno, error.filename = errno.ENOSPC, path
    return error


def _flush_to_disk(path):
    """fsync of a file, or of a folder's entries (where the OS allows it)."""
    if os.path.isdir(path) and os.name != "posix":
        return  # Windows cannot open folders
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF):  # a file system without fsync
            raise
    finally:
        os.close(fd)


def atomic_path(path, write):
    """Calls `write(tmp)` on a fresh temporary path beside `path`, then renames it to `path`.

    The temporary path does not exist yet (writers such as `model.save` or
    `fig.savefig` create it) and ends with `path`'s own name, extension
    included. The file is flushed to disk (fsync) before it is renamed, and
    the folder after. On any error the temporary file or folder is removed and
    `path` is left as it was.

    Args:
      path: the file to write (its folder is created).
      write: callable taking the temporary path.

    Returns:
      `path`.

    Raises:
      DiskFullError: (an OSError) if the disk or quota is full, naming `path`;
        any other error of `write` as it is.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    os.remove(tmp)
    try:
        write(tmp)
        os.chmod(tmp, shared_mode())
        _flush_to_disk(tmp)  # the data reaches the disk before the name does
        os.replace(tmp, path)
        _flush_to_disk(folder)
    except Exception as err:
        if isinstance(err, DiskFullError) or not _is_disk_full(err):
            raise
        raise _disk_full_error(err, path) from err
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
    return path


def remove_outputs(folder, names):
    """Deletes the files and folders `names` from `folder` (a `--fresh` start).

    Only the given names are touched; a symbolic link is removed, not
    followed; a missing name is skipped.

    Args:
      folder: the output folder.
      names: file or folder names inside it.

    Returns:
      The names removed, in the order given.
    """
    removed = []
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    return removed


# `atomic_path`'s temporary names: ".tmp-" + mkstemp's 8 random characters + "-" + the name
_TEMPORARY = re.compile(r"^\.tmp-[a-z0-9_]{8}-.+$")


def remove_stale_temporaries(folder):
    """Removes the temporary files that a killed writer left in `folder` and below.

    `atomic_path` writes to ".tmp-XXXXXXXX-<name>" beside its target and renames
    it; a process killed with SIGKILL in between (no cleanup can run) leaves
    that file behind. `keras-lottery run` calls this as it starts, before it
    writes anything; only names of that exact form are removed, so nothing a
    user put in the folder is touched. Do not call it while another process
    writes into `folder`.

    Args:
      folder: a run's output folder (a missing folder is fine).

    Returns:
      The removed paths, relative to `folder`.
    """
    removed = []
    for root, dirs, files in os.walk(os.fspath(folder)):
        for name in sorted(files) + sorted(dirs):
            if not _TEMPORARY.match(name):
                continue
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
            else:
                os.remove(path)
            removed.append(os.path.relpath(path, folder))
    return removed


def atomic_write(path, data, mode="w"):
    """Writes `data` to `path` via a temporary file in the same folder + rename."""

    def write(tmp):
        with open(tmp, mode) as f:
            f.write(data)

    return atomic_path(path, write)


def write_json(path, payload):
    """Writes `payload` (JSON-serializable) atomically, pretty-printed."""
    atomic_write(path, json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n")


def read_json(path):
    """Reads a JSON file written by `write_json`.

    Raises:
      FileNotFoundError: if `path` does not exist.
      ValueError: if it is not valid JSON (truncated, or not a report), naming
        the file, the place of the error and the fix.
    """
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}; {len(text)} characters): the file is truncated "
            "or is not a keras-lottery report. Reports are written atomically, so this "
            "one was cut short or changed by another program: rerun the command that "
            "wrote it (`keras-lottery run --resume` keeps the finished rounds), or "
            "restore it from a backup.") from None


def _flat_row(row):
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}[{sub}]"] = subvalue
        else:
            flat[key] = value
    return flat


def write_csv(path, rows):
    """Writes a list of row dicts as CSV (nested dicts become `key[sub]` columns)."""
    flat = [_flat_row(r) for r in rows]
    columns = []
    for row in flat:
        for key in row:
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write(path, buffer.getvalue())


def _cell(fmt, value):
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(rows, columns=TABLE_COLUMNS):
    """The per-round table as text, one line per round.

    Args:
      rows: list of dicts (e.g. `RoundResult.to_dict()`) or of `RoundResult`s
        (`imp.history` as it is).
      columns: (key, header, format) triples.

    Returns:
      A string with a header line and one line per row.
    """
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        if hasattr(row, "to_dict"):
            row = row.to_dict()
        cells.append([_cell(fmt, row.get(key)) for key, _, fmt in columns])
    # Fixed minimum widths keep rows printed one at a time aligned.
    widths = [max(max(len(line[i]) for line in cells), 9) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_history(rows, path, title=None, series=None):
    """Plots test (or val) accuracy and early-stop iteration vs % weights remaining.

    Args:
      rows: the ticket's per-round rows (dicts).
      path: where to save the PNG.
      title: optional figure title.
      series: optional dict label -> rows of further runs (e.g. controls).

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_series = {"ticket": rows}
    all_series.update(series or {})
    fig, (ax_acc, ax_es) = plt.subplots(1, 2, figsize=(11, 4.2))
    key = "test_accuracy" if all(r.get("test_accuracy") is not None for r in rows) else "val_accuracy"
    for label, srows in all_series.items():
        x = [100.0 * r["weights_remaining"] for r in srows]
        ax_acc.plot(x, [100.0 * (r.get(key) or float("nan")) for r in srows], "o-",
                    label=f"{label} ({key.split('_')[0]})")
        ax_es.plot(x, [r.get("early_stop_iteration") for r in srows], "o-", label=label)
    dense = [r for r in rows if r.get("round") == 0]
    if dense and dense[0].get(key) is not None:
        ax_acc.axhline(100.0 * dense[0][key], color="grey", linestyle="--", linewidth=1,
                       label="dense network (round 0)")
    # ticks at the measured sparsities, thinned to at most 8
    ticks = sorted({round(100.0 * r["weights_remaining"], 1) for r in rows}, reverse=True)
    ticks = ticks[:: max(1, -(-len(ticks) // 8))]
    x_min = min(100.0 * r["weights_remaining"] for s in all_series.values() for r in s)
    for ax, ylabel in ((ax_acc, "accuracy (%)"), (ax_es, "early-stopping iteration")):
        ax.set_xscale("log")
        ax.set_xlim(110, x_min * 0.85)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("% of weights remaining (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, metadata={"Series": ",".join(all_series)})


# -- several runs: seeds x (ticket, controls) ------------------------------------

SUMMARY_METRICS = (
    "weights_remaining",
    "test_accuracy",
    "early_stop_iteration",
    "early_stop_test_accuracy",
    "early_stop_val_accuracy",
    "val_accuracy",
    "seconds",
    "steps",
)

# series name -> (label, colour, line style, marker)
SERIES_STYLE = {
    "ticket": ("winning ticket (IMP, rewind)", "tab:blue", "-", "o"),
    "reinit": ("control: random re-init", "tab:orange", "--", "s"),
    "random": ("control: random pruning", "tab:green", ":", "^"),
}


def read_report(path):
    """An `imp_report.json`'s `(config, history)`.

    Raises:
      ValueError: naming the file, if it is truncated (see `read_json`) or
        valid JSON but no report (a list, or an object without a 'history'
        list of rounds).
    """
    payload = read_json(path)
    history = payload.get("history") if isinstance(payload, dict) else None
    if not (isinstance(history, list) and all(isinstance(r, dict) and "round" in r for r in history)):
        found = (f"a JSON {type(payload).__name__}" if not isinstance(payload, dict) else
                 f"an object with keys {sorted(payload)[:8]}")
        raise ValueError(
            f"{path} is not a keras-lottery report: it holds {found}, not a 'history' list "
            "of rounds. Rerun the command that wrote it, or move the file out of the run "
            "folder.")
    config = payload.get("config") or {}
    return (config if isinstance(config, dict) else {}), history


def collect_runs(run_dir):
    """Every run saved under `run_dir`.

    Finds `run_dir/imp_report.json` (a single `keras-lottery run`) and
    `run_dir/seed_<s>/<series>/imp_report.json` (an experiment with seeds and
    controls).

    Returns:
      A list of dicts `{"series", "seed", "config", "history"}`, sorted by
      series then seed.

    Raises:
      FileNotFoundError: if there is no report under `run_dir`.
      ValueError: for a report that is truncated or not a report (a JSON list,
        no 'history'), naming the file.
    """
    run_dir = os.fspath(run_dir)
    runs = []
    single = os.path.join(run_dir, "imp_report.json")
    if os.path.exists(single):
        config, history = read_report(single)
        runs.append({"series": config.get("series", "ticket"), "seed": config.get("seed", 0),
                     "config": config, "history": history})
    if os.path.isdir(run_dir):
        for seed_name in sorted(os.listdir(run_dir)):
            if not seed_name.startswith("seed_"):
                continue
            if not os.path.isdir(os.path.join(run_dir, seed_name)):
                continue
            for series in sorted(os.listdir(os.path.join(run_dir, seed_name))):
                path = os.path.join(run_dir, seed_name, series, "imp_report.json")
                if not os.path.exists(path):
                    continue
                config, history = read_report(path)
                seed = config.get("seed", seed_name[len("seed_"):])
                runs.append({"series": series, "seed": seed, "config": config,
                             "history": history})
    if not runs:
        raise FileNotFoundError(
            f"No IMP report under {run_dir}: expected imp_report.json or "
            "seed_<s>/<series>/imp_report.json (the --out folder of `keras-lottery run`).")
    order = {name: i for i, name in enumerate(SERIES_STYLE)}
    runs.sort(key=lambda r: (order.get(r["series"], len(order)), r["series"], str(r["seed"])))
    return runs


def _stats(values):
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def summarize(runs):
    """Mean and spread over seeds, per series and round.

    Args:
      runs: from `collect_runs`.

    Returns:
      dict series -> list of rows (one per round, in order), each
      `{"round", "n_seeds", "seeds", "<metric>": {"mean", "std", "min", "max"}}`
      for every metric in `SUMMARY_METRICS` that was measured (std is the
      sample standard deviation, 0 for one seed).
    """
    by_series = {}
    for run in runs:
        for row in run["history"]:
            by_series.setdefault(run["series"], {}).setdefault(row["round"], []).append((run["seed"], row))
    summary = {}
    for series, rounds in by_series.items():
        rows = []
        for rnd in sorted(rounds):
            entries = rounds[rnd]
            out = {"round": rnd, "n_seeds": len(entries), "seeds": [s for s, _ in entries]}
            for metric in SUMMARY_METRICS:
                stats = _stats([row.get(metric) for _, row in entries])
                if stats is not None:
                    out[metric] = stats
            rows.append(out)
        summary[series] = rows
    return summary


def _summary_csv_rows(summary):
    rows = []
    for series, srows in summary.items():
        for row in srows:
            flat = {"series": series, "round": row["round"], "n_seeds": row["n_seeds"]}
            for metric in SUMMARY_METRICS:
                for stat, value in (row.get(metric) or {}).items():
                    flat[f"{metric}_{stat}"] = value
            rows.append(flat)
    return rows


def write_summary(run_dir, title=None, plot=True):
    """Writes summary.json, summary.csv, rounds.csv and tickets.png into `run_dir`.

    `rounds.csv` holds every round of every run (series, seed, then the
    round's fields); `summary.*` the mean / std / min / max over seeds.

    Returns:
      The summary (see `summarize`).
    """
    runs = collect_runs(run_dir)
    summary = summarize(runs)
    write_json(os.path.join(run_dir, "summary.json"), {"summary": summary, "runs": [
        {"series": r["series"], "seed": r["seed"], "rounds": len(r["history"])} for r in runs]})
    write_csv(os.path.join(run_dir, "summary.csv"), _summary_csv_rows(summary))
    write_csv(os.path.join(run_dir, "rounds.csv"),
              [dict({"series": r["series"], "seed": r["seed"]}, **{k: v for k, v in row.items() if k != "metrics"})
               for r in runs for row in r["history"]])
    if plot and any(summary.values()):
        plot_summary(summary, os.path.join(run_dir, "tickets.png"), title=title)
    return summary


def _pm(stats, scale, digits):
    if not stats:
        return "-"
    return f"{scale * stats['mean']:.{digits}f} ± {scale * stats['std']:.{digits}f}"


def format_summary(summary):
    """The summary as a text table: a line per series and round, mean ± std over seeds.

    Example:
      >>> print(format_summary(summarize(collect_runs("runs/lenet"))))  # doctest: +SKIP
    """
    header = ["series", "round", "% weights", "seeds", "test acc % (end)",
              "test acc % (early stop)", "early-stop it"]
    lines = [header]
    for series, rows in summary.items():
        for row in rows:
            lines.append([
                series, str(row["round"]), f"{100 * row['weights_remaining']['mean']:.1f}",
                str(row["n_seeds"]), _pm(row.get("test_accuracy"), 100, 2),
                _pm(row.get("early_stop_test_accuracy"), 100, 2),
                _pm(row.get("early_stop_iteration"), 1, 0)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def save_figure(fig, path, metadata=None):
    """Saves a matplotlib figure as PNG atomically (temp file + rename) and closes it.

    Args:
      fig: the figure.
      path: the PNG file to write (folders are created).
      metadata: optional PNG text chunks, e.g. {"Series": "ticket,reinit"}.

    Returns:
      `path`.
    """
    import matplotlib.pyplot as plt

    try:
        return atomic_path(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png",
                                                         metadata=metadata))
    finally:
        plt.close(fig)


def plot_summary(summary, path, title=None):
    """The paper's figures from a summary: ticket vs controls, error bars over seeds.

    Three panels against % of weights remaining (log scale, 100 -> 1): the
    early-stopping iteration, the test accuracy at the early-stopping
    iteration, and the test accuracy at the end of each round. Markers are
    means over seeds; error bars span the minimum to the maximum (as in
    Frankle & Carbin); a dashed grey line marks the dense network. Controls
    are shifted sideways by a hair so that error bars do not overlap. The
    PNG's text chunk `Series` lists the series drawn (comma-separated).

    Args:
      summary: from `summarize`.
      path: the PNG to write.
      title: optional figure title.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("early_stop_iteration", "early-stopping iteration (steps)", 1.0),
        ("early_stop_test_accuracy", "test accuracy at early stop (%)", 100.0),
        ("test_accuracy", "test accuracy at end of round (%)", 100.0),
    ]
    panels = [p for p in panels if any(p[0] in row for rows in summary.values() for row in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    axes = axes[0]
    x_all = [100.0 * row["weights_remaining"]["mean"] for rows in summary.values() for row in rows]
    n_seeds = max((row["n_seeds"] for rows in summary.values() for row in rows), default=0)
    ticket = summary.get("ticket") or next(iter(summary.values()))
    ticks = sorted({round(100.0 * row["weights_remaining"]["mean"], 1) for row in ticket}, reverse=True)
    shift = {"ticket": 1.0, "reinit": 0.985, "random": 1.015}
    for ax, (metric, ylabel, scale) in zip(axes, panels):
        for series, rows in summary.items():
            rows = [row for row in rows if metric in row]
            if not rows:
                continue
            label, color, style, marker = SERIES_STYLE.get(series, (series, None, "-", "o"))
            x = [100.0 * row["weights_remaining"]["mean"] * shift.get(series, 1.0) for row in rows]
            mean = [scale * row[metric]["mean"] for row in rows]
            low = [scale * (row[metric]["mean"] - row[metric]["min"]) for row in rows]
            high = [scale * (row[metric]["max"] - row[metric]["mean"]) for row in rows]
            ax.errorbar(x, mean, yerr=[low, high], color=color, linestyle=style, marker=marker,
                        markersize=4, capsize=3, linewidth=1.6, label=label)
        dense = [row for row in (summary.get("ticket") or []) if row["round"] == 0 and metric in row]
        if dense:
            ax.axhline(scale * dense[0][metric]["mean"], color="grey", linestyle="--",
                       linewidth=1, label="dense network (round 0)")
        ax.set_xscale("log")
        ax.set_xlim(115, max(0.9, min(x_all) * 0.8))
        ax.set_xticks(ticks[::2] if len(ticks) > 8 else ticks)
        ax.set_xticklabels([f"{t:g}" for t in (ticks[::2] if len(ticks) > 8 else ticks)])
        ax.minorticks_off()
        ax.set_xlabel("% of weights remaining (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if metric == "early_stop_iteration":
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9)
    heading = title or "Lottery tickets vs controls"
    if n_seeds:
        heading += f"  (mean over {n_seeds} seed{'s' if n_seeds > 1 else ''}; bars: min-max)"
    fig.suptitle(heading, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, path, metadata={"Title": heading, "Series": ",".join(summary)})


# series name -> its column header in `format_comparison`
COMPARISON_HEADERS = {"ticket": "ticket", "reinit": "re-init", "random": "random"}


def format_comparison(summary, metric="test_accuracy"):
    """The ticket against its controls: one line per round, accuracies in %.

    Columns: round, % of weights remaining, the ticket's accuracy, each
    control's, and the gap (ticket minus control, in points) for each
    control. With several seeds each cell is mean ± sample std over seeds
    and the line under the table says how many. When rounds differ in
    length (`round_end="converged"`), a `steps` column gives each round's
    steps (the mean over seeds); if a control's steps differ from the
    ticket's in some round (controls trained to fixed rounds), each series
    gets its own steps column, so that the mismatch shows.

    Args:
      summary: from `summarize` (series "ticket" plus any of "reinit", "random").
      metric: the accuracy compared (default: test accuracy at the round's end;
        "early_stop_test_accuracy" for the early-stopping iteration's).

    Returns:
      The table as text.

    Raises:
      ValueError: if the summary has no "ticket" series.

    Example:
      >>> print(format_comparison(summarize(collect_runs("runs/lenet-mnist1d"))))  # doctest: +SKIP
    """
    if "ticket" not in summary:
        raise ValueError(f"The summary has no 'ticket' series (it has {sorted(summary)}): "
                         "format_comparison compares a ticket with its controls.")
    controls = [s for s in summary if s != "ticket"]
    by_round = {s: {row["round"]: row for row in rows} for s, rows in summary.items()}
    n_seeds = max(row["n_seeds"] for rows in summary.values() for row in rows)

    def cell(stats):
        if not stats:
            return "-"
        if n_seeds > 1:
            return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"
        return f"{100 * stats['mean']:.1f}"

    steps = {s: {row["round"]: row["steps"]["mean"] for row in rows if row.get("steps")}
             for s, rows in summary.items()}
    same = all(steps[c][r] == steps["ticket"].get(r) for c in controls for r in steps[c])
    step_series = (list(summary) if not same
                   else ["ticket"] if len(set(steps["ticket"].values())) > 1 else [])

    def steps_cell(series, rnd):
        value = steps[series].get(rnd)
        return "-" if value is None else f"{value:.0f}" if value == int(value) else f"{value:.1f}"

    header = ["round", "% weights"]
    header += [f"steps {COMPARISON_HEADERS.get(s, s)}" if len(step_series) > 1 else "steps"
               for s in step_series]
    header += [COMPARISON_HEADERS["ticket"]]
    header += [COMPARISON_HEADERS.get(c, c) for c in controls]
    header += [f"gap vs {COMPARISON_HEADERS.get(c, c)}" if len(controls) > 1 else "gap"
               for c in controls]
    lines = [header]
    for row in summary["ticket"]:
        rnd = row["round"]
        line = [str(rnd), f"{100 * row['weights_remaining']['mean']:.1f}"]
        line += [steps_cell(s, rnd) for s in step_series]
        line.append(cell(row.get(metric)))
        gaps = []
        for control in controls:
            other = by_round[control].get(rnd)
            line.append(cell(other.get(metric)) if other else "-")
            mine, theirs = row.get(metric), other.get(metric) if other else None
            gaps.append(f"{100 * (mine['mean'] - theirs['mean']):+.1f}" if mine and theirs else "-")
        lines.append(line + gaps)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    what = {"test_accuracy": "test accuracy (%) at the end of each round",
            "early_stop_test_accuracy": "test accuracy (%) at the early-stopping iteration"}
    note = what.get(metric, metric)
    if n_seeds > 1:
        note += f", mean ± std over {n_seeds} seeds"
    if controls:
        note += "; gap = ticket - control, in points"
    if step_series:
        note += "; steps: training steps of the round"
    return "\n".join(text + [note])
