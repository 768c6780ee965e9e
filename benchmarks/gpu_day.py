"""A GPU day that fits: what the project measures on a lent GPU, in one command of at most 9 minutes.

The GPU machine lent to this project (one H200 with about 139 GiB, 16 CPU cores)
reaches no package registry, has no virtual environment of this project and
gives 15 minutes in all, its start-up and the transfers included. Its
`python3` holds torch, torchvision, lightning, torchmetrics, timm, scipy,
scikit-learn, matplotlib and the rest of IMAGE_PACKAGES below; iwu's other
runtime dependencies travel as wheels. Two commands:

    python benchmarks/gpu_day.py fetch [--dest gpu_wheels] [--python-version 3.12]

here, where the registry is reachable: `pip download` of the wheels of every
dependency in pyproject.toml that the image lacks, and of their own needs the
image lacks (read from each wheel's METADATA), for CPython on manylinux
x86-64, into `gpu_wheels/` (ignored by git). connected-components-3d is the one
compiled wheel: its 4.x releases publish manylinux_2_24 / manylinux_2_28 tags
only, its 3.x releases manylinux2014, so PLATFORMS names both (without the
2_28 tag pip falls back to cc3d 3.24). The image's Python 3.12.3 is, by its
version, Ubuntu 24.04's (glibc 2.39): both run there; and pip refuses a wheel
that does not in the install stage, within seconds. About 5 MiB in all (the carried
folders may hold 64). One line per wheel, and the total.

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

The import check imports each of pyproject.toml's dependencies and every
module of iwu; iwu must come from this checkout, and each dependency the image
lacks from the temporary folder, so a missing wheel cannot hide behind a copy
installed elsewhere (as on a machine with a venv, where the rehearsal runs).
The whole command ends within DEADLINE_S (9 minutes) of its start: a stage's
cap shrinks to what is left of it, less the report's and the final writing's
reserve. A failed import stops the day at once (the rest would fail the same
way, minutes later). Under `--out`, flat and at most eight files (what the GPU
machine gives back): gpu_day.{log,json,md} (the progress lines and every
stage's output; every stage's status, the import check and the protocol's
throughput; the summary, with stage 1's tables and stage 2's),
gpu_suite_<device>_<time>.{json,md} (stage 1, rewritten after every
measurement), gpu_day_learning_gap.png, and
gpu_day_protocol.tar.gz (stage 2's reports, figures and CSVs, each run's
metrics.csv and final.json, the sweep's logs). Exit status 0 when every stage
finished, 1 otherwise (what was measured is written either way).
`--stages suite` or `--stages protocol` runs one of the two; the protocol's
runs live under `--work` (default runs/gpu_day), so a second command on the
same machine skips the runs that finished and resumes the others.

The protocol (PROTOCOLS["gpu-day"] in benchmarks/method_quality.py), fixed
here before it ever ran: two DeepLabV3+ MobileNetV2 members from scratch, on
the synthetic ACDC-layout scenes, scored in-domain and on Cityscapes-layout
scenes as benchmarks/method_quality.py does; 384x384, batch 8 (the pixels of
the paper's batch of two 768x768 crops), 32-true, 320 training scenes (17.5
epochs in the steps below, the cpu protocol's 800 steps being 20 of its
scenes; trainer.max_epochs, 60, stays out of the way), 40 validation scenes
per layout, 5 seeds of `standard` and of `instance_uncertainty`, all ten runs
at once (small members are latency-bound: ten processes keep the GPU busier
than one), and as many steps as the cap allows by this estimate:

- the step's work, measured on the CPU (`python benchmarks/gpu_day.py flops`,
  torch.utils.flop_counter, forward and backward of both members at batch 2):
  447.0 GFLOP at batch 2, so 4 x 447.0 = 1,788 GFLOP = 1.788 TFLOP per step
  at batch 8 (the same in both modes: the weights add no convolution);
- the GPU's throughput: NVIDIA's published dense TF32 tensor-core figure for
  the H200, 494 TFLOP/s (the datasheet's 989 is with 2:4 sparsity). A 32-true
  run's convolutions run in TF32 (PyTorch's default for cuDNN); assumed
  utilization 15%: the decoder's 3x3 convolutions fill the tensor cores, the
  depthwise convolutions, batch norms and element-wise work are memory-bound;
  so 494 x 0.15 = 74.1 TFLOP/s;
- ten runs share it: 10 x 1.788 / 74.1 = 0.241 s of GPU time per step of every
  run, and each validation (80 scenes, a forward of both members, a third of a
  training image's work: 80 x 1.788 / 8 / 3 = 5.96 TFLOP per run) 10 x 5.96 /
  74.1 = 0.80 s, 0.008 s per step at one validation every 100 steps;
- the time to step in: 540 s of the whole command, less 20 s of install and
  imports, 180 s of stage 1, 45 s of report and 10 s of final writing, leave
  the protocol 285 s; less 40 s for ten processes to start (imports, CUDA
  contexts, models, caches) and 15 s for the last validation and final files:
  230 s;
- with a margin of 1.25 (ten CUDA contexts take turns on the GPU):
  230 / 1.25 / (0.241 + 0.008) = 738 steps, 700 at a whole number of validations.

So: 700 steps, validation every 100. ESTIMATE below holds these figures and
steps_that_fit() the arithmetic (a test checks the protocol against them).
The first GPU day may correct the step count once, from the measured
throughput alone (the summary gives the median steps per second of the runs and
the steps that would have fit): set PROTOCOLS["gpu-day"].steps and record it
in STEP_CORRECTION with the date and the rate. Never after looking at a
difference between modes: a protocol tuned on its result measures the tuning.

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
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))  # the parent needs only the standard library and iwu, from this checkout

from iwu.errors import UserError  # noqa: E402
from iwu.util.atomic_files import atomic_write_bytes, atomic_write_json  # noqa: E402

SCRIPT = Path(__file__).resolve()
BENCHMARKS = SCRIPT.parent
DEFAULT_WHEELS = ROOT / "gpu_wheels"
DEFAULT_WORK = ROOT / "runs" / "gpu_day"
BUDGET = "gpu-day"  # the protocol's name in benchmarks/method_quality.py

# The GPU machine's image, 'cuda', as its documentation listed its Python packages on 2026-11-17
# (names as pip spells them). A dependency of iwu not named here travels as a wheel.
IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
""".split())
# the manylinux tags pip may match for the GPU machine (pip takes each as given, and the older glibc tags below it)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")
MAX_WHEELS_MIB = 48  # the carried folders may hold 64 MiB, the working tree included

