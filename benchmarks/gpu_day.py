"""A GPU day that fits: what the project measures on a lent GPU, in one command of at most 9 minutes.

The GPU machine lent to this project (one H200 with about 139 GiB, 16 CPU cores)
reaches no package registry, has no virtual environment of this project and
gives 15 minutes in all, its start-up and the transfers included. Its
`python3` holds torch, torchvision, lightning, torchmetrics, timm, scipy,
scikit-learn, matplotlib and the rest of gpu_day_wheels.IMAGE_PACKAGES; iwu's other
runtime dependencies travel as wheels. Two commands:

    python benchmarks/gpu_day.py fetch [--dest gpu_wheels] [--python-version 3.12]

here, where the registry is reachable: the wheels of every dependency in
pyproject.toml the image lacks, and of their own needs it lacks, into
`gpu_wheels/` (ignored by git); benchmarks/gpu_day_wheels.py says which and
how, and what the import stage checks. One line per wheel, and the total.

    python3 benchmarks/gpu_day.py run --out $OUT [--wheels gpu_wheels]

on the GPU machine, with `gpu_wheels` carried beside the working tree. No
venv and no network: the wheels go into a temporary folder with `pip install
--no-index --no-deps --target`, and that folder, then this checkout's `src/`,
lead PYTHONPATH for every stage. Each stage is a subprocess in a process group
of its own, killed (SIGTERM, then SIGKILL) at its time cap; a stage cut there
keeps what it wrote, as every stage writes as it goes. Timestamped progress
lines on stdout; the same lines and every stage's output in `gpu_day.log`.

| stage | cap | what |
|---|---|---|
| install | 60 s | the carried wheels into the temporary folder |
| imports | 90 s | every import iwu needs works, each from where it must come (below), CUDA is there |
| prepare | 180 s | beside the suite, on the CPU: the protocol's scenes, config and data caches |
| suite | 180 s | stage 1, benchmarks/gpu_suite.py (its docstring says what it measures and what it leaves out to fit) |
| protocol | 315 s | stage 2, the `gpu-day` protocol of benchmarks/method_quality.py: ten runs at once on the one GPU |
| report | 45 s | stage 2's tables: `iwu report`, paired by seed, in-domain and cross-domain, and the learning gap |

The import check (benchmarks/gpu_day_wheels.py) imports every dependency and
every module of iwu, each from where it must come, so a missing wheel cannot
hide behind a copy installed elsewhere. The whole command ends within
DEADLINE_S (9 minutes) of its start: a stage's cap shrinks to what is left of
it, less the report's and the final writing's reserve. A failed import stops
the day at once (the rest would fail the same way, minutes later). Under
`--out`, flat and at most eight files (what the GPU machine gives back):
gpu_day.{log,json,md} (the progress lines and every stage's output; every
stage's status, the import check and the protocol's throughput; the summary,
with stage 1's tables and stage 2's), gpu_suite_<device>_<time>.{json,md}
(stage 1, rewritten after every measurement), gpu_day_learning_gap.png, and
gpu_day_protocol.tar.gz (stage 2's reports, figures and CSVs, each run's
metrics.csv and final.json, the sweep's logs). Exit status 0 when every stage
finished, 1 otherwise (what was measured is written either way). `--stages
suite` or `--stages protocol` runs one of the two; the protocol's runs live
under `--work` (default runs/gpu_day), so a second command on the same machine
skips the runs that finished and resumes the others.

Stage 2's protocol, the estimate its step count comes from and the one
correction it allows are in benchmarks/gpu_day_protocol.py.

`run --rehearse` is the same path on a CPU at tiny sizes (stage 1 at the
suite's --tiny sizes on a few measurements, the protocol at 32x32, 4 steps, 2
seeds per mode): tests/test_gpu_day.py runs it with wheels fetched for the
local Python, so a GPU day never discovers a missing import, a path that
assumes a venv, or a stage that ignores its cap.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).resolve()
BENCHMARKS = SCRIPT.parent
ROOT = BENCHMARKS.parent
SRC = ROOT / "src"
# the parent needs only the standard library, iwu from this checkout, and the day's two modules beside it
sys.path[:0] = [str(SRC), str(BENCHMARKS)]

from gpu_day_protocol import BUDGET, flops_command, last_progress, prepare, report, train_runs  # noqa: E402
from gpu_day_wheels import fetch_command, import_check  # noqa: E402
from iwu.errors import UserError  # noqa: E402
from iwu.util.atomic_files import atomic_write_bytes, atomic_write_json  # noqa: E402

DEFAULT_WHEELS = ROOT / "gpu_wheels"
DEFAULT_WORK = ROOT / "runs" / "gpu_day"

DEADLINE_S = 540  # the whole command, on the GPU machine
FINISH_S = 10  # kept back at the end for the last JSON and Markdown
GRACE_S = 5  # between SIGTERM and SIGKILL when a stage reaches its cap
HEARTBEAT_S = 30
CAPS = {"install": 60, "imports": 90, "prepare": 180, "suite": 180, "protocol": 315, "report": 45}
REHEARSAL_CAPS = dict.fromkeys(CAPS, 600)  # a CPU busy with other work is slow: here caps only catch a hang
GROUPS = {"suite": ("suite",), "protocol": ("prepare", "protocol", "report")}  # --stages: what each name runs
REHEARSAL_MEASUREMENTS = "masks,agreement"  # the suite's --tiny measurements the rehearsal runs (cc3d among them)

OUT_FILES = {  # everything the run writes under --out, flat (the GPU machine gives back 8 files)
    "log": "gpu_day.log", "json": "gpu_day.json", "md": "gpu_day.md",
    "gap": "gpu_day_learning_gap.png", "tar": "gpu_day_protocol.tar.gz",
}  # and the suite's gpu_suite_<device>_<time>.json and .md


def now() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S")


# --------------------------------------------------------------------------- stages (on the GPU machine)


@dataclass
class Stage:
    """One step of the day: a command run in a process group of its own, killed at `cap` seconds."""

    name: str
    command: list[str]
    cap: float
    status: str = "not run"  # finished, failed, cut (at its cap), skipped, not run
    returncode: int | None = None
    seconds: float = 0.0
    last_line: str = ""
    note: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)
    started: float = 0.0
    reader: threading.Thread | None = field(default=None, repr=False)

    def summary(self) -> dict:
        return {"status": self.status, "cap_s": round(self.cap, 1), "seconds": round(self.seconds, 1),
                "returncode": self.returncode, "last_line": self.last_line[-300:], "note": self.note}


class Day:
    """The run's clock, its log and the stages' processes."""

    def __init__(self, out: Path, deadline_s: float | None):
        self.out = out
        self.start = time.monotonic()
        self.deadline_s = deadline_s
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / OUT_FILES["log"], "a", encoding="utf-8", buffering=1)
        self.lock = threading.Lock()
        self.running: list[Stage] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str) -> None:
        line = f"{now()} +{self.elapsed():4.0f}s  gpu-day: {text}"
        with self.lock:
            print(line, flush=True)
            self.log.write(line + "\n")

    def cap(self, stage: str, caps: dict, reserve: float = 0.0) -> float:
        """`stage`'s cap, shrunk to what is left before the deadline less `reserve` (seconds kept for later)."""
        if self.deadline_s is None:
            return caps[stage]
        return max(1.0, min(caps[stage], self.deadline_s - self.elapsed() - FINISH_S - reserve))

    def start_stage(self, stage: Stage, env: dict) -> None:
        self.say(f"{stage.name}: started (cap {stage.cap:.0f} s)")
        stage.started = time.monotonic()
        # a process group of its own (not a session: the machine's own clean-up still reaches it)
        stage.proc = subprocess.Popen(stage.command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      errors="replace", process_group=0)
        stage.reader = threading.Thread(target=self._copy_output, args=(stage,), daemon=True)
        stage.reader.start()
        self.running.append(stage)

    def _copy_output(self, stage: Stage) -> None:
        for line in stage.proc.stdout:
            line = line.rstrip()
            if line:
                stage.last_line = line
                with self.lock:
                    self.log.write(f"[{stage.name}] {line}\n")

    def wait(self, stages: list[Stage], progress=None) -> None:
        """Until every stage has ended or been cut at its cap; a heartbeat line every HEARTBEAT_S."""
        beat = time.monotonic()
        while any(s.proc.poll() is None for s in stages):
            time.sleep(0.2)
            for s in stages:
                if s.proc.poll() is None and time.monotonic() - s.started > s.cap:
                    kill_group(s.proc)
                    s.status = "cut"
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                for s in stages:
                    if s.proc.poll() is None:
                        more = progress() if progress else ""
                        self.say(f"{s.name}: {time.monotonic() - s.started:.0f} of {s.cap:.0f} s"
                                 f"{more}; last line: {s.last_line[:140]}")
        for s in stages:
            self.finish_stage(s)

    def finish_stage(self, stage: Stage) -> None:
        kill_group(stage.proc, grace=0)  # whatever the stage left behind must not hold the GPU
        stage.reader.join(timeout=5)
        stage.seconds = time.monotonic() - stage.started
        stage.returncode = stage.proc.returncode
        if stage.status != "cut":
            stage.status = "finished" if stage.returncode == 0 else "failed"
        self.running.remove(stage)
        verdict = {"cut": f"cut at its cap ({stage.cap:.0f} s), kept what it wrote",
                   "failed": f"failed (exit {stage.returncode}): {stage.last_line[:200]}"}.get(stage.status, "done")
        self.say(f"{stage.name}: {verdict}, {stage.seconds:.0f} s")

    def stop_all(self) -> None:
        for stage in list(self.running):
            kill_group(stage.proc)


