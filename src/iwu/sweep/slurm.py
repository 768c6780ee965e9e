"""`--launcher slurm`: one job per run, submitted as one job array through submitit.

Each job trains its run in-process (`TrainJob`). A job that reaches its time
limit or is preempted is requeued by submitit (up to 3 times), and the run
resumes from its last checkpoint. Job ids are kept in the sweep folder, so a
sweep interrupted while it waits (Ctrl-C, a lost login) is picked up again by
the same command: runs whose job is still queued or running are waited for,
not submitted twice. submitit's logs (`<job>_<task>_log.out/.err`) are in
`<root>/sweep/slurm/`.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import submitit
from tqdm import tqdm

from iwu.config.schema import SlurmConfig, load_config
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_json
from iwu.sweep.grid import Point
from iwu.sweep.outcome import Outcome, SweepInterrupted, last_words
from iwu.engine.run_dir import FINAL, run_dir

# SLURM states in which a job may still produce its run
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def minutes(text: str, where: str = "slurm.time") -> int:
    """SLURM's time formats in whole minutes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    match = _TIME.match(str(text).strip())
    if not match:
        raise UserError(f"{where} {text!r}: expected SLURM's time, e.g. \"90\" (minutes), \"24:00:00\" or \"2-00:00:00\"")
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = (a * 60 + b) * 60 + c
    elif b is not None:  # M:S
        seconds = a * 60 + b
    else:  # M
        seconds = a * 60
    if seconds <= 0:
        raise UserError(f"{where} {text!r}: must be more than zero")
    return -(-seconds // 60)


class TrainJob(submitit.helpers.Checkpointable):
    """One run; submitit calls `checkpoint` on timeout or preemption and requeues the same call."""

    def __call__(self, config_file: str, imports: tuple[str, ...] = ()) -> str:
        from iwu.models import import_user_modules
        from iwu.engine.train import train

        import_user_modules(imports)
        config = load_config(config_file)
        train(config, progress=False)
        return str(run_dir(config) / FINAL)


def make_executor(folder: Path, settings: SlurmConfig, parallel: int, name: str, cluster: str = "slurm"):
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    gpus = settings.gpus_per_job
    params = {
        "name": name, "timeout_min": minutes(settings.time), "nodes": 1,
        "gpus_per_node": gpus, "tasks_per_node": max(1, gpus),  # one DDP process per GPU
        "cpus_per_task": settings.cpus_per_task, "mem_gb": settings.mem_gb,
        "slurm_partition": settings.partition, "slurm_account": settings.account,
        "slurm_array_parallelism": parallel, "slurm_additional_parameters": dict(settings.additional) or None,
    }
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def _job_file(folder: Path) -> Path:
    return folder / "jobs.json"


def _read_jobs(folder: Path) -> dict[str, str]:
    try:
        return json.loads(_job_file(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _attach(folder: Path, job_id: str):
    """The SLURM job of an earlier invocation if it is still queued or running, else None."""
    job = submitit.SlurmJob(folder=folder, job_id=job_id)
    return job if job.state.split()[0] in ACTIVE else None


def _outcome(point: Point, job) -> Outcome:
    log = Path(job.paths.stderr)
    try:
        job.results()  # one per task: a job of several GPUs runs one DDP process per task
    except Exception as err:  # the job's own error: a UserError's line, or the traceback's last line
        lines = [line for line in str(err).splitlines() if line.strip()]
        return Outcome(point, "failed", log, last_words(log) or (lines[-1] if lines else type(err).__name__))
    if (point.run / FINAL).exists():
        return Outcome(point, "finished", log)
    return Outcome(point, "failed", log, f"the job ended without {point.run / FINAL}")


def run_slurm(points: list[Point], config_files: dict[str, Path], folder: Path, settings: SlurmConfig,
              parallel: int, imports=(), cluster: str = "slurm", progress: bool = True,
              poll: float = 30.0) -> list[Outcome]:
    """Submit the points not already in flight as one array, then wait for all of them."""
    slurm_folder = folder / "slurm"
    known = _read_jobs(folder)
    jobs = {}
    if cluster == "slurm":  # jobs of other clusters cannot be found again from another process
        for point in points:
            if point.name in known and (job := _attach(slurm_folder, known[point.name])) is not None:
                jobs[point.name] = job
    todo = [p for p in points if p.name not in jobs]
    if todo:
        submitted = _submit(todo, config_files, slurm_folder, settings, parallel, imports, cluster,
                            name=f"iwu-{folder.parent.name}")
        jobs.update({p.name: job for p, job in zip(todo, submitted)})
        known.update({name: job.job_id for name, job in jobs.items()})
        atomic_write_json(_job_file(folder), known)
    print(f"iwu sweep: {len(todo)} job(s) submitted, {len(points) - len(todo)} already in the queue; "
          f"logs in {slurm_folder}")
    return _wait(points, jobs, progress, poll)


def _submit(todo, config_files, slurm_folder, settings, parallel, imports, cluster, name) -> list:
    if cluster == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise UserError("--launcher slurm: sbatch and srun are not on this machine's PATH; run the sweep on a "
                        "SLURM login node, or use --launcher local")
    executor = make_executor(slurm_folder, settings, parallel, name=name, cluster=cluster)
    try:
        with executor.batch():
            return [executor.submit(TrainJob(), str(config_files[p.name]), tuple(imports)) for p in todo]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as err:
        said = [line for line in str(err).splitlines() if line.strip()]
        raise UserError(f"sbatch refused the jobs ({said[-1] if said else 'no message'}); check --partition, "
                        "--account, --time and slurm.additional") from None


def _wait(points: list[Point], jobs: dict, progress: bool, poll: float) -> list[Outcome]:
    waiting = {p.name: p for p in points}
    outcomes: list[Outcome] = []
    bar = tqdm(total=len(points), desc="sweep", unit="run", disable=not progress)
    try:
        while waiting:
            for name, point in list(waiting.items()):
                if jobs[name].done():
                    outcomes.append(_outcome(point, jobs[name]))
                    del waiting[name]
                    bar.update()
                    bar.set_postfix(failed=sum(o.state == "failed" for o in outcomes))
            if waiting:
                time.sleep(poll)
    except KeyboardInterrupt:
        # the jobs are the cluster's now: they go on, and the same command waits for them again
        outcomes += [Outcome(p, "interrupted", Path(jobs[p.name].paths.stderr),
                             f"job {jobs[p.name].job_id} goes on in the queue") for p in waiting.values()]
        raise SweepInterrupted(outcomes) from None
    finally:
        bar.close()
    return outcomes
