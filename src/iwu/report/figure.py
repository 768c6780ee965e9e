"""What the difference figure shows, from a report table: per-class IoU difference of two columns,
its standard error and the adjusted test; `iwu.plots.difference` draws it."""

from __future__ import annotations

import math
from pathlib import Path

from iwu.plots.difference import DifferenceBars, save_difference
from iwu.report.records import shared_value
from iwu.report.stats import ALPHA, MIOU, TEST_NAMES, is_missing
from iwu.report.table import Column, Table, class_shares, compare


def difference_bars(table: Table, a, b, class_share=None, *, percent: bool = False) -> DifferenceBars:
    """Per-class IoU difference b - a (and mIoU) with the standard error of each.

    `a`, `b` are column labels or indices. The errors are sqrt(s_a^2/n_a + s_b^2/n_b), s the
    table's std (sample or population; none where a side has one run). With `class_share` (or the
    table's) classes run from the most to the least frequent in training, their share in the names.
    A bar is significant where the table's t-test (Welch's or Student's) gives a Benjamini-Hochberg
    adjusted p < 0.05 (over the classes and mIoU).
    """
    col_a, col_b = table.column(a), table.column(b)
    cmp = compare(col_a, col_b, table.test)
    name = TEST_NAMES[table.test]
    share = class_shares(table.classes, class_share) if class_share is not None else table.share
    order = list(range(len(table.classes)))
    if share is not None:
        order.sort(key=lambda c: -share[c])
    scale = 100.0 if percent else 1.0

    def scaled(values) -> tuple[float, ...]:
        return tuple(math.nan if is_missing(v) else v * scale for v in values)

    return DifferenceBars(
        names=tuple(f"{table.classes[c]} ({100 * share[c]:.2f}%)" if share is not None else table.classes[c]
                    for c in order) + (MIOU,),
        diffs=scaled([cmp.diff[c] for c in order] + [cmp.miou_diff]),
        errors=scaled([cmp.se[c] for c in order] + [cmp.miou_se]),
        significant=tuple(cmp.significant(c) for c in order) + (cmp.significant(None),),
        title=_title(col_a, col_b),
        subtitle=f"per class, means over {len(col_b.records)} and {len(col_a.records)} runs; "
                 f"whiskers: standard error, {table.std} std",
        ylabel=f"difference in {'IoU x 100' if percent else 'IoU'}",
        legend=(f"higher, {name} p (BH-adjusted) < {ALPHA:g}", f"lower, {name} p (BH-adjusted) < {ALPHA:g}",
                "not significant after Benjamini-Hochberg"),
        xlabel="classes from the most to the least frequent in training (share of labelled pixels)"
        if share is not None else "")


def _title(col_a: Column, col_b: Column) -> str:
    """``<b> - <a>``, then what both columns share: experiment, model, training set -> evaluated set."""
    both = col_a.records + col_b.records
    experiment, model, train, evaluated = (shared_value(both, f) for f in ("experiment", "model", "train", "eval"))
    context = [str(v) for v in (experiment, model) if v is not None]
    if train is not None and train != evaluated:
        context.append(f"trained on {train}")
    if evaluated is not None:  # a record names the split when it is not val
        context.append(f"on {evaluated}" if "/" in evaluated else f"on {evaluated}/val")
    return f"{col_b.label} - {col_a.label}" + (f" ({', '.join(context)})" if context else "")


def save_difference_figure(table: Table, a, b, path, class_share=None, *, percent: bool = False) -> Path:
    """The difference figure of columns `a` and `b` (see `difference_bars`) as a PNG written atomically."""
    return save_difference(difference_bars(table, a, b, class_share, percent=percent), path)
