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
    ALPHA, DDOF, MIOU, PAIRED, SAMPLE, TESTS, WELCH, Samples, Stat, TTest, bh_adjust, check_choice, cohen_dz,
    confidence_interval, describe, differences, hedges_g, paired_samples, samples, seed_list, seeds_of, t_tests,
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
    a t-test (`test`: welch, student or paired) of b against a, its Benjamini-Hochberg adjusted p (over
    the classes and mIoU, NaN left out), the 95% confidence interval of b - a that goes with the test,
    and Hedges' g of b against a.

    Paired (the runs of both columns matched by seed): b - a is the mean of the per-seed differences
    over the seeds both score (the difference of the means where every seed scores), its se the std
    of those differences (as the table's std) over sqrt(n), and `g` holds Cohen's d_z, not Hedges' g;
    `seeds` are the seeds paired, `pairs` (and `miou_pairs`) how many of them each row tests."""

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
    seeds: tuple[int, ...] = ()  # paired: the seeds matched, ascending
    pairs: tuple[int, ...] = ()  # paired: per class, the seeds both columns score
    miou_pairs: int = 0

    @property
    def paired(self) -> bool:
        return self.test == PAIRED

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
    test: str = WELCH  # the comparison's t-test: welch, student or paired
    rarest: tuple[str, ...] = ()  # the classes averaged in the last class row (rarest first), if it is one
    unpaired: str = ""  # why the default test is Welch's, not the paired one, where it could not pair the runs

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


def _paired_diff(b_values, a_values, std: str) -> tuple[float, float, int]:
    """Mean of the per-seed differences b - a, its se (their std, as `std`, over sqrt(n); NaN for
    n < 2) and n, over the seeds both score."""
    d = describe(differences(b_values, a_values), std)
    return d.mean, (d.std / math.sqrt(d.n) if d.n > 1 else math.nan), d.n


def unpaired_reason(a: Column, b: Column) -> str:
    """Why the runs of columns `a` and `b` cannot be paired by seed; ``""`` when they can: both hold
    runs of one experiment, every run names its seed, and both hold the same seeds, each once."""
    experiments = {r.experiment for r in a.records + b.records}
    if len(experiments) > 1:
        def named(col: Column) -> str:
            return ", ".join(sorted({str(r.experiment) for r in col.records}))

        return f"the columns hold runs of other experiments ({a.label}: {named(a)}; {b.label}: {named(b)})"
    seeds_a, seeds_b = seeds_of(a.records), seeds_of(b.records)
    held = f"({a.label}: {seed_list(seeds_a)}; {b.label}: {seed_list(seeds_b)})"
    if None in seeds_a or None in seeds_b:
        return f"not every run names its seed {held}"
    if len(set(seeds_a)) != len(seeds_a) or len(set(seeds_b)) != len(seeds_b):
        return f"a column holds a seed more than once {held}"
    if set(seeds_a) != set(seeds_b):
        return f"the columns hold other seeds {held}"
    return ""


def compare(a: Column, b: Column, test: str = WELCH, std: str = SAMPLE) -> Comparison:
    """b against a: differences of the means, their standard errors (from the columns' std), `test`,
    Benjamini-Hochberg adjusted p-values over the classes and mIoU, 95% intervals and Hedges' g.

    ``paired``: the runs matched by seed (a UserError naming the seeds unless both columns hold the
    same ones, see `unpaired_reason`); the mean per-seed difference, its se from the std (`std`) of
    the differences, and Cohen's d_z (see `Comparison`).
    """
    if check_choice(test, TESTS, "test") == PAIRED:
        why = unpaired_reason(a, b)
        if why:
            raise UserError(f"--test paired: {why}; pair runs of the same seeds, or choose --test welch")
        sb, sa = paired_samples(b.records, a.records)  # aligned by seed, null kept
        *rows, miou_row = [_paired_diff(y, x, std) for y, x in (*zip(sb.per_class, sa.per_class), (sb.miou, sa.miou))]
        diff, se, n = (tuple(r[k] for r in rows) for k in range(3))
        miou_diff, miou_se, miou_n = miou_row
        seeds, effect = tuple(sorted(seeds_of(a.records))), cohen_dz
    else:
        sb, sa = b.sampled, a.sampled
        diff = tuple(cb.mean - ca.mean for ca, cb in zip(a.cells, b.cells))
        se = tuple(_se(ca, cb) for ca, cb in zip(a.cells, b.cells))
        miou_diff, miou_se, n, miou_n, seeds = b.miou.mean - a.miou.mean, _se(a.miou, b.miou), (), 0, ()
        effect = hedges_g
    tests = t_tests(sb, sa, test)
    per_class = tuple(tests[c] for c in a.records[0].classes)
    *p_adj, miou_p_adj = bh_adjust([t.p for t in per_class] + [tests[MIOU].p])
    pairs = list(zip(sb.per_class, sa.per_class))
    return Comparison(
        a.label, b.label, diff=diff, se=se, tests=per_class,
        miou_diff=miou_diff, miou_se=miou_se, miou_test=tests[MIOU], test=test,
        p_adj=tuple(p_adj), ci=tuple(confidence_interval(y, x, test) for y, x in pairs),
        g=tuple(effect(y, x) for y, x in pairs), miou_p_adj=miou_p_adj,
        miou_ci=confidence_interval(sb.miou, sa.miou, test), miou_g=effect(sb.miou, sa.miou),
        seeds=seeds, pairs=n, miou_pairs=miou_n)


def summarise(groups: Mapping[str, Sequence[Record]], *, paper: str | None = None, class_share=None,
              std: str = SAMPLE, test: str | None = None) -> Table:
    """Per column and class: mean, std, n over the runs; a t-test when there are two columns.

    `std` is ``sample`` (ddof=1) or ``population`` (ddof=0, as ``np.std``), `test` is ``paired``
    (on the per-seed differences, as ``scipy.stats.ttest_rel``; a UserError naming each column's
    seeds unless both hold the same seeds of one experiment), ``welch`` (unequal variances) or
    ``student`` (pooled, as ``scipy.stats.ttest_ind``'s default); None (the default) pairs the runs
    where they can be paired and takes Welch's test otherwise, the table's ``unpaired`` saying why.
    The table keeps both for the formats and the figure. `paper` names a published table to set
    beside each column it matches (a UserError if it matches none); `class_share` (one
    training-set share per class, or {class: share}) is kept for the formats and the figure.
    """
    check_choice(std, DDOF, "std")
    if test is not None:
        check_choice(test, TESTS, "test")
    if not groups:
        raise UserError("no runs to report")
    columns = tuple(_column(label, rs, std) for label, rs in groups.items())
    classes = columns[0].records[0].classes
    # two columns of other validation sets (in-domain and cross-domain of the same runs) are not a contrast
    comparable = len(columns) == 2 and columns[0].shared("eval") == columns[1].shared("eval")
    unpaired = unpaired_reason(*columns) if comparable else ""
    chosen = (WELCH if unpaired or not comparable else PAIRED) if test is None else test
    comparison = compare(*columns, test=chosen, std=std) if comparable else None
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
    return Table(classes, columns, comparison, matches, class_shares(classes, class_share), std, chosen,
                 unpaired=unpaired if test is None else "")


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


def rarest_indices(share: Sequence[float], k: int) -> list[int]:
    """The indices of the `k` classes rarest in training by `share`, rarest first (classes never seen in
    training left out); a one-line error for a `k` that is not a whole number from 1 to the classes seen."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"--rare {k!r}: give a whole number of classes, 1 or more")
    seen = sorted((s, i) for i, s in enumerate(share) if s > 0)
    if len(seen) < k:
        raise UserError(f"--rare {k}: the training set has only {len(seen)} classes with pixels")
    return [i for _, i in seen[:k]]


def with_rarest(records: Sequence[Record], share: Sequence[float],
                k: int) -> tuple[list[Record], tuple[float, ...], tuple[str, ...]]:
    """Records with one more class: the mean IoU of the `k` classes rarest in training (by `share`,
    classes never seen in training left out); the shares with that row's (theirs together); and those
    classes, rarest first.

    As a class of its own, the row gets the same statistics as every class: mean and std over runs,
    the t-test, its interval and effect size, and a place in the Benjamini-Hochberg family. A run
    scores it from the rare classes present in its validation set (null if none is).
    """
    classes = records[0].classes
    picked = rarest_indices(share, k)
    out = []
    for r in records:
        present = [r.iou[i] for i in picked if r.iou[i] is not None]
        value = sum(present) / len(present) if present else None
        out.append(replace(r, classes=r.classes + (rarest_label(k),), iou=r.iou + (value,)))
    return out, (*share, sum(share[i] for i in picked)), tuple(classes[i] for i in picked)
