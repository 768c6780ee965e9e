"""benchmarks/gpu_day.py and its two modules (gpu_day_wheels.py, gpu_day_protocol.py): the GPU day's recipe,
rehearsed on this machine's CPU.

The rehearsal is the GPU machine's path: the wheels it lacks fetched for this Python (from the package index,
skipped where it cannot be reached), installed with `pip --target` into a temporary folder, PYTHONPATH, every
stage under its cap at tiny sizes; then the same with a deliberately tiny cap on the protocol's training.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from benchmark_script import assert_one_usage_error, load_benchmark
from iwu.config.schema import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_day.py"
CARRIED = {"connected-components-3d", "segmentation-models-pytorch", "submitit", "tensorboardx"}

# in import order: gpu_day imports the two modules beside it, and finds these
wheel_tools = load_benchmark("gpu_day_wheels")
protocol = load_benchmark("gpu_day_protocol")
day = load_benchmark("gpu_day")
method_quality = load_benchmark("method_quality")


# --------------------------------------------------------------------------- the protocol and its estimate


def test_steps_that_fit_by_hand():
    # 2 runs x (1 TFLOP per step + 10 TFLOP per validation / 10 steps) at 100 x 0.5 TFLOP/s: 0.08 s per step;
    # 100 s / margin 2 / 0.08 = 625 steps, 620 at a whole number of validations
    assert protocol.steps_that_fit(step_tflop=1.0, runs=2, peak_tflops=100.0, utilization=0.5, val_tflop=10.0,
                              val_every=10, train_s=100.0, margin=2.0) == 620


def test_the_protocol_is_the_estimate_fixed_before_it_ran():
    """A change here is a change of protocol: once, from the first GPU day's measured rate, recorded in
    STEP_CORRECTION; never tuned on a difference between modes."""
    p = method_quality.PROTOCOLS[protocol.BUDGET]
    correction = protocol.STEP_CORRECTION
    expected = protocol.steps_that_fit(**protocol.ESTIMATE) if correction is None else correction["steps"]
    assert p.steps == expected
    if protocol.STEP_CORRECTION is None:
        assert expected == 700  # the docstring's arithmetic
    assert p.val_every == protocol.ESTIMATE["val_every"]
    assert (p.size, p.batch_size, p.accelerator) == (384, 8, "gpu")
    assert [m["name"] for m in p.members] == ["deeplabv3plus_mobilenet"] * 2
    assert p.seeds == {"standard": 5, "instance_uncertainty": 5}
    assert p.parallel == sum(p.seeds.values()) == protocol.ESTIMATE["runs"]  # every run at once
    # trainer.max_epochs (not set by the protocol) must not end the runs before their steps
    assert TrainerConfig().max_epochs * (p.n_train // p.batch_size) >= p.steps


def test_the_caps_fit_the_nine_minutes():
    assert day.CAPS["suite"] <= 180 and day.CAPS["protocol"] + day.CAPS["report"] <= 360
    assert day.DEADLINE_S == 540
    # the estimate's stepping time is what the deadline leaves the protocol, less its start and end
    left = day.DEADLINE_S - 20 - day.CAPS["suite"] - day.CAPS["report"] - day.FINISH_S
    assert left - 40 - 15 == protocol.ESTIMATE["train_s"]


# --------------------------------------------------------------------------- fetch: what travels


def test_the_image_lacks_four_of_the_dependencies():
    lacking = {wheel_tools.requirement_name(r) for r in wheel_tools.runtime_requirements()} - wheel_tools.IMAGE_PACKAGES
    assert lacking == CARRIED


def test_wheel_requirements_leave_out_extras(tmp_path):
    wheel = tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo-pkg\n"
                   "Requires-Dist: numpy>=1.2\nRequires-Dist: Foo_Bar ; python_version < '3.20'\n"
                   "Requires-Dist: pytest ; extra == \"dev\"\nRequires-Dist: sphinx; extra=='docs'\n")
    assert wheel_tools.wheel_requirements(wheel) == ["numpy>=1.2", "Foo_Bar ; python_version < '3.20'"]
    assert wheel_tools.wheel_name(wheel) == "demo-pkg"
    assert wheel_tools.requirement_name("Foo_Bar ; python_version < '3.20'") == "foo-bar"


def test_run_without_wheels_is_one_line(tmp_path, capsys):
    assert day.main(["run", "--wheels", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no wheels there; run `python benchmarks/gpu_day.py fetch`" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["run", "--cap", "suite"], "expected STAGE=SECONDS"),
    (["run", "--cap", "lunch=3"], "expected STAGE=SECONDS"),
    (["run", "--stages", "suite,speed"], "expected some of suite, protocol"),
])
def test_bad_options_are_one_line_errors(capsys, argv, message):
    assert_one_usage_error(capsys, day.parse_args, argv, message)


# --------------------------------------------------------------------------- the import check


def test_a_missing_wheel_cannot_hide_behind_an_installed_copy(tmp_path):
    """Here every dependency is installed in the venv; a folder of carried wheels that lacks one, or whose
    packages are not the ones imported, is a problem, each named."""
    wheels = [tmp_path / "submitit-1.5.4-py3-none-any.whl"]  # carried, but the import comes from elsewhere
    found = wheel_tools.import_check(tmp_path, wheels, cuda=False)
    problems = "\n".join(found["problems"])
    assert "submitit: imported from" in problems and "shadowed" in problems
    for name in CARRIED - {"submitit"}:  # not in the image, not carried
        assert f"{name}: imported from" in problems and "its wheel is missing" in problems
    assert not any(line.startswith(("torch:", "numpy:", "iwu.")) for line in found["problems"])
    assert found["dependencies"]["torch"]["from"] == "installed"
    assert found["iwu_modules"] > 50


# --------------------------------------------------------------------------- the time cap


def test_a_stage_past_its_cap_is_cut_with_its_whole_group_and_keeps_what_it_wrote(tmp_path):
    partial, child = tmp_path / "partial.json", tmp_path / "child.pid"
    code = (f"import json, subprocess, sys, time; open({str(partial)!r}, 'w').write(json.dumps({{'done': 1}})); "
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"open({str(child)!r}, 'w').write(str(p.pid)); print('measured one', flush=True); time.sleep(120)")
    d = day.Day(tmp_path / "out", deadline_s=None)
    stage = day.Stage("toy", [sys.executable, "-c", code], cap=3.0)
    start = time.monotonic()
    d.start_stage(stage, dict(os.environ))
    d.wait([stage])
    assert stage.status == "cut" and stage.returncode != 0
    assert time.monotonic() - start < 3.0 + day.GRACE_S + 5
    assert json.loads(partial.read_text()) == {"done": 1}  # what it wrote before the cap stays
    assert stage.last_line == "measured one"
    assert gone(int(child.read_text()))  # the stage's own children went with it (SIGKILL: within seconds)
    log = (tmp_path / "out" / "gpu_day.log").read_text()
    assert "[toy] measured one" in log and "toy: cut at its cap (3 s)" in log


def gone(pid: int, wait_s: float = 5.0) -> bool:
    """Within `wait_s`: no such process, or only its exit status left (a zombie no one has reaped)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_the_deadline_shrinks_a_cap(tmp_path):
    d = day.Day(tmp_path, deadline_s=540)
    d.start = time.monotonic() - 500
    assert d.cap("suite", day.CAPS) == pytest.approx(540 - 500 - day.FINISH_S, abs=1)
    assert d.cap("suite", day.CAPS, reserve=100) == 1.0  # never below a second
    d.deadline_s = None
    assert d.cap("suite", day.CAPS) == day.CAPS["suite"]


