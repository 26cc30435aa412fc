"""IMP results on disk and on screen: JSON, CSV, the per-round table, plots.

Every file is written to a temporary name and renamed, so a run that is
interrupted never leaves a half-written report behind.
"""

import csv
import io
import json
import os
import tempfile

__all__ = [
    "atomic_write",
    "write_json",
    "read_json",
    "write_csv",
    "format_table",
    "plot_history",
]

TABLE_COLUMNS = [
    ("round", "round", "{:d}"),
    ("weights_remaining", "% weights", "{:.1%}"),
    ("val_accuracy", "val acc", "{:.4f}"),
    ("test_accuracy", "test acc", "{:.4f}"),
    ("early_stop_iteration", "early-stop it", "{:d}"),
    ("seconds", "seconds", "{:.1f}"),
]


def atomic_write(path, data, mode="w"):
    """Writes `data` to `path` via a temporary file in the same folder + rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, payload):
    """Writes `payload` (JSON-serializable) atomically, pretty-printed."""
    atomic_write(path, json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


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
      rows: list of dicts (e.g. `RoundResult.to_dict()`).
      columns: (key, header, format) triples.

    Returns:
      A string with a header line and one line per row.
    """
    cells = [[header for _, header, _ in columns]]
    for row in rows:
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
    for label, srows in all_series.items():
        x = [100.0 * r["weights_remaining"] for r in srows]
        key = "test_accuracy" if all(r.get("test_accuracy") is not None for r in srows) else "val_accuracy"
        ax_acc.plot(x, [100.0 * r[key] for r in srows], "o-", label=f"{label} ({key.split('_')[0]})")
        ax_es.plot(x, [r.get("early_stop_iteration") for r in srows], "o-", label=label)
    for ax, ylabel in ((ax_acc, "accuracy (%)"), (ax_es, "early-stopping iteration")):
        ax.set_xscale("log")
        ax.set_xlim(105, min(90.0, *[100.0 * r["weights_remaining"] for s in all_series.values() for r in s]) * 0.9)
        ax.set_xlabel("% of weights remaining (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        ticks = [100, 51.2, 26.2, 13.4, 6.9, 3.5, 1.8, 1.0]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