DEADLINE_S = 540  # the whole command, on the GPU machine
FINISH_S = 10  # kept back at the end for the last JSON and Markdown
GRACE_S = 5  # between SIGTERM and SIGKILL when a stage reaches its cap
HEARTBEAT_S = 30
CAPS = {"install": 60, "imports": 90, "prepare": 180, "suite": 180, "protocol": 315, "report": 45}
REHEARSAL_CAPS = dict.fromkeys(CAPS, 600)  # a CPU busy with other work is slow: here caps only catch a hang
GROUPS = {"suite": ("suite",), "protocol": ("prepare", "protocol", "report")}  # --stages: what each name runs
REHEARSAL_MEASUREMENTS = "masks,agreement"  # the suite's --tiny measurements the rehearsal runs (cc3d among them)

# The step count's estimate, fixed before the protocol ever ran (the docstring gives the arithmetic).
ESTIMATE = {"step_tflop": 1.788, "runs": 10, "peak_tflops": 494.0, "utilization": 0.15, "val_tflop": 5.96,
            "val_every": 100, "train_s": 230.0, "margin": 1.25}
# The one correction the first GPU day may make, from the measured throughput alone:
# {"date": ..., "steps_per_s": ..., "steps": ...}; None while the estimate stands.
STEP_CORRECTION = None

OUT_FILES = {  # everything the run writes under --out, flat (the GPU machine gives back 8 files)
    "log": "gpu_day.log", "json": "gpu_day.json", "md": "gpu_day.md",
    "gap": "gpu_day_learning_gap.png", "tar": "gpu_day_protocol.tar.gz",
}  # and the suite's gpu_suite_<device>_<time>.json and .md


