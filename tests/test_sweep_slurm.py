"""`iwu sweep --launcher slurm` without a cluster: the verdict from the run directory, a stop by signal left
to SLURM, the time-limit rule, the requeue cap, sbatch's refusals; and the DDP settings refused before
training. The same on a real scheduler: test_slurm_cluster.py."""

import dataclasses
import sys

import pytest
from submitit.core.utils import UncompletedJobError

import iwu.sweep.slurm as slurm
from iwu.config.schema import SlurmConfig, load_config
from iwu.engine.progress import closing_line
from iwu.engine.train import check_distributed, slurm_tasks_here
from iwu.errors import Stopped, UserError
from iwu.sweep import expand
from iwu.util.bars import Tally
from tiny_runs import tiny_config


@pytest.fixture
def point(tmp_path):
    return expand(tiny_config(tmp_path), [0], ["standard"], [f"out={tmp_path / 'sw'}"])[1][0]


class FakeJob:
    """A submitit job as `_wait` sees it: done or not, SLURM's state, and what `results` gives."""

    def __init__(self, tmp_path, done=True, state="COMPLETED", error=None):
        self.job_id, self._done, self.error, self.state = "7_0", done, error, state
        self.paths = type("Paths", (), {"stderr": str(tmp_path / "7_0_0_log.err")})

    def done(self):
        return self._done

    def results(self):
        if self.error:
            raise self.error
        return ["final.json"]


# --- the verdict -------------------------------------------------------------------


def test_a_requeued_run_that_wrote_final_json_is_finished_whatever_an_earlier_attempt_returned(tmp_path, point):
    point.run.mkdir(parents=True)
    (point.run / "final.json").write_text("{}")
    stale = FakeJob(tmp_path, error=RuntimeError("iwu.errors.Stopped: stopped by SIGTERM at step 11"))
    assert slurm._outcome(point, stale).state == "finished"
    (point.run / "final.json").unlink()
    assert slurm._outcome(point, stale).state == "failed"


@pytest.mark.parametrize("done, state, ended", [(True, "PENDING", False), (True, "REQUEUED", False),
                                                (True, "RUNNING", False), (True, "COMPLETED", True),
                                                (True, "CANCELLED by 0", True), (False, "COMPLETED", False)])
def test_a_result_file_of_an_earlier_attempt_does_not_end_a_job_slurm_still_runs(tmp_path, done, state, ended):
    assert slurm._ended(FakeJob(tmp_path, done=done, state=state), "slurm") is ended


def test_a_run_past_the_requeue_cap_is_reported_with_its_last_step(tmp_path, point):
    metrics = point.run / "logs" / "csv" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("epoch,step,train/loss\n0,39,1.0\n0,79,0.5\n0,80,\n")
    capped = FakeJob(tmp_path, error=UncompletedJobError("Job not requeued because: timed-out too many times."))
    outcome = slurm._outcome(point, capped)
    assert (outcome.state, outcome.detail) == ("failed", (
        "reached its time limit 4 times (submitit requeues a job 3 times): stopped at step 80; the same command "
        "continues it from its last checkpoint, or give each job a longer --time"))
    metrics.unlink()
    assert "stopped before its first step was logged" in slurm._outcome(point, capped).detail


# --- a stop by signal inside a job --------------------------------------------------


def test_a_stop_by_sigterm_leaves_the_job_without_a_result_and_a_finished_job_says_the_closing_line(
        tmp_path, point, monkeypatch, capsys):
    import iwu.engine.train as engine

    config_file = tmp_path / "point.yaml"
    from iwu.config.schema import save_config

    save_config(point.config, config_file)

    def stopped(config, **kwargs):
        raise Stopped(f"{point.run}: stopped by SIGTERM at step 11, unfinished", 143)

    monkeypatch.setattr(engine, "train", stopped)
    with pytest.raises(SystemExit) as leave:  # not an Exception: submitit's process_job stores no result
        slurm.TrainJob()(str(config_file))
    assert leave.value.code == 143 and not isinstance(leave.value, Exception)
    assert f"iwu train: {point.run}: stopped by SIGTERM at step 11" in capsys.readouterr().out

    final = {"results": {"ensemble": {"miou": 0.25, "best_step": 4}}}
    monkeypatch.setattr(engine, "train", lambda config, **kwargs: final)
    assert slurm.TrainJob()(str(config_file)) == str(point.run / "final.json")
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"iwu train: best ensemble mIoU 0.2500 at step 4; {point.run / 'final.json'}")


