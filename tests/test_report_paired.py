"""`iwu report`'s paired comparison: runs of two modes with one seed start from the same weights and see
the same batches, so the per-seed difference is the unit. The paired t-test against
``scipy.stats.ttest_rel``, its 95% interval and Cohen's d_z against hand computations, the pairing by
seed (not by folder order), the default (paired for the same seeds of one experiment, Welch's otherwise,
and the output says which), the refusal of ``--test paired`` where the seeds differ, and every format
and the figure naming the test."""

import csv
import io
import math

import numpy as np
import pytest
from scipy import stats as sp_stats

import iwu.plots.difference
from iwu import report
from iwu.cli import main
from iwu.errors import UserError
from iwu.report import (
    build_table, cohen_dz, collect, confidence_interval, difference_bars, group, paired_t, summarise, to_csv,
    to_latex, to_markdown, write_report,
)

from drawn import drawn_figures
from test_report import md_rows, miou_of, tex_rows, write_run

CLASSES = ["road", "car", "rider", "train"]
SEEDS = [3, 7, 11, 20]  # not 0..n-1, and not in the order of the folders (below)
# per mode, per seed: one IoU per class (None: not scored in that run)
IOU = {
    "standard": {3: [0.94, 0.80, 0.15, 0.60], 7: [0.95, 0.82, 0.18, None],
                 11: [0.93, 0.81, 0.12, 0.55], 20: [0.94, 0.79, 0.16, 0.62]},
    "instance_uncertainty": {3: [0.945, 0.81, 0.25, 0.50], 7: [0.95, 0.80, 0.22, 0.52],
                             11: [0.935, 0.83, 0.20, None], 20: [0.94, 0.82, 0.24, 0.51]},
}


def write_runs(root, seeds=None, experiment="acdc_ensemble"):
    """runs/<mode>/<folder>/final.json; the folders of instance_uncertainty sort against their seeds."""
    seeds = seeds or {mode: SEEDS for mode in IOU}
    for mode, chosen in seeds.items():
        for k, seed in enumerate(chosen):
            folder = f"run{k}" if mode == "standard" else f"run{len(chosen) - k}"
            write_run(root / mode / folder, mode, seed, {"ensemble": IOU[mode][seed]}, classes=CLASSES,
                      experiment=experiment)
    return root


@pytest.fixture
def paired_runs(tmp_path):
    return write_runs(tmp_path / "runs")


def by_seed(mode, cls, seeds=SEEDS):
    """The IoUs of class `cls` (index, or "mIoU") in seed order, None where not scored."""
    if cls == "mIoU":
        return [miou_of(IOU[mode][s]) for s in seeds]
    return [IOU[mode][s][cls] for s in seeds]


def pairs(cls, seeds=SEEDS):
    """(instance_uncertainty, standard) arrays over the seeds both score."""
    both = [(b, a) for b, a in zip(by_seed("instance_uncertainty", cls, seeds), by_seed("standard", cls, seeds))
            if a is not None and b is not None]
    return np.array([b for b, _ in both]), np.array([a for _, a in both])


def hand_ci(b, a, level=0.95):
    """By hand: mean(d) -/+ t_{(1+level)/2, n-1} * sd(d) / sqrt(n), d = b - a."""
    d = np.asarray(b, float) - np.asarray(a, float)
    half = sp_stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def one_line(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


# ----------------------------------------------------------------------------------------------- statistics

SAMPLES = [
    ([0.50, 0.52, 0.49, 0.51], [0.55, 0.57, 0.56, 0.58]),  # a shift every seed shares
    ([0.30, 0.70, 0.45, 0.61, 0.50, 0.20], [0.31, 0.74, 0.44, 0.66, 0.52, 0.25]),  # wide spread, small gain
    ([0.31, 0.33], [0.32, 0.30]),  # two seeds
    (list(np.linspace(0.2, 0.4, 30)), list(np.linspace(0.2, 0.4, 30) + np.sin(np.arange(30)) / 50)),
]


@pytest.mark.parametrize("a, b", SAMPLES)
def test_paired_t_matches_scipy_ttest_rel(a, b):
    ref = sp_stats.ttest_rel(a, b)
    got = paired_t(a, b)
    assert got.t == pytest.approx(ref.statistic, rel=1e-10, abs=1e-8)
    assert got.df == ref.df == len(a) - 1
    assert got.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-12)


