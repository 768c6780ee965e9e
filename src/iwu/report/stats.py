"""Statistics over runs: mean/std/n (`describe`), the incomplete beta function and the two-sample
t-tests (Welch's and Student's).

Which standard deviation (``sample``, ddof=1, or ``population``, ddof=0) is decided in one place,
`DDOF`; which t-test, in `TESTS` (one function each).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from iwu.errors import UserError

ALPHA = 0.05
MIOU = "mIoU"

SAMPLE, POPULATION = "sample", "population"
DDOF = {SAMPLE: 1, POPULATION: 0}  # --std: the delta degrees of freedom of each kind of standard deviation
WELCH, STUDENT = "welch", "student"
TEST_NAMES = {WELCH: "Welch", STUDENT: "Student"}  # --test -> the name printed beside the p-values


def _choice(value: str, options, what: str) -> str:
    if value not in options:
        raise UserError(f"{what} {value!r}: choose from {', '.join(options)}")
    return value


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
    ddof = DDOF[_choice(std, DDOF, "std")]
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=ddof)) if n > ddof else math.nan
    return Stat(mean, sd, n)


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, evaluated by Lentz's method.

    Converges fast for x < (a + 1) / (a + b + 2); the caller swaps a and b otherwise.
    """
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),  # even step
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):  # odd step
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1.

    `y` is 1 - x when the caller knows it more precisely than 1 - x computes it.
    """
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, y) / b


def t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` (not necessarily whole) degrees of freedom."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2)))


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


def welch_t(a: Iterable[float], b: Iterable[float]) -> TTest:
    """As ``scipy.stats.ttest_ind(a, b, equal_var=False)``; NaN where a side has fewer than 2 values."""
    sa, sb = describe(a), describe(b)
    if sa.n < 2 or sb.n < 2:
        return _NONE
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se2 = va + vb
    if se2 == 0.0:  # both constant: no spread to test against
        return _NONE
    t = (sa.mean - sb.mean) / math.sqrt(se2)
    df = se2 ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    return TTest(t, df, t_two_sided(t, df))


def student_t(a: Iterable[float], b: Iterable[float]) -> TTest:
    """As ``scipy.stats.ttest_ind(a, b, equal_var=True)``: pooled variance, df = n_a + n_b - 2.

    A side may hold one value when the other has two or more (as in scipy); NaN when df < 1
    or when both sides are constant (no spread to test against, as in `welch_t`).
    """
    sa, sb = describe(a), describe(b)
    df = sa.n + sb.n - 2
    if sa.n < 1 or sb.n < 1 or df < 1:
        return _NONE
    # (n - 1) * sample variance, 0 for one value
    ss = sum((s.n - 1) * s.std ** 2 for s in (sa, sb) if s.n > 1)
    se2 = ss / df * (1.0 / sa.n + 1.0 / sb.n)
    if se2 == 0.0:
        return _NONE
    t = (sa.mean - sb.mean) / math.sqrt(se2)
    return TTest(t, float(df), t_two_sided(t, df))


TESTS = {WELCH: welch_t, STUDENT: student_t}  # --test -> the test of two samples


def _samples(group) -> tuple[list[list[float]], list[float]]:
    """Per class the non-null IoUs, and the non-null mIoUs, of a list of records or a `Column`."""
    from iwu.report.table import Column  # the table module builds on this one

    if isinstance(group, Column):
        return [list(s) for s in group.samples], list(group.miou_samples)
    records = list(group)
    if not records:
        raise UserError("an empty group has nothing to compare")
    width = len(records[0].iou)
    per_class = [[r.iou[c] for r in records if r.iou[c] is not None] for c in range(width)]
    return per_class, [r.miou for r in records if r.miou is not None]


def t_tests(group_a, group_b, test: str = WELCH) -> dict[str, TTest]:
    """A t-test (`test`: ``welch`` or ``student``) per class (by name) and for mIoU (key ``mIoU``,
    last) of two groups.

    A group is a list of records or a `Column`. t is that of a against b, as
    ``scipy.stats.ttest_ind(a, b, equal_var=test == "student")``; null IoUs are left out.
    """
    from iwu.report.table import Column  # the table module builds on this one

    run = TESTS[_choice(test, TESTS, "test")]
    (ca, ma), (cb, mb) = _samples(group_a), _samples(group_b)
    first = group_a.records[0] if isinstance(group_a, Column) else list(group_a)[0]
    tests = {name: run(a, b) for name, a, b in zip(first.classes, ca, cb)}
    tests[MIOU] = run(ma, mb)
    return tests


def welch(group_a, group_b) -> dict[str, TTest]:
    """Welch's t-test per class and for mIoU of two groups: ``t_tests(group_a, group_b, "welch")``."""
    return t_tests(group_a, group_b, WELCH)
