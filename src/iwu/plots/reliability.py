"""The reliability diagram of `iwu.method.calibration.UncertaintyMeter`'s result, beside the classwise ECE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from iwu.plots import plain_text, save_png


def reliability_figure(result: dict, title: str = "", classes=None):
    """Reliability diagram of `UncertaintyMeter.compute`'s ``result`` beside the classwise ECE per class.

    Left: accuracy against confidence per bin (gaps to the diagonal shaded),
    the pixels per bin under it (log scale). Right: each class's ECE, absent
    classes marked. ``classes``: class names (default: the class ids).
    """
    rel = result["reliability"]
    edges = np.asarray(rel["bin_edges"], np.float64)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    accuracy = np.asarray([np.nan if v is None else v for v in rel["accuracy"]], np.float64)
    confidence = np.asarray([np.nan if v is None else v for v in rel["confidence"]], np.float64)
    count = np.asarray(rel["count"], np.float64)
    class_ece = np.asarray([np.nan if v is None else v for v in result["classwise_reliability"]["ece"]], np.float64)
    names = [str(c) for c in range(len(class_ece))] if classes is None else [str(c) for c in classes]
    if len(names) != len(class_ece):
        raise ValueError(f"{len(names)} class names for {len(class_ece)} classes")

    fig = Figure(figsize=(13, 5.5), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 1), width_ratios=(1, 1))
    rel_ax = fig.add_subplot(grid[0, 0])
    count_ax = fig.add_subplot(grid[1, 0], sharex=rel_ax)
    class_ax = fig.add_subplot(grid[:, 1])

    filled = ~np.isnan(accuracy)
    rel_ax.bar(centres[filled], accuracy[filled], width=widths[filled], color="C0", edgecolor="white",
               label="accuracy")
    gap_low = np.minimum(accuracy, confidence)[filled]
    rel_ax.bar(centres[filled], np.abs(accuracy - confidence)[filled], bottom=gap_low, width=widths[filled],
               color="C3", alpha=0.35, edgecolor="C3", hatch="//", label="gap to confidence")
    rel_ax.plot([0, 1], [0, 1], "--", color="0.3", linewidth=1, label="perfect calibration")
    rel_ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
               title=f"reliability: ECE {_fmt(result['ece'])}, accuracy {_fmt(result['accuracy'])}")
    rel_ax.legend(loc="upper left", fontsize="small")
    rel_ax.tick_params(labelbottom=False)
    count_ax.bar(centres, count, width=widths, color="0.5", edgecolor="white")
    if (count > 0).any():
        count_ax.set_yscale("log")
    count_ax.set(xlabel="confidence (max probability)", ylabel="pixels")

    y = np.arange(len(names))
    shown = np.nan_to_num(class_ece)
    class_ax.barh(y, shown, color=["C0" if v == v else "0.8" for v in class_ece])
    for i, v in enumerate(class_ece):
        if v != v:
            class_ax.text(0, i, " absent", va="center", fontsize="small", color="0.4")
    mean = result["classwise_ece"]
    if mean == mean:
        class_ax.axvline(mean, color="C3", linestyle="--", linewidth=1, label=f"mean {mean:.4f}")
        class_ax.legend(loc="lower right", fontsize="small")
    class_ax.set_yticks(y, names, fontsize="small")
    class_ax.invert_yaxis()
    class_ax.set(xlabel="ECE of p_c", title="classwise ECE")
    for ax in (rel_ax, count_ax, class_ax):
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    return plain_text(fig)


def save_reliability_diagram(result: dict, path, title: str = "", classes=None) -> Path:
    """`reliability_figure` written to ``path`` as a PNG, atomically."""
    return save_png(reliability_figure(result, title, classes), path)


def _fmt(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"