def test_paired_t_matches_scipy_on_random_samples_and_differs_from_welch():
    rng = np.random.default_rng(17)
    for _ in range(300):
        n = rng.integers(2, 20)
        base = rng.uniform(0.1, 0.9, n)  # what a seed shares in both modes
        a = base + rng.normal(0, 0.01, n)
        b = base + rng.normal(0, 0.05) + rng.normal(0, 0.01, n)
        ref, got = sp_stats.ttest_rel(a, b), paired_t(a, b)
        assert abs(got.t - ref.statistic) <= 1e-8 * max(1, abs(ref.statistic))
        assert got.df == ref.df and abs(got.p - ref.pvalue) <= 1e-8
    a, b = SAMPLES[1]  # a small gain in every seed, under a spread the seeds share: taken out by pairing
    assert paired_t(a, b).p < 0.05 < 0.8 < report.welch_t(a, b).p


def test_confidence_interval_and_d_z_by_hand():
    for a, b in SAMPLES:
        low, high = confidence_interval(a, b, "paired")
        assert (low, high) == pytest.approx(hand_ci(a, b), rel=1e-12, abs=1e-14)
        d = np.asarray(a) - np.asarray(b)
        assert cohen_dz(a, b) == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
        assert cohen_dz(b, a) == pytest.approx(-cohen_dz(a, b))
    # two seeds by hand: d = (-0.01, +0.03), mean 0.01, sd sqrt(0.0008), t_{0.975, 1} = 12.706...
    low, high = confidence_interval([0.31, 0.33], [0.32, 0.30], "paired")
    half = 12.706204736174698 * math.sqrt(0.0008) / math.sqrt(2)
    assert (low, high) == pytest.approx((0.01 - half, 0.01 + half), rel=1e-9)


def test_interval_agrees_with_the_paired_test():
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(300):
        n = rng.integers(2, 12)
        base = rng.uniform(0.2, 0.8, n)
        a, b = base + rng.normal(0, 0.02, n), base + rng.normal(0, 0.02) + rng.normal(0, 0.02, n)
        low, high = confidence_interval(a, b, "paired")
        p = paired_t(a, b).p
        assert low <= np.mean(a - b) <= high
        if abs(p - 0.05) > 1e-9:
            assert (not low <= 0.0 <= high) == (p < 0.05)
            seen.add(p < 0.05)
    assert seen == {True, False}


def test_a_pair_missing_a_side_drops_out_and_too_few_or_constant_pairs_give_nan():
    a, b = [0.5, None, 0.52, 0.49, 0.51], [0.55, 0.6, 0.57, None, 0.58]
    ref = sp_stats.ttest_rel([0.5, 0.52, 0.51], [0.55, 0.57, 0.58])
    assert paired_t(a, b).p == pytest.approx(ref.pvalue, rel=1e-10) and paired_t(a, b).df == 2
    assert confidence_interval(a, b, "paired") == pytest.approx(hand_ci([0.5, 0.52, 0.51], [0.55, 0.57, 0.58]))
    for a, b in (([0.3], [0.2]), ([0.3, None], [None, 0.2]), ([0.3, 0.4], [0.2, 0.3]), ([], [])):
        assert all(math.isnan(v) for v in paired_t(a, b))
        assert all(math.isnan(v) for v in confidence_interval(a, b, "paired"))
        assert math.isnan(cohen_dz(a, b))
    with pytest.raises(ValueError):
        paired_t([0.1, 0.2], [0.1])


# ----------------------------------------------------------------------------------------------- the table


