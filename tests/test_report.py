"""`iwu.report`: run directories found at any depth, per-class mean/std/n over seeds against numpy
(sample or population std), Welch's and Student's t-tests against scipy, 95% intervals and Hedges' g
against hand computations, Benjamini-Hochberg against scipy, the three formats from the same numbers
and naming the std and test, the paper's tables, the difference figure, and one-line
errors naming the path at fault."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import iwu.plots.difference
from iwu import report
from iwu.cli import main
from iwu.errors import UserError
from iwu.plots.difference import difference_figure
from iwu.report import (
    TTest,
    Welch,
    build_table,
    collect,
    difference_bars,
    group,
    match_paper,
    paper_columns,
    run_report,
    save_difference_figure,
    student_t,
    summarise,
    t_tests,
    to_csv,
    to_latex,
    to_markdown,
    welch,
    welch_t,
    write_report,
)

from scipy import stats as sp_stats

from drawn import drawn_figures

PACKAGE_TABLES = Path(report.__file__).parent.with_name("paper_tables.json")
SHARED_TABLES = Path("/work/shared/paper/tables.json")

CLASSES = ["road", "car", "rider", "train", "bicycle"]
# per mode: one list per class, one value per seed (None: class absent from that run's validation)
IOU = {
    "standard": {
        "road": [0.94, 0.95, 0.93, 0.94],
        "car": [0.80, 0.82, 0.81, 0.79],
        "rider": [0.15, 0.18, 0.12, 0.16],
        "train": [0.60, None, 0.55, 0.62],
        "bicycle": [None, None, 0.30, None],
    },
    "instance_uncertainty": {  # five seeds: unequal n
        "road": [0.94, 0.94, 0.95, 0.93, 0.945],
        "car": [0.81, 0.80, 0.83, 0.82, 0.80],
        "rider": [0.25, 0.22, 0.27, 0.24, 0.26],
        "train": [0.50, 0.52, None, 0.51, 0.49],
        "bicycle": [0.35, 0.33, None, 0.36, 0.34],
    },
}


def seeds_of(mode):
    return len(IOU[mode]["road"])


def run_iou(mode, seed, classes=CLASSES):
    return [IOU[mode][c][seed] for c in classes]


def miou_of(iou):
    present = [v for v in iou if v is not None]
    return sum(present) / len(present)


def write_run(folder, mode, seed, results, *, classes=CLASSES, dataset="acdc", experiment="acdc_ensemble",
              val_extra=None):
    """A finished run directory as `iwu train` leaves it; `results` maps model -> IoU list."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = {
        "experiment": experiment, "dataset": dataset, "mode": mode, "seed": seed, "steps": 48000,
        "classes": list(classes),
        "results": {m: {"best_step": 100 * (seed + 1), "miou": miou_of(iou), "iou": iou} for m, iou in results.items()},
    }
    if val_extra:
        final["val_extra"] = {loader: {m: {"step": 100, "miou": miou_of(iou), "iou": iou} for m, iou in scores.items()}
                              for loader, scores in val_extra.items()}
    (folder / "final.json").write_text(json.dumps(final))
    (folder / "config.yaml").write_text(f"mode: {mode}\nseed: {seed}\n")
    return folder


@pytest.fixture
def runs(tmp_path):
    """runs/<experiment>/<mode>/seed<k>, 4 standard and 5 instance_uncertainty seeds (ensemble only)."""
    root = tmp_path / "runs"
    for mode in IOU:
        for seed in range(seeds_of(mode)):
            write_run(root / "acdc_ensemble" / mode / f"seed{seed}", mode, seed, {"ensemble": run_iou(mode, seed)})
    return root


def values(mode, cls):
    return np.array([v for v in IOU[mode][cls] if v is not None], dtype=float)


def mious(mode):
    return np.array([miou_of(run_iou(mode, s)) for s in range(seeds_of(mode))])