def kill_group(proc: subprocess.Popen, grace: float = GRACE_S) -> None:
    """SIGTERM to the process's group, SIGKILL to what is left after `grace` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM if grace else signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    if grace:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def environment(site: Path, rehearse: bool = False) -> dict:
    """The stages' environment: the carried wheels, then this checkout's src/, ahead of everything installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    if rehearse:  # tiny tensors gain nothing from threads, and idle threads spin on a busy machine's cores
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def stage_commands(args, site: Path, wheels: list[Path]) -> dict[str, list[str]]:
    """Every stage's command line (the report's gets the protocol's timings when it starts)."""
    python = sys.executable
    me = [python, str(SCRIPT), "stage"]
    work = ["--work", str(args.work), *(["--rehearse"] if args.rehearse else [])]
    suite = [python, str(BENCHMARKS / "gpu_suite.py"), "--out", str(args.out)]
    suite += ["--device", "cpu", "--tiny", "--only", REHEARSAL_MEASUREMENTS] if args.rehearse else ["--device", "cuda"]
    return {
        "install": [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
                    "--no-deps", "--no-compile", "--no-cache-dir", "--target", str(site), *map(str, wheels)],
        "imports": [*me, "imports", "--site", str(site), *[a for w in wheels for a in ("--wheel", str(w))],
                    *work, *([] if args.rehearse else ["--cuda"])],
        "prepare": [*me, "prepare", *work],
        "suite": suite,
        "protocol": [*me, "train", *work],
        "report": [*me, "report", "--out", str(args.out), *work],
    }


