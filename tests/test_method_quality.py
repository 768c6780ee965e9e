"""benchmarks/method_quality.py: its --budget quick runs end to end (scenes, sweep, class counts, reports),
so the protocol script cannot rot between the long runs it exists for."""

import csv
import re

import pytest
import yaml

from benchmark_script import load_benchmark
from iwu.report import rarest_label
from iwu.report.formats import format_p

pytestmark = pytest.mark.slow  # processes and whole runs: `make test-fast` leaves them out


@pytest.fixture(scope="module")
def method_quality():
    return load_benchmark("method_quality")


def test_quick_budget_trains_every_run_and_reports_both_domains(method_quality, tmp_path, capsys):
    out = tmp_path / "mq"
    assert method_quality.main(["--budget", "quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    p = method_quality.PROTOCOLS["quick"]
    finals = sorted(out.glob("runs/*/seed*/final.json"))
    assert len(finals) == sum(p.seeds.values())
    for eval_set in method_quality.EVAL_SETS:
        folder = out / "report" / eval_set / method_quality.METHOD
        assert (folder / "difference.png").is_file()
        rows = list(csv.DictReader((folder / "report.csv").open()))
        assert [r["class"] for r in rows[-2:]] == [rarest_label(method_quality.RARE), "mIoU"]
        assert rows[-1]["standard n"] == str(p.seeds["standard"])
        mean = {mode: float(rows[-1][f"{mode} mean"]) for mode in ("standard", method_quality.METHOD)}
        assert float(rows[-1]["difference"]) == pytest.approx(mean[method_quality.METHOD] - mean["standard"])
        assert rows[-1]["test"] == "paired t-test"  # the same seeds in both columns: paired by seed
    assert "trained on acdc, scored on cityscapes" in printed
    assert "learns" in printed and "| 5 rarest (mean) |" in printed
    # the gap at every validation step (after 2 and 4 steps), both validation sets, mIoU and the rare row
    gap = out / "report" / "learning_gap" / method_quality.METHOD
    assert (gap / "learning_gap.png").is_file()
    table = (gap / "learning_gap.md").read_text()
    assert table in printed
    assert ("| step | in-domain (acdc): mIoU | in-domain (acdc): 5 rarest (mean) | cross-domain (cityscapes): mIoU "
            "| cross-domain (cityscapes): 5 rarest (mean) |") in table
    assert [line.split(" |")[0] for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()] == [
        "| 2", "| 4"]
    # a variant: its mode with its options, another experiment, compared with the baseline by Welch's test
    finals = sorted(out.glob("runs/variants/standard+rare_class/standard/seed*/final.json"))
    assert len(finals) == 2
    config = yaml.safe_load((finals[0].parent / "config.yaml").read_text())
    assert config["data"]["sampler"] == "rare_class"
    assert config["experiment"] == "method_quality_quick+standard+rare_class"
    rows = list(csv.DictReader((out / "report" / "acdc" / "standard+rare_class" / "report.csv").open()))
    assert rows[-1]["test"] == "Welch's t-test"
    assert (out / "report" / "learning_gap" / "standard+rare_class" / "learning_gap.png").is_file()
    # every mode and variant against the baseline in one table, each cell read back from its pair's report
    summary = (out / "report" / "summary.md").read_text()
    assert summary in printed
    rows = {line.split(" | ")[0]: line.split(" | ") for line in summary.splitlines() if line.startswith("| ")}
    assert set(rows) == {"| mode (seeds)", f"| {method_quality.METHOD} (2)", "| standard+rare_class (2)"}
    assert rows[f"| {method_quality.METHOD} (2)"][-1] == "paired t-test |"
    assert rows["| standard+rare_class (2)"][-1] == "Welch's t-test |"
    # columns: in-domain mIoU, its rarest, cross-domain mIoU, its rarest; each the difference its report.csv holds
    columns = [(eval_set, label) for eval_set in method_quality.EVAL_SETS
               for label in ("mIoU", rarest_label(method_quality.RARE))]
    # and its forest plot (report/summary.png): a row per mode and variant, a panel per column of the table
    names = (method_quality.METHOD, "standard+rare_class")
    written = {(e, n): {"csv": out / "report" / e / n / "report.csv"} for e in method_quality.EVAL_SETS for n in names}
    forest = method_quality.summary_forest(method_quality.summary_rows(written))
    assert forest.names == tuple(f"{n} (2)" for n in names)
    assert [panel.title for panel in forest.panels] == rows["| mode (seeds)"][1:5]
    assert (out / "report" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    for i, name in enumerate(names):
        for column, (eval_set, label) in enumerate(columns, start=1):
            report = {r["class"]: r for r in csv.DictReader((out / "report" / eval_set / name / "report.csv").open())}
            r = report[label]
            marked = bool(r["p"]) and float(r["p (BH)"]) < 0.05
            expected = f"{float(r['difference']):+.3f}"
            if r["p"]:  # a class no run learned has a difference and nothing to test
                expected += (f" [{float(r['ci low']):+.3f}, {float(r['ci high']):+.3f}], "
                             f"p (BH) {format_p(float(r['p (BH)']))}")
                expected += " *" if marked else ""
            assert rows[f"| {name} (2)"][column] == expected, (name, eval_set, label)
            panel = forest.panels[column - 1]
            assert panel.diffs[i] == float(r["difference"]) and panel.significant[i] == marked
            if r["p"]:
                assert panel.intervals[i] == (float(r["ci low"]), float(r["ci high"]))
    # the same command again skips the finished runs
    assert method_quality.main(["--quick", "--out", str(out)]) == 0
    again = capsys.readouterr()
    sweeps = re.findall(r"iwu sweep: \d+ runs under .*: (\d+) finished already, 0 to resume, 0 to start",
                        again.out + again.err)
    assert sweeps and sum(map(int, sweeps)) == 6  # seed by seed (two at a time), nothing started again



def test_the_cpu_protocol_keeps_its_promises(method_quality):
    p = method_quality.PROTOCOLS["cpu"]
    assert p.seeds["standard"] >= 5 and p.seeds["instance_uncertainty"] >= 5
    assert list(p.seeds)[:2] == ["standard", "instance_uncertainty"]
    assert {"class_weighted", "focal", "pixel_uncertainty"} <= set(p.seeds)
    # the baselines added later, 2 seeds each, after the first five (whose runs stay valid)
    assert list(p.seeds)[:5] == ["standard", "instance_uncertainty", "class_weighted", "focal", "pixel_uncertainty"]
    assert {m: p.seeds[m] for m in ("ohem", "lovasz", "ce_lovasz", "recall")} == dict.fromkeys(
        ("ohem", "lovasz", "ce_lovasz", "recall"), 2)
    assert p.variant_seeds == 2 and p.variants == {
        "class_weighted+median_frequency": ("class_weighted", ("loss.class_weights=median_frequency",)),
        "class_weighted+effective_number": ("class_weighted", ("loss.class_weights=effective_number",)),
        "standard+rare_class": ("standard", ("data.sampler=rare_class",)),
        "instance_uncertainty+rare_class": ("instance_uncertainty", ("data.sampler=rare_class",))}
    gpu = method_quality.PROTOCOLS["gpu"]
    assert gpu.size == 768 and all(n >= 10 for n in gpu.seeds.values())
    assert [m["name"] for m in gpu.members] == ["deeplabv3plus_resnet101", "deeplabv3plus_resnet50",
                                                "deeplabv3plus_mobilenet"]


def test_the_long_protocol_is_the_cpu_one_with_four_times_the_steps_for_two_modes(method_quality):
    """Fixed before any of its runs: a change here is a change of protocol, to be said, never tuned."""
    cpu, long = method_quality.PROTOCOLS["cpu"], method_quality.PROTOCOLS["cpu-long"]
    same = ("size", "n_train", "n_val", "members", "batch_size", "parallel", "accelerator", "bn_momentum")
    assert all(getattr(long, key) == getattr(cpu, key) for key in same)
    assert (long.steps, long.val_every) == (4 * cpu.steps, 400)
    assert long.seeds == {"standard": 3, "instance_uncertainty": 3}
    # what ran: the epoch bound ends it at three times the cpu protocol's steps (the docstring says so)
    assert (long.max_epochs, long.trained_steps) == (60, 3 * cpu.steps)


def test_every_other_protocol_trains_the_steps_it_names(method_quality, tmp_path):
    for name, p in method_quality.PROTOCOLS.items():
        if name != "cpu-long":
            assert p.trained_steps == p.steps, name
    config = method_quality.run_config(method_quality.PROTOCOLS["cpu-long"], "cpu-long", {"acdc": tmp_path,
                                       "cityscapes": tmp_path}, tmp_path, False)
    assert (config["trainer"]["max_steps"], config["trainer"]["max_epochs"]) == (3200, 60)