def md_rows(text):
    """The body rows of the first Markdown table, as lists of cells."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


def tex_rows(text):
    return [[c.strip() for c in ln.removesuffix(r"\\").split(" & ")]
            for ln in text.splitlines() if ln.endswith(r"\\")][1:]


# ----------------------------------------------------------------------------------------------- collect


def test_collect_reads_every_run_below_the_folders_at_any_depth(tmp_path, runs):
    deep = write_run(tmp_path / "elsewhere" / "a" / "b" / "c" / "seed9", "standard", 9,
                     {"ensemble": run_iou("standard", 0)}, experiment="other")
    records = collect([runs, tmp_path / "elsewhere"])
    assert len(records) == 4 + 5 + 1
    assert {r.run for r in records} >= {deep, runs / "acdc_ensemble" / "standard" / "seed0"}
    r = next(r for r in records if r.run == deep)
    assert (r.experiment, r.mode, r.seed, r.model, r.train, r.eval) == ("other", "standard", 9, "ensemble",
                                                                        "acdc", "acdc")
    assert r.classes == tuple(CLASSES) and list(r.iou) == run_iou("standard", 0)
    assert r.miou == pytest.approx(miou_of(run_iou("standard", 0)))
    # a run directory itself, and the same runs reached twice, count once
    assert len(collect(deep)) == 1
    assert len(collect([runs, runs / "acdc_ensemble" / "standard"])) == 9


def test_collect_picks_members_and_reads_cross_domain_and_eval_files(tmp_path):
    iou = run_iou("standard", 0)
    run = write_run(tmp_path / "r", "standard", 0, {"ensemble": iou, "deeplabv3plus_resnet101": iou[::-1]},
                    val_extra={"cityscapes/val": {"ensemble": iou[1:] + iou[:1],
                                                  "deeplabv3plus_resnet101": iou}})
    assert {(r.model, r.eval) for r in collect(run)} == {("ensemble", "acdc"), ("ensemble", "cityscapes")}
    members = collect(run, member="deeplabv3plus_resnet101")
    assert [list(r.iou) for r in members] == [iou[::-1], iou]
    assert len(collect(run, member="all")) == 4
    # an `iwu evaluate` file is one more train->eval column
    (run / "eval_darkzurich.json").write_text(json.dumps({
        "dataset": "darkzurich", "split": "val", "classes": CLASSES,
        "results": {"ensemble": {"miou": 0.5, "iou": [0.5] * 5, "pixel_accuracy": 0.9}}}))
    got = {r.eval: r for r in collect(run)}
    assert set(got) == {"acdc", "cityscapes", "darkzurich"}
    assert got["darkzurich"].train == "acdc" and got["darkzurich"].source == run / "eval_darkzurich.json"


def test_default_grouping_adds_model_and_datasets_only_when_they_vary(tmp_path):
    iou = run_iou("standard", 0)
    for mode in ("standard", "instance_uncertainty"):
        for seed in range(2):
            write_run(tmp_path / mode / str(seed), mode, seed, {"ensemble": iou, "deeplabv3plus_mobilenet": iou},
                      val_extra={"cityscapes/val": {"ensemble": iou, "deeplabv3plus_mobilenet": iou}})
    assert list(group(collect(tmp_path / "standard"))) == ["standard / acdc->acdc", "standard / acdc->cityscapes"]
    labels = list(group(collect(tmp_path, member="all")))
    assert labels[0] == "standard / ensemble / acdc->acdc" and len(labels) == 8
    assert list(group(collect(tmp_path), by="mode,train,eval"))[-1] == "instance_uncertainty / acdc->cityscapes"
    assert all(len(g) == 2 for g in group(collect(tmp_path), by=("mode", "eval")).values())
    with pytest.raises(UserError, match="add model to --by"):
        group(collect(tmp_path, member="all"), by=("mode", "train", "eval"))
    with pytest.raises(UserError, match="group by some of"):
        group(collect(tmp_path), by="mode,colour")


# ----------------------------------------------------------------------------------------------- statistics


def test_summary_matches_numpy_per_cell(runs):
    groups = group(collect(runs))
    assert list(groups) == ["standard", "instance_uncertainty"]  # the baseline first
    table = summarise(groups)
    for col in table.columns:
        for cls, stat in zip(CLASSES, col.cells):
            x = values(col.label, cls)
            assert stat.n == len(x)
            assert stat.mean == pytest.approx(x.mean(), abs=1e-12)
            if len(x) > 1:
                assert stat.std == pytest.approx(x.std(ddof=1), abs=1e-12)
            else:
                assert math.isnan(stat.std)  # one run: no spread (documented)
        x = mious(col.label)
        assert col.miou.n == len(x)
        assert col.miou.mean == pytest.approx(x.mean(), abs=1e-12)
        assert col.miou.std == pytest.approx(x.std(ddof=1), abs=1e-12)
    assert [c.n for c in table.columns[0].cells] == [4, 4, 4, 3, 1]
    assert [c.n for c in table.columns[1].cells] == [5, 5, 5, 4, 4]


@pytest.mark.parametrize("a, b", [
    ([0.5, 0.52, 0.49, 0.51], [0.55, 0.57, 0.56, 0.58]),  # equal n, clearly different
    ([0.5, 0.52, 0.49], [0.3, 0.7, 0.45, 0.61, 0.5, 0.2]),  # unequal n and variances
    ([0.1, 0.1001], [0.9, 0.2, 0.5, 0.6, 0.3, 0.31, 0.77, 0.42, 0.12, 0.66]),  # tiny against wide spread
    ([0.31, 0.33], [0.32, 0.30]),  # n = 2 each, no difference
    (list(np.linspace(0.2, 0.4, 30)), list(np.linspace(0.21, 0.38, 7) ** 1.1)),  # many seeds
])
def test_welch_t_matches_scipy(a, b):
    ref = sp_stats.ttest_ind(a, b, equal_var=False)
    got = welch_t(a, b)
    assert isinstance(got, Welch)
    assert got.t == pytest.approx(ref.statistic, rel=1e-10, abs=1e-8)
    assert got.df == pytest.approx(ref.df, rel=1e-10, abs=1e-8)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-8)


def test_welch_t_matches_scipy_on_random_samples():
    rng = np.random.default_rng(7)
    for _ in range(300):
        na, nb = rng.integers(2, 25, size=2)
        a = rng.normal(0.5, rng.uniform(1e-3, 0.2), na)
        b = rng.normal(0.5 + rng.normal(0, 0.05), rng.uniform(1e-3, 0.2), nb)
        ref, got = sp_stats.ttest_ind(a, b, equal_var=False), welch_t(a, b)
        assert abs(got.t - ref.statistic) <= 1e-8 * max(1, abs(ref.statistic))
        assert abs(got.df - ref.df) <= 1e-8 * max(1, ref.df)
        assert abs(got.p - ref.pvalue) <= 1e-8


def test_welch_needs_two_values_a_side():
    assert all(math.isnan(v) for v in welch_t([0.3], [0.1, 0.2, 0.4]))
    assert all(math.isnan(v) for v in welch_t([0.3, 0.3], [0.3, 0.3]))  # no spread at all
    assert not welch_t([0.3], [0.1, 0.2]).significant


def test_welch_of_groups_matches_scipy_per_class_and_for_miou(runs):
    groups = group(collect(runs))
    tests = welch(groups["standard"], groups["instance_uncertainty"])
    assert list(tests) == CLASSES + ["mIoU"]
    for cls in CLASSES:
        a, b = values("standard", cls), values("instance_uncertainty", cls)
        if len(a) < 2:
            assert math.isnan(tests[cls].p)
            continue
        ref = sp_stats.ttest_ind(a, b, equal_var=False)
        assert tests[cls].t == pytest.approx(ref.statistic, abs=1e-8)
        assert tests[cls].df == pytest.approx(ref.df, abs=1e-8)
        assert tests[cls].p == pytest.approx(ref.pvalue, abs=1e-8)
    ref = sp_stats.ttest_ind(mious("standard"), mious("instance_uncertainty"), equal_var=False)
    assert tests["mIoU"].p == pytest.approx(ref.pvalue, abs=1e-8)
    # the table's comparison is b against a: same p, t with the sign of the difference
    cmp = summarise(groups).comparison
    assert (cmp.a, cmp.b) == ("standard", "instance_uncertainty")
    assert cmp.tests[2].t == pytest.approx(-tests["rider"].t) and cmp.tests[2].p == tests["rider"].p
    assert cmp.diff[2] == pytest.approx(values("instance_uncertainty", "rider").mean() -
                                        values("standard", "rider").mean())


def test_population_std_matches_np_std_per_cell(runs):
    table = summarise(group(collect(runs)), std="population")
    assert table.std == "population" and table.test == "welch"
    for col in table.columns:
        for cls, stat in zip(CLASSES, col.cells):
            x = values(col.label, cls)
            assert stat.n == len(x)
            assert stat.mean == pytest.approx(x.mean(), abs=1e-12)
            assert stat.std == pytest.approx(np.std(x), abs=1e-12)  # ddof=0: 0.0 with one run, not NaN
        assert col.miou.std == pytest.approx(np.std(mious(col.label)), abs=1e-12)
    assert table.columns[0].cells[4] == (values("standard", "bicycle")[0], 0.0, 1)
    # the standard error of the difference (figure's error bars, CSV's se) uses the chosen std too
    a, b = values("standard", "rider"), values("instance_uncertainty", "rider")
    assert table.comparison.se[2] == pytest.approx(math.sqrt(np.var(a) / len(a) + np.var(b) / len(b)))
    # the std changes no mean and no test
    sample = summarise(group(collect(runs)))
    assert [c.mean for c in table.columns[1].cells] == [c.mean for c in sample.columns[1].cells]
    assert table.comparison.tests == sample.comparison.tests


STUDENT_SAMPLES = [
    ([0.5, 0.52, 0.49, 0.51], [0.55, 0.57, 0.56, 0.58]),  # equal n, clearly different
    ([0.5, 0.52, 0.49], [0.3, 0.7, 0.45, 0.61, 0.5, 0.2]),  # unequal n and variances: differs from Welch
    ([0.1, 0.1001], [0.9, 0.2, 0.5, 0.6, 0.3, 0.31, 0.77, 0.42, 0.12, 0.66]),
    ([0.31, 0.33], [0.32, 0.30]),  # n = 2 each, no difference
    ([0.3], [0.1, 0.2, 0.4]),  # one value a side: pooled from the other (as scipy)
    (list(np.linspace(0.2, 0.4, 30)), list(np.linspace(0.21, 0.38, 7) ** 1.1)),
]


@pytest.mark.parametrize("a, b", STUDENT_SAMPLES)
def test_student_t_matches_scipy(a, b):
    ref = sp_stats.ttest_ind(a, b)  # the paper's call: equal_var=True by default
    got = student_t(a, b)
    assert isinstance(got, TTest) and Welch is TTest
    assert got.t == pytest.approx(ref.statistic, rel=1e-10, abs=1e-8)
    assert got.df == ref.df == len(a) + len(b) - 2
    assert got.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-8)
    assert got.p == pytest.approx(sp_stats.t.sf(abs(ref.statistic), ref.df) * 2, rel=1e-8, abs=1e-12)


def test_student_t_differs_from_welch_where_it_should():
    a, b = STUDENT_SAMPLES[1]
    assert student_t(a, b).p != pytest.approx(welch_t(a, b).p, rel=1e-3)
    assert student_t(a, b).p == pytest.approx(sp_stats.ttest_ind(a, b, equal_var=True).pvalue, abs=1e-10)


def test_student_t_matches_scipy_on_random_samples():
    rng = np.random.default_rng(11)
    for _ in range(300):
        na, nb = rng.integers(2, 25, size=2)
        a = rng.normal(0.5, rng.uniform(1e-3, 0.2), na)
        b = rng.normal(0.5 + rng.normal(0, 0.05), rng.uniform(1e-3, 0.2), nb)
        ref, got = sp_stats.ttest_ind(a, b, equal_var=True), student_t(a, b)
        assert abs(got.t - ref.statistic) <= 1e-8 * max(1, abs(ref.statistic))
        assert got.df == ref.df
        assert abs(got.p - ref.pvalue) <= 1e-8


def test_student_needs_a_degree_of_freedom_and_some_spread():
    assert all(math.isnan(v) for v in student_t([0.3], [0.1]))  # df = 0
    assert all(math.isnan(v) for v in student_t([], [0.1, 0.2, 0.3]))
    assert all(math.isnan(v) for v in student_t([0.3, 0.3], [0.2, 0.2]))  # no spread at all
    assert not student_t([0.3], [0.1]).significant


def test_student_of_groups_matches_scipy_per_class_and_for_miou(runs):
    groups = group(collect(runs))
    tests = t_tests(groups["standard"], groups["instance_uncertainty"], "student")
    assert list(tests) == CLASSES + ["mIoU"]
    for cls in CLASSES:  # bicycle has one standard run: Student's test still has df = 1 + 4 - 2
        ref = sp_stats.ttest_ind(values("standard", cls), values("instance_uncertainty", cls))
        assert tests[cls].t == pytest.approx(ref.statistic, abs=1e-8) and tests[cls].df == ref.df
        assert tests[cls].p == pytest.approx(ref.pvalue, abs=1e-8)
    ref = sp_stats.ttest_ind(mious("standard"), mious("instance_uncertainty"))
    assert tests["mIoU"].p == pytest.approx(ref.pvalue, abs=1e-8)
    assert t_tests(groups["standard"], groups["instance_uncertainty"]) == welch(groups["standard"],
                                                                                groups["instance_uncertainty"])
    cmp = summarise(groups, test="student").comparison
    assert cmp.test == "student"
    assert cmp.tests[2].t == pytest.approx(-tests["rider"].t) and cmp.tests[2].p == tests["rider"].p


# ----------------------------------------------------------------- intervals, effect sizes, BH adjustment


def welch_ci(a, b, level=0.95):
    """By hand: mean(a) - mean(b) -/+ t_{(1+level)/2, df} * se, Welch-Satterthwaite df."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = sp_stats.t.ppf((1 + level) / 2, df) * math.sqrt(va + vb)
    d = a.mean() - b.mean()
    return d - half, d + half