def test_equal_seeds_are_paired_by_default_and_by_seed_not_by_folder(paired_runs):
    records = collect(paired_runs)
    ours = [r.seed for r in records if r.mode == "instance_uncertainty"]
    assert ours != sorted(ours)  # the folders list this mode's seeds in another order
    table = summarise(group(records))
    cmp = table.comparison
    assert table.test == cmp.test == "paired" and table.unpaired == ""
    assert cmp.seeds == tuple(SEEDS) and cmp.pairs == (4, 4, 4, 2) and cmp.miou_pairs == 4
    for i, cls in [*enumerate(CLASSES), (None, "mIoU")]:
        b, a = pairs("mIoU" if i is None else i)
        ref = sp_stats.ttest_rel(b, a)
        test = cmp.miou_test if i is None else cmp.tests[i]
        assert test.t == pytest.approx(ref.statistic, rel=1e-10) and test.df == ref.df
        assert test.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-12)
        diff, ci, g = ((cmp.miou_diff, cmp.miou_ci, cmp.miou_g) if i is None else
                       (cmp.diff[i], cmp.ci[i], cmp.g[i]))
        assert diff == pytest.approx((b - a).mean(), abs=1e-12)
        assert ci == pytest.approx(hand_ci(b, a), abs=1e-12)
        assert g == pytest.approx((b - a).mean() / (b - a).std(ddof=1), abs=1e-12)
        se = cmp.miou_se if i is None else cmp.se[i]
        assert se == pytest.approx((b - a).std(ddof=1) / math.sqrt(len(b)), abs=1e-12)
    # train: seed 7 has no standard score, seed 11 no instance_uncertainty one: two pairs left
    b, a = pairs(3)
    assert len(b) == 2 and cmp.diff[3] == pytest.approx(np.mean(b - a))
    # Benjamini-Hochberg over the classes and mIoU, as before
    raw = [t.p for t in cmp.tests] + [cmp.miou_test.p]
    assert list(cmp.p_adj) + [cmp.miou_p_adj] == pytest.approx(list(sp_stats.false_discovery_control(raw)))
    assert [cmp.significant(i) for i in range(4)] == [q < 0.05 for q in cmp.p_adj]
    # asked for, the same; Welch's test still on request
    assert build_table(paired_runs, test="paired").comparison == cmp
    welch = build_table(paired_runs, test="welch")
    assert welch.test == "welch" and welch.unpaired == ""
    ref = sp_stats.ttest_ind(pairs(1)[0], pairs(1)[1], equal_var=False)
    assert welch.comparison.tests[1].p == pytest.approx(ref.pvalue, rel=1e-8)


def test_population_std_changes_the_paired_se_not_the_test(paired_runs):
    sample = summarise(group(collect(paired_runs))).comparison
    population = summarise(group(collect(paired_runs)), std="population").comparison
    b, a = pairs(2)
    assert population.se[2] == pytest.approx(np.std(b - a) / 2, abs=1e-12)
    assert population.tests == sample.tests and population.ci == sample.ci and population.g == sample.g


def test_other_seeds_take_welch_by_default_and_say_why(tmp_path, capsys):
    root = write_runs(tmp_path, {"standard": SEEDS, "instance_uncertainty": SEEDS[:3]})
    table = build_table(root)
    assert table.test == "welch" and table.comparison.test == "welch"
    assert table.unpaired == "the columns hold other seeds (standard: 3, 7, 11, 20; instance_uncertainty: 3, 7, 11)"
    assert main(["report", str(root)]) == 0
    default = capsys.readouterr()
    assert "p (Welch)" in default.out and "Welch's t-test (unequal variances)" in default.out
    assert "paired" not in default.out
    assert default.err == ("note: the columns hold other seeds (standard: 3, 7, 11, 20; instance_uncertainty: "
                           "3, 7, 11): Welch's t-test, not the paired one\n")
    # the same report as Welch's asked for, which needs no note
    assert main(["report", str(root), "--test", "welch"]) == 0
    asked = capsys.readouterr()
    assert asked.out == default.out and asked.err == ""


