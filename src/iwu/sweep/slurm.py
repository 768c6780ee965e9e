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

import contextlib
import io
import json
import re
import shutil
import time
from pathlib import Path

import submitit

from iwu.config.schema import SlurmConfig, load_config
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_json
from iwu.sweep.grid import Point
from iwu.sweep.outcome import Outcome, SweepInterrupted, last_step, last_words, plural
from iwu.util.bars import Tally
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


SIGNAL_LEAD_S = 90  # submitit has SLURM send USR2 this long before the time limit (its signal_delay_s)
EARLY_S = 30  # SLURM looks at time limits every 30 s or so: the signal may come this much earlier still
SHORTEST_S = 30  # training time an attempt needs at least before the signal, past starting up
WARN_BELOW_S = 10 * 60  # shorter than this, an attempt may not reach a validation (where last.ckpt is saved)
REQUEUES = 3  # submitit's requeues of a job that reaches its time limit (its max_num_timeout)


def signal_lead(settings: SlurmConfig) -> int:
    """Seconds before the limit at which a job is told to stop: submitit's 90, or `slurm.additional`'s
    `signal: USR2@N` (it replaces submitit's own --signal line)."""
    match = re.search(r"@(\d+)\s*$", str(settings.additional.get("signal", "")))
    return int(match.group(1)) if match else SIGNAL_LEAD_S