def student_ci(a, b, level=0.95):
    """By hand: pooled variance, df = n_a + n_b - 2."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    df = len(a) + len(b) - 2
    sp2 = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / df
    half = sp_stats.t.ppf((1 + level) / 2, df) * math.sqrt(sp2 * (1 / len(a) + 1 / len(b)))
    d = a.mean() - b.mean()
    return d - half, d + half


def hand_hedges_g(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    sp = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    return (1 - 3 / (4 * (na + nb) - 9)) * (a.mean() - b.mean()) / sp


@pytest.mark.parametrize("test, hand", [("welch", welch_ci), ("student", student_ci)])
@pytest.mark.parametrize("a, b", STUDENT_SAMPLES[:4] + STUDENT_SAMPLES[5:])
def test_confidence_interval_matches_hand_computation(test, hand, a, b):
    low, high = report.confidence_interval(a, b, test)
    assert (low, high) == pytest.approx(hand(a, b), rel=1e-12, abs=1e-14)
    assert low <= np.mean(a) - np.mean(b) <= high
    assert report.hedges_g(a, b) == pytest.approx(hand_hedges_g(a, b), rel=1e-12, abs=1e-14)
    assert report.hedges_g(b, a) == pytest.approx(-report.hedges_g(a, b))


@pytest.mark.parametrize("test", ["welch", "student"])
def test_confidence_interval_agrees_with_the_test(test):
    rng = np.random.default_rng(5)
    run = report.TESTS[test]
    seen = set()
    for _ in range(300):
        na, nb = rng.integers(2, 12, size=2)
        a = rng.normal(0.5, rng.uniform(1e-3, 0.1), na)
        b = rng.normal(0.5 + rng.normal(0, 0.05), rng.uniform(1e-3, 0.1), nb)
        low, high = report.confidence_interval(a, b, test)
        p = run(a, b).p
        assert low <= a.mean() - b.mean() <= high
        if abs(p - 0.05) > 1e-9:  # away from the boundary: the interval excludes 0 iff p < 0.05
            assert (not low <= 0.0 <= high) == (p < 0.05)
            seen.add(p < 0.05)
    assert seen == {True, False}


def test_interval_and_g_are_nan_where_undefined():
    for a, b in (([0.3], [0.1, 0.2, 0.4]), ([0.3, 0.3], [0.2, 0.2]), ([], [0.1, 0.2])):
        assert all(math.isnan(x) for x in report.confidence_interval(a, b, "welch"))
        assert math.isnan(report.hedges_g(a, b))
    assert all(math.isnan(x) for x in report.confidence_interval([0.3, 0.3], [0.2, 0.2], "student"))
    assert all(math.isnan(x) for x in report.confidence_interval([0.3], [0.1], "student"))  # df = 0
    # Student's test pools one value with the other side's spread: so does its interval (not g)
    low, high = report.confidence_interval([0.3], [0.1, 0.2, 0.4], "student")
    assert low < 0.3 - np.mean([0.1, 0.2, 0.4]) < high


@pytest.mark.parametrize("test", ["welch", "student"])
def test_table_adjusts_its_p_values_by_benjamini_hochberg(runs, test):
    cmp = summarise(group(collect(runs)), test=test).comparison
    raw = [t.p for t in cmp.tests] + [cmp.miou_test.p]
    adjusted = list(cmp.p_adj) + [cmp.miou_p_adj]
    finite = [p for p in raw if not math.isnan(p)]
    expected = iter(sp_stats.false_discovery_control(finite, method="bh"))  # NaN not in the family
    for p, q in zip(raw, adjusted):
        if math.isnan(p):
            assert math.isnan(q)
        else:
            assert q == pytest.approx(next(expected), rel=1e-12) and q >= p
    assert (test == "welch") == any(math.isnan(p) for p in raw)  # Welch: bicycle has one standard run
    assert [cmp.significant(i) for i in range(len(CLASSES))] + [cmp.significant()] == [q < 0.05 for q in adjusted]
    assert report.bh_adjust([0.01, math.nan, 0.04]) == pytest.approx([0.02, math.nan, 0.04], nan_ok=True)


def test_table_intervals_and_g_are_of_b_minus_a(runs):
    for test, hand in (("welch", welch_ci), ("student", student_ci)):
        cmp = summarise(group(collect(runs)), test=test).comparison
        for i, cls in enumerate(CLASSES[:4]):
            a, b = values("standard", cls), values("instance_uncertainty", cls)
            assert cmp.ci[i] == pytest.approx(hand(b, a), abs=1e-12)
            assert cmp.ci[i][0] <= cmp.diff[i] <= cmp.ci[i][1]
            assert (not cmp.ci[i][0] <= 0 <= cmp.ci[i][1]) == (cmp.tests[i].p < 0.05)
            assert cmp.g[i] == pytest.approx(hand_hedges_g(b, a), abs=1e-12)
        a, b = mious("standard"), mious("instance_uncertainty")
        assert cmp.miou_ci == pytest.approx(hand(b, a), abs=1e-12)
        assert cmp.miou_g == pytest.approx(hand_hedges_g(b, a), abs=1e-12)
        assert math.isnan(cmp.g[4])  # bicycle: one standard run


def test_bad_std_or_test_names_are_one_line_errors(runs, capsys):
    groups = group(collect(runs))
    with pytest.raises(UserError) as err:
        summarise(groups, std="pop")
    one_line(err, "'pop'", "sample, population")
    with pytest.raises(UserError) as err:
        build_table(runs, test="wilcoxon")
    one_line(err, "'wilcoxon'", "paired, welch, student")
    for option, bad in (("--std", "ddof0"), ("--test", "wilcoxon")):
        with pytest.raises(SystemExit) as exit_:
            main(["report", str(runs), option, bad])
        assert exit_.value.code == 2
        stderr = capsys.readouterr().err
        assert f"argument {option}: invalid choice: '{bad}'" in stderr and "Traceback" not in stderr


# ----------------------------------------------------------------------------------------------- formats


def scipy_p(cls):
    a, b = values("standard", cls), values("instance_uncertainty", cls)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return sp_stats.ttest_ind(a, b, equal_var=False).pvalue


def scipy_p_miou():
    return sp_stats.ttest_ind(mious("standard"), mious("instance_uncertainty"), equal_var=False).pvalue


def scipy_p_adj(ps):
    """scipy's Benjamini-Hochberg adjustment over the non-NaN p-values, NaN kept NaN."""
    ps = np.asarray(ps, dtype=float)
    out = np.full_like(ps, np.nan)
    keep = ~np.isnan(ps)
    out[keep] = sp_stats.false_discovery_control(ps[keep], method="bh")
    return list(out)