def test_last_progress_reads_the_latest_attempt(tmp_path):
    log = tmp_path / "seed0.log"
    log.write_text("\n=== iwu sweep, 2026-01-01 10:00:00: iwu train\n"
                   "  step 40/700: loss 1.0, 00:20 elapsed, 5:30 left\n"
                   "\n=== iwu sweep, 2026-01-01 10:05:00: iwu train\n"
                   "  step 140/700: loss 0.9, last mIoU 0.3000, 00:10 elapsed, 1:00 left\n"
                   "  step 200/700: validation mIoU 0.3100\n"
                   "  step 280/700: loss 0.8, last mIoU 0.3100, 1:00:40 elapsed, 2:00 left\n")
    seen = protocol.last_progress(log)
    assert seen == {"step": 280, "elapsed_s": 3640.0, "steps_per_s": (280 - 140) / (3640 - 10)}


# --------------------------------------------------------------------------- the rehearsal


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    if platform.machine() != "x86_64":
        pytest.skip("the rehearsal installs manylinux x86-64 wheels")
    dest = tmp_path_factory.mktemp("wheels")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run([sys.executable, str(SCRIPT), "fetch", "--dest", str(dest), "--python-version", version],
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        pytest.skip(f"cannot fetch the wheels here: {done.stderr.strip()[-200:]}")
    return dest


def rehearse(wheels: Path, out: Path, work: Path, *more: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    return subprocess.run([sys.executable, str(SCRIPT), "run", "--rehearse", "--wheels", str(wheels),
                           "--out", str(out), "--work", str(work), *more],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)


def what_comes_back(out: Path) -> list[str]:
    """The GPU machine gives back at most 8 files, 2 folders down, named in letters, digits, '.', '_', '-'."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files
    for f in files:
        assert len(f.relative_to(out).parts) <= 3 and re.fullmatch(r"[A-Za-z0-9._-]+", f.name), f
    return sorted(f.name for f in files)


@pytest.mark.slow
def test_the_rehearsal_runs_every_stage_and_a_tiny_cap_cuts_the_protocol(wheels, tmp_path):
    fetched = sorted(wheels.glob("*.whl"))
    assert {wheel_tools.wheel_name(w) for w in fetched} == CARRIED
    assert sum(w.stat().st_size for w in fetched) < wheel_tools.MAX_WHEELS_MIB * 2**20

    out, work = tmp_path / "out", tmp_path / "work"
    done = rehearse(wheels, out, work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d +\+ *\d+s  gpu-day: ", line) for line in lines), lines
    names = what_comes_back(out)
    assert {"gpu_day.json", "gpu_day.md", "gpu_day.log", "gpu_day_learning_gap.png",
            "gpu_day_protocol.tar.gz"} <= set(names)
    summary = json.loads((out / "gpu_day.json").read_text())
    assert {n: s["status"] for n, s in summary["stages"].items()} == dict.fromkeys(day.CAPS, "finished")
    deps = summary["imports"]["dependencies"]
    assert {n for n, d in deps.items() if d["from"] == "carried"} == CARRIED
    assert summary["imports"]["problems"] == []
    (suite_json,) = out.glob("gpu_suite_cpu_tiny_*.json")
    suite = json.loads(suite_json.read_text())
    assert list(suite["measurements"]) == day.REHEARSAL_MEASUREMENTS.split(",") and suite["failed"] == []
    assert suite_json.with_suffix(".md").is_file()
    md = (out / "gpu_day.md").read_text()
    assert "4 of 4 runs finished" in md and "| mIoU |" in md and "p (paired)" in md
    assert "| step | in-domain (acdc): mIoU" in md and "Median " in md
    with tarfile.open(out / "gpu_day_protocol.tar.gz") as tar:
        members = set(tar.getnames())
    assert {"report/acdc/instance_uncertainty/report.md", "report/cityscapes/instance_uncertainty/difference.png",
            "runs/standard/seed1/logs/csv/metrics.csv", "runs/instance_uncertainty/seed0/final.json",
            "runs/sweep/summary.json"} <= members
    assert not any(name.endswith(".ckpt") for name in members)

    # the same protocol, its runs gone, its training cut at a second: the report says so, the day exits 1
    cut_out = tmp_path / "cut"
    shutil.rmtree(work / "method" / "runs")
    done = rehearse(wheels, cut_out, work, "--stages", "protocol", "--cap", "protocol=1")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "protocol: cut at its cap (1 s), kept what it wrote" in done.stdout
    summary = json.loads((cut_out / "gpu_day.json").read_text())
    stages = {n: s["status"] for n, s in summary["stages"].items()}
    assert stages == {"install": "finished", "imports": "finished", "prepare": "finished", "suite": "skipped",
                      "protocol": "cut", "report": "finished"}
    md = (cut_out / "gpu_day.md").read_text()
    assert "0 of 4 runs finished" in md and "Not compared" in md
    assert "gpu_day_protocol.tar.gz" in what_comes_back(cut_out)
