"""The segments' report (iwu.report.segments): modes compared over seeds on AUROC and R², with the IoU table's
statistics, from run directories holding eval files written by `iwu evaluate --segments`."""

import json

import numpy as np
import pytest
from scipy import stats

from iwu.errors import UserError
from iwu.report.segments import METRICS, collect_segments, run_segment_report, segment_table, to_markdown

VALUES = {  # mode -> per seed (headline AUROC, logistic AUROC, R², share of IoU 0)
    "standard": [(0.70, 0.80, 0.40, 0.30), (0.72, 0.83, 0.45, 0.32), (0.69, 0.81, 0.41, 0.29)],
    "instance_uncertainty": [(0.75, 0.84, 0.50, 0.31), (0.78, 0.85, 0.52, 0.30), (0.74, 0.86, 0.47, 0.28)],
}


def write_run(folder, mode, seed, values, *, dataset="cityscapes", extra=None):
    run = folder / mode / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "final.json").write_text(json.dumps({"experiment": "exp", "mode": mode, "seed": seed,
                                                "dataset": "cityscapes", "classes": ["a", "b"], "results": {}}))
    segments = dict(zip(METRICS, values)) if values is not None else None
    record = {"dataset": dataset, "checkpoint": "best_ensemble.ckpt", "evaluated": "ensemble",
              **({"segments": segments} if segments else {}), **(extra or {})}
    (run / f"eval_{dataset}.json").write_text(json.dumps(record))
    return run


@pytest.fixture
def runs(tmp_path):
    for mode, per_seed in VALUES.items():
        for seed, values in enumerate(per_seed):
            write_run(tmp_path, mode, seed, values)
    return tmp_path


def test_modes_are_compared_paired_by_seed_with_the_iou_tables_statistics(runs):
    table = segment_table(collect_segments(runs))
    assert table.labels == ("standard", "instance_uncertainty")
    cmp = table.comparison
    assert cmp.test == "paired" and cmp.seeds == (0, 1, 2)
    for i in range(len(METRICS)):
        a = np.array([v[i] for v in VALUES["standard"]])
        b = np.array([v[i] for v in VALUES["instance_uncertainty"]])
        assert table.cells[0][i].mean == pytest.approx(a.mean()) and table.cells[0][i].std == pytest.approx(a.std(ddof=1))
        assert table.cells[1][i].n == 3
        assert cmp.diff[i] == pytest.approx((b - a).mean())
        ref = stats.ttest_rel(b, a)
        assert cmp.tests[i].p == pytest.approx(ref.pvalue) and cmp.tests[i].t == pytest.approx(ref.statistic)
        half = stats.t.ppf(0.975, 2) * (b - a).std(ddof=1) / np.sqrt(3)
        assert cmp.ci[i] == pytest.approx(((b - a).mean() - half, (b - a).mean() + half))
        assert cmp.effect[i] == pytest.approx((b - a).mean() / (b - a).std(ddof=1))
    assert list(cmp.p_adj) == pytest.approx(list(stats.false_discovery_control([t.p for t in cmp.tests])))
    text = to_markdown(table)
    assert text.splitlines()[0] == ("| segments | standard | instance_uncertainty | instance_uncertainty - standard "
                                    "| 95% CI | d_z | p (paired) | p (BH) | p (BH) < 0.05 |")
    assert "| AUROC of IoU = 0: instance uncertainty | 0.703 ± 0.015 (3) | 0.757 ± 0.021 (3) | +0.053 |" in text


def test_welch_where_seeds_differ_and_the_report_file(runs, tmp_path, capsys):
    write_run(runs, "standard", 7, (0.7, 0.8, 0.4, 0.3))
    table = segment_table(collect_segments(runs))
    assert table.comparison.test == "welch" and table.cells[0][0].n == 4
    a = [v[1] for v in VALUES["standard"]] + [0.8]
    b = [v[1] for v in VALUES["instance_uncertainty"]]
    assert table.comparison.tests[1].p == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    with pytest.raises(UserError, match="--test paired: the columns hold other seeds"):
        segment_table(collect_segments(runs), test="paired")
    assert run_segment_report([runs], out=tmp_path / "out") == 0
    assert (tmp_path / "out" / "report_segments.md").read_text() in capsys.readouterr().out


def test_runs_without_segments_or_of_another_set_are_left_out_or_refused(tmp_path):
    write_run(tmp_path, "standard", 0, None)  # evaluated without --segments
    with pytest.raises(UserError, match="--segments first") as err:
        collect_segments(tmp_path)
    assert "\n" not in str(err.value)
    write_run(tmp_path, "focal", 0, (0.7, 0.8, 0.4, 0.3), dataset="acdc")
    write_run(tmp_path, "dice", 0, None, extra={"segments": {"segments": 3, "error": "--segments: too few"}})
    assert [s.mode for s in collect_segments(tmp_path)] == ["focal"]
    with pytest.raises(UserError, match="--eval cityscapes: no segments summary of it; the runs hold acdc"):
        collect_segments(tmp_path, "cityscapes")
    bad = write_run(tmp_path, "ohem", 0, (0.7, "x", 0.4, 0.3))
    with pytest.raises(UserError, match="segments.logistic_auroc` must be a finite number"):
        collect_segments(bad)


def test_iwu_report_segments_prints_the_table(runs, capsys):
    from iwu.cli import main

    assert main(["report", str(runs), "--segments", "--test", "welch"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| segments | standard | instance_uncertainty |") and "p (Welch)" in printed
