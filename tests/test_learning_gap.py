"""The learning curve of a gap: paired differences at every validation step, from the runs' metrics.csv."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from iwu.cli import main
from iwu.engine.run_dir import FINAL, METRICS
from iwu.errors import UserError
from iwu.plots.learning_gap import learning_gap_figure
from iwu.report.learning_gap import gap_markdown, learning_gap

CLASSES = ["road", "pole", "traffic light", "bus"]
COUNTS = [1000, 30, 10, 5]  # bus, then traffic light: the two rarest


def _run(folder, seed, scores):
    """A finished run of `seed` whose metrics.csv holds `scores`: {(set, step): (miou, [iou per class])},
    written sparse as Lightning's CSV logger does (a training-loss row between validations)."""
    folder.mkdir(parents=True)
    (folder / FINAL).write_text(json.dumps({"seed": seed, "classes": CLASSES}))
    sets = sorted({s for s, _ in scores})
    columns = ["step", "train/loss"]
    for s in sets:
        columns += [f"{s}/ensemble/miou", *(f"{s}/ensemble/iou/{c}" for c in CLASSES)]
    rows = []
    for step in sorted({t for _, t in scores}):
        rows.append({"step": step, "train/loss": 1.0})
        row = {"step": step}
        for s in sets:
            if (s, step) in scores:
                miou, ious = scores[s, step]
                row[f"{s}/ensemble/miou"] = miou
                row.update({f"{s}/ensemble/iou/{c}": v for c, v in zip(CLASSES, ious) if v is not None})
        rows.append(row)
    path = folder / METRICS
    path.parent.mkdir(parents=True)
    path.write_text(",".join(columns) + "\n" + "".join(
        ",".join(str(r.get(c, "")) for c in columns) + "\n" for r in rows))


def _ious(miou, bus, light):
    return miou, [0.9, 0.2, light, bus]


BASE = {0: {("val", 10): _ious(0.30, 0.10, 0.20), ("val", 20): _ious(0.40, 0.20, 0.30),
            ("val_cityscapes", 10): _ious(0.25, 0.05, 0.10), ("val_cityscapes", 20): _ious(0.35, 0.10, 0.20)},
        1: {("val", 10): _ious(0.32, 0.12, 0.20), ("val", 20): _ious(0.41, 0.20, 0.32),
            ("val_cityscapes", 10): _ious(0.27, 0.06, 0.10), ("val_cityscapes", 20): _ious(0.36, 0.12, 0.22)},
        2: {("val", 10): _ious(0.29, 0.08, 0.18), ("val", 20): _ious(0.38, 0.22, 0.30),
            ("val_cityscapes", 10): _ious(0.24, 0.05, 0.09), ("val_cityscapes", 20): _ious(0.33, 0.11, 0.20)}}
METHOD = {0: {("val", 10): _ious(0.28, 0.10, 0.25), ("val", 20): _ious(0.41, 0.25, None),
              ("val_cityscapes", 10): _ious(0.24, 0.05, 0.10), ("val_cityscapes", 20): _ious(0.36, 0.10, 0.20)},
          1: {("val", 10): _ious(0.31, 0.15, 0.20), ("val", 20): _ious(0.43, 0.20, 0.35),
              ("val_cityscapes", 10): _ious(0.25, 0.06, 0.10), ("val_cityscapes", 20): _ious(0.36, 0.12, 0.22)},
          2: {("val", 10): _ious(0.26, 0.08, 0.19), ("val", 20): _ious(0.40, 0.20, 0.30),
              ("val_cityscapes", 10): _ious(0.22, 0.05, 0.09), ("val_cityscapes", 20): _ious(0.35, 0.11, 0.20)},
          3: {("val", 10): _ious(0.9, 0.9, 0.9)}}  # a seed the baseline lacks: left out


@pytest.fixture
def runs(tmp_path):
    for mode, seeds in (("standard", BASE), ("instance_uncertainty", METHOD)):
        for seed, scores in seeds.items():
            _run(tmp_path / mode / f"seed{seed}", seed, scores)
    (tmp_path / "class_counts.json").write_text(json.dumps({"classes": CLASSES, "counts": COUNTS}))
    return tmp_path


def _paired(a, b):
    """The mean of a - b and its 95% interval, from scipy's paired t-test."""
    d = np.subtract(a, b)
    res = stats.ttest_rel(a, b)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert res.pvalue < 1.0
    return d.mean(), d.mean() - half, d.mean() + half