def welch_p_adj():
    """The fixture table's Welch p-values, classes then mIoU, BH-adjusted by scipy."""
    return scipy_p_adj([scipy_p(c) for c in CLASSES] + [scipy_p_miou()])


def cell(x, d=3):
    return f"{x.mean():.{d}f} ± {x.std(ddof=1):.{d}f} ({len(x)})" if len(x) > 1 else f"{x.mean():.{d}f} ({len(x)})"


def test_markdown_cells_and_markers(runs):
    table = summarise(group(collect(runs)))
    text = to_markdown(table)
    header = [c.strip() for c in text.splitlines()[0].strip("|").split(" | ")]
    assert header == ["class", "standard", "instance_uncertainty", "instance_uncertainty - standard",
                      "95% CI", "g", "p (Welch)", "p (BH)", "p (BH) < 0.05"]
    rows = md_rows(text)
    assert [r[0] for r in rows] == CLASSES + ["mIoU"]
    raw = [scipy_p(c) for c in CLASSES] + [scipy_p_miou()]
    adjusted = welch_p_adj()
    expected_sig = [q < 0.05 for q in adjusted]
    assert any(expected_sig) and not all(expected_sig)  # the data exercise both
    # and a class significant before the correction but not after it (train: raw p 0.045)
    assert any(p < 0.05 and not sig for p, sig in zip(raw, expected_sig))
    cmp = table.comparison
    for i, (row, cls, sig) in enumerate(zip(rows, CLASSES + ["mIoU"], expected_sig)):
        a = mious("standard") if cls == "mIoU" else values("standard", cls)
        b = mious("instance_uncertainty") if cls == "mIoU" else values("instance_uncertainty", cls)
        assert row[1] == cell(a) and row[2] == cell(b)
        assert row[3] == f"{b.mean() - a.mean():+.3f}"
        low, high = cmp.miou_ci if cls == "mIoU" else cmp.ci[i]
        g = cmp.miou_g if cls == "mIoU" else cmp.g[i]
        assert row[4] == ("--" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]")
        assert row[5] == ("--" if math.isnan(g) else f"{g:+.2f}")
        for cell_p, p in ((row[6], raw[i]), (row[7], adjusted[i])):
            assert cell_p == ("--" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")
        assert row[8] == ("*" if sig else "")
    assert rows[4][4:8] == ["--"] * 4  # bicycle: one standard run, no test, no interval, no g
    assert "Benjamini-Hochberg" in text.split("\n\n", 1)[1]  # in the note under the table
    assert "marks adjusted p < 0.05" in text
    assert text.count("*") == sum(expected_sig)  # no marker anywhere else
    assert "61.2" not in text and "94.0 ± 0.8 (4)" in to_markdown(table, percent=True)


def test_latex_has_the_same_cells(runs):
    table = summarise(group(collect(runs)))
    text = to_latex(table)
    assert text.startswith(r"\begin{tabular}") and r"\end{tabular}" in text and r"instance\_uncertainty" in text
    rows = tex_rows(text)
    assert [r[0] for r in rows] == CLASSES + ["mIoU"]
    road = values("standard", "road")
    assert rows[0][1] == f"${road.mean():.3f} \\pm {road.std(ddof=1):.3f}$ ({len(road)})"
    assert rows[4][1] == f"${values('standard', 'bicycle').mean():.3f}$ (1)"
    sig = [q < 0.05 for q in welch_p_adj()]
    assert [r[-1] == "*" for r in rows] == sig
    assert text.count("*") == sum(sig)
    assert rows[2][4] == "$[{:+.3f}, {:+.3f}]$".format(*table.comparison.ci[2])
    assert rows[2][5] == f"${table.comparison.g[2]:+.2f}$"
    assert r"95\% CI" in text and "% Difference of means, its 95% CI" in text and "Benjamini-Hochberg" in text


def test_csv_parses_back_to_the_same_numbers(runs):
    table = summarise(group(collect(runs)))
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["class"] for r in rows] == CLASSES + ["mIoU"]
    for i, row in enumerate(rows):
        for col in table.columns:
            stat = col.miou if i == len(CLASSES) else col.cells[i]
            assert float(row[f"{col.label} mean"]) == stat.mean
            assert int(row[f"{col.label} n"]) == stat.n
            assert (row[f"{col.label} std"] == "") if math.isnan(stat.std) else float(row[f"{col.label} std"]) == stat.std
        p = scipy_p_miou() if i == len(CLASSES) else scipy_p(CLASSES[i])
        q = welch_p_adj()[i]
        if math.isnan(p):
            assert math.isnan(q)
            assert row["p"] == row["p (BH)"] == row["p (BH) < 0.05"] == ""
            assert row["ci low"] == row["ci high"] == row["hedges g"] == ""
        else:
            assert float(row["p"]) == pytest.approx(p, abs=1e-8)
            assert float(row["p (BH)"]) == pytest.approx(q, abs=1e-8)
            assert row["p (BH) < 0.05"] == ("*" if q < 0.05 else "")
        cmp = table.comparison
        low, high = cmp.miou_ci if i == len(CLASSES) else cmp.ci[i]
        g = cmp.miou_g if i == len(CLASSES) else cmp.g[i]
        for key, x in (("ci low", low), ("ci high", high), ("hedges g", g)):
            assert (row[key] == "") if math.isnan(x) else float(row[key]) == x
    rider = rows[2]
    assert float(rider["difference"]) == pytest.approx(values("instance_uncertainty", "rider").mean()
                                                       - values("standard", "rider").mean(), abs=1e-12)
    a, b = values("standard", "rider"), values("instance_uncertainty", "rider")
    assert float(rider["se"]) == pytest.approx(math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    lo, hi = welch_ci(b, a)
    assert (float(rider["ci low"]), float(rider["ci high"])) == pytest.approx((lo, hi), abs=1e-12)
    assert float(rider["hedges g"]) == pytest.approx(hand_hedges_g(b, a), abs=1e-12)
    percent = list(csv.DictReader(io.StringIO(to_csv(table, percent=True))))
    assert float(percent[0]["standard mean"]) == pytest.approx(100 * table.columns[0].cells[0].mean)
    # the interval is in IoU units (scaled with --percent), g has none
    assert float(percent[2]["ci low"]) == pytest.approx(100 * lo) and percent[2]["hedges g"] == rider["hedges g"]


def test_formats_name_the_std_and_the_test(runs):
    default = summarise(group(collect(runs)))
    chosen = summarise(group(collect(runs)), std="population", test="student")
    md, md2 = to_markdown(default), to_markdown(chosen)
    assert "sample std (ddof=1)" in md and "Welch's t-test (unequal variances)" in md
    assert "population std (ddof=0; with one run, 0)" in md2 and "Student's t-test (equal variances, pooled" in md2
    assert "Welch" not in md2 and "sample std" not in md2
    assert "p (Student)" in md2.splitlines()[0]
    tex = to_latex(chosen)
    assert "p (Student)" in tex and "% Cells: IoU, mean ± population std (ddof=0" in tex
    assert "% Difference of means, its 95% CI (pooled se" in tex and "Student's t-test (equal variances" in tex
    assert "Welch-Satterthwaite" in md and "Welch-Satterthwaite" not in md2
    rows = list(csv.DictReader(io.StringIO(to_csv(default))))
    assert {r["std"] for r in rows} == {"sample (ddof=1)"} and {r["test"] for r in rows} == {"Welch's t-test"}
    rows = list(csv.DictReader(io.StringIO(to_csv(chosen))))
    assert {r["std"] for r in rows} == {"population (ddof=0)"} and {r["test"] for r in rows} == {"Student's t-test"}
    assert float(rows[4]["standard std"]) == 0.0  # one run
    for row, cls in zip(rows, CLASSES):
        assert float(row["standard std"]) == pytest.approx(np.std(values("standard", cls)), abs=1e-15)
    one = list(csv.DictReader(io.StringIO(to_csv(summarise(group(collect(runs / "acdc_ensemble" / "standard")))))))
    assert "test" not in one[0] and one[0]["std"] == "sample (ddof=1)"


def test_cli_population_std_and_student_test(runs, capsys, tmp_path, monkeypatch):
    assert main(["report", str(runs), "--std", "population", "--test", "student"]) == 0
    text = capsys.readouterr().out
    assert "Student's t-test" in text and "population std (ddof=0" in text and "Welch" not in text
    header = [c.strip() for c in text.splitlines()[0].strip("|").split(" | ")]
    assert header[-3:] == ["p (Student)", "p (BH)", "p (BH) < 0.05"]
    rows = md_rows(text)
    assert [r[0] for r in rows] == CLASSES + ["mIoU"]
    pairs = [(mious("standard"), mious("instance_uncertainty")) if cls == "mIoU"
             else (values("standard", cls), values("instance_uncertainty", cls)) for cls in CLASSES + ["mIoU"]]
    raw = [sp_stats.ttest_ind(b, a).pvalue for a, b in pairs]
    adjusted = scipy_p_adj(raw)
    sig = []
    for row, (a, b), p, q in zip(rows, pairs, raw, adjusted):
        assert row[1] == f"{a.mean():.3f} ± {np.std(a):.3f} ({len(a)})"  # np.std: with one run, ± 0.000
        assert row[2] == f"{b.mean():.3f} ± {np.std(b):.3f} ({len(b)})"
        assert row[-3] == (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")
        assert row[-2] == (f"{q:.3f}" if q >= 0.001 else f"{q:.1e}")
        assert row[-1] == ("*" if q < 0.05 else "")
        sig.append(q < 0.05)
    # bicycle: one standard run, still tested, with an interval; no Hedges' g (needs 2 runs a side)
    assert rows[4][1].endswith("± 0.000 (1)") and rows[4][-3] != "--" and rows[4][4] != "--" and rows[4][5] == "--"
    assert text.count("*") == sum(sig)
    # the files and the figure follow the same options
    drawn = drawn_figures(monkeypatch, iwu.plots.difference)
    assert main(["report", str(runs), "--std", "population", "--test", "student", "--format", "csv",
                 "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert float(rows[0]["standard std"]) == pytest.approx(np.std(values("standard", "road")), abs=1e-15)
    assert rows[0]["test"] == "Student's t-test"
    assert (tmp_path / "out" / "difference.png").is_file()
    (figure,) = drawn.values()
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    # the whiskers are the table's intervals, those of the test asked for (the std does not enter them)
    assert legend[0] == "higher, Student p (BH-adjusted) < 0.05" and legend[-1] == "95% CI of the difference"
    assert "95% CI of the difference (Student's t)" in figure.axes[0].get_title()
    # the defaults are the sample std and Welch's test
    assert main(["report", str(runs)]) == 0
    text = capsys.readouterr().out
    assert "p (Welch)" in text and "sample std (ddof=1)" in text
    road = values("standard", "road")
    assert md_rows(text)[0][1] == f"{road.mean():.3f} ± {road.std(ddof=1):.3f} (4)"


# ----------------------------------------------------------------------------------------------- the paper


def test_packaged_tables_are_the_shared_transcription():
    if not SHARED_TABLES.exists():
        pytest.skip("no shared copy of the paper here")
    assert PACKAGE_TABLES.read_bytes() == SHARED_TABLES.read_bytes()


def published():
    return json.loads(PACKAGE_TABLES.read_text())


def test_paper_columns_load_every_table():
    data = published()
    for name in ("table1_acdc", "table2_cityscapes_r101", "table3_cross_domain_r101"):
        cols = paper_columns(name)
        assert len(cols) == len(data[name]["columns"])
        for col, raw in zip(cols, data[name]["columns"]):
            assert list(col.mean) == raw["iou_mean"] and list(col.std) == raw["iou_std"] and col.miou == raw["miou"]
            assert (col.mode, col.model) == (raw["mode"], raw["model"])
    assert [(c.train, c.eval) for c in paper_columns("table1")] == [("acdc", "acdc")] * 6
    assert {(c.train, c.eval) for c in paper_columns("table3")} == {("cityscapes", "acdc"), ("acdc", "cityscapes")}
    with pytest.raises(UserError, match="table1_acdc, table2_cityscapes_r101, table3_cross_domain_r101") as err:
        paper_columns("table9")
    assert "\n" not in str(err.value)


def paper_runs(root, seeds=3, val_extra=False):
    """ACDC runs with the paper's 19 classes: standard and instance_uncertainty, an ensemble of two."""
    classes = published()["classes"]
    rng = np.random.default_rng(3)
    for mode in ("standard", "instance_uncertainty"):
        for seed in range(seeds):
            iou = [round(float(v), 4) for v in rng.uniform(0.1, 0.95, len(classes))]
            results = {"ensemble": iou, "deeplabv3plus_resnet101": [round(v * 0.98, 4) for v in iou]}
            extra = {"cityscapes/val": {m: [round(v * 0.7, 4) for v in x] for m, x in results.items()}}
            write_run(root / mode / f"seed{seed}", mode, seed, results, classes=classes,
                      val_extra=extra if val_extra else None)
    return root


def test_match_paper_finds_the_published_column_and_std_units(tmp_path):
    data, classes = published(), published()["classes"]
    groups = group(collect(paper_runs(tmp_path), member="deeplabv3plus_resnet101"))
    found = match_paper(groups["standard"], "table1_acdc")
    raw = next(c for c in data["table1_acdc"]["columns"]
               if c["mode"] == "standard" and c["model"] == "deeplabv3plus_resnet101")
    assert (found.mode, found.model, found.train, found.eval) == ("standard", "deeplabv3plus_resnet101", "acdc", "acdc")
    assert list(found.mean) == raw["iou_mean"] and list(found.std) == raw["iou_std"]
    assert match_paper(groups["standard"], "table2_cityscapes_r101") is None  # other dataset
    assert match_paper(group(collect(tmp_path))["standard"], "table1_acdc") is None  # no ensemble column

    table = summarise(groups, paper="table1")
    match = table.paper["standard"]
    ours = np.array([[r.iou[i] for r in groups["standard"]] for i in range(len(classes))]).mean(axis=1)
    wall, sidewalk = classes.index("wall"), classes.index("sidewalk")
    assert raw["iou_std"][wall] == 0.01 and raw["iou_std"][sidewalk] == 0.0
    assert match.cells[wall].z == pytest.approx((ours[wall] - raw["iou_mean"][wall]) / 0.01)
    assert match.cells[sidewalk].raw and match.cells[sidewalk].diff == pytest.approx(ours[sidewalk] - 0.79)
    assert match.miou.raw and match.miou.mean == raw["miou"]  # table 1 prints no mIoU std

    text = to_markdown(table)
    rows = {r[0]: r for r in md_rows(text)}
    assert rows["wall"][2] == f"{raw['iou_mean'][wall]:.2f} ± 0.01"
    assert rows["wall"][3] == f"{(ours[wall] - raw['iou_mean'][wall]) / 0.01:+.1f}"
    assert rows["sidewalk"][3] == f"{ours[sidewalk] - 0.79:+.3f}\u2020"
    assert f"${ours[sidewalk] - 0.79:+.3f}^\\dagger$" in to_latex(table)
    row = next(csv.DictReader(io.StringIO(to_csv(table))))
    assert float(row["standard paper mean"]) == raw["iou_mean"][0]
    assert float(row["standard ours-paper"]) == pytest.approx(ours[0] - raw["iou_mean"][0])


def test_cross_domain_groups_match_table3(tmp_path):
    groups = group(collect(paper_runs(tmp_path, seeds=2, val_extra=True), member="deeplabv3plus_resnet101"))
    assert list(groups) == ["standard / acdc->acdc", "standard / acdc->cityscapes",
                            "instance_uncertainty / acdc->acdc", "instance_uncertainty / acdc->cityscapes"]
    table = summarise(groups, paper="table3_cross_domain_r101")
    assert table.paper["standard / acdc->acdc"] is None
    match = table.paper["instance_uncertainty / acdc->cityscapes"]
    col = next(c for c in published()["table3_cross_domain_r101"]["columns"]
               if c["mode"] == "instance_uncertainty" and c["train"] == "acdc")
    assert list(match.column.mean) == col["iou_mean"] and match.miou.std == col["miou_std"] == 0.01
    ours = table.column("instance_uncertainty / acdc->cityscapes").miou.mean
    assert match.miou.z == pytest.approx((ours - col["miou"]) / 0.01)
    with pytest.raises(UserError, match="no published column matches"):
        summarise(group(collect(tmp_path)), paper="table3")


# ----------------------------------------------------------------------------------------------- errors


def one_line(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message


def test_a_folder_without_runs_is_named(tmp_path, runs):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        collect([runs, tmp_path / "empty"])
    one_line(err, tmp_path / "empty", "final.json")
    with pytest.raises(UserError) as err:
        collect(tmp_path / "missing")
    one_line(err, tmp_path / "missing")


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"dataset": "acdc", "classes": CLASSES, "results": {}}), "mode"),
    (json.dumps({"mode": "standard", "dataset": "acdc", "classes": CLASSES,
                 "results": {"ensemble": {"miou": 0.5, "iou": [0.5] * 4}}}), "4 IoUs for 5 classes"),
    (json.dumps({"mode": "standard", "dataset": "acdc", "classes": CLASSES,
                 "results": {"ensemble": {"miou": 0.5, "iou": ["x"] * 5}}}), "'x'"),
])
def test_a_malformed_final_json_is_named(tmp_path, runs, content, needle):
    bad = tmp_path / "bad" / "seed0" / "final.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(content)
    with pytest.raises(UserError) as err:
        collect([runs, tmp_path / "bad"])
    one_line(err, bad, needle)


