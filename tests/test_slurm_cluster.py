"""The sweep, requeue and multi-process training on a real SLURM scheduler.

`make test-slurm` starts a single-node cluster on this machine (scripts/slurm/start_cluster.sh), runs
these tests and stops it; where no cluster answers (`sinfo` shows no idle node) they are skipped, so
`make test` never needs SLURM. Everything runs as a user would: `iwu sweep` and `sbatch` processes,
tiny CPU runs (tests/tiny_runs.py), one thread each so that a run and its resumed twin compute alike.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_runs import tiny_config


def _cluster_up() -> bool:
    """Whether a SLURM controller answers here with a node that takes jobs."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return False
    try:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return states.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated")
                                          for s in states.stdout.splitlines())


pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster up (make test-slurm starts one)")]

WAIT_S = 600  # the longest any one step of a test waits for the scheduler
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
# Ctrl-C reaches a sweep started from a suite that runs in the background, where SIGINT comes ignored
SWEEP = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                               "from iwu.cli import main; sys.exit(main(sys.argv[1:]))", "sweep"]


def _sweep(config, out: Path, *args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess:
    return subprocess.run([*SWEEP, str(config), "--launcher", "slurm", "--gpus-per-job", "0", *args, f"out={out}"],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def _start_sweep(config, out: Path, said: Path, *args: str) -> subprocess.Popen:
    """A sweep in the background, its output in `said` as it comes."""
    handle = open(said, "w", encoding="utf-8")
    return subprocess.Popen([*SWEEP, str(config), "--launcher", "slurm", "--gpus-per-job", "0", *args, f"out={out}"],
                            stdout=handle, stderr=subprocess.STDOUT, text=True, env=ENV)


def _until(what: str, check, timeout: float = WAIT_S, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    pytest.fail(f"waited {timeout:.0f} s for {what}")


def _job(out: Path, name: str) -> str:
    return json.loads((out / "sweep" / "jobs.json").read_text())[name]


def _attempts(job: str) -> list[str]:
    """SLURM's records of a job, one per attempt (sacct -D keeps the requeued ones)."""
    done = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job], capture_output=True, text=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _final(run: Path) -> dict:
    return json.loads((run / "final.json").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("slurm")


@pytest.fixture(scope="module")
def tiny(folder):
    """4 steps; its scenes written before any job, so jobs never build them at once."""
    from iwu.config.schema import load_config
    from iwu.engine.train import build_datamodule

    config = tiny_config(folder, "tiny", val_every=2)
    build_datamodule(load_config(config))
    return config


# A training step that lasts a second at least, whatever the machine: a stop asked for after the first
# checkpoint then always finds the run in the middle (SLURM looks at time limits every 30 s or so).
SLOW_STEPS = """import time
from iwu.engine.ensemble import EnsembleModule

_step = EnsembleModule.training_step


def training_step(self, *args, **kwargs):
    time.sleep(1.0)
    return _step(self, *args, **kwargs)


EnsembleModule.training_step = training_step
"""
SLOW = ("--import", "slow_steps")


@pytest.fixture(scope="module")
def long_run(folder, tiny):
    """A run long enough to be stopped in the middle (48 steps of a second or more, a checkpoint every 6,
    through `--import slow_steps`), and the final.json of its uninterrupted twin, trained with `iwu train`."""
    (folder / "slow_steps.py").write_text(SLOW_STEPS)
    ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    config = tiny_config(folder, "long", val_every=6, trainer={"max_steps": 48})
    done = subprocess.run([sys.executable, "-m", "iwu", "train", str(config), "--no-progress", *SLOW,
                           "mode=standard", f"out={folder / 'reference'}"], capture_output=True, text=True, env=ENV,
                          timeout=WAIT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return config, _final(folder / "reference")


# --- an array sweep, its report, the same command again -----------------------------


@pytest.fixture(scope="module")
def swept(folder, tiny):
    out = folder / "array"
    done = _sweep(tiny, out, "--seeds", "2", "--modes", "standard,instance_uncertainty")
    return out, done


def test_a_sweep_of_2_seeds_by_2_modes_finishes_as_one_job_array(swept):
    out, done = swept
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 job(s) submitted, 0 already in the queue" in done.stdout
    assert "4 finished, 0 failed, 0 skipped" in done.stdout
    jobs = json.loads((out / "sweep" / "jobs.json").read_text())
    assert len({job.split("_")[0] for job in jobs.values()}) == 1  # one array, a task per run
    assert sorted(job.split("_")[1] for job in jobs.values()) == ["0", "1", "2", "3"]
    for name, job in jobs.items():
        log = (out / "sweep" / "slurm" / f"{job}_0_log.out").read_text()
        ours = [line for line in log.splitlines() if line.strip() and not line.startswith("submitit ")]
        assert ours[-1] == (  # iwu train's closing line ends what the run said (submitit's own lines follow)
            f"iwu train: best ensemble mIoU {_final(out / name)['results']['ensemble']['miou']:.4f} at step "
            f"{_final(out / name)['results']['ensemble']['best_step']}; {out / name / 'final.json'}")
    assert "\r" not in done.stdout + done.stderr  # no redraws of a bar where nobody watches


def test_iwu_report_reads_the_sweep(swept):
    out, _ = swept
    done = subprocess.run([sys.executable, "-m", "iwu", "report", str(out)], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("| class"))
    assert "standard" in header and "instance_uncertainty" in header
    assert next(line for line in done.stdout.splitlines() if line.startswith("| mIoU")).count("(2)") == 2


def test_the_same_command_again_skips_every_run_and_submits_nothing(swept, tiny):
    out, _ = swept
    jobs = (out / "sweep" / "jobs.json").read_text()
    again = _sweep(tiny, out, "--seeds", "2", "--modes", "standard,instance_uncertainty", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "4 finished already, 0 to resume, 0 to start" in again.stdout
    assert "job(s) submitted" not in again.stdout
    assert (out / "sweep" / "jobs.json").read_text() == jobs


# --- requeue and time limits end in the uninterrupted run ---------------------------


def _stop_midway(out: Path, said: Path, sweep: subprocess.Popen, stop) -> str:
    """Once the run has a checkpoint, `stop(job)`; then the sweep's end. Returns the job id."""
    run = out / "standard" / "seed0"
    _until("the first checkpoint", lambda: (run / "checkpoints" / "last.ckpt").exists() or sweep.poll() is not None)
    assert sweep.poll() is None, said.read_text()
    job = _job(out, "standard/seed0")
    stop(job)
    sweep.wait(timeout=WAIT_S)
    return job


def test_a_requeued_job_resumes_and_ends_as_the_uninterrupted_run(folder, long_run):
    config, reference = long_run
    out, said = folder / "requeued", folder / "requeued.txt"
    sweep = _start_sweep(config, out, said, "--seeds", "1", "--modes", "standard", "--time", "10", *SLOW)
    job = _stop_midway(out, said, sweep, lambda job: subprocess.run(["scontrol", "requeue", job], check=True))
    text = said.read_text()
    assert sweep.returncode == 0, text
    assert "1 finished, 0 failed, 0 skipped" in text
    assert _final(out / "standard" / "seed0") == reference
    assert "REQUEUED" in _attempts(job)
    log = (out / "sweep" / "slurm" / f"{job}_0_log.out").read_text()
    assert "stopped by SIGTERM at step" in log and "iwu train: resuming at step" in log


def test_a_job_past_its_time_limit_is_requeued_and_ends_as_the_uninterrupted_run(folder, long_run):
    config, reference = long_run
    out, said = folder / "timed", folder / "timed.txt"
    sweep = _start_sweep(config, out, said, "--seeds", "1", "--modes", "standard", "--time", "10", *SLOW)

    def limit_now(job):  # SLURM's own limit, brought near: its signal comes at most a minute later
        ran = re.search(r"RunTime=(\d+):(\d+):(\d+)", subprocess.run(["scontrol", "show", "job", job],
                                                                     capture_output=True, text=True).stdout)
        minutes = (int(ran[1]) * 3600 + int(ran[2]) * 60 + int(ran[3])) // 60 + 2
        subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}"], check=True)
        _until("the requeue at the time limit", lambda: "REQUEUED" in _attempts(job) or sweep.poll() is not None,
               every=2.0)
        assert sweep.poll() is None, f"the run ended before its time limit came:\n{said.read_text()}"
        # the next attempt gets its 10 minutes again: one time limit is the test, not four
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)

    job = _stop_midway(out, said, sweep, limit_now)
    text = said.read_text()
    assert sweep.returncode == 0, text
    assert "1 finished, 0 failed, 0 skipped" in text
    assert _final(out / "standard" / "seed0") == reference
    assert "Caught signal SIGUSR2" in (out / "sweep" / "slurm" / f"{job}_0_log.err").read_text()
    assert "REQUEUED" in _attempts(job)


# --- Ctrl-C while jobs are queued, then scancel of one ------------------------------


@pytest.fixture(scope="module")
def interrupted(folder, long_run):
    """A sweep of two runs: Ctrl-C once both are submitted, the same command again, then scancel of one."""
    config, _ = long_run
    out = folder / "cancelled"
    args = ("--seeds", "2", "--modes", "standard", "--time", "10", *SLOW)
    first = _start_sweep(config, out, folder / "first.txt", *args)
    _until("the submission", lambda: (out / "sweep" / "jobs.json").exists() or first.poll() is not None)
    time.sleep(1)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=60)
    again = _start_sweep(config, out, folder / "again.txt", *args)
    _until("the reattached sweep", lambda: "already in the queue" in (folder / "again.txt").read_text()
           or again.poll() is not None)
    job = _job(out, "standard/seed1")
    subprocess.run(["scancel", job], check=True)
    again.wait(timeout=WAIT_S)
    return out, job, first.returncode, (folder / "first.txt").read_text(), again.returncode, \
        (folder / "again.txt").read_text()


def test_ctrl_c_leaves_the_jobs_queued_and_the_same_command_reattaches_submitting_nothing_twice(interrupted):
    out, job, first_status, first, _, again = interrupted
    assert first_status == 130, first
    assert "2 job(s) submitted, 0 already in the queue" in first
    assert "goes on in the queue" in first
    assert "0 job(s) submitted, 2 already in the queue" in again
    array = job.split("_")[0]
    listed = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID", "-j", array], capture_output=True, text=True)
    assert sorted(listed.stdout.split()) == [f"{array}_0", f"{array}_1"]  # one array of two, no second one
    assert json.loads((out / "sweep" / "jobs.json").read_text()) == {"standard/seed0": f"{array}_0",
                                                                     "standard/seed1": f"{array}_1"}


def test_scancel_of_one_job_is_one_line_naming_its_run_and_log_and_the_other_run_finishes(interrupted):
    out, job, _, _, status, again = interrupted
    assert status == 1, again
    assert "1 finished, 1 failed, 0 skipped" in again
    log = out / "sweep" / "slurm" / f"{job}_0_log.err"
    lines = again.splitlines()
    failed = lines.index(f"  failed: {out / 'standard' / 'seed1'}  log: {log}")
    assert lines[failed + 1] == (f"      SLURM ended job {job} (CANCELLED by 0) before the run finished; its log "
                                 "says why")
    assert (out / "standard" / "seed0" / "final.json").exists()
    assert not (out / "standard" / "seed1" / "final.json").exists()


# --- one run, two processes -----------------------------------------------------------


def _sbatch(folder: Path, name: str, config, *overrides: str) -> tuple[str, Path]:
    """`srun iwu train` under `sbatch --ntasks-per-node=2`, as the README's recipe; the job id and its log."""
    log = folder / f"{name}.log"
    script = folder / f"{name}.sh"
    script.write_text("#!/bin/bash\n"
                      f"srun {sys.executable} -m iwu train {config} --no-progress {' '.join(overrides)}\n")
    done = subprocess.run(["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10",
                           f"--output={log}", f"--job-name={name}", str(script)],
                          capture_output=True, text=True, env=ENV, check=True)
    return done.stdout.strip().split(";")[0], log


def _ended(job: str) -> str | None:
    states = _attempts(job)
    return states[-1] if states and states[-1] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED") else None


@pytest.fixture(scope="module")
def two_tasks(folder, tiny):
    """`srun iwu train` with trainer.devices=2 (DDP on gloo) and with trainer.devices=1, each under
    `sbatch --ntasks-per-node=2`: their SLURM states, logs, and the run of the first."""
    run = folder / "ddp"
    ddp, ddp_log = _sbatch(folder, "ddp", tiny, f"out={run}", "trainer.devices=2", "trainer.strategy=ddp")
    wrong, wrong_log = _sbatch(folder, "mismatch", tiny, f"out={folder / 'mismatch'}", "trainer.devices=1")
    ddp_state = _until("the DDP job", lambda: _ended(ddp))
    wrong_state = _until("the mismatched job", lambda: _ended(wrong))
    return run, (ddp_state, ddp_log.read_text()), (wrong_state, wrong_log.read_text())


def test_ddp_over_two_slurm_tasks_ends_as_one_run(two_tasks, long_run):
    run, (state, said), _ = two_tasks
    assert state == "COMPLETED", said[-3000:]
    assert "Traceback" not in said
    final, single = _final(run), long_run[1]  # the layout of a run of one process
    assert sorted(final) == sorted(single) and sorted(final["results"]) == sorted(single["results"])
    assert final["steps"] == 4
    assert said.count("validation mIoU") == 2  # the run's lines, said once (by rank 0)


def test_ddp_s_closing_line_is_said_once(two_tasks):
    _, (_, said), _ = two_tasks
    assert said.count("iwu train: best ensemble mIoU") == 1  # from rank 0 alone


def test_a_task_count_other_than_trainer_devices_is_one_line_before_training(folder, two_tasks):
    _, _, (state, said) = two_tasks
    assert state == "FAILED"
    assert "Traceback" not in said
    errors = {line for line in said.splitlines() if line.startswith("iwu train: error:")}  # the same, from each task
    assert errors == {"iwu train: error: trainer.devices=1, but SLURM started 2 task(s) on this node "
                      "(--ntasks-per-node): one process trains per task, so set trainer.devices=2 or submit with "
                      "--ntasks-per-node=1"}
    assert not (folder / "mismatch" / "checkpoints").exists()
