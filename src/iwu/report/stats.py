"""Statistics over runs: mean/std/n (`describe`), the two-sample t-tests (Welch's and Student's,
by ``scipy.stats.ttest_ind``) and the paired one (by ``scipy.stats.ttest_rel``, on the per-seed
differences), the confidence interval of a difference of means (or the mean difference), Hedges' g
(Cohen's d_z, paired), and Benjamini-Hochberg adjusted p-values.

Which standard deviation (``sample``, ddof=1, or ``population``, ddof=0) is decided in one place,
`DDOF`; which t-test, in `TESTS` (one function each).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from scipy import stats as sp_stats

from iwu.errors import UserError

ALPHA = 0.05
LEVEL = 0.95  # of the confidence intervals
MIOU = "mIoU"

SAMPLE, POPULATION = "sample", "population"
DDOF = {SAMPLE: 1, POPULATION: 0}  # --std: the delta degrees of freedom of each kind of standard deviation
WELCH, STUDENT, PAIRED = "welch", "student", "paired"
TEST_NAMES = {WELCH: "Welch", STUDENT: "Student", PAIRED: "paired"}  # --test -> the name printed beside the p-values


def check_choice(value: str, options, what: str) -> str:
    """`value` if it is one of `options`, else a UserError naming `what` (``std``, ``test``) and the choices."""
    if value not in options:
        raise UserError(f"{what} {value!r}: choose from {', '.join(options)}")
    return value


def is_missing(x) -> bool:
    """None or NaN: no value to show."""
    return x is None or (isinstance(x, float) and math.isnan(x))


class Stat(NamedTuple):
    """Mean, standard deviation and n of some values; mean NaN for n = 0.

    The std is the sample one (ddof=1; NaN for n < 2) or the population one (ddof=0, as ``np.std``;
    0 for n = 1, NaN for n = 0), as `describe` is asked.
    """

    mean: float
    std: float
    n: int


def describe(values: Iterable[float], std: str = SAMPLE) -> Stat:
    """Mean, std (`std`: ``sample``, ddof=1, or ``population``, ddof=0) and n of the finite values."""
    ddof = DDOF[check_choice(std, DDOF, "std")]
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=ddof)) if n > ddof else math.nan
    return Stat(mean, sd, n)


class TTest(NamedTuple):
    """A two-sample t-test: t (of mean(a) - mean(b)), degrees of freedom, two-sided p."""

    t: float
    df: float
    p: float

    @property
    def significant(self) -> bool:
        return self.p < ALPHA  # False for NaN


Welch = TTest  # its first name, when Welch's was the only test


_NONE = TTest(math.nan, math.nan, math.nan)


def _pooled(sa: Stat, sb: Stat) -> tuple[float, int]:
    """The pooled sum of squares ((n - 1) * sample variance, summed; 0 for one value) and its df."""
    return sum((s.n - 1) * s.std ** 2 for s in (sa, sb) if s.n > 1), sa.n + sb.n - 2


def _welch_se(sa: Stat, sb: Stat) -> tuple[float, float]:
    """Welch's squared standard error and Welch-Satterthwaite df (NaN df where se2 is 0)."""
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se2 = va + vb
    return se2, (se2 ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1)) if se2 > 0 else math.nan)


def _scipy_t(a, b, equal_var: bool, df: float) -> TTest:
    x = np.asarray([v for v in a if v is not None and math.isfinite(v)], dtype=np.float64)
    y = np.asarray([v for v in b if v is not None and math.isfinite(v)], dtype=np.float64)
    res = sp_stats.ttest_ind(x, y, equal_var=equal_var)
    return TTest(float(res.statistic), float(df), float(res.pvalue))


def welch_t(a: Iterable[float], b: Iterable[float]) -> TTest:
    """``scipy.stats.ttest_ind(a, b, equal_var=False)``; NaN where a side has fewer than 2 values
    or both are constant (no spread to test against)."""
    a, b = list(a), list(b)
    sa, sb = describe(a), describe(b)
    if sa.n < 2 or sb.n < 2:
        return _NONE
    se2, df = _welch_se(sa, sb)
    if se2 == 0.0:
        return _NONE
    return _scipy_t(a, b, False, df)


def student_t(a: Iterable[float], b: Iterable[float]) -> TTest:
    """``scipy.stats.ttest_ind(a, b, equal_var=True)``: pooled variance, df = n_a + n_b - 2.

    A side may hold one value when the other has two or more (as in scipy); NaN when df < 1
    or when both sides are constant (no spread to test against, as in `welch_t`).
    """
    a, b = list(a), list(b)
    sa, sb = describe(a), describe(b)
    ss, df = _pooled(sa, sb)
    if sa.n < 1 or sb.n < 1 or df < 1 or ss == 0.0:
        return _NONE
    return _scipy_t(a, b, True, df)


