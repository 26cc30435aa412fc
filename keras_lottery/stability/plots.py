"""Figures of the stability analysis: error along the path, instability per rewind point."""

from keras_lottery import report as report_lib

__all__ = ["plot_instability", "plot_paths"]


def plot_paths(paths, path, title=None):
    """Plots test error (and loss) along the interpolation path, one line per entry.

    Args:
      paths: dict label -> `PathResult` (or its `to_dict()`), or a list of rows
        from `RewindSearchResult.rows`.
      path: PNG file to write.
      title: optional figure title.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(paths, list):
        paths = {f"k = {r['rewind']}": r for r in paths}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, p in paths.items():
        p = p.to_dict() if hasattr(p, "to_dict") else p
        ax.plot(p["alphas"], [100 * e for e in p["errors"]], "o-", ms=3, label=label)
    ax.set_xlabel("interpolation α (0 = copy A, 1 = copy B)")
    ax.set_ylabel("test error (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return report_lib.save_figure(fig, path)


def plot_instability(result, path, title=None):
    """Plots instability and ticket accuracy against the rewind point k.

    Args:
      result: a `RewindSearchResult` (or its `to_dict()`).
      path: PNG file to write.
      title: optional figure title.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result.to_dict() if hasattr(result, "to_dict") else result
    rows = r["rows"]
    xs = range(len(rows))
    labels = [f"{row['rewind']}\n({row['k_steps']})" for row in rows]
    fig, (ax_i, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    ax_i.plot(xs, [100 * row["instability"] for row in rows], "o-", label="instability")
    ax_i.axhline(100 * r["threshold"], color="gray", ls="--", label="threshold")
    ax_i.set_ylabel("error barrier (percentage points)")
    ax_a.plot(xs, [100 * row["accuracy"] for row in rows], "o-", label="subnetwork from θk")
    if r.get("dense_accuracy") is not None:
        ax_a.axhline(100 * r["dense_accuracy"], color="gray", ls="--", label="dense from θ0")
    ax_a.set_ylabel("test accuracy (%)")
    for ax in (ax_i, ax_a):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels)
        ax.set_xlabel("rewind point k (steps)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title or f"{100 * r['weights_remaining']:.1f}% weights remaining; "
                 f"earliest stable: {r['chosen']}")
    fig.tight_layout()
    return report_lib.save_figure(fig, path)
