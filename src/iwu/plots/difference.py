"""The difference figure of a report: per-class difference of two columns, its 95% confidence interval,
significance in colour.

It draws `DifferenceBars`, plain numbers; `iwu.report.figure.difference_bars` computes them from a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from iwu.plots import plain_text, save_png

HIGHER, LOWER, NOT_SIGNIFICANT = "C2", "C3", "0.7"  # bar colours
WHISKERS = "0.2"  # the intervals' colour, and the marker of a difference of 0


@dataclass(frozen=True)
class DifferenceBars:
    """One bar per class, the last one (mIoU) set a little apart.

    `diffs`: b - a in the figure's unit (NaN where a side has no score); `intervals`: the confidence
    interval (low, high) of each, the table's (NaN, NaN) where it has none; `notes`: what a bar without
    an interval says instead (``n<2``, ``no spread``; ``""`` beside an interval); `significant`: whether
    the test marks it. `legend`: the labels of a higher, a lower and a not significant bar, and of the
    whiskers.
    """

    names: tuple[str, ...]
    diffs: tuple[float, ...]
    intervals: tuple[tuple[float, float], ...]
    notes: tuple[str, ...]
    significant: tuple[bool, ...]
    title: str
    subtitle: str
    ylabel: str
    legend: tuple[str, str, str, str]
    xlabel: str = ""

    def heights(self) -> list[float]:
        return [0.0 if math.isnan(d) else d for d in self.diffs]

    def colors(self) -> list[str]:
        return [(HIGHER if h >= 0 else LOWER) if s else NOT_SIGNIFICANT
                for h, s in zip(self.heights(), self.significant)]


def difference_figure(bars: DifferenceBars) -> Figure:
    """Bars of `bars.diffs` coloured by sign where significant, grey elsewhere, with whiskers from each
    interval's low to its high; a difference of exactly 0 (a class scored alike by both, 0 in both, say)
    marked on the axis; a bar without a score labelled ``n/a``, one without an interval by its note."""
    xs = [*range(len(bars.names) - 1), len(bars.names) - 0.4]  # mIoU a little apart
    heights = bars.heights()
    fig = Figure(figsize=(max(8.0, 0.45 * len(xs) + 2), 5.4), layout="constrained")
    ax = fig.subplots()
    ax.bar(xs, heights, color=bars.colors(), edgecolor="0.3", linewidth=0.5)
    spread = [(x, h, low, high) for x, h, (low, high) in zip(xs, heights, bars.intervals) if not math.isnan(low)]
    if spread:
        ax.errorbar([x for x, *_ in spread], [h for _, h, _, _ in spread],
                    yerr=[[h - low for _, h, low, _ in spread], [high - h for _, h, _, high in spread]],
                    fmt="none", ecolor=WHISKERS, elinewidth=1, capsize=3)
    zero = [x for x, d in zip(xs, bars.diffs) if d == 0]  # a bar of height 0 draws nothing
    if zero:
        ax.plot(zero, [0.0] * len(zero), linestyle="none", marker="D", markersize=4, color=WHISKERS, zorder=3)
    for x, d, note in zip(xs, bars.diffs, bars.notes):
        if math.isnan(d) or note:
            up = math.isnan(d) or d >= 0
            ax.annotate("n/a" if math.isnan(d) else note, (x, 0 if math.isnan(d) else d), xytext=(0, 3 if up else -3),
                        textcoords="offset points", ha="center", va="bottom" if up else "top", fontsize="x-small",
                        color="0.4")
    ax.axhline(0, color="0.2", linewidth=0.8)
    ax.set_xticks(xs, bars.names, rotation=60, ha="right", fontsize="small")
    for tick, s in zip(ax.get_xticklabels(), bars.significant):
        if s:
            tick.set_fontweight("bold")
    ax.set(ylabel=bars.ylabel, xlabel=bars.xlabel)
    ax.set_title(bars.subtitle, fontsize="medium")
    fig.suptitle(bars.title)
    *patches, whiskers = bars.legend
    ax.legend(handles=[*(Patch(color=c, label=label) for c, label in zip((HIGHER, LOWER, NOT_SIGNIFICANT), patches)),
                       Line2D([], [], color=WHISKERS, marker="|", markersize=10, linestyle="none", label=whiskers)],
              fontsize="small", loc="best")
    ax.grid(True, axis="y", alpha=0.3)
    return plain_text(fig)


def save_difference(bars: DifferenceBars, path) -> Path:
    """`difference_figure` written to `path` as a PNG, atomically."""
    return save_png(difference_figure(bars), path)
