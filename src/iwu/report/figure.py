"""The difference figure: per-class IoU difference of two columns with error bars, as a PNG."""

from __future__ import annotations

import io
from pathlib import Path

from iwu.files import atomic_write_bytes
from iwu.report.formats import _nan
from iwu.report.stats import ALPHA, MIOU, TEST_NAMES
from iwu.report.table import Table, _shares, compare


def save_difference_figure(table: Table, a, b, path, class_share=None, *, percent: bool = False) -> Path:
    """Per-class IoU difference b - a (and mIoU) with error bars, as a PNG written atomically.

    `a`, `b` are column labels or indices. Error bars are the standard error of
    the difference, sqrt(s_a^2/n_a + s_b^2/n_b), s the table's std (sample or
    population; none where a side has one run). With `class_share` (or the
    table's) classes run from the most to the least frequent in training, their
    share in the tick labels. Classes where the table's t-test (Welch's or
    Student's) gives a Benjamini-Hochberg adjusted p < 0.05 (over the classes and
    mIoU) are drawn in colour and their labels in bold, the others grey.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    col_a, col_b = table.column(a), table.column(b)
    cmp = compare(col_a, col_b, table.test)
    name = TEST_NAMES[table.test]
    share = _shares(table.classes, class_share) if class_share is not None else table.share
    order = list(range(len(table.classes)))
    if share is not None:
        order.sort(key=lambda c: -share[c])
    scale = 100.0 if percent else 1.0

    names = [f"{table.classes[c]} ({100 * share[c]:.2f}%)" if share is not None else table.classes[c]
             for c in order] + [MIOU]
    diffs = [cmp.diff[c] for c in order] + [cmp.miou_diff]
    errs = [cmp.se[c] for c in order] + [cmp.miou_se]
    sig = [cmp.significant(c) for c in order] + [cmp.significant(None)]
    xs = list(range(len(order))) + [len(order) + 0.6]  # mIoU a little apart
    heights = [0.0 if _nan(d) else d * scale for d in diffs]
    colors = [("C2" if d >= 0 else "C3") if s else "0.7" for d, s in zip(heights, sig)]

    fig = Figure(figsize=(max(8.0, 0.45 * len(xs) + 2), 5), layout="constrained")
    ax = fig.subplots()
    ax.bar(xs, heights, color=colors, edgecolor="0.3", linewidth=0.5)
    bars = [(x, h, e) for x, h, e in zip(xs, heights, errs) if not _nan(e)]
    if bars:
        ax.errorbar([x for x, _, _ in bars], [h for _, h, _ in bars], yerr=[e * scale for _, _, e in bars],
                    fmt="none", ecolor="0.2", elinewidth=1, capsize=3)
    for x, d, e in zip(xs, diffs, errs):
        if _nan(d) or _nan(e):  # a side without a score, or with one run only: no spread, no test
            ax.text(x, 0 if _nan(d) else d * scale, "n/a" if _nan(d) else "n<2", ha="center",
                    va="bottom" if _nan(d) or d >= 0 else "top", fontsize="x-small", color="0.4")
    ax.axhline(0, color="0.2", linewidth=0.8)
    ax.set_xticks(xs, names, rotation=60, ha="right", fontsize="small")
    for tick, s in zip(ax.get_xticklabels(), sig):
        if s:
            tick.set_fontweight("bold")
    unit = "IoU x 100" if percent else "IoU"
    ax.set_ylabel(f"difference in {unit}")
    ax.set_title(f"{col_b.label} - {col_a.label}, per class (mean over runs; bars: standard error, "
                 f"{table.std} std)", fontsize="medium")
    ax.legend(handles=[Patch(color="C2", label=f"higher, {name} p (BH-adjusted) < {ALPHA:g}"),
                       Patch(color="C3", label=f"lower, {name} p (BH-adjusted) < {ALPHA:g}"),
                       Patch(color="0.7", label="not significant after Benjamini-Hochberg")],
              fontsize="small", loc="best")
    ax.grid(True, axis="y", alpha=0.3)
    if share is not None:
        ax.set_xlabel("classes from the most to the least frequent in training (share of labelled pixels)")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())