def test_the_default_pairs_equal_seeds_and_the_output_says_so(paired_runs, capsys):
    assert main(["report", str(paired_runs)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    header = [c.strip() for c in out.out.splitlines()[0].strip("|").split(" | ")]
    assert header[3:] == ["instance_uncertainty - standard", "95% CI", "d_z", "p (paired)", "p (BH)", "p (BH) < 0.05"]
    assert "Runs paired by seed (3, 7, 11, 20)" in out.out and "paired t-test (on the per-seed differences" in out.out
    assert "Cohen's d_z" in out.out and "Welch" not in out.out and "Hedges" not in out.out
    rows = md_rows(out.out)
    b, a = pairs(2)
    assert rows[2][3] == f"{np.mean(b - a):+.3f}"
    assert rows[2][4] == "[{:+.3f}, {:+.3f}]".format(*hand_ci(b, a))
    p = sp_stats.ttest_rel(b, a).pvalue
    assert rows[2][6] == (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def test_a_pairing_asked_for_where_the_seeds_differ_is_refused_naming_them(tmp_path, capsys):
    root = write_runs(tmp_path, {"standard": SEEDS[:2], "instance_uncertainty": SEEDS[1:]})
    with pytest.raises(UserError) as err:
        build_table(root, test="paired")
    one_line(err, "--test paired", "standard: 3, 7;", "instance_uncertainty: 7, 11, 20")
    assert main(["report", str(root), "--test", "paired", "--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == (
        "iwu report: error: --test paired: the columns hold other seeds (standard: 3, 7; instance_uncertainty: "
        "7, 11, 20); pair runs of the same seeds, or choose --test welch\n")
    assert not (tmp_path / "out").exists()


def test_runs_of_other_experiments_or_without_a_seed_are_not_paired(tmp_path):
    write_runs(tmp_path / "a", {"standard": SEEDS}, experiment="night")
    write_runs(tmp_path / "b", {"instance_uncertainty": SEEDS}, experiment="day")
    table = build_table([tmp_path / "a", tmp_path / "b"], by="mode")
    assert table.test == "welch"
    assert table.unpaired == ("the columns hold runs of other experiments (standard: night; "
                              "instance_uncertainty: day)")
    with pytest.raises(UserError) as err:
        build_table([tmp_path / "a", tmp_path / "b"], by="mode", test="paired")
    one_line(err, "other experiments", "night", "day")
    # a final.json naming no seed: nothing to pair it by
    bare = tmp_path / "bare"
    for mode in IOU:
        for k in range(2):
            run = write_run(bare / mode / str(k), mode, SEEDS[k], {"ensemble": IOU[mode][SEEDS[k]]}, classes=CLASSES)
            if k == 1:
                text = (run / "final.json").read_text().replace(f'"seed": {SEEDS[k]}, ', "")
                (run / "final.json").write_text(text)
    table = build_table(bare)
    assert table.test == "welch" and table.unpaired.startswith("not every run names its seed (standard: 3, none;")


def test_one_column_or_two_validation_sets_are_not_tested_at_all(tmp_path, paired_runs):
    one = build_table(paired_runs / "standard")
    assert one.comparison is None and one.test == "welch" and one.unpaired == ""
    assert build_table(paired_runs / "standard", test="paired").comparison is None


# ----------------------------------------------------------------------------------------------- formats, figure


def test_every_format_names_the_paired_test(paired_runs):
    table = summarise(group(collect(paired_runs)))
    tex = to_latex(table)
    assert r"& d\_z & p (paired) &" in tex
    assert "% Runs paired by seed (3, 7, 11, 20): mean of the per-seed differences" in tex
    assert "paired t-test (on the per-seed differences, df = n - 1)" in tex
    rows = tex_rows(tex)
    assert rows[1][4] == "$[{:+.3f}, {:+.3f}]$".format(*table.comparison.ci[1])
    csv_rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert {r["test"] for r in csv_rows} == {"paired t-test"} and "hedges g" not in csv_rows[0]
    for row, i in zip(csv_rows, [0, 1, 2, 3, None]):
        b, a = pairs("mIoU" if i is None else i)
        assert float(row["difference"]) == pytest.approx(np.mean(b - a), abs=1e-12)
        assert (float(row["ci low"]), float(row["ci high"])) == pytest.approx(hand_ci(b, a), abs=1e-12)
        assert float(row["cohen d_z"]) == pytest.approx(np.mean(b - a) / np.std(b - a, ddof=1), abs=1e-12)
        assert float(row["df"]) == len(b) - 1
        assert float(row["p"]) == pytest.approx(sp_stats.ttest_rel(b, a).pvalue, rel=1e-8)
    md = to_markdown(table, percent=True)
    assert "| d_z | p (paired) |" in md and "paired t-test" in md


def test_the_figure_names_the_paired_test_and_draws_its_intervals(tmp_path, paired_runs, monkeypatch):
    table = summarise(group(collect(paired_runs)))
    bars = difference_bars(table, 0, 1)
    assert bars.intervals == (*table.comparison.ci, table.comparison.miou_ci)
    assert bars.diffs == pytest.approx((*table.comparison.diff, table.comparison.miou_diff))
    assert bars.legend[0] == "higher, paired p (BH-adjusted) < 0.05"
    assert bars.subtitle == "per class, mean of 4 per-seed differences; whiskers: the table's 95% CI of the " \
                            "difference (paired t)"
    assert bars.notes == ("",) * 5
    # a class both score in one seed only: too few pairs for an interval
    root = tmp_path / "few"
    for mode in IOU:
        for seed in SEEDS:
            iou = list(IOU[mode][seed])
            if mode == "standard" and seed in (3, 11):
                iou[3] = None
            write_run(root / mode / str(seed), mode, seed, {"ensemble": iou}, classes=CLASSES)
    few = summarise(group(collect(root)))
    assert few.comparison.pairs[3] == 1 and difference_bars(few, 0, 1).notes[3] == "n<2"
    drawn = drawn_figures(monkeypatch, iwu.plots.difference)
    written = write_report(paired_runs, tmp_path / "out", fmt="all")
    assert set(written) == {"md", "tex", "csv", "figure"}
    (fig,) = drawn.values()
    assert "(paired t)" in fig.axes[0].get_title()
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:2] == [
        "higher, paired p (BH-adjusted) < 0.05", "lower, paired p (BH-adjusted) < 0.05"]