def steps_that_fit(step_tflop: float, runs: int, peak_tflops: float, utilization: float, val_tflop: float,
                   val_every: int, train_s: float, margin: float) -> int:
    """Training steps per run that `runs` concurrent runs finish in `train_s` seconds of one GPU, by estimate:
    each step of every run costs `step_tflop`, each validation `val_tflop` (one every `val_every` steps), at
    `utilization` of `peak_tflops`, with `margin` to spare; a whole number of validations."""
    rate = peak_tflops * utilization  # TFLOP/s the runs share
    seconds_per_step = runs * (step_tflop + val_tflop / val_every) / rate
    steps = train_s / margin / seconds_per_step
    return int(steps // val_every) * val_every


def now() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S")


# --------------------------------------------------------------------------- fetch (here)


def normalize(name: str) -> str:
    """A distribution's name as the package index compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(text: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
    if not match:
        raise UserError(f"cannot read the requirement {text!r}")
    return normalize(match.group(1))


def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """pyproject.toml's [project] dependencies, as written there."""
    return list(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"])


def wheel_requirements(wheel: Path) -> list[str]:
    """A wheel's Requires-Dist lines, without those of its extras."""
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        text = z.read(meta).decode("utf-8", "replace")
    lines = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    return [r for r in lines if not re.search(r"\bextra\s*==", r)]


def wheel_name(wheel: Path) -> str:
    return normalize(wheel.name.split("-")[0])


def pip_download(requirements: list[str], dest: Path, python_version: str) -> None:
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
               "--only-binary=:all:", "--no-deps", "--implementation", "cp", "--python-version", python_version,
               *(f"--platform={p}" for p in PLATFORMS), "--dest", str(dest), *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"pip download {' '.join(requirements)}: {last} (is the package index reachable?)")


def fetch(dest: Path, python_version: str) -> list[Path]:
    """The wheels of iwu's runtime dependencies the GPU image lacks, and of their needs it lacks, into `dest`
    (its earlier wheels removed: two versions of one package stop an install)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    fetched: dict[str, Path] = {}
    wanted = [r for r in runtime_requirements() if requirement_name(r) not in IMAGE_PACKAGES]
    while wanted:
        before = set(dest.glob("*.whl"))
        pip_download(wanted, dest, python_version)
        new = sorted(set(dest.glob("*.whl")) - before)
        fetched.update({wheel_name(w): w for w in new})
        needs = [r for w in new for r in wheel_requirements(w)]
        wanted = list(dict.fromkeys(r for r in needs
                                    if requirement_name(r) not in IMAGE_PACKAGES | fetched.keys()))
    return sorted(fetched.values())


def fetch_command(args) -> int:
    wheels = fetch(args.dest.resolve(), args.python_version)
    total = 0
    for wheel in wheels:
        size = wheel.stat().st_size
        total += size
        print(f"{wheel.name}  {size / 2**20:.2f} MiB")
    print(f"{len(wheels)} wheels for Python {args.python_version}, {total / 2**20:.2f} MiB in {args.dest}")
    if total > MAX_WHEELS_MIB * 2**20:
        raise UserError(f"{args.dest}: {total / 2**20:.1f} MiB of wheels, more than the {MAX_WHEELS_MIB} MiB "
                        "a GPU day can carry beside the working tree")
    return 0


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


# --------------------------------------------------------------------------- inside the stages (subprocesses)


def method_quality_module():
    sys.path.insert(0, str(BENCHMARKS))
    import method_quality

    return method_quality


# the rehearsal's protocol: the gpu-day one at sizes a CPU runs in seconds
REHEARSAL = {"size": 32, "n_train": 8, "n_val": 4, "steps": 4, "val_every": 2, "batch_size": 2,
             "parallel": 4, "accelerator": "cpu"}


def day_protocol(rehearse: bool):
    """(benchmarks/method_quality.py as a module, the protocol, its name)."""
    mq = method_quality_module()
    p = mq.PROTOCOLS[BUDGET]
    if not rehearse:
        return mq, p, BUDGET
    return mq, replace(p, seeds={mq.BASELINE: 2, mq.METHOD: 2}, **REHEARSAL), f"{BUDGET}-rehearsal"


def import_check(site: Path, wheels: list[Path], cuda: bool) -> dict:
    """Every import iwu needs, where each comes from, and the device; `problems` empty when all is well."""
    import importlib
    import importlib.metadata as metadata
    import pkgutil

    site = site.resolve()
    problems, warnings_, deps = [], [], {}
    import iwu

    if not inside(iwu.__file__, SRC):
        problems.append(f"iwu: imported from {iwu.__file__}, not from this checkout's {SRC}")
    carried = {wheel_name(w) for w in wheels}
    names = {requirement_name(r): r for r in runtime_requirements()}
    for name in [*names, *sorted(carried - names.keys())]:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed, and no wheel of it was carried")
            continue
        where = []
        for module in top_modules(dist):
            try:
                where.append(module_file(importlib.import_module(module)))
            except Exception as err:  # any import error is the finding
                problems.append(f"{name}: import {module}: {one_line(err)}")
        from_site = bool(where) and all(inside(w, site) for w in where)
        if (name in carried or name not in IMAGE_PACKAGES) and not from_site:
            problems.append(f"{name}: imported from {where[0] if where else 'nowhere'}, not from the carried "
                            f"wheels ({site}): {'its wheel is missing' if name not in carried else 'shadowed'}")
        satisfied = satisfies(names.get(name), dist.version)
        if satisfied is False:
            warnings_.append(f"{name} {dist.version} does not satisfy {names[name]}")
        deps[name] = {"version": dist.version, "from": "carried" if from_site else "installed",
                      "satisfies": satisfied}
    walked = pkgutil.walk_packages(iwu.__path__, "iwu.", onerror=lambda name: problems.append(f"{name}: no import"))
    modules = [m.name for m in walked if m.name != "iwu.__main__"]  # importing __main__ runs the command line
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:
            problems.append(f"{module}: {one_line(err)}")
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if cuda and device is None:
        problems.append("torch sees no CUDA device (on a CPU, run with --rehearse)")
    return {"python": sys.version.split()[0], "executable": sys.executable, "dependencies": deps,
            "iwu_modules": len(modules), "torch": {"version": torch.__version__, "cuda": torch.version.cuda,
                                                   "device": device},
            "problems": problems, "warnings": warnings_}


def inside(path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def module_file(module) -> str:
    return getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "?")


def top_modules(dist) -> list[str]:
    """The importable top-level names a distribution installs (its top_level.txt, else its files)."""
    text = dist.read_text("top_level.txt")
    if text:
        names = text.split()
    else:  # a folder (not foo.libs, foo.dist-info) or a module file at the top
        names = [f.parts[0] if len(f.parts) > 1 else f.parts[0].split(".")[0]
                 for f in dist.files or [] if len(f.parts) > 1 or f.suffix in (".py", ".so")]
    return sorted(n for n in set(names) if n.isidentifier() and not n.startswith("_") and n not in ("test", "tests"))


def satisfies(requirement: str | None, version: str) -> bool | None:
    """Whether `version` meets the requirement's specifiers (None: nothing to check, or no `packaging`)."""
    if requirement is None:
        return None
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return None
    return Requirement(requirement).specifier.contains(version, prereleases=True)


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]