def run_command(args) -> int:
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels.is_dir() else []
    if not wheels:
        raise UserError(f"--wheels {args.wheels}: no wheels there; run `python benchmarks/gpu_day.py fetch` where "
                        "the package index is reachable, and carry that folder to the GPU machine")
    args.out, args.work = args.out.resolve(), args.work.resolve()
    # an earlier command's findings must not pass for this one's in the summary
    for stale in (args.work / "imports.json", args.work / "method" / "protocol.md"):
        stale.unlink(missing_ok=True)
    caps = {**(REHEARSAL_CAPS if args.rehearse else CAPS), **args.cap}
    day = Day(args.out, None if args.rehearse else DEADLINE_S)
    site = Path(tempfile.mkdtemp(prefix="iwu-gpu-day-site-"))
    env = environment(site, args.rehearse)
    commands = stage_commands(args, site, wheels)
    stages = {name: Stage(name, command, caps[name]) for name, command in commands.items()}
    wanted = {"install", "imports", *(name for group in args.stages for name in GROUPS[group])}
    for name, stage in stages.items():
        if name not in wanted:
            stage.status, stage.note = "skipped", f"not in --stages {','.join(args.stages)}"
    day.say(f"{'rehearsal on the CPU' if args.rehearse else 'on the GPU'}: {len(wheels)} wheels, stages "
            f"{', '.join(n for n in stages if n in wanted)}; out {args.out}, work {args.work}")

    def run(names: list[str], reserve: float = 0.0, progress=None) -> None:
        batch = []
        for name in names:
            stages[name].cap = day.cap(name, caps, reserve)
            day.start_stage(stages[name], env)
            batch.append(stages[name])
        day.wait(batch, progress)
        write_summary(day, stages, args, wheels)

    signal.signal(signal.SIGTERM, interrupted)
    try:
        for name in ("install", "imports"):
            run([name])
            if stages[name].status != "finished":
                day.say(f"stopping: {name} did not finish, and every stage after it needs it")
                return 1
        # stage 1, with the protocol's scenes and caches written beside it on the CPU
        run([name for name in ("prepare", "suite") if name in wanted])
        if "protocol" in wanted:
            if stages["prepare"].status == "finished":
                run(["protocol"], reserve=caps["report"], progress=lambda: runs_progress(args.work))
                protocol = stages["protocol"]
                stages["report"].command += ["--train-seconds", f"{protocol.seconds:.1f}",
                                             "--train-cap", f"{protocol.cap:.1f}"]
                run(["report"])
            else:
                for name in ("protocol", "report"):
                    stages[name].status, stages[name].note = "skipped", "prepare did not finish"
    except KeyboardInterrupt:
        day.say("interrupted: stopping the stages")
        day.stop_all()
        return 130
    finally:
        write_summary(day, stages, args, wheels)
        shutil.rmtree(site, ignore_errors=True)
    ended = [s for s in stages.values() if s.name in wanted]
    day.say(f"done in {day.elapsed():.0f} s: " + ", ".join(f"{s.name} {s.status}" for s in ended)
            + f"; summary in {args.out / OUT_FILES['md']}")
    return 0 if all(s.status == "finished" for s in ended) else 1


