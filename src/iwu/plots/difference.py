"""The difference figure of a report: per-class difference of two columns, error bars, significance in colour.

It draws `DifferenceBars`, plain numbers; `iwu.report.figure.difference_bars` computes them from a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from iwu.plots import save_png

HIGHER, LOWER, NOT_SIGNIFICANT = "C2", "C3", "0.7"  # bar colours


@dataclass(frozen=True)
class DifferenceBars:
    """One bar per class, the last one (mIoU) set a little apart.

    `diffs`: b - a in the figure's unit (NaN where a side has no score); `errors`: the standard error
    of each (NaN where a side has one run); `significant`: whether the test marks it. `legend`: the
    labels of a higher, a lower and a not significant bar.
    """

    names: tuple[str, ...]
    diffs: tuple[float, ...]
    errors: tuple[float, ...]
    significant: tuple[bool, ...]
    title: str
    subtitle: str
    ylabel: str
    legend: tuple[str, str, str]
    xlabel: str = ""

    def heights(self) -> list[float]:
        return [0.0 if math.isnan(d) else d for d in self.diffs]

    def colors(self) -> list[str]:
        return [(HIGHER if h >= 0 else LOWER) if s else NOT_SIGNIFICANT
                for h, s in zip(self.heights(), self.significant)]


def difference_figure(bars: DifferenceBars) -> Figure:
    """Bars of `bars.diffs` coloured by sign where significant, grey elsewhere, with standard-error whiskers;
    a bar without a score or without a spread is labelled ``n/a`` or ``n<2``."""
    xs = [*range(len(bars.names) - 1), len(bars.names) - 0.4]  # mIoU a little apart
    heights = bars.heights()
    fig = Figure(figsize=(max(8.0, 0.45 * len(xs) + 2), 5.4), layout="constrained")
    ax = fig.subplots()
    ax.bar(xs, heights, color=bars.colors(), edgecolor="0.3", linewidth=0.5)
    spread = [(x, h, e) for x, h, e in zip(xs, heights, bars.errors) if not math.isnan(e)]
    if spread:
        ax.errorbar([x for x, _, _ in spread], [h for _, h, _ in spread], yerr=[e for _, _, e in spread],
                    fmt="none", ecolor="0.2", elinewidth=1, capsize=3)
    for x, d, e in zip(xs, bars.diffs, bars.errors):
        if math.isnan(d) or math.isnan(e):  # a side without a score, or with one run only: no spread, no test
            ax.text(x, 0 if math.isnan(d) else d, "n/a" if math.isnan(d) else "n<2", ha="center",
                    va="bottom" if math.isnan(d) or d >= 0 else "top", fontsize="x-small", color="0.4")
    ax.axhline(0, color="0.2", linewidth=0.8)
    ax.set_xticks(xs, bars.names, rotation=60, ha="right", fontsize="small")
    for tick, s in zip(ax.get_xticklabels(), bars.significant):
        if s:
            tick.set_fontweight("bold")
    ax.set(ylabel=bars.ylabel, xlabel=bars.xlabel)
    ax.set_title(bars.subtitle, fontsize="medium")
    fig.suptitle(bars.title)
    ax.legend(handles=[Patch(color=c, label=label)
                       for c, label in zip((HIGHER, LOWER, NOT_SIGNIFICANT), bars.legend)],
              fontsize="small", loc="best")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def save_difference(bars: DifferenceBars, path) -> Path:
    """`difference_figure` written to `path` as a PNG, atomically."""
    return save_png(difference_figure(bars), path)