def prepare(work: Path, rehearse: bool) -> None:
    """The protocol's scenes, its config, the data caches (built once here rather than by ten runs at once)
    and the class counts the report orders its rows by."""
    import yaml

    from iwu.config.schema import load_config
    from iwu.data import SegmentationDataModule

    mq, p, budget = day_protocol(rehearse)
    out = work / "method"
    roots = mq.write_scenes(out / "data", p)
    config_file = atomic_write_bytes(out / "config.yaml", yaml.safe_dump(
        mq.run_config(p, budget, roots, out / "cache", False), sort_keys=False).encode())
    config = load_config(config_file)
    epochs = config.trainer.max_epochs
    if epochs != -1 and epochs * (p.n_train // p.batch_size) < p.steps:
        raise UserError(f"protocol {budget}: {p.steps} steps need more than trainer.max_epochs={epochs} epochs "
                        f"of {p.n_train // p.batch_size} batches; more scenes, or fewer steps")
    SegmentationDataModule(config.data).prepare_data()
    mq.class_counts(config_file, out / "class_counts.json")
    atomic_write_json(out / "protocol.json", {"name": budget, "runs": sum(p.seeds.values()),
                                              **{k: v for k, v in vars(p).items()}})
    print(f"prepared {budget}: scenes, config and caches under {out}")


def train_runs(work: Path, rehearse: bool) -> None:
    """Every run of the protocol in one sweep, all at once (finished runs are skipped, interrupted ones resume).
    Not method_quality's seed-by-seed sweeps: two runs at a time would leave the GPU mostly idle."""
    from iwu.sweep import run_sweep

    _, p, budget = day_protocol(rehearse)
    seeds = set(p.seeds.values())
    if len(seeds) != 1:
        raise UserError(f"protocol {budget}: every mode needs the same number of seeds, to run as one sweep")
    runs = work / "method" / "runs"
    status = run_sweep(work / "method" / "config.yaml", seeds=f"0-{seeds.pop() - 1}", modes=",".join(p.seeds),
                       overrides=[f"out={runs}"], parallel=p.parallel)
    if status:
        raise UserError(f"some runs failed (see {runs / 'sweep' / 'summary.json'}); the same command retries them")


PROGRESS_LINE = re.compile(r"step (\d+)/(\d+): .*?((?:\d+:)?\d+:\d+) elapsed")


def last_progress(log: Path) -> dict | None:
    """The training rate of a run's latest attempt, from its log's progress lines: steps, seconds, steps/s."""
    try:
        attempt = log.read_text(encoding="utf-8", errors="replace").split("\n=== iwu sweep")[-1]
    except OSError:
        return None
    seen = [(int(m.group(1)), seconds_of(m.group(3))) for m in PROGRESS_LINE.finditer(attempt)]
    if not seen:
        return None
    (first_step, first_s), (step, elapsed) = seen[0], seen[-1]
    rate = (step - first_step) / (elapsed - first_s) if elapsed > first_s else None
    return {"step": step, "elapsed_s": elapsed, "steps_per_s": rate}


def seconds_of(clock: str) -> float:
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + int(part)
    return total


def median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def throughput(runs: Path, p, train_s: float | None, train_cap: float | None) -> dict:
    """Per run its last step and rate; their median; and the steps that would have fit the stage's cap at that
    rate after the same start-up, a whole number of validations (the one correction's figure)."""
    per_run = {}
    for log in sorted((runs / "sweep" / "logs").glob("*/*.log")):
        if (seen := last_progress(log)) is not None:
            per_run[f"{log.parent.name}/{log.stem}"] = seen
    rate = median([r["steps_per_s"] for r in per_run.values() if r["steps_per_s"]])
    elapsed = median([r["elapsed_s"] for r in per_run.values()])
    fit = None
    if rate and train_s and train_cap and elapsed is not None:
        stepping = train_cap - (train_s - elapsed)  # the cap less what the stage spent outside the steps
        fit = int(rate * stepping // p.val_every) * p.val_every
    return {"runs": per_run, "median_steps_per_s": rate, "steps_that_would_fit": fit}


def report(work: Path, out: Path, rehearse: bool, train_s: float | None, train_cap: float | None) -> None:
    """Stage 2's tables when every run finished (else what the runs reached), its figure and its archive."""
    mq, p, budget = day_protocol(rehearse)
    method = work / "method"
    runs = method / "runs"
    expected = sum(p.seeds.values())
    finished = len(list(runs.glob("*/seed*/final.json")))
    speed = throughput(runs, p, train_s, train_cap)
    atomic_write_json(method / "throughput.json", speed)
    members = " + ".join(m["name"] for m in p.members)
    lines = [f"`{budget}`: {members} from scratch, {p.size}x{p.size}, batch {p.batch_size}, {p.steps} steps, "
             f"validation every {p.val_every}; {', '.join(f'{n} seeds of {m}' for m, n in p.seeds.items())}, "
             f"{p.parallel} runs at a time; {finished} of {expected} runs finished.", ""]
    if finished == expected:
        counts = method / "class_counts.json"
        written = mq.write_reports(runs, method / "report", counts, p)
        learned = mq.learned_by_baseline(runs, counts)
        gaps = mq.write_learning_gaps(runs, method / "report" / "learning_gap", counts, p)
        lines += [f"{mq.BASELINE} learns {n} of the {scored} classes of the {eval_set} validation set (mean IoU "
                  f">= {mq.LEARNED})" for eval_set, (n, scored) in learned.items()]
        for eval_set in mq.EVAL_SETS:
            lines += ["", f"{mq.METHOD} against {mq.BASELINE}, trained on acdc, scored on {eval_set}:", "",
                      written[eval_set, mq.METHOD]["md"].read_text(encoding="utf-8").strip()]
        lines += ["", "The gap at every validation:", "", gaps[mq.METHOD].read_text(encoding="utf-8").strip()]
        atomic_write_bytes(out / OUT_FILES["gap"], gaps[mq.METHOD].with_suffix(".png").read_bytes())
    else:
        lines.append(f"Not compared: {expected - finished} runs did not finish (cut at the stage's cap, or "
                     "failed: see the sweep's logs in the archive). The same command resumes them.")
    lines += ["", "Training rate (the one step-count correction reads these, never the scores):", "",
              "| run | last step | training s | steps / s |", "|---|---:|---:|---:|"]
    for name, r in speed["runs"].items():
        rate = f"{r['steps_per_s']:.2f}" if r["steps_per_s"] else "--"
        lines.append(f"| {name} | {r['step']} | {r['elapsed_s']:.0f} | {rate} |")
    if speed["median_steps_per_s"]:
        lines.append(f"\nMedian {speed['median_steps_per_s']:.2f} steps/s per run"
                     + (f"; at that rate the stage's cap would have held {speed['steps_that_would_fit']} steps "
                        f"(the protocol has {p.steps})." if speed["steps_that_would_fit"] is not None else "."))
    atomic_write_bytes(method / "protocol.md", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out / OUT_FILES["tar"], archive(method))
    print(f"report of {budget}: {finished} of {expected} runs finished; {out / OUT_FILES['tar']}")


def archive(method: Path) -> bytes:
    """Stage 2's small files as one .tar.gz (the GPU machine gives back few files): reports, figures, CSVs,
    each run's metrics, config and final.json, the sweep's logs; no checkpoints, scenes or caches."""
    keep = ("protocol.md", "protocol.json", "throughput.json", "config.yaml", "class_counts.json", "report/**/*",
            "runs/sweep/summary.json", "runs/sweep/logs/**/*", "runs/*/seed*/final.json",
            "runs/*/seed*/config.yaml", "runs/*/seed*/*.png", "runs/*/seed*/logs/csv/metrics.csv")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "protocol.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for pattern in keep:
                for file in sorted(method.glob(pattern)):
                    if file.is_file():
                        tar.add(file, arcname=str(file.relative_to(method)))
        return path.read_bytes()


def flops_command(args) -> int:
    """The protocol's training step counted on the CPU at a small batch, scaled, and the estimate's steps."""
    import warnings

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from iwu.config.schema import config_from_dict
    from iwu.engine.ensemble import EnsembleModule

    _, p, budget = day_protocol(False)
    config = config_from_dict({"mode": "instance_uncertainty", "members": [dict(m) for m in p.members],
                               "model": {"pretrained": False, "bn_momentum": p.bn_momentum}})
    torch.manual_seed(0)
    module = EnsembleModule(config, [str(c) for c in range(19)], class_weights=torch.ones(19))
    module.configure_model()
    module.train()
    batch = {"image": torch.randn(args.batch, 3, p.size, p.size),
             "label": torch.randint(0, 19, (args.batch, p.size, p.size)), "name": [str(i) for i in range(args.batch)]}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("You are trying to `self.log()`"))  # no Trainer here
        with FlopCounterMode(display=False) as counter:
            module.training_step(batch, 0).backward()
    measured = counter.get_total_flops() / 1e9
    per_step = measured * p.batch_size / args.batch / 1e3
    print(f"{budget}: one training step (forward and backward of {len(p.members)} members) at batch {args.batch}, "
          f"{p.size}x{p.size}: {measured:.1f} GFLOP; at batch {p.batch_size}: {per_step:.3f} TFLOP")
    print(f"estimate (ESTIMATE in this script): {steps_that_fit(**ESTIMATE)} steps; the protocol has {p.steps}")
    return 0


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
        report(args.work, args.out, args.rehearse, args.train_seconds, args.train_cap)
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
