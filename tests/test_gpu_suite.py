"""benchmarks/gpu_suite.py on the CPU: every measurement at tiny sizes, the checks, the summary, the JSON.

Nothing here needs a GPU: the suite's measurements take the device as an argument and run on the CPU too.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark_script import assert_one_usage_error, load_benchmark
from iwu.method import uncertainty

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.py"
CPU = torch.device("cpu")


suite = load_benchmark("gpu_suite")
TINY = suite.TINY


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Figures are checked for sanity here, not speed. On a 2-core machine busy with other work, two
    OpenMP threads wait on each other: the first tiny training step took 35 s with two, 0.6 s with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


# --------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_without_cuda_it_prints_one_line_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["bench-gpu: no CUDA device here; nothing measured"]


@pytest.mark.parametrize("argv, message", [
    (["--device", "cpu"], "--device cpu: the full sizes are for a GPU"),
    (["--device", "cpu", "--tiny", "--only", "masks,speed"], "unknown measurement speed; choose from masks"),
])
def test_bad_options_are_one_line_errors(capsys, argv, message):
    assert_one_usage_error(capsys, suite.main, argv, message)


# --------------------------------------------------------------------------- each measurement, tiny, on the CPU


def test_masks_times_both_paths_in_every_regime():
    result = suite.masks(CPU, TINY)
    assert list(result["regimes"]) == ["smooth", "mid", "noisy"]
    for row in result["regimes"].values():
        assert positive(row["torch_ms"]) and positive(row["cc3d_host_ms"])
        assert row["instances_per_image"] >= 1
        assert row["target_met"] is None  # targets are for a GPU at 768x768
    assert result["regimes"]["noisy"]["instances_per_image"] > result["regimes"]["mid"]["instances_per_image"]


@pytest.mark.slow
def test_train_step_times_both_modes_in_every_setting():
    result = suite.train_steps(CPU, TINY)
    assert list(result["settings"]) == list(TINY.settings)
    for row in result["settings"].values():
        assert "error" not in row, row
        assert positive(row["standard_s"]) and positive(row["instance_uncertainty_s"])
        assert math.isclose(row["overhead_pct"], (row["instance_uncertainty_s"] / row["standard_s"] - 1) * 100)
        assert row["peak_gib"] == {"standard": None, "instance_uncertainty": None}  # CUDA memory only
        assert row["warmup_s"] > 0


def test_a_failing_setting_records_its_error_and_the_others_go_on(monkeypatch):
    monkeypatch.setitem(suite.SETTINGS, "broken", ("32-true", ("trainer.bogus=true",)))
    sizes = suite.dataclasses.replace(TINY, settings=("broken", "32-true"), warmup=0, steps=1)
    result = suite.train_steps(CPU, sizes)
    assert result["settings"]["broken"]["error"].startswith("UserError: trainer.bogus: unknown key")
    assert positive(result["settings"]["32-true"]["standard_s"])
    assert suite.failed(result)


def test_validation_throughput_of_both_ways():
    result = suite.validation(CPU, TINY)
    assert positive(result["one_pass_ips"]) and positive(result["separate_passes_ips"])
    assert math.isclose(result["speedup"], result["one_pass_ips"] / result["separate_passes_ips"])


def test_separate_passes_score_as_the_one_pass():
    module = suite.validation_module("mobilenet", CPU)
    batch = suite.step_bench.make_batches(32, 2, CPU)[0]
    with torch.inference_mode():
        module.on_validation_epoch_start()
        module.validation_step(batch, 0)
        separate = torch.stack(suite.separate_passes(module, batch))
    assert torch.equal(module._confusion[0], separate)


def test_agreement_on_the_cpu():
    result = suite.agreement(CPU, TINY)
    assert result["ok"]
    assert result["meter"]["max_difference"] <= 1e-6 and result["meter"]["state_on_device"]
    for row in result["labeling"]["regimes"].values():
        assert row["max_difference"] <= 1e-6 and row["same_instances"] and row["same_counts"]


def test_labeling_agreement_fails_when_the_torch_labeling_differs(monkeypatch):
    label = uncertainty._label_torch
    monkeypatch.setattr(uncertainty, "_label_torch", lambda pred, connectivity: label(pred, 4))  # not 8
    result = suite.labeling_agreement(CPU, TINY)
    assert not result["ok"]
    noisy = result["regimes"]["noisy"]
    assert noisy["max_difference"] > 1e-6 and not noisy["same_instances"] and not noisy["same_counts"]


def test_max_difference_finds_any_difference():
    a = {"ece": 0.25, "count": [3, 4], "entropy": {"auroc": 0.5, "mean": float("nan")}, "conf": [None, 0.5]}
    same = json.loads(json.dumps(a))
    assert suite.max_difference(a, same) == 0.0
    assert suite.max_difference(a, {**a, "entropy": {"auroc": 0.5 + 1e-3, "mean": float("nan")}}) == \
        pytest.approx(1e-3)
    assert suite.max_difference(a, {**a, "count": [3, 5]}) == 1
    assert suite.max_difference(a, {**a, "conf": [0.0, 0.5]}) == math.inf  # None against a number
    assert suite.max_difference(a, {**a, "entropy": {"auroc": 0.5, "mean": 0.1}}) == math.inf  # NaN against one
    assert suite.max_difference(a, {**a, "count": [3]}) == math.inf
    assert suite.max_difference(a, {"ece": 0.25}) == math.inf


def test_same_partition_ignores_label_values_only():
    a = torch.tensor([[1, 1, 2], [3, 3, 2]])
    assert suite.same_partition(a, a * 10 + 7)
    assert not suite.same_partition(a, torch.tensor([[1, 1, 1], [3, 3, 1]]))  # two instances merged
    assert not suite.same_partition(torch.tensor([[1, 1, 1], [3, 3, 1]]), a)  # one split


def test_short_training_writes_final_json():
    result = suite.short_training(CPU, TINY)
    assert result["ok"] and result["final_json"] and result["steps"] == TINY.run_steps
    assert positive(result["wall_s"]) and 0 <= result["miou"] <= 1


@pytest.mark.slow
def test_cuda_tests_run_hidden_from_cuda_on_the_cpu():
    result = suite.cuda_tests(CPU, TINY)
    assert result["ok"] and result["returncode"] == 0
    assert "2 skipped" in result["summary"]


# --------------------------------------------------------------------------- summary and results file


def tiny_document():
    regimes = {r: {"instances_per_image": n, "torch_ms": t, "cc3d_host_ms": c, "target_met": met}
               for r, n, t, c, met in (("smooth", 290.0, 0.731, 2.468, True), ("mid", 14916.0, 1.234, 3.579, True),
                                       ("noisy", 472580.0, 2.5, 4.75, False))}
    settings = {
        "32-true": {"standard_s": 0.1234, "instance_uncertainty_s": 0.1271, "overhead_pct": 3.0, "target_met": True,
                    "peak_gib": {"standard": 9.87, "instance_uncertainty": 10.12}, "warmup_s": 4.2},
        "32-true + compile": {"error": "BackendCompilerFailed: boom"},
    }
    return {
        "device": "NVIDIA H100 80GB HBM3", "torch": "2.14.1", "cuda": "13.0", "date": "2026-01-31T14:05:00",
        "tiny": False, "sizes": {}, "seconds": 1234.0, "failed": ["training"],
        "measurements": {
            "masks": {"batch": 2, "size": 768, "target_ms": 2.0, "regimes": regimes},
            "train_step": {"size": 768, "batch": 2, "members": "paper", "warmup": 3, "steps": 10, "target_pct": 5.0,
                           "settings": settings},
            "validation": {"size": 768, "batch": 4, "members": "paper", "one_pass_ips": 41.5,
                           "separate_passes_ips": 20.25, "speedup": 2.05},
            "agreement": {"ok": True, "meter": {"max_difference": 2e-12, "state_on_device": True, "ok": True},
                          "labeling": {"ok": True, "regimes": {"mid": {"max_difference": 3e-8, "same_instances": True,
                                                                        "same_counts": True, "ok": True}}}},
            "training": {"error": "UserError: trainer: no GPU"},
            "cuda_tests": {"returncode": 0, "summary": "2 passed, 69 deselected in 3.21s", "ok": True},
        },
    }


def test_markdown_holds_every_figure():
    text = suite.markdown(tiny_document())
    for figure in ("NVIDIA H100 80GB HBM3", "2.14.1", "2026-01-31",
                   "| smooth | 290 | 0.731 | 2.468 | PASS |", "| noisy | 472,580 | 2.500 | 4.750 | missed |",
                   "| 32-true | 0.1234 | 0.1271 | +3.0% | PASS | 9.87 / 10.12 | 4.2 |",
                   "32-true + compile | ERROR BackendCompilerFailed: boom", "41.50", "20.25", "2.05x",
                   "| PASS | meter max difference 2.0e-12; labeling max difference 3.0e-08, same instances |",
                   "| short real training | ERROR | UserError: trainer: no GPU |",
                   "| CUDA tests | PASS | 2 passed, 69 deselected in 3.21s |"):
        assert figure in text, figure


def test_main_writes_the_json_and_prints_the_summary(tmp_path, capsys):
    assert suite.main(["--device", "cpu", "--tiny", "--only", "masks", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("gpu_suite_cpu_tiny_*.json")
    doc = json.loads(path.read_text())
    assert doc["torch"] == torch.__version__ and doc["device"].startswith("CPU") and doc["tiny"]
    assert list(doc["measurements"]) == ["masks"] and doc["failed"] == []
    out = capsys.readouterr().out
    assert out.startswith("bench-gpu [1/1] instance masks")
    assert f"{doc['measurements']['masks']['regimes']['mid']['torch_ms']:.3f}" in out
    assert str(path) in out


def test_a_failing_measurement_keeps_the_others_and_exits_1(tmp_path, capsys, monkeypatch):
    def broken(device, sizes):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    def checked(device, sizes):
        return {"ok": True, "summary": "1 passed"}

    monkeypatch.setitem(suite.MEASUREMENTS, "agreement", (broken, "broken"))
    monkeypatch.setitem(suite.MEASUREMENTS, "cuda_tests", (checked, "fine"))
    assert suite.main(["--device", "cpu", "--tiny", "--only", "cuda_tests,agreement", "--out", str(tmp_path)]) == 1
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert doc["measurements"]["agreement"] == {"error": "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"}
    assert doc["measurements"]["cuda_tests"]["summary"] == "1 passed"
    assert doc["failed"] == ["agreement"]
    assert "bench-gpu: FAILED agreement" in capsys.readouterr().out


# --------------------------------------------------------------------------- sized for the GPU day


def test_compile_is_measured_last_on_its_own_members_and_not_at_tiny_sizes(monkeypatch):
    assert list(suite.MEASUREMENTS)[-1] == "train_step_compile"  # a time cap that cuts it loses nothing else
    assert suite.COMPILE not in suite.FULL.settings and suite.FULL.compile_members == "mobilenet"
    assert suite.train_step_compile(CPU, TINY) == {
        "skipped": "no torch.compile at these sizes (inductor compiles for minutes on a CPU)"}
    monkeypatch.setattr(suite, "train_steps", lambda device, sizes: {"sizes": sizes})
    sizes = suite.train_step_compile(CPU, suite.dataclasses.replace(TINY, compile_members="mobilenet"))["sizes"]
    assert (sizes.members, sizes.settings) == ("mobilenet", (suite.COMPILE,))


def test_each_measurement_is_written_as_it_ends(tmp_path, monkeypatch):
    """A suite stopped part way (a time cap, a crash) keeps the JSON and Markdown of what it measured."""
    on_disk = {}

    def first(device, sizes):
        return {"ok": True, "summary": "1 passed"}

    def second(device, sizes):
        (path,) = tmp_path.glob("gpu_suite_*.json")
        on_disk["json"] = json.loads(path.read_text())
        on_disk["md"] = path.with_suffix(".md").read_text()
        return {"skipped": "not here"}

    monkeypatch.setitem(suite.MEASUREMENTS, "cuda_tests", (first, "first"))
    monkeypatch.setitem(suite.MEASUREMENTS, "train_step_compile", (second, "second"))
    assert suite.main(["--device", "cpu", "--tiny", "--only", "cuda_tests,train_step_compile",
                       "--out", str(tmp_path)]) == 0
    assert on_disk["json"]["measurements"] == {"cuda_tests": {"ok": True, "summary": "1 passed"}}
    assert "| CUDA tests | PASS | 1 passed |" in on_disk["md"] and "train_step_compile" not in on_disk["md"]
    (path,) = tmp_path.glob("gpu_suite_*.json")
    assert list(json.loads(path.read_text())["measurements"]) == ["cuda_tests", "train_step_compile"]
    assert "train_step_compile: skipped, not here" in path.with_suffix(".md").read_text()
