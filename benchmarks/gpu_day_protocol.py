"""Stage 2 of the GPU day: the `gpu-day` protocol of benchmarks/method_quality.py, its scenes, runs and report.

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
"""

from __future__ import annotations

import re
import statistics
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_bytes, atomic_write_json

BENCHMARKS = Path(__file__).resolve().parent
BUDGET = "gpu-day"  # the protocol's name in benchmarks/method_quality.py

# The step count's estimate, fixed before the protocol ever ran (the docstring gives the arithmetic).
ESTIMATE = {"step_tflop": 1.788, "runs": 10, "peak_tflops": 494.0, "utilization": 0.15, "val_tflop": 5.96,
            "val_every": 100, "train_s": 230.0, "margin": 1.25}
# The one correction the first GPU day may make, from the measured throughput alone:
# {"date": ..., "steps_per_s": ..., "steps": ...}; None while the estimate stands.
STEP_CORRECTION = None


def steps_that_fit(step_tflop: float, runs: int, peak_tflops: float, utilization: float, val_tflop: float,
                   val_every: int, train_s: float, margin: float) -> int:
    """Training steps per run that `runs` concurrent runs finish in `train_s` seconds of one GPU, by estimate:
    each step of every run costs `step_tflop`, each validation `val_tflop` (one every `val_every` steps), at
    `utilization` of `peak_tflops`, with `margin` to spare; a whole number of validations."""
    rate = peak_tflops * utilization  # TFLOP/s the runs share
    seconds_per_step = runs * (step_tflop + val_tflop / val_every) / rate
    steps = train_s / margin / seconds_per_step
    return int(steps // val_every) * val_every


def method_quality_module():
    if str(BENCHMARKS) not in sys.path:
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
    return statistics.median(values) if values else None


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


def report(work: Path, gap_png: Path, archive_file: Path, rehearse: bool, train_s: float | None,
           train_cap: float | None) -> None:
    """Stage 2's tables when every run finished (else what the runs reached), its figure of the gap (copied
    to `gap_png`) and the archive of its small files (`archive_file`)."""
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
        atomic_write_bytes(gap_png, gaps[mq.METHOD].with_suffix(".png").read_bytes())
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
    atomic_write_bytes(archive_file, archive(method))
    print(f"report of {budget}: {finished} of {expected} runs finished; {archive_file}")


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
    print(f"estimate (ESTIMATE in benchmarks/gpu_day_protocol.py): {steps_that_fit(**ESTIMATE)} steps; "
          f"the protocol has {p.steps}")
    return 0
