"""The learning curve of a gap: one panel per validation set (columns) and score (rows), the mean paired
difference at every validation step with its 95% band, each seed's own difference thin behind it, and 0.

It draws `iwu.report.learning_gap.GapCurve`s, computed from the runs' logged scores.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure

from iwu.plots import plain_text, save_png
from iwu.plots.colours import ENSEMBLE_COLOUR

SEED_LINES = "0.65"  # each seed's own difference, behind the mean


def learning_gap_figure(curves: Sequence, names: dict[str, str] | None = None, title: str = "") -> Figure:
    """Panels of `curves` (`GapCurve`s) in a grid: a column per validation set, a row per score, in the
    order the curves come; `names` how to call each validation set in the panel titles."""
    names = names or {}
    sets = list(dict.fromkeys(c.eval_set for c in curves))
    metrics = list(dict.fromkeys(c.metric for c in curves))
    fig = Figure(figsize=(5.2 * max(len(sets), 1), 3.6 * max(len(metrics), 1) + (0.4 if title else 0)),
                 layout="constrained")
    axes = fig.subplots(max(len(metrics), 1), max(len(sets), 1), squeeze=False, sharex=True)
    for curve in curves:
        ax = axes[metrics.index(curve.metric)][sets.index(curve.eval_set)]
        steps = [p.step for p in curve.points]
        for k, seed in enumerate(curve.seeds):
            ax.plot(steps, [p.diffs[k] for p in curve.points], color=SEED_LINES, linewidth=0.8,
                    label="each seed" if k == 0 else None)
        banded = [p for p in curve.points if not math.isnan(p.low)]
        if banded:
            ax.fill_between([p.step for p in banded], [p.low for p in banded], [p.high for p in banded],
                            color=ENSEMBLE_COLOUR, alpha=0.2, linewidth=0, label="95% interval")
        ax.plot(steps, [p.mean for p in curve.points], color=ENSEMBLE_COLOUR, linewidth=2, marker="o",
                markersize=4, label=f"mean of {len(curve.seeds)} seeds")
        ax.axhline(0, color="0.2", linewidth=0.8)
        ax.set_title(f"{names.get(curve.eval_set, curve.eval_set)}: {curve.metric}", fontsize="medium")
        ax.set_ylabel(f"difference in {curve.metric}")
        ax.grid(True, alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    if curves:
        axes[0][0].legend(fontsize="small", loc="best")
    if title:
        fig.suptitle(title)
    return plain_text(fig)


def save_learning_gap(curves: Sequence, path, names: dict[str, str] | None = None, title: str = "") -> Path:
    """`learning_gap_figure` written to `path` as a PNG, atomically."""
    return save_png(learning_gap_figure(curves, names, title), path)