def interrupted(signum, frame):
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C: stop the stages' groups, write the summary


def runs_progress(work: Path) -> str:
    """For the heartbeat: how many of the protocol's runs finished, and the furthest step the others logged."""
    runs = work / "method" / "runs"
    finished = len(list(runs.glob("*/seed*/final.json")))
    steps = [r["step"] for r in (last_progress(log) for log in (runs / "sweep" / "logs").glob("*/*.log")) if r]
    return f", {finished} runs finished" + (f", the furthest at step {max(steps)}" if steps else "")


# --------------------------------------------------------------------------- the summary: gpu_day.json and .md


def read_json_file(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def write_summary(day: Day, stages: dict[str, Stage], args, wheels: list[Path]) -> None:
    """gpu_day.{json,md}, rewritten after every stage: a day stopped part way keeps its summary."""
    imports = read_json_file(args.work / "imports.json")
    protocol = read_json_file(args.work / "method" / "protocol.json")
    doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "rehearsal": args.rehearse,
           "deadline_s": day.deadline_s, "seconds": round(day.elapsed(), 1),
           "wheels": [w.name for w in wheels], "stages": {n: s.summary() for n, s in stages.items()},
           "imports": imports, "protocol": protocol}
    atomic_write_json(args.out / OUT_FILES["json"], doc)
    atomic_write_bytes(args.out / OUT_FILES["md"], summary_markdown(doc, args.out, args.work).encode())


