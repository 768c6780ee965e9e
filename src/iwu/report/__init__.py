"""`iwu report`: per-class IoU over seeds from run directories, t-tests, tables and a figure.

    records = collect(["runs/acdc"], member="ensemble")   # one per (run, eval dataset)
    table = summarise(group(records), paper="table1_acdc")
    print(to_markdown(table))

Inputs are the files runs write and nothing else: every ``final.json`` found
below the given folders (its ``results`` score the training dataset's
validation set, its optional ``val_extra`` a second, cross-domain one) and the
``eval_<dataset>.json`` files `iwu evaluate` writes beside it. An eval file
scoring the same dataset and split as ``final.json`` replaces that column for
its run (it is the later, explicit evaluation).

Statistics, per group (column) and class, over the runs (seeds) of the group:
mean, standard deviation and n, the number of runs whose IoU for the class is
not null (a class absent from a validation set scores null, so n can differ
between cells). The mIoU row is the mean and spread of each run's own mIoU.
``--std`` (``std=``) picks the standard deviation of every cell and of the
CSV: ``sample`` (ddof=1, the default; with n = 1 it is NaN and the cell shows
no spread) or ``population`` (ddof=0, as the paper's scripts' ``np.std``; with
n = 1 it is 0 and the cell shows ``± 0.000 (1)``); with n = 0 the cell shows
``--``. ``--test`` (``test=``) picks the t-test comparing two groups:
``paired`` (on the per-seed differences, as ``scipy.stats.ttest_rel``: runs of
two modes with one seed start from the same weights and see the same
batches), ``welch`` (unequal variances) or ``student`` (pooled variance,
df = n_a + n_b - 2, as the paper's ``scipy.stats.ttest_ind(a, b)``), these
two by ``scipy.stats.ttest_ind`` (NaN where a side has fewer than 2 runs for
Welch's, or where both sides are constant; paired, where fewer than 2 seeds
both score, or every difference is the same). By default (None) the test is
the paired one where both columns hold the same seeds, once each, of one
experiment, else Welch's (`run_report` then says why on stderr; the report
names its test as ever); ``paired`` asked for where they do not is refused,
naming each column's seeds. Beside each difference of means the table
gives its 95% confidence interval (the test's se and df: Welch-Satterthwaite,
or pooled with n_a + n_b - 2; it excludes 0 exactly when p < 0.05), Hedges' g
(pooled sd, J = 1 - 3/(4(n_a + n_b) - 9)), the raw p and the
Benjamini-Hochberg adjusted p over the table's classes and mIoU
(``scipy.stats.false_discovery_control``; NaN p-values are left out of the
family). Paired, the difference is the mean of the per-seed differences over
the seeds both columns score, its interval that mean -/+ t(n - 1) * sd / sqrt(n)
of those differences, and the effect size Cohen's d_z (mean difference / sd of
the differences, uncorrected: Hedges' J is 0 at n = 2). The cells are marked,
in the tables and the figure, where the adjusted p < 0.05. Every format says
which std and which test it used. The figure's whiskers are the table's 95%
intervals.

A score outside [0, 1] in a run's files (or infinite, or NaN beside scored
classes) is refused, naming the file: iwu never writes one.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_bytes
from iwu.report.figure import difference_bars, save_difference_figure
from iwu.report.formats import RAW, RENDER, STD_LABELS, TEST_LABELS, to_csv, to_latex, to_markdown
from iwu.report.groups import FIELDS, default_by, group
from iwu.report.paper import PAPER_FILE, PaperCell, PaperColumn, PaperMatch, match_paper, paper_columns, paper_tables
from iwu.report.records import ALL, ENSEMBLE, EVAL_GLOB, FINAL, Record, collect
from iwu.report.stats import (
    ALPHA, DDOF, LEVEL, MIOU, PAIRED, POPULATION, SAMPLE, STUDENT, TEST_NAMES, TESTS, WELCH, Samples, Stat, TTest,
    Welch, bh_adjust, cohen_dz, confidence_interval, describe, hedges_g, paired_samples, paired_t, student_t,
    t_tests, welch, welch_t,
)
from iwu.report.table import (
    Column, Comparison, Table, compare, load_class_share, rarest_label, summarise, unpaired_reason, with_rarest,
)

__all__ = [
    "ALL", "ALPHA", "DDOF", "ENSEMBLE", "EVAL_GLOB", "FIELDS", "FIGURE", "FINAL", "FORMATS", "LEVEL", "MIOU",
    "PAIRED", "PAPER_FILE", "POPULATION", "RAW", "RENDER", "SAMPLE", "STD_LABELS", "STUDENT", "TESTS", "TEST_LABELS",
    "TEST_NAMES", "WELCH",
    "Column", "Comparison", "PaperCell", "PaperColumn", "PaperMatch", "Record", "Samples", "Stat", "TTest", "Table",
    "Welch",
    "bh_adjust", "build_table", "cohen_dz", "collect", "compare", "confidence_interval", "default_by", "describe",
    "difference_bars", "group",
    "hedges_g", "load_class_share", "match_paper", "only_eval", "paired_samples", "paired_t", "rarest_label",
    "paper_columns", "paper_tables", "run_report",
    "save_difference_figure", "student_t", "summarise", "t_tests", "to_csv", "to_latex", "to_markdown",
    "unpaired_reason", "welch", "welch_t", "with_rarest", "write_report",
]

FORMATS = {"md": "report.md", "tex": "report.tex", "csv": "report.csv"}
FIGURE = "difference.png"


def _formats(fmt) -> list[str]:
    if isinstance(fmt, str):
        fmt = list(FORMATS) if fmt == "all" else [f.strip() for f in fmt.split(",") if f.strip()]
    fmt = list(dict.fromkeys(fmt))
    bad = [f for f in fmt if f not in FORMATS]
    if bad or not fmt:
        raise UserError(f"--format {','.join(bad) or '(empty)'}: choose from {', '.join(FORMATS)} or all")
    return fmt


def build_table(run_dirs, by=None, member: str = ENSEMBLE, paper: str | None = None,
                class_counts=None, *, std: str = SAMPLE, test: str | None = None, eval_set: str | None = None,
                rare: int | None = None) -> Table:
    """collect -> group -> summarise, with class shares from a class_counts.json when given.

    `std`: ``sample`` (ddof=1) or ``population`` (ddof=0); `test`: ``paired``, ``welch`` or ``student``,
    None for paired where the two columns hold the same seeds of one experiment, else Welch's;
    `eval_set`: keep only the scores of that validation set (``cityscapes``, ``acdc``, ...);
    `rare`: add a row, the mean IoU of that many classes rarest in training (needs `class_counts`).
    """
    records = collect(run_dirs, member)
    if eval_set is not None:
        records = only_eval(records, eval_set)
    share = load_class_share(class_counts, records[0].classes) if class_counts is not None else None
    rarest: tuple[str, ...] = ()
    if rare is not None:
        if share is None:
            raise UserError(f"--rare {rare}: needs --class-counts, the training set's class_counts.json")
        records, share, rarest = with_rarest(records, share, rare)
    table = summarise(group(records, by), paper=paper, class_share=share, std=std, test=test)
    return replace(table, rarest=rarest) if rarest else table


def only_eval(records, eval_set: str) -> list:
    """The records scoring validation set `eval_set`; a UserError naming the sets there are if none does."""
    kept = [r for r in records if r.eval == eval_set]
    if not kept:
        there = sorted({r.eval for r in records})
        raise UserError(f"--eval {eval_set}: no run was scored on it; the runs hold {', '.join(there)}")
    return kept


def write_report(run_dirs, out_dir, by=None, member: str = ENSEMBLE, fmt="md", paper: str | None = None,
                 class_counts=None, percent: bool = False, *, std: str = SAMPLE,
                 test: str | None = None, eval_set: str | None = None, rare: int | None = None) -> dict[str, Path]:
    """Write ``report.<fmt>`` (md, tex, csv; several comma-separated, or all) and, with exactly two
    columns, ``difference.png`` into `out_dir`; returns {format or "figure": path}.

    `std`, `test`, `eval_set` and `rare` as in `build_table`."""
    formats = _formats(fmt)
    table = build_table(run_dirs, by, member, paper, class_counts, std=std, test=test, eval_set=eval_set, rare=rare)
    return _write(table, Path(out_dir), formats, percent)


def _render(table: Table, fmt: str, percent: bool) -> str:
    return RENDER[fmt](table, percent=percent)


def _write(table: Table, out: Path, formats: list[str], percent: bool) -> dict[str, Path]:
    written = {f: atomic_write_bytes(out / FORMATS[f], _render(table, f, percent).encode("utf-8"))
               for f in formats}
    if table.comparison is not None:
        written["figure"] = save_difference_figure(table, 0, 1, out / FIGURE, percent=percent)
    return written


def run_report(runs, out=None, by=None, member: str = ENSEMBLE, fmt="md", paper: str | None = None,
               class_counts=None, percent: bool = False, *, std: str = SAMPLE, test: str | None = None,
               eval_set: str | None = None, rare: int | None = None) -> int:
    """Print the table (in the first format asked for); with `out`, also write the report files there.

    `std`, `test`, `eval_set` and `rare` as in `build_table`; where the default test could not pair
    the runs, a note on stderr says why it is Welch's."""
    formats = _formats(fmt)
    table = build_table(runs, by, member, paper, class_counts, std=std, test=test, eval_set=eval_set, rare=rare)
    print(_render(table, formats[0], percent), end="")
    if table.unpaired:
        print(f"note: {table.unpaired}: Welch's t-test, not the paired one", file=sys.stderr)
    if out is not None:
        for path in _write(table, Path(out), formats, percent).values():
            print(f"wrote {path}")
    return 0
