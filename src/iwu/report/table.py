"""The report table: per-column statistics, the comparison of two columns, the paper beside them,
and training-set class shares."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from iwu.errors import UserError
from iwu.report.paper import PaperCell, PaperMatch, match_paper, paper_columns
from iwu.report.records import Record, class_key, read_json, shared_value
from iwu.report.stats import (
    ALPHA, DDOF, MIOU, SAMPLE, TESTS, WELCH, Samples, Stat, TTest, bh_adjust, check_choice, confidence_interval,
    describe, hedges_g, samples, t_tests,
)


@dataclass(frozen=True)
class Column:
    label: str
    records: tuple[Record, ...]
    samples: tuple[tuple[float, ...], ...]  # per class: the non-null IoUs
    miou_samples: tuple[float, ...]
    cells: tuple[Stat, ...]
    miou: Stat

    def shared(self, name: str):
        """The value of a record field common to the whole column, else None."""
        return shared_value(self.records, name)

    @property
    def sampled(self) -> Samples:
        """The column's scores, as `iwu.report.stats.t_tests` takes them."""
        return Samples(self.records[0].classes, self.samples, self.miou_samples)


@dataclass(frozen=True)
class Comparison:
    """Column b against column a: b - a per class, the standard error of that (from the columns' std),
    a t-test (`test`: welch or student) of b against a, its Benjamini-Hochberg adjusted p (over the
    classes and mIoU, NaN left out), the 95% confidence interval of b - a that goes with the test,
    and Hedges' g of b against a."""

    a: str
    b: str
    diff: tuple[float, ...]
    se: tuple[float, ...]
    tests: tuple[TTest, ...]  # t has the sign of b - a
    miou_diff: float
    miou_se: float
    miou_test: TTest
    test: str = WELCH
    p_adj: tuple[float, ...] = ()  # Benjamini-Hochberg, over the classes' p and mIoU's
    ci: tuple[tuple[float, float], ...] = ()  # (low, high) of b - a, 95%
    g: tuple[float, ...] = ()  # Hedges' g of b against a
    miou_p_adj: float = math.nan
    miou_ci: tuple[float, float] = (math.nan, math.nan)
    miou_g: float = math.nan

    def significant(self, i: int | None = None) -> bool:
        """Whether the adjusted p of class `i` (None: mIoU) is below ALPHA (False for NaN)."""
        return (self.miou_p_adj if i is None else self.p_adj[i]) < ALPHA


@dataclass(frozen=True)
class Table:
    classes: tuple[str, ...]
    columns: tuple[Column, ...]
    comparison: Comparison | None = None  # when exactly two columns scoring the same validation set
    paper: Mapping[str, PaperMatch | None] = field(default_factory=dict)  # column label -> match
    share: tuple[float, ...] | None = None  # training-set share per class
    std: str = SAMPLE  # the columns' standard deviation: sample (ddof=1) or population (ddof=0)
    test: str = WELCH  # the comparison's t-test: welch or student
    rarest: tuple[str, ...] = ()  # the classes averaged in the last class row (rarest first), if it is one

    def column(self, which) -> Column:
        if isinstance(which, int):
            return self.columns[which]
        for col in self.columns:
            if col.label == which:
                return col
        raise UserError(f"no column {which!r}; the columns are: {', '.join(c.label for c in self.columns)}")


def _column(label: str, records: Sequence[Record], std: str = SAMPLE) -> Column:
    scores = samples(records)
    return Column(label, tuple(records), scores.per_class, scores.miou,
                  tuple(describe(v, std) for v in scores.per_class), describe(scores.miou, std))


def _se(a: Stat, b: Stat) -> float:
    """sqrt(s_a^2/n_a + s_b^2/n_b) with the cells' std; NaN where a side has fewer than 2 runs."""
    if a.n < 2 or b.n < 2:
        return math.nan
    return math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)


def compare(a: Column, b: Column, test: str = WELCH) -> Comparison:
    """b against a: differences of the means, their standard errors (from the columns' std), `test`,
    Benjamini-Hochberg adjusted p-values over the classes and mIoU, 95% intervals and Hedges' g."""
    tests = t_tests(b.sampled, a.sampled, test)
    per_class = tuple(tests[c] for c in a.records[0].classes)
    *p_adj, miou_p_adj = bh_adjust([t.p for t in per_class] + [tests[MIOU].p])
    pairs = list(zip(b.samples, a.samples))
    return Comparison(
        a.label, b.label,
        diff=tuple(cb.mean - ca.mean for ca, cb in zip(a.cells, b.cells)),
        se=tuple(_se(ca, cb) for ca, cb in zip(a.cells, b.cells)),
        tests=per_class,
        miou_diff=b.miou.mean - a.miou.mean, miou_se=_se(a.miou, b.miou), miou_test=tests[MIOU], test=test,
        p_adj=tuple(p_adj), ci=tuple(confidence_interval(sb, sa, test) for sb, sa in pairs),
        g=tuple(hedges_g(sb, sa) for sb, sa in pairs), miou_p_adj=miou_p_adj,
        miou_ci=confidence_interval(b.miou_samples, a.miou_samples, test),
        miou_g=hedges_g(b.miou_samples, a.miou_samples))