def summary_markdown(doc: dict, out: Path, work: Path) -> str:
    imports, torch_ = doc["imports"], doc["imports"].get("torch", {})
    device = torch_.get("device") or "no CUDA device"
    lines = [f"# GPU day{' rehearsal' if doc['rehearsal'] else ''}: {device}, {doc['date'][:16]}", "",
             f"Python {imports.get('python', '?')}, torch {torch_.get('version', '?')} (CUDA "
             f"{torch_.get('cuda') or '-'}); carried: {', '.join(doc['wheels'])}; {doc['seconds']:.0f} s in all.", "",
             "| stage | status | seconds | cap s | note |", "|---|---|---:|---:|---|"]
    for name, s in doc["stages"].items():
        note = s["note"] or (s["last_line"][:160] if s["status"] == "failed" else "")
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.0f} | {s['cap_s']:.0f} | {note} |")
    for problem in imports.get("problems", []):
        lines.append(f"\nimport check: {problem}")
    for warning in imports.get("warnings", []):
        lines.append(f"\nimport check (warning): {warning}")
    suite = newest(out, "gpu_suite_*.md")
    lines += ["", "## Stage 1: benchmarks/gpu_suite.py", "",
              suite.read_text(encoding="utf-8").strip() if suite else f"({doc['stages']['suite']['status']})"]
    protocol = work / "method" / "protocol.md"
    lines += ["", f"## Stage 2: the {BUDGET} protocol of benchmarks/method_quality.py", "",
              protocol.read_text(encoding="utf-8").strip() if protocol.is_file()
              else f"(protocol {doc['stages']['protocol']['status']}, report {doc['stages']['report']['status']})"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- one stage, in its own process


def stage_command(args) -> int:
    if args.name == "imports":
        found = import_check(args.site, args.wheel, args.cuda)
        atomic_write_json(args.work / "imports.json", found)
        deps = found["dependencies"]
        print(f"imports: {len(deps)} distributions ({sum(d['from'] == 'carried' for d in deps.values())} carried), "
              f"{found['iwu_modules']} iwu modules, torch {found['torch']['version']}, "
              f"device {found['torch']['device'] or 'none'}")
        for line in found["warnings"]:
            print(f"imports: warning: {line}")
        for line in found["problems"]:
            print(f"imports: PROBLEM: {line}")
        return 1 if found["problems"] else 0
    if args.name == "prepare":
        prepare(args.work, args.rehearse)
    elif args.name == "train":
        train_runs(args.work, args.rehearse)
    else:
        report(args.work, args.out / OUT_FILES["gap"], args.out / OUT_FILES["tar"], args.rehearse,
               args.train_seconds, args.train_cap)
    return 0


# --------------------------------------------------------------------------- command line


def cap_value(text: str) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if name not in CAPS or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected STAGE=SECONDS, a stage of {', '.join(CAPS)}")
    return name, value


def stage_groups(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in GROUPS for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected some of {', '.join(GROUPS)}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_ = commands.add_parser("fetch", help="here: download the wheels the GPU machine lacks")
    fetch_.add_argument("--dest", type=Path, default=DEFAULT_WHEELS, help="folder of the wheels (default gpu_wheels)")
    fetch_.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    run = commands.add_parser("run", help="on the GPU machine: install the wheels, then every stage under its cap")
    run.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="the fetched wheels (default gpu_wheels)")
    run.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or DEFAULT_WORK / "out"),
                     help="where the results go, flat (default $OUT, else runs/gpu_day/out)")
    run.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scenes and runs (default runs/gpu_day)")
    run.add_argument("--stages", type=stage_groups, default=list(GROUPS), help="suite, protocol or both (default)")
    run.add_argument("--cap", type=cap_value, action="append", default=[], metavar="STAGE=SECONDS",
                     help="another cap for one stage (repeatable)")
    run.add_argument("--rehearse", action="store_true", help="on a CPU at tiny sizes: what tests/test_gpu_day.py runs")
    flops = commands.add_parser("flops", help="the protocol's step FLOPs, counted on the CPU, and the estimate")
    flops.add_argument("--batch", type=int, default=2, help="the batch counted (batch norm needs 2 or more)")
    stage = commands.add_parser("stage")  # one stage's work, in its own process (run starts these)
    stage.add_argument("name", choices=("imports", "prepare", "train", "report"))
    stage.add_argument("--work", type=Path, required=True)
    stage.add_argument("--rehearse", action="store_true")
    stage.add_argument("--site", type=Path)
    stage.add_argument("--wheel", type=Path, action="append", default=[])
    stage.add_argument("--cuda", action="store_true")
    stage.add_argument("--out", type=Path)
    stage.add_argument("--train-seconds", type=float)
    stage.add_argument("--train-cap", type=float)
    args = parser.parse_args(argv)
    if args.command == "run":
        args.cap = dict(args.cap)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return {"fetch": fetch_command, "run": run_command, "flops": flops_command,
                "stage": stage_command}[args.command](args)
    except UserError as err:
        print(f"gpu_day: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
