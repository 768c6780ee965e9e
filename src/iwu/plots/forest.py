"""A forest plot: several groups' differences from one baseline, each with its 95% interval, in panels side by
side (one per measure), the first group on top.

It draws `Forest`, plain numbers; benchmarks/method_quality.py builds one from each pair's report.csv.
The panels share one scale, so a difference reads the same in each. An interval wider than the scale
is cut at the edge, and an arrow there says it goes on: a two-seed Welch interval can span the whole
IoU scale, and drawn in full it would squash every point to the middle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from iwu.plots import plain_text, save_png
from iwu.plots.difference import HIGHER, LOWER, NOT_SIGNIFICANT, WHISKERS

SPAN = 2.5  # a panel reaches this many times its largest |difference| each side of 0
MIN_LIMIT = 0.05  # and at least this far


@dataclass(frozen=True)
class ForestPanel:
    """One measure: per group its difference from the baseline, its interval ((NaN, NaN) where the test had
    none) and whether the test marks it significant."""

    title: str
    diffs: tuple[float, ...]
    intervals: tuple[tuple[float, float], ...]
    significant: tuple[bool, ...]

    def limit(self) -> float:
        """The half-width this panel asks for: SPAN times its largest |difference|, at least MIN_LIMIT."""
        largest = max((abs(d) for d in self.diffs if not math.isnan(d)), default=0.0)
        return max(MIN_LIMIT, SPAN * largest)

    def colors(self) -> list[str]:
        return [(HIGHER if d >= 0 else LOWER) if s else NOT_SIGNIFICANT for d, s in zip(self.diffs, self.significant)]


@dataclass(frozen=True)
class Forest:
    names: tuple[str, ...]  # the groups, top to bottom
    panels: tuple[ForestPanel, ...]
    title: str
    xlabel: str
    legend: tuple[str, str, str, str]  # a higher, a lower and a not significant point; the whiskers


def forest_figure(forest: Forest) -> Figure:
    """One panel per measure, the groups as rows, on the widest scale any panel asks for; a point at each
    difference (coloured by sign where significant, grey elsewhere), a whisker over its interval, cut with an
    arrow at the scale's edge."""
    rows = len(forest.names)
    ys = [rows - 1 - i for i in range(rows)]  # the first group on top
    fig = Figure(figsize=(3.2 * len(forest.panels) + 2.5, 0.38 * rows + 1.8), layout="constrained")
    axes = fig.subplots(1, len(forest.panels), sharey=True, squeeze=False)[0]
    limit = max(panel.limit() for panel in forest.panels)
    for ax, panel in zip(axes, forest.panels):
        for y, (low, high) in zip(ys, panel.intervals):
            if math.isnan(low):
                continue
            ax.hlines(y, max(low, -limit), min(high, limit), color=WHISKERS, linewidth=1)
            if low < -limit:
                ax.plot(-limit, y, marker="<", color=WHISKERS, markersize=6, linestyle="none", clip_on=False)
            if high > limit:
                ax.plot(limit, y, marker=">", color=WHISKERS, markersize=6, linestyle="none", clip_on=False)
        for y, d, color in zip(ys, panel.diffs, panel.colors()):
            if not math.isnan(d):
                ax.plot(d, y, marker="o", color=color, markeredgecolor="0.3", markersize=6, linestyle="none",
                        zorder=3)
        ax.axvline(0, color="0.2", linewidth=0.8)
        ax.set_xlim(-limit, limit)
        ax.set_title(panel.title, fontsize="medium")
        ax.set_xlabel(forest.xlabel, fontsize="small")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(ys, forest.names, fontsize="small")
    axes[0].set_ylim(-0.7, rows - 0.3)
    higher, lower, grey, whiskers = forest.legend
    fig.legend(handles=[Line2D([], [], marker="o", color=c, markeredgecolor="0.3", linestyle="none", label=label)
                        for c, label in ((HIGHER, higher), (LOWER, lower), (NOT_SIGNIFICANT, grey))]
               + [Line2D([], [], color=WHISKERS, label=whiskers)], loc="outside lower center",
               ncols=4, fontsize="small")
    fig.suptitle(forest.title)
    return plain_text(fig)


def save_forest(forest: Forest, path) -> Path:
    """`forest_figure` written to `path` as a PNG, atomically."""
    return save_png(forest_figure(forest), path)