def _pairs(a: Iterable[float | None], b: Iterable[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a[i], b[i]) where both are finite numbers, as two arrays: a pair missing a side drops out.

    `a` and `b` are aligned: the i-th value of each is the same seed's (`paired_samples`).
    """
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"paired values need as many on each side, not {len(a)} and {len(b)}")
    kept = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    return (np.asarray([x for x, _ in kept], dtype=np.float64), np.asarray([y for _, y in kept], dtype=np.float64))


def differences(a: Iterable[float | None], b: Iterable[float | None]) -> np.ndarray:
    """a[i] - b[i] over the pairs where both score (see `_pairs`)."""
    x, y = _pairs(a, b)
    return x - y


# Below this sample sd the differences count as all the same: IoUs lie in [0, 1], and 0.4 - 0.3 and
# 0.3 - 0.2 differ by rounding alone (5e-17), which would otherwise read as a t of 1e15.
NO_SPREAD = 1e-12


def _spread(d: np.ndarray) -> float:
    """The sample sd of the differences `d` (at least 2), 0.0 where it is rounding only (`NO_SPREAD`)."""
    sd = float(d.std(ddof=1))
    return sd if sd > NO_SPREAD else 0.0


def paired_t(a: Iterable[float | None], b: Iterable[float | None]) -> TTest:
    """``scipy.stats.ttest_rel(a, b)``: t of the mean of the differences a[i] - b[i], df = n - 1 over
    the n pairs where both sides score; NaN for fewer than 2 pairs, or where every difference is the
    same, to rounding (no spread to test against, as in `welch_t`)."""
    x, y = _pairs(a, b)
    if len(x) < 2 or _spread(x - y) == 0.0:
        return _NONE
    res = sp_stats.ttest_rel(x, y)
    return TTest(float(res.statistic), float(len(x) - 1), float(res.pvalue))


def confidence_interval(a: Iterable[float], b: Iterable[float], test: str = WELCH,
                        level: float = LEVEL) -> tuple[float, float]:
    """The `level` confidence interval of mean(a) - mean(b) that goes with `test`.

    ``welch``: se = sqrt(s_a^2/n_a + s_b^2/n_b), Welch-Satterthwaite df; ``student``: pooled se,
    df = n_a + n_b - 2; ``paired`` (`a`, `b` aligned by seed): of the mean of the n differences
    a[i] - b[i], se = s_d / sqrt(n), df = n - 1. diff -/+ t.ppf((1 + level) / 2, df) * se; (NaN, NaN)
    wherever the test is NaN (a side too small, no spread), so the interval excludes 0 exactly when
    p < 1 - level.
    """
    if check_choice(test, TESTS, "test") == PAIRED:
        d = differences(a, b)
        if len(d) < 2 or _spread(d) == 0.0:
            return math.nan, math.nan
        half = float(sp_stats.t.ppf((1.0 + level) / 2.0, len(d) - 1)) * _spread(d) / math.sqrt(len(d))
        return float(d.mean()) - half, float(d.mean()) + half
    sa, sb = describe(a), describe(b)
    if test == WELCH:
        if sa.n < 2 or sb.n < 2:
            return math.nan, math.nan
        se2, df = _welch_se(sa, sb)
    else:
        ss, df = _pooled(sa, sb)
        if sa.n < 1 or sb.n < 1 or df < 1:
            return math.nan, math.nan
        se2 = ss / df * (1.0 / sa.n + 1.0 / sb.n)
    if not se2 > 0.0:
        return math.nan, math.nan
    half = float(sp_stats.t.ppf((1.0 + level) / 2.0, df)) * math.sqrt(se2)
    diff = sa.mean - sb.mean
    return diff - half, diff + half


def hedges_g(a: Iterable[float], b: Iterable[float]) -> float:
    """Hedges' g of a against b: (mean(a) - mean(b)) / pooled sample sd, times J = 1 - 3/(4(n_a+n_b)-9).

    NaN where a side has fewer than 2 values or the pooled sd is 0.
    """
    sa, sb = describe(a), describe(b)
    if sa.n < 2 or sb.n < 2:
        return math.nan
    ss, df = _pooled(sa, sb)
    if ss == 0.0:
        return math.nan
    j = 1.0 - 3.0 / (4.0 * (sa.n + sb.n) - 9.0)
    return j * (sa.mean - sb.mean) / math.sqrt(ss / df)


def cohen_dz(a: Iterable[float | None], b: Iterable[float | None]) -> float:
    """Cohen's d_z of a against b, aligned by seed: mean(d) / sd(d) of the differences d = a[i] - b[i]
    (sample sd, ddof=1), without a small-sample correction (Hedges' J is 0 at n = 2, where every
    paired g would read 0). NaN for fewer than 2 pairs, or where every difference is the same, to rounding."""
    d = differences(a, b)
    if len(d) < 2 or _spread(d) == 0.0:
        return math.nan
    return float(d.mean()) / _spread(d)


def bh_adjust(ps: Iterable[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control(method="bh")``)
    over the non-NaN ones; NaN stays NaN and is not counted in the family."""
    ps = [math.nan if p is None else float(p) for p in ps]
    keep = [i for i, p in enumerate(ps) if not math.isnan(p)]
    out = [math.nan] * len(ps)
    if keep:
        adjusted = sp_stats.false_discovery_control([ps[i] for i in keep], method="bh")
        for i, q in zip(keep, adjusted):
            out[i] = float(q)
    return out


TESTS = {PAIRED: paired_t, WELCH: welch_t, STUDENT: student_t}  # --test -> the test of two samples


class Samples(NamedTuple):
    """A group's scores: the classes, per class the non-null IoUs of its runs, and their non-null mIoUs."""

    classes: tuple[str, ...]
    per_class: tuple[tuple[float, ...], ...]
    miou: tuple[float, ...]


def samples(records, *, keep_null: bool = False) -> Samples:
    """The `Samples` of a list of records (all of one class set); null IoUs left out, or, with
    `keep_null`, kept as None so that the i-th value of every class is the i-th record's."""
    records = list(records)
    if not records:
        raise UserError("an empty group has nothing to compare")
    classes = records[0].classes
    kept = (lambda v: True) if keep_null else (lambda v: v is not None)
    per_class = tuple(tuple(r.iou[c] for r in records if kept(r.iou[c])) for c in range(len(classes)))
    return Samples(classes, per_class, tuple(r.miou for r in records if kept(r.miou)))


def seeds_of(records) -> list:
    """The seeds of `records`, in their order (None for a run whose final.json names none)."""
    return [r.seed for r in records]


def paired_samples(group_a, group_b) -> tuple[Samples, Samples]:
    """The scores of two groups of records aligned by seed (ascending), null IoUs kept as None: the
    i-th value of each side is the same seed's, as `paired_t`, `confidence_interval(..., "paired")` and
    `cohen_dz` take them. A UserError unless both groups hold the same seeds, each once."""
    a, b = list(group_a), list(group_b)
    seeds_a, seeds_b = seeds_of(a), seeds_of(b)
    if (None in seeds_a or None in seeds_b or len(set(seeds_a)) != len(a) or len(set(seeds_b)) != len(b)
            or set(seeds_a) != set(seeds_b)):
        raise UserError(f"a paired test needs the same seeds on both sides, once each; they hold "
                        f"{seed_list(seeds_a)} and {seed_list(seeds_b)}")
    return tuple(samples(sorted(g, key=lambda r: r.seed), keep_null=True) for g in (a, b))


def seed_list(seeds) -> str:
    """Seeds as a report names them: ``0, 1, 2`` (ascending, then ``none`` for each run without one)."""
    seeds = list(seeds)
    shown = [str(s) for s in sorted(s for s in seeds if s is not None)] + ["none"] * seeds.count(None)
    return ", ".join(shown) if shown else "no runs"


def t_tests(group_a, group_b, test: str = WELCH) -> dict[str, TTest]:
    """A t-test (`test`: ``welch``, ``student`` or ``paired``) per class (by name) and for mIoU (key
    ``mIoU``, last) of two groups.

    A group is a list of records or their `Samples` (a report column's ``sampled``; for ``paired``,
    the pair `paired_samples` gives, aligned by seed). t is that of a against b, as
    ``scipy.stats.ttest_ind(a, b, equal_var=test == "student")`` or ``scipy.stats.ttest_rel(a, b)``;
    null IoUs are left out (paired: the seed's pair).
    """
    run = TESTS[check_choice(test, TESTS, "test")]
    if test == PAIRED and not isinstance(group_a, Samples):
        a, b = paired_samples(group_a, group_b)
    else:
        a, b = (g if isinstance(g, Samples) else samples(g) for g in (group_a, group_b))
    tests = {name: run(x, y) for name, x, y in zip(a.classes, a.per_class, b.per_class)}
    tests[MIOU] = run(a.miou, b.miou)
    return tests


def welch(group_a, group_b) -> dict[str, TTest]:
    """Welch's t-test per class and for mIoU of two groups: ``t_tests(group_a, group_b, "welch")``."""
    return t_tests(group_a, group_b, WELCH)