def check_time(settings: SlurmConfig, val_every: int, where: str = "slurm.time") -> str | None:
    """Refuse a time limit that leaves no training before the stop signal (every attempt would be stopped
    as it starts, and the job fail after its requeues without a word of why); for one that leaves under
    10 minutes, the warning to print: a run keeps only what it reached by its last validation."""
    limit = minutes(settings.time, where) * 60
    lead = signal_lead(settings)
    most, least = limit - lead, limit - lead - EARLY_S  # an attempt's time before the signal
    if least < SHORTEST_S:
        enough = -(-(lead + EARLY_S + SHORTEST_S) // 60)
        raise UserError(f"{where} {settings.time!r}: SLURM signals a job {lead} s before its time limit to requeue "
                        f"it, so a {limit // 60}-minute job is stopped before it trains; give at least {enough} "
                        "minutes (a job past its limit is requeued and resumes)")
    if most < WARN_BELOW_S:
        return (f"iwu sweep: warning: {where} {settings.time!r} leaves each attempt {_span(least)} to {_span(most)} "
                f"before SLURM signals it ({lead} s ahead of the limit, at checks every {EARLY_S} s); a requeued run "
                f"resumes from its last validation (val_every={val_every} steps), so an attempt that reaches none "
                f"makes no progress, and after {REQUEUES} requeues the job stops")
    return None


def _span(seconds: int) -> str:
    return f"{seconds // 60} min {seconds % 60:02d} s"


class TrainJob(submitit.helpers.Checkpointable):
    """One run; submitit calls `checkpoint` on timeout or preemption and requeues the same call.

    A stop by SIGTERM (a preemption, `scontrol requeue`, `scancel`) is not the job's result: the job
    leaves without one and SLURM decides what follows (a requeued job runs this again and resumes from
    last.ckpt), so an earlier attempt's stop never stands for a run that finishes later.
    """

    def __call__(self, config_file: str, imports: tuple[str, ...] = ()) -> str:
        from iwu.errors import Stopped
        from iwu.models import import_user_modules
        from iwu.engine.progress import closing_line
        from iwu.engine.train import train

        import_user_modules(imports)
        config = load_config(config_file)
        final_file = run_dir(config) / FINAL
        try:
            final = train(config, progress=False, resume_hint="the sweep's requeue (or the same iwu sweep command)")
        except Stopped as stop:
            print(f"iwu train: {stop}", flush=True)
            raise SystemExit(stop.status) from None  # not an Exception: submitit then stores no result
        if line := closing_line(final, final_file):
            print(line, flush=True)
        return str(final_file)


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


def _ended(job, cluster: str) -> bool:
    """Whether the job is over. submitit's `done` trusts a result file, which an earlier attempt of a
    requeued job may have left; SLURM's own state says whether an attempt is still to come."""
    if not job.done():
        return False
    return cluster != "slurm" or job.state.split()[0] not in ACTIVE


def _ask_slurm(jobs: list) -> None:
    """The states of all SLURM jobs with one sacct: submitit alone asks less and less often, at last every
    10 minutes, so a job cancelled from outside would be noticed that late."""
    ours = [job for job in jobs if isinstance(job, submitit.SlurmJob)]
    if ours:
        ours[0].watcher.update()  # the watcher is shared by every SlurmJob


def _outcome(point: Point, job) -> Outcome:
    """The run's verdict is its directory's: finished when `final.json` is there, whatever an attempt
    of its job returned; otherwise the job's error, or why SLURM ended it."""
    log = Path(job.paths.stderr)
    if (point.run / FINAL).exists():
        return Outcome(point, "finished", log)
    try:
        job.results()  # one per task: a job of several GPUs runs one DDP process per task
    except Exception as err:  # the job's own error: a UserError's line, or the traceback's last line
        text = str(err)
        if "timed-out too many times" in text:
            return Outcome(point, "failed", log, requeue_cap(point))
        if ended := re.search(r"has not produced any output \(state: ([^)]*)\)", text):  # scancel, a node lost
            return Outcome(point, "failed", log, f"SLURM ended job {job.job_id} ({ended[1]}) before the run "
                                                 "finished; its log says why")
        lines = [line for line in text.splitlines() if line.strip()]
        return Outcome(point, "failed", log, last_words(log) or (lines[-1] if lines else type(err).__name__))
    return Outcome(point, "failed", log, f"the job ended without {point.run / FINAL}")


def requeue_cap(point: Point) -> str:
    """The line for a run whose job reached its time limit more often than submitit requeues it."""
    step = last_step(point.run)
    where = f"stopped at step {step}" if step is not None else "stopped before its first step was logged"
    return (f"reached its time limit {REQUEUES + 1} times (submitit requeues a job {REQUEUES} times): {where}; "
            "the same command continues it from its last checkpoint, or give each job a longer --time")


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
    return _wait(points, jobs, progress, poll, cluster)


def _submit(todo, config_files, slurm_folder, settings, parallel, imports, cluster, name) -> list:
    if cluster == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise UserError("--launcher slurm: sbatch and srun are not on this machine's PATH; run the sweep on a "
                        "SLURM login node, or use --launcher local")
    executor = make_executor(slurm_folder, settings, parallel, name=name, cluster=cluster)
    try:  # submitit echoes a refusing sbatch's stderr itself; the one line below says it once
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            return [executor.submit(TrainJob(), str(config_files[p.name]), tuple(imports)) for p in todo]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as err:
        said = [line for line in str(err).splitlines() if line.strip()]
        raise UserError(refusal(said[-1] if said else "no message", settings)) from None


def refusal(said: str, settings: SlurmConfig) -> str:
    """sbatch's refusal as one line, with the option most likely at fault named first."""
    hint = "check --partition, --account, --time, --gpus-per-job and slurm.additional"
    if settings.gpus_per_job and re.search(r"gres|gpu|generic resource", said, re.IGNORECASE):
        hint = (f"each job asks for {plural(settings.gpus_per_job, 'GPU')} (--gpus-per-job, default 1): on a "
                "partition without GPUs use --gpus-per-job 0, else check --partition and --account")
    return f"sbatch refused the jobs ({said}); {hint}"


def _wait(points: list[Point], jobs: dict, progress: bool, poll: float, cluster: str = "slurm") -> list[Outcome]:
    waiting = {p.name: p for p in points}
    outcomes: list[Outcome] = []
    bar = Tally(len(points), "sweep", "run", progress)
    try:
        while waiting:
            _ask_slurm([jobs[name] for name in waiting])
            for name, point in list(waiting.items()):
                if _ended(jobs[name], cluster):
                    outcomes.append(_outcome(point, jobs[name]))
                    del waiting[name]
                    bar.ended(name, outcomes[-1].state)
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