def summarise(groups: Mapping[str, Sequence[Record]], *, paper: str | None = None, class_share=None,
              std: str = SAMPLE, test: str = WELCH) -> Table:
    """Per column and class: mean, std, n over the runs; a t-test when there are two columns.

    `std` is ``sample`` (ddof=1) or ``population`` (ddof=0, as ``np.std``), `test` is ``welch``
    (unequal variances) or ``student`` (pooled, as ``scipy.stats.ttest_ind``'s default); the
    table keeps both for the formats and the figure. `paper` names a published table to set
    beside each column it matches (a UserError if it matches none); `class_share` (one
    training-set share per class, or {class: share}) is kept for the formats and the figure.
    """
    check_choice(std, DDOF, "std")
    check_choice(test, TESTS, "test")
    if not groups:
        raise UserError("no runs to report")
    columns = tuple(_column(label, rs, std) for label, rs in groups.items())
    classes = columns[0].records[0].classes
    # two columns of other validation sets (in-domain and cross-domain of the same runs) are not a contrast
    comparable = len(columns) == 2 and columns[0].shared("eval") == columns[1].shared("eval")
    comparison = compare(*columns, test=test) if comparable else None
    matches: dict[str, PaperMatch | None] = {}
    if paper is not None:
        published = paper_columns(paper)
        for col in columns:
            found = match_paper(col.records, published)
            if found is None:
                matches[col.label] = None
                continue
            cells = []
            for name, stat in zip(classes, col.cells):
                theirs = found.lookup(name)
                cells.append(None if theirs is None else PaperCell.beside(stat.mean, *theirs))
            matches[col.label] = PaperMatch(found, tuple(cells), PaperCell.beside(col.miou.mean, found.miou,
                                                                                 found.miou_std))
        if not any(matches.values()):
            ours = "; ".join(f"{c.shared('mode')} / {c.shared('model')} / {c.shared('train')}->{c.shared('eval')}"
                             for c in columns)
            theirs = "; ".join(c.label for c in published)
            raise UserError(f"--paper {paper}: no published column matches a column of this report "
                            f"(ours: {ours}; published: {theirs}); pick runs or --member to match")
    return Table(classes, columns, comparison, matches, class_shares(classes, class_share), std, test)


def class_shares(classes: tuple[str, ...], share) -> tuple[float, ...] | None:
    """Training-set shares in the order of `classes`, from one share per class or {class name: share}."""
    if share is None:
        return None
    if isinstance(share, Mapping):
        by_key = {class_key(k): float(v) for k, v in share.items()}
        missing = [c for c in classes if class_key(c) not in by_key]
        if missing:
            raise UserError(f"class shares: none given for {', '.join(missing)}")
        return tuple(by_key[class_key(c)] for c in classes)
    share = tuple(float(s) for s in share)
    if len(share) != len(classes):
        raise UserError(f"class shares: {len(share)} given for {len(classes)} classes")
    return share


def load_class_share(path, classes: Sequence[str]) -> tuple[float, ...]:
    """Training-set share per class (in the order of `classes`) from a class_counts.json or its folder, or
    a dataset (`acdc:ROOT`) whose training split `iwu prepare` counted.

    The file holds ``{"classes": [...], "counts": [...]}`` (as `iwu prepare` writes); classes are
    matched by name.
    """
    path = Path(path)
    if not path.exists():
        from iwu.data.prepare import class_counts_file  # torch comes with it: only for a dataset

        path = class_counts_file(str(path))
    if path.is_dir():
        path = path / "class_counts.json"
    data = read_json(path)
    names, counts = data.get("classes"), data.get("counts")
    if (not isinstance(names, list) or not isinstance(counts, list) or len(names) != len(counts)
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0 for c in counts)):
        raise UserError(f"{path}: needs `classes` and as many non-negative `counts`")
    total = float(sum(counts))
    if total <= 0:
        raise UserError(f"{path}: the counts add up to 0")
    by_key = {class_key(str(n)): c / total for n, c in zip(names, counts)}
    missing = [c for c in classes if class_key(c) not in by_key]
    if missing:
        raise UserError(f"{path}: no count for {', '.join(missing)}")
    return tuple(by_key[class_key(c)] for c in classes)


def rarest_label(k: int) -> str:
    return f"{k} rarest (mean)"


def with_rarest(records: Sequence[Record], share: Sequence[float],
                k: int) -> tuple[list[Record], tuple[float, ...], tuple[str, ...]]:
    """Records with one more class: the mean IoU of the `k` classes rarest in training (by `share`,
    classes never seen in training left out); the shares with that row's (theirs together); and those
    classes, rarest first.

    As a class of its own, the row gets the same statistics as every class: mean and std over runs,
    the t-test, its interval and effect size, and a place in the Benjamini-Hochberg family. A run
    scores it from the rare classes present in its validation set (null if none is).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"--rare {k!r}: give a whole number of classes, 1 or more")
    classes = records[0].classes
    seen = sorted((s, i) for i, s in enumerate(share) if s > 0)
    if len(seen) < k:
        raise UserError(f"--rare {k}: the training set has only {len(seen)} classes with pixels")
    picked = [i for _, i in seen[:k]]
    out = []
    for r in records:
        present = [r.iou[i] for i in picked if r.iou[i] is not None]
        value = sum(present) / len(present) if present else None
        out.append(replace(r, classes=r.classes + (rarest_label(k),), iou=r.iou + (value,)))
    return out, (*share, sum(share[i] for i in picked)), tuple(classes[i] for i in picked)