def test_each_step_is_the_paired_difference_over_the_seeds_both_modes_ran(runs):
    curves = learning_gap(runs / "standard", runs / "instance_uncertainty", rare=("bus", "traffic light"))
    assert [(c.eval_set, c.metric) for c in curves] == [
        ("val", "mIoU"), ("val", "2 rarest (mean)"), ("val_cityscapes", "mIoU"), ("val_cityscapes", "2 rarest (mean)")]
    assert all(c.seeds == (0, 1, 2) for c in curves)
    miou = curves[0]
    assert [p.step for p in miou.points] == [10, 20]
    method20 = [METHOD[s]["val", 20][0] for s in (0, 1, 2)]
    base20 = [BASE[s]["val", 20][0] for s in (0, 1, 2)]
    mean, low, high = _paired(method20, base20)
    point = miou.points[1]
    assert point.diffs == pytest.approx(np.subtract(method20, base20).tolist())
    assert (point.mean, point.low, point.high) == pytest.approx((mean, low, high))


def test_the_rare_row_averages_the_rare_classes_each_run_scored_at_that_step(runs):
    rare = learning_gap(runs / "standard", runs / "instance_uncertainty", rare=("bus", "traffic light"))[1]
    # seed 0 of the method scored no traffic light at step 20: its rare mean is the bus alone
    method20 = [0.25, (0.20 + 0.35) / 2, (0.20 + 0.30) / 2]
    base20 = [(0.20 + 0.30) / 2, (0.20 + 0.32) / 2, (0.22 + 0.30) / 2]
    assert rare.points[1].diffs == pytest.approx(np.subtract(method20, base20).tolist())
    assert (rare.points[1].mean, rare.points[1].low, rare.points[1].high) == pytest.approx(_paired(method20, base20))


def test_a_step_without_spread_has_a_mean_and_no_interval(runs):
    city = learning_gap(runs / "standard", runs / "instance_uncertainty")[1]  # mIoU only: [val, val_cityscapes]
    assert city.eval_set == "val_cityscapes"
    # at step 20 the differences are +0.01, 0.00, +0.02: spread; at step 10 they are -0.01, -0.02, -0.02
    assert not math.isnan(city.points[0].low)
    text = gap_markdown([city], {"val_cityscapes": "cityscapes"}, method="iu", baseline="std")
    assert "| step | cityscapes: mIoU |" in text
    lo, hi = city.points[1].low, city.points[1].high
    assert f"| 20 | {city.points[1].mean:+.3f} [{lo:+.3f}, {hi:+.3f}] |" in text
    assert text.startswith("iu - std, paired by seed (seeds 0, 1, 2)")


def test_folders_without_a_shared_seed_or_a_logged_validation_are_one_line(tmp_path, runs):
    _run(tmp_path / "other" / "seed7", 7, {("val", 10): _ious(0.5, 0.5, 0.5)})
    with pytest.raises(UserError, match="share no seed"):
        learning_gap(runs / "standard", tmp_path / "other")
    (runs / "standard" / "seed0" / METRICS).unlink()
    with pytest.raises(UserError, match="metrics.csv: missing"):
        learning_gap(runs / "standard", runs / "instance_uncertainty")


def test_the_figure_draws_each_curve_with_its_seeds_its_band_and_zero(runs):
    curves = learning_gap(runs / "standard", runs / "instance_uncertainty", rare=("bus", "traffic light"))
    fig = learning_gap_figure(curves, {"val": "acdc", "val_cityscapes": "cityscapes"}, title="iu - std")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["acdc: mIoU", "cityscapes: mIoU", "acdc: 2 rarest (mean)",
                                               "cityscapes: 2 rarest (mean)"]
    mean_line = next(line for line in axes[0].lines if line.get_label() == "mean of 3 seeds")
    assert list(mean_line.get_xdata()) == [10, 20]
    assert list(mean_line.get_ydata()) == pytest.approx([p.mean for p in curves[0].points])
    seeds = [line for line in axes[0].lines if line.get_color() == "0.65"]
    assert len(seeds) == 3
    assert list(seeds[2].get_ydata()) == pytest.approx([p.diffs[2] for p in curves[0].points])
    assert len(axes[0].collections) == 1  # the 95% band
    assert any(list(line.get_ydata()) == [0, 0] for line in axes[0].lines)  # the zero line


def test_iwu_report_gap_prints_the_table_and_writes_it_with_its_figure(runs, tmp_path, capsys):
    out = tmp_path / "gap"
    assert main(["report", str(runs / "standard"), str(runs / "instance_uncertainty"), "--gap", "--rare", "2",
                 "--class-counts", str(runs / "class_counts.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| step | val: mIoU | val: 2 rarest (mean) | val_cityscapes: mIoU | val_cityscapes: 2 rarest (mean) |" in printed
    assert (out / "learning_gap.md").read_text() in printed
    assert (out / "learning_gap.png").read_bytes().startswith(b"\x89PNG")
    assert main(["report", str(runs / "standard"), "--gap"]) == 2
    assert "--gap compares two folders of runs" in capsys.readouterr().err
