"""What the difference figure shows, from a report table: per-class IoU difference of two columns,
its 95% confidence interval and the adjusted test, as the table gives them; `iwu.plots.difference`
draws it."""

from __future__ import annotations

import math
from pathlib import Path

from iwu.plots.difference import DifferenceBars, save_difference
from iwu.report.records import shared_value
from iwu.report.stats import ALPHA, LEVEL, MIOU, PAIRED, TEST_NAMES, WELCH, is_missing
from iwu.report.table import Column, Table, class_shares, compare


def difference_bars(table: Table, a, b, class_share=None, *, percent: bool = False) -> DifferenceBars:
    """Per-class IoU difference b - a (and mIoU) with its 95% confidence interval.

    `a`, `b` are column labels or indices. The intervals are the table's: `iwu.report.stats.confidence_interval`
    of its test (Welch-Satterthwaite df, pooled with df = n_a + n_b - 2, or, paired, over the per-seed
    differences with df = n - 1); none where the test has too few runs (``n<2``) or no spread to go on
    (``no spread``). With `class_share` (or the table's) classes run from the most to the least frequent in
    training, their share in the names. A bar is significant where the table's t-test (Welch's, Student's
    or the paired one) gives a Benjamini-Hochberg adjusted p < 0.05 (over the classes and mIoU). The
    subtitle names the test.
    """
    col_a, col_b = table.column(a), table.column(b)
    cmp = compare(col_a, col_b, table.test, table.std)
    name = TEST_NAMES[table.test]
    share = class_shares(table.classes, class_share) if class_share is not None else table.share
    order = list(range(len(table.classes)))
    if share is not None:
        order.sort(key=lambda c: -share[c])
    scale = 100.0 if percent else 1.0

    def scaled(values) -> tuple[float, ...]:
        return tuple(math.nan if is_missing(v) else v * scale for v in values)

    intervals = [cmp.ci[c] for c in order] + [cmp.miou_ci]
    if cmp.paired:  # each side counts the seeds both score
        counts = [(n, n) for n in [cmp.pairs[c] for c in order] + [cmp.miou_pairs]]
    else:
        counts = [(col_a.cells[c].n, col_b.cells[c].n) for c in order] + [(col_a.miou.n, col_b.miou.n)]
    level = f"{100 * LEVEL:.0f}% CI"
    if cmp.paired:
        subtitle = (f"per class, mean of {len(cmp.seeds)} per-seed differences; "
                    f"whiskers: the table's {level} of the difference (paired t)")
    else:
        subtitle = (f"per class, means over {len(col_b.records)} and {len(col_a.records)} runs; "
                    f"whiskers: the table's {level} of the difference ({name}'s t)")
    return DifferenceBars(
        names=tuple(f"{table.classes[c]} ({100 * share[c]:.2f}%)" if share is not None else table.classes[c]
                    for c in order) + (MIOU,),
        diffs=scaled([cmp.diff[c] for c in order] + [cmp.miou_diff]),
        intervals=tuple(scaled(ci) for ci in intervals),
        notes=tuple(_no_interval(ci, *n, table.test) for ci, n in zip(intervals, counts)),
        significant=tuple(cmp.significant(c) for c in order) + (cmp.significant(None),),
        title=_title(col_a, col_b),
        subtitle=subtitle,
        ylabel=f"difference in {'IoU x 100' if percent else 'IoU'}",
        legend=(f"higher, {name} p (BH-adjusted) < {ALPHA:g}", f"lower, {name} p (BH-adjusted) < {ALPHA:g}",
                "not significant after Benjamini-Hochberg", f"{level} of the difference"),
        xlabel="classes from the most to the least frequent in training (share of labelled pixels)"
        if share is not None else "")


def _no_interval(ci: tuple[float, float], n_a: int, n_b: int, test: str) -> str:
    """Why a difference has no interval: too few runs for `test` (Welch's: fewer than 2 on a side;
    Student's: n_a + n_b - 2 < 1; paired: fewer than 2 seeds both score, `n_a` and `n_b` each their
    number), or no spread on either side; ``""`` when it has one, or when there is no difference to
    put one on."""
    if not is_missing(ci[0]) or n_a == 0 or n_b == 0:
        return ""
    too_few = min(n_a, n_b) < 2 if test in (WELCH, PAIRED) else n_a + n_b - 2 < 1
    return "n<2" if too_few else "no spread"


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