SCORES = [0.9, 0.8, 0.1, 0.5, 0.3]


@pytest.mark.parametrize("iou, miou, shown", [
    ([0.9, -3, 0.1, 0.5, 0.3], 0.5, "-3"),  # as a tampered file holds them
    (SCORES, 7.5, "7.5"),
    ([0.9, 1.5, 0.1, 0.5, 0.3], 0.5, "1.5"),
    ([0.9, float("inf"), 0.1, 0.5, 0.3], 0.5, "inf"),  # JSON's Infinity
    (SCORES, float("-inf"), "-inf"),
    ([0.9, float("nan"), 0.1, 0.5, 0.3], 0.5, "nan"),  # iwu writes null for a class it did not score
    (SCORES, float("nan"), "nan"),  # a NaN mIoU beside scored classes
    (SCORES, 10 ** 400, "1000"),  # too large for a float
])
def test_scores_outside_0_to_1_are_refused_naming_the_file(tmp_path, runs, capsys, iou, miou, shown):
    bad = tmp_path / "bad" / "seed0" / "final.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"mode": "standard", "dataset": "acdc", "classes": CLASSES,
                               "results": {"ensemble": {"miou": miou, "iou": iou}}}))
    with pytest.raises(UserError) as err:
        collect([runs, tmp_path / "bad"])
    one_line(err, bad, "results['ensemble']", shown, "a number from 0 to 1")
    assert main(["report", str(runs), str(tmp_path / "bad")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and str(bad) in out.err and len(out.err.strip().splitlines()) == 1


def test_scores_of_an_eval_file_are_checked_too_and_a_set_without_labels_is_not_refused(tmp_path):
    run = write_run(tmp_path / "r", "standard", 0, {"ensemble": SCORES})
    unlabelled = {"miou": float("nan"), "iou": [None] * 5}  # how iwu scores a set without one labelled pixel
    (run / "eval_darkzurich.json").write_text(json.dumps({"dataset": "darkzurich", "split": "val", "classes": CLASSES,
                                                          "results": {"ensemble": unlabelled}}))
    got = {r.eval: r for r in collect(run)}
    assert got["darkzurich"].miou is None and got["darkzurich"].iou == (None,) * 5
    assert got["acdc"].iou == tuple(SCORES) and got["acdc"].miou == pytest.approx(sum(SCORES) / 5)
    (run / "eval_darkzurich.json").write_text(json.dumps({"dataset": "darkzurich", "split": "val", "classes": CLASSES,
                                                          "results": {"ensemble": {"miou": 0.5, "iou": [2] * 5}}}))
    with pytest.raises(UserError) as err:
        collect(run)
    one_line(err, run / "eval_darkzurich.json", "2")


def test_runs_with_other_classes_or_members_are_refused(tmp_path, runs):
    odd = write_run(tmp_path / "odd", "standard", 7, {"ensemble": [0.5] * 4}, classes=CLASSES[:4])
    with pytest.raises(UserError) as err:
        collect([runs, odd])
    one_line(err, odd / "final.json", "classes")
    with pytest.raises(UserError) as err:
        collect(runs, member="deeplabv3plus_resnet50")
    one_line(err, "final.json", "deeplabv3plus_resnet50", "has: ensemble")
    twin = write_run(tmp_path / "copy", "standard", 0, {"ensemble": run_iou("standard", 0)})
    with pytest.raises(UserError) as err:
        collect([runs, twin])
    one_line(err, twin, "seed 0")


# ----------------------------------------------------------------------------------------------- files


def welch_half_width(x, y, level=0.95):
    """Half the Welch interval of mean(y) - mean(x), by hand: t quantile at the Welch-Satterthwaite df times se."""
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
    return sp_stats.t.ppf((1 + level) / 2, df) * math.sqrt(va + vb)


def test_difference_figure_shows_each_difference_its_interval_and_significance(tmp_path, runs):
    from matplotlib.colors import to_rgba

    table = summarise(group(collect(runs)))
    counts = tmp_path / "class_counts.json"
    counts.write_text(json.dumps({"classes": CLASSES, "counts": [500, 300, 5, 10, 8], "ignored": 3}))
    share = report.load_class_share(counts, CLASSES)
    fig = difference_figure(difference_bars(table, "standard", "instance_uncertainty", class_share=share,
                                            percent=True))
    (ax,) = fig.axes
    order = ["road", "car", "train", "bicycle", "rider"]  # the most to the least frequent in training
    a, b = [values("standard", c) for c in order], [values("instance_uncertainty", c) for c in order]
    diff = [y.mean() - x.mean() for x, y in zip(a, b)] + [mious("instance_uncertainty").mean() - mious("standard").mean()]
    half = [welch_half_width(x, y) if len(x) > 1 else math.nan
            for x, y in zip(a, b)] + [welch_half_width(mious("standard"), mious("instance_uncertainty"))]
    bars, whiskers = ax.containers
    assert [r.get_height() for r in bars] == pytest.approx([100 * d for d in diff])
    # whiskers: the 95% interval the table gives (Welch's), none for bicycle (one standard run), marked n<2 instead
    segments = whiskers.lines[2][0].get_segments()
    assert [(s[1][1] - s[0][1]) / 2 for s in segments] == pytest.approx([100 * h for h in half if not math.isnan(h)])
    cmp = table.comparison
    table_ci = [cmp.ci[CLASSES.index(c)] for c in order if c != "bicycle"] + [cmp.miou_ci]
    assert [y for s in segments for y in (s[0][1], s[1][1])] == pytest.approx([100 * v for ci in table_ci for v in ci])
    assert [s[0][0] for s in segments] == [r.get_x() + r.get_width() / 2 for i, r in enumerate(bars) if i != 3]
    assert [t.get_text() for t in ax.texts] == ["n<2"]
    adjusted = dict(zip([*CLASSES, "mIoU"], welch_p_adj()))
    significant = [adjusted[c] < 0.05 for c in [*order, "mIoU"]]
    expected = [to_rgba(("C2" if d >= 0 else "C3") if s else "0.7") for d, s in zip(diff, significant)]
    assert [r.get_facecolor() for r in bars] == expected
    assert any(significant) and not all(significant)
    ticks = ax.get_xticklabels()
    assert [t.get_text() for t in ticks] == ["road (60.75%)", "car (36.45%)", "train (1.22%)", "bicycle (0.97%)",
                                             "rider (0.61%)", "mIoU"]
    assert [t.get_fontweight() == "bold" for t in ticks] == significant
    assert ax.get_ylabel() == "difference in IoU x 100"
    assert fig.get_suptitle() == "instance_uncertainty - standard (acdc_ensemble, ensemble, on acdc/val)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "higher, Welch p (BH-adjusted) < 0.05", "lower, Welch p (BH-adjusted) < 0.05",
        "not significant after Benjamini-Hochberg", "95% CI of the difference"]
    assert "whiskers: the table's 95% CI of the difference (Welch's t)" in ax.get_title()


def student_half_width(x, y, level=0.95):
    """Half the Student interval of mean(y) - mean(x), by hand: pooled se, df = n_x + n_y - 2."""
    df = len(x) + len(y) - 2
    pooled = (((len(x) - 1) * x.var(ddof=1) if len(x) > 1 else 0.0) + (len(y) - 1) * y.var(ddof=1)) / df
    return sp_stats.t.ppf((1 + level) / 2, df) * math.sqrt(pooled * (1 / len(x) + 1 / len(y)))


def test_difference_figure_follows_the_tables_test(runs):
    # the population std changes the table's cells, not the intervals: those are the test's
    table = summarise(group(collect(runs)), std="population", test="student")
    bars = difference_bars(table, 0, 1)
    for i, cls in ((2, "rider"), (4, "bicycle")):  # bicycle: one standard run, an interval all the same
        x, y = values("standard", cls), values("instance_uncertainty", cls)
        d, h = y.mean() - x.mean(), student_half_width(x, y)
        assert bars.intervals[i] == pytest.approx((d - h, d + h)) == table.comparison.ci[i]
    assert bars.notes == ("",) * 6
    assert bars.names == (*CLASSES, "mIoU")  # no class shares: the table's order
    assert bars.legend[0] == "higher, Student p (BH-adjusted) < 0.05" and "(Student's t)" in bars.subtitle
    assert bars.significant == tuple(table.comparison.significant(i) for i in (*range(5), None))


def test_difference_figure_is_written_atomically(tmp_path, runs):
    table = summarise(group(collect(runs)))
    path = save_difference_figure(table, 0, 1, tmp_path / "fig" / "d.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1]
    assert [p.name for p in path.parent.iterdir()] == ["d.png"]  # no temporary file left


def test_write_report_writes_the_table_and_the_figure(tmp_path, runs, capsys):
    out = tmp_path / "report"
    counts = tmp_path / "counts"
    counts.mkdir()
    (counts / "class_counts.json").write_text(json.dumps({"classes": CLASSES[::-1], "counts": [1, 2, 3, 4, 90]}))
    written = write_report([runs], out, by=None, member="ensemble", fmt="md", class_counts=counts)
    assert written == {"md": out / "report.md", "figure": out / "difference.png"}
    text = written["md"].read_text()
    rows = md_rows(text)
    assert rows[0][:2] == ["road", "90.00"]  # share of road (its count listed last in the file)
    with Image.open(written["figure"]) as img:
        assert img.format == "PNG"

    written = write_report(runs, out, fmt="tex,csv", percent=True)
    assert set(written) == {"tex", "csv", "figure"} and written["tex"].name == "report.tex"
    assert run_report([runs], out=None, fmt="csv") == 0
    printed = capsys.readouterr().out
    assert printed.startswith("class,standard mean") and "wrote" not in printed
    assert run_report(runs, out=tmp_path / "r2") == 0
    printed = capsys.readouterr().out
    assert "| road |" in printed and f"wrote {tmp_path / 'r2' / 'report.md'}" in printed
    with pytest.raises(UserError, match="choose from md, tex, csv"):
        write_report(runs, out, fmt="html")


def test_a_class_scored_0_in_both_columns_is_marked_on_the_axis(tmp_path):
    from iwu.plots.difference import WHISKERS

    classes = ["road", "rare"]
    for mode, road in (("standard", [0.90, 0.92]), ("instance_uncertainty", [0.93, 0.96])):
        for seed, value in enumerate(road):
            write_run(tmp_path / mode / f"seed{seed}", mode, seed, {"ensemble": [value, 0.0]}, classes=classes)
    table = summarise(group(collect(tmp_path)))
    bars = difference_bars(table, "standard", "instance_uncertainty")
    assert bars.diffs[1] == 0.0 and bars.notes == ("", "no spread", "")  # 0 in every run: no interval
    fig = difference_figure(bars)
    (ax,) = fig.axes
    bar = ax.containers[0][1]
    assert bar.get_height() == 0  # nothing to see of the bar itself
    (marker,) = [line for line in ax.get_lines() if line.get_marker() == "D"]
    assert list(marker.get_xdata()) == [bar.get_x() + bar.get_width() / 2] and list(marker.get_ydata()) == [0.0]
    assert marker.get_color() == WHISKERS
    assert [t.get_text() for t in ax.texts] == ["no spread"]


def test_a_line_break_in_a_name_is_escaped_in_every_format(tmp_path):
    classes = ["road", "car\r\nbus"]
    for experiment, base in (("night\nruns", 0.5), ("day runs", 0.6)):
        for seed in range(2):
            write_run(tmp_path / experiment.replace("\n", "_") / f"seed{seed}", "standard", seed,
                      {"ensemble": [base + 0.01 * seed, base - 0.01 * seed]}, classes=classes, experiment=experiment)
    table = summarise(group(collect(tmp_path), by="experiment"))
    md = to_markdown(table)
    rows = md.split("\n\n")[0].splitlines()
    assert len(rows) == 2 + len(classes) + 1 and all(r.startswith("|") and r.endswith("|") for r in rows)
    assert "| day runs | night\\nruns |" in rows[0] and rows[3].startswith("| car\\r\\nbus |")
    assert "night\\nruns - day runs" in md
    tex = to_latex(table)
    body = tex.split(r"\end{tabular}")[0].splitlines()[2:]
    assert all(line.endswith((r"\\", r"\midrule", r"\bottomrule")) for line in body)
    assert r"night\textbackslash{}nruns" in tex and r"car\textbackslash{}r\textbackslash{}nbus" in tex
    assert all(line.startswith("%") for line in tex.split(r"\end{tabular}")[1].splitlines()[1:])
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert len(rows) == 1 + len(classes) + 1 and "night\\nruns mean" in rows[0] and rows[2][0] == "car\\r\\nbus"


def test_one_group_writes_no_figure(tmp_path, runs):
    written = write_report(runs / "acdc_ensemble" / "standard", tmp_path / "out")
    assert set(written) == {"md"}
    assert "p < 0.05" not in written["md"].read_text()


# ----------------------------------------------------------------------------------------------- --eval, --rare


def test_eval_keeps_one_validation_set_and_names_the_others(tmp_path, capsys):
    for mode in IOU:
        for seed in range(seeds_of(mode)):
            iou = run_iou(mode, seed)
            write_run(tmp_path / mode / f"seed{seed}", mode, seed, {"ensemble": iou},
                      val_extra={"cityscapes/val": {"ensemble": iou[::-1]}})
    both = build_table([tmp_path])
    assert len(both.columns) == 4 and both.comparison is None
    cross = build_table([tmp_path], eval_set="cityscapes")
    assert [c.label for c in cross.columns] == ["standard", "instance_uncertainty"]
    assert cross.comparison is not None  # two columns again: the test, intervals and BH come back
    assert all(r.eval == "cityscapes" for c in cross.columns for r in c.records)
    # road's cross-domain IoU is the reversed list's: bicycle's position
    assert cross.columns[0].cells[0].mean == pytest.approx(values("standard", "bicycle").mean())
    assert main(["report", str(tmp_path), "--eval", "darkzurich"]) == 2
    assert "--eval darkzurich: no run was scored on it; the runs hold acdc, cityscapes" in capsys.readouterr().err


def test_rare_row_is_each_runs_mean_over_the_rarest_classes_and_is_tested(tmp_path, runs, capsys):
    counts = tmp_path / "class_counts.json"
    # rarest first: bicycle (1), rider (2), train (3); road never appears in training and is left out
    counts.write_text(json.dumps({"classes": CLASSES, "counts": [0, 50, 2, 3, 1]}))
    table = build_table([runs], class_counts=counts, rare=2)
    assert table.classes[-1] == "2 rarest (mean)" and table.rarest == ("bicycle", "rider")
    assert table.share[-1] == pytest.approx(3 / 56)
    for col in table.columns:
        want = []
        for seed in range(seeds_of(col.label)):
            present = [IOU[col.label][c][seed] for c in ("bicycle", "rider") if IOU[col.label][c][seed] is not None]
            want.append(sum(present) / len(present))
        assert list(col.samples[-1]) == pytest.approx(want)
    cmp = table.comparison
    a, b = table.columns[0].samples[-1], table.columns[1].samples[-1]
    assert cmp.tests[-1].p == pytest.approx(sp_stats.ttest_ind(b, a, equal_var=False).pvalue, rel=1e-12)
    # the row is one more test in the Benjamini-Hochberg family
    ps = [t.p for t in cmp.tests] + [cmp.miou_test.p]
    keep = [p for p in ps if not math.isnan(p)]
    assert cmp.p_adj[-1] == pytest.approx(sp_stats.false_discovery_control(keep)[keep.index(cmp.tests[-1].p)])
    # the mIoU row is untouched
    assert table.columns[0].miou.mean == pytest.approx(mious("standard").mean())
    assert main(["report", str(runs), "--class-counts", str(counts), "--rare", "2"]) == 0
    out = capsys.readouterr().out
    assert "| 2 rarest (mean) | 5.36 |" in out and "rarest in training (bicycle, rider)" in out
    assert main(["report", str(runs), "--rare", "2"]) == 2
    assert "needs --class-counts" in capsys.readouterr().err
    assert main(["report", str(runs), "--class-counts", str(counts), "--rare", "5"]) == 2
    assert "only 4 classes with pixels" in capsys.readouterr().err


def test_in_domain_and_cross_domain_of_the_same_runs_are_not_tested_against_each_other(tmp_path, capsys):
    for seed in range(3):
        iou = run_iou("standard", seed)
        write_run(tmp_path / f"seed{seed}", "standard", seed, {"ensemble": iou},
                  val_extra={"cityscapes/val": {"ensemble": iou[::-1]}})
    table = build_table([tmp_path])
    assert [c.label for c in table.columns] == ["standard / acdc->acdc", "standard / acdc->cityscapes"]
    assert table.comparison is None  # two views of the same runs, not two samples
    written = write_report([tmp_path], tmp_path / "out")
    assert "figure" not in written and "p (Welch)" not in written["md"].read_text()


def test_class_counts_by_dataset_are_those_iwu_prepare_wrote(tmp_path, runs, capsys, monkeypatch):
    monkeypatch.setenv("IWU_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "acdc"
    assert main(["synth", "--out", str(data), "--layout", "acdc", "--n-train", "4", "--n-val", "4",
                 "--size", "64"]) == 0
    spec = f"acdc:{data}"
    capsys.readouterr()
    assert main(["report", str(runs), "--class-counts", spec]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"iwu report: error: {spec}: no up-to-date store of its train split in {tmp_path / 'cache'} to count classes "
        f"from; make one with `iwu prepare --data {spec} --split train` (prepared under --cache-dir D: IWU_CACHE=D)"]
    assert main(["prepare", "--data", spec, "--size", "32", "--split", "train", "--workers", "0"]) == 0
    counts = next((tmp_path / "cache").glob("acdc-train-32-*/class_counts.json"))
    record = json.loads(counts.read_text())
    by_name = dict(zip(record["classes"], record["counts"]))
    assert report.load_class_share(spec, CLASSES) == tuple(by_name[c] / sum(record["counts"]) for c in CLASSES)
    capsys.readouterr()
    printed = []
    for given in (counts, spec):  # the same report, train shares and rarest row, from the file and from the dataset
        assert main(["report", str(runs), "--class-counts", str(given), "--rare", "2"]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and "| 2 rarest (mean) |" in printed[0] and "| train % |" in printed[0]