def test_the_closing_line_is_said_by_rank_zero_only(tmp_path, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    final = {"results": {"ensemble": {"miou": 0.5, "best_step": 8}}}
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    assert closing_line(final, tmp_path / "final.json") is None
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert closing_line(final, tmp_path / "final.json") == f"iwu train: best ensemble mIoU 0.5000 at step 8; " \
                                                           f"{tmp_path / 'final.json'}"


# --- time limits --------------------------------------------------------------------


def test_a_time_limit_with_no_training_before_the_signal_is_refused(capsys):
    with pytest.raises(UserError) as refused:
        slurm.check_time(SlurmConfig(time="1"), val_every=10, where="--time")
    assert str(refused.value) == ("--time '1': SLURM signals a job 90 s before its time limit to requeue it, so a "
                                  "1-minute job is stopped before it trains; give at least 3 minutes (a job past "
                                  "its limit is requeued and resumes)")
    with pytest.raises(UserError, match="slurm.time '2': .* give at least 3 minutes"):  # the signal may come
        slurm.check_time(SlurmConfig(time="2"), val_every=10)  # 60 s after the start, or 30 s earlier still


def test_a_short_time_limit_is_warned_about_and_a_long_one_is_not():
    warning = slurm.check_time(SlurmConfig(time="3"), val_every=50)
    assert warning == ("iwu sweep: warning: slurm.time '3' leaves each attempt 1 min 00 s to 1 min 30 s before "
                       "SLURM signals it (90 s ahead of the limit, at checks every 30 s); a requeued run resumes "
                       "from its last validation (val_every=50 steps), so an attempt that reaches none makes no "
                       "progress, and after 3 requeues the job stops")
    assert slurm.check_time(SlurmConfig(time="24:00:00"), val_every=50) is None
    assert slurm.check_time(SlurmConfig(time="12"), val_every=50) is None
    # a signal of the user's own, earlier or later than submitit's
    shorter = SlurmConfig(time="2", additional={"signal": "USR2@30"})
    assert slurm.signal_lead(shorter) == 30
    assert "leaves each attempt 1 min 00 s to 1 min 30 s before SLURM signals it (30 s ahead" in slurm.check_time(
        shorter, val_every=50)


# --- sbatch's refusals, the executor -----------------------------------------------


def test_a_refusal_for_gpus_names_gpus_per_job():
    said = "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification"
    assert slurm.refusal(said, SlurmConfig()) == (
        f"sbatch refused the jobs ({said}); each job asks for 1 GPU (--gpus-per-job, default 1): on a partition "
        "without GPUs use --gpus-per-job 0, else check --partition and --account")
    assert slurm.refusal("sbatch: error: invalid account", SlurmConfig(gpus_per_job=0)).endswith(
        "check --partition, --account, --time, --gpus-per-job and slurm.additional")


def test_the_array_runs_every_job_at_once_unless_told(tmp_path, point, monkeypatch, capsys):
    from iwu.cli import main

    calls = []
    monkeypatch.setattr(slurm, "run_slurm", lambda todo, files, folder, settings, parallel, *a, **k: calls.append(
        parallel) or [])
    config = tiny_config(tmp_path, "plain")
    for extra, expected in (([], 4), (["--parallel", "3"], 3)):
        main(["sweep", str(config), "--seeds", "2", "--launcher", "slurm", "--gpus-per-job", "0",
              f"out={tmp_path / 'sw'}", *extra])
        assert calls.pop() == expected
    assert "(slurm, 4 at a time)" in capsys.readouterr().out


# --- what the log of a job (not a terminal) gets -----------------------------------


def test_the_waiting_count_writes_lines_not_redraws_where_stderr_is_no_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    tally = Tally(2, "sweep", "run")
    tally.ended("standard/seed0", "finished")
    tally.ended("standard/seed1", "failed")
    tally.close()
    said = capsys.readouterr()
    assert said.out == "sweep: 1/2 runs ended: standard/seed0 finished\nsweep: 2/2 runs ended: standard/seed1 failed\n"
    assert "\r" not in said.err + said.out
    quiet = Tally(1, "sweep", "run", enabled=False)
    quiet.ended("standard/seed0", "finished")
    assert capsys.readouterr().out == ""


# --- multi-process settings, refused before training --------------------------------


def _config(tmp_path, **trainer):
    config = load_config(tiny_config(tmp_path, trainer=trainer))
    return config


@pytest.mark.parametrize("env, tasks", [
    ({}, None), ({"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2"}, 2),
    ({"SLURM_NTASKS": "4", "SLURM_NNODES": "2"}, 2),
    ({"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "interactive"}, None), ({"SLURM_NTASKS": "1"}, 1),
])
def test_slurm_s_tasks_on_this_node(env, tasks):
    assert slurm_tasks_here(env) == tasks


def test_slurm_s_task_count_must_be_trainer_devices(tmp_path):
    with pytest.raises(UserError) as wrong:
        check_distributed(_config(tmp_path, devices=2, strategy="ddp"), tasks=1, cuda=False)
    assert str(wrong.value) == ("trainer.devices=2, but SLURM started 1 task(s) on this node (--ntasks-per-node): "
                                "one process trains per task, so set trainer.devices=1 or submit with "
                                "--ntasks-per-node=2")
    check_distributed(_config(tmp_path, devices=2, strategy="ddp"), tasks=2, cuda=False)
    check_distributed(_config(tmp_path, devices="auto"), tasks=2, cuda=False)  # Lightning's own check then
    check_distributed(_config(tmp_path, devices=2), tasks=None, cuda=False)  # not under SLURM


def test_sync_batchnorm_without_cuda_is_one_line(tmp_path):
    config = _config(tmp_path, sync_batchnorm=True, devices=2, strategy="ddp")
    with pytest.raises(UserError, match=r"^trainer.sync_batchnorm=true: SyncBatchNorm runs on CUDA GPUs only"):
        check_distributed(config, tasks=None, cuda=False)
    check_distributed(config, tasks=None, cuda=True)


def test_one_image_per_process_with_batch_norm_is_one_line(tmp_path):
    config = _config(tmp_path, devices=2, strategy="ddp")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, batch_size=1))
    with pytest.raises(UserError) as one:
        check_distributed(config, tasks=2, cuda=False)
    assert str(one.value) == ("data.batch_size=1: batch norm cannot train on one image per process (DeepLab's "
                              "pooled ASPP branch sees one value per channel); use data.batch_size=2 or more per "
                              "process")
    check_distributed(config, tasks=2, cuda=False, batch_norm=False)  # a model without batch norm trains
    synced = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, sync_batchnorm=True))
    check_distributed(synced, tasks=2, cuda=True)  # statistics over both ranks: two images


def test_the_checks_run_before_training_in_iwu_train(tmp_path, capsys):
    from iwu.cli import main

    config = tiny_config(tmp_path, data={"batch_size": 1})
    assert main(["train", str(config), "--no-progress", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1:] == [
        "iwu train: error: data.batch_size=1: batch norm cannot train on one image per process (DeepLab's pooled "
        "ASPP branch sees one value per channel); use data.batch_size=2 or more per process"]
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
