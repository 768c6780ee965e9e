"""Everything only a GPU can show, in one command: `make bench-gpu`, sized to about 3 minutes on one H200.

Measured in this order on one CUDA device, each figure recorded:

1. masks: instance masks of a batch of two 768x768 predictions (19 classes)
   in the three regimes of benchmarks/instance_masks.py (smooth, mid, noisy):
   torch labeling on the device against cc3d with the host round trip
   (`backend="cc3d"` on device tensors: .cpu(), cc3d, back to the device).
   Target: the torch path at 2 ms per image or less. 20 timed calls per path.
2. train_step: a training step of the paper's three-member ensemble
   (DeepLabV3+ ResNet-101, ResNet-50, MobileNetV2, pretrained false) at
   768x768, batch 2, built and stepped as benchmarks/train_step.py does,
   instance_uncertainty against standard in interleaved rounds, in three
   settings: 32-true, bf16-mixed, 32-true + channels-last (through
   trainer.channels_last, which the module applies as in a run). Median step
   times, the overhead (target 5% or less) and each mode's peak GPU memory
   during its steps (both modes' ensembles stay resident, as the rounds
   interleave them). 3 warm-up and 10 timed steps per mode and setting.
3. validation: images per second at 768x768, batches of 4, of the one-pass validation
   (EnsembleModule.validation_step: one forward per member, member and
   ensemble scores from the same logits) against the published code's way
   (each member scored in its own pass, then an ensemble pass that runs all
   members again).
4. agreement: an UncertaintyMeter on the device against one on the CPU fed
   the same batches (every number of compute() equal to 1e-6), and torch
   labeling + instance_uncertainty on the device against cc3d on the same
   predictions (equal to 1e-6, same instances, same counts).
5. training: a short real run through iwu.engine.train.train: the demo config (three
   MobileNetV2) at 384x384 on synthetic scenes, 40 steps; it must write
   final.json. Wall time (synthetic scenes and cache included) and the
   ensemble's final mIoU.
6. cuda_tests: `pytest tests/test_calibration.py tests/test_uncertainty.py -k
   cuda` in a subprocess.
7. train_step_compile: the step of 2. in the setting 32-true + torch.compile
   (trainer.compile), with three MobileNetV2 members at 768x768, batch 2.

Left out to fit the 3 minutes: torch.compile of the paper's ensemble. Its inductor
warm-up (the ResNet-101 and ResNet-50 graphs, forward and backward) takes minutes
by itself, so compile is priced on the MobileNetV2 members only, and last: a time
cap that cuts the suite there (benchmarks/gpu_day.py runs it under one) loses
nothing else. The rest is sized by estimate: about 10 s to start, 5 s of masks,
30 s of training steps (78 steps of about 50 ms, the six ensembles' construction
around them), 10 s of validation, 15 s of agreement, 15 s of short training,
20 s of CUDA tests, and about a minute of compile warm-up.

Timings are medians of calls synchronised with the device before and after.
A measurement that raises records its one-line error and the others go on.
Exit status 1 when a check fails (agreement, final.json, the CUDA tests) or a
measurement raised, 0 otherwise; a missed target is reported, not a failure.
The results (device, torch version, every figure) go to
benchmarks/results/gpu_suite_<device>[_tiny]_<date-time>.json, with its Markdown
summary beside it (.md); both are rewritten after every measurement, so a suite
stopped part way keeps what it measured. The summary is printed at the end.

    python benchmarks/gpu_suite.py [--device auto|cuda|cpu] [--tiny] [--only NAMES] [--out DIR]

Without CUDA (and --device auto) it prints one line and exits 0. `--tiny`
runs every measurement at small sizes (three MobileNetV2 members, 64x64, a
few steps, no torch.compile: inductor compiles for minutes on a CPU);
`--device cpu --tiny` is what the tests exercise (about 15 s on 2 idle cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
import instance_masks as mask_bench  # noqa: E402
import train_step as step_bench  # noqa: E402

from iwu.method.calibration import UncertaintyMeter  # noqa: E402
from iwu.config.schema import load_config  # noqa: E402
from iwu.sweep.demo import demo_config_path  # noqa: E402
from iwu.engine.ensemble import EnsembleModule  # noqa: E402
from iwu.util.atomic_files import atomic_write_bytes, atomic_write_json  # noqa: E402
from iwu.method.metrics import confusion_matrix  # noqa: E402
from iwu.models.parts import logits_and_aux  # noqa: E402
from iwu.engine.train import train  # noqa: E402
from iwu.method.uncertainty import instance_uncertainty, label_instances  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REGIMES = ("smooth", "mid", "noisy")
CLASSES = mask_bench.CLASSES
TOLERANCE = 1e-6  # agreement between devices and between labeling back-ends
CUDA_TESTS = ("tests/test_calibration.py", "tests/test_uncertainty.py", "-k", "cuda")
CUDA_TESTS_TIMEOUT_S = 600
# setting -> (trainer.precision, more config overrides)
SETTINGS = {
    "32-true": ("32-true", ()),
    "bf16-mixed": ("bf16-mixed", ()),
    "32-true + channels-last": ("32-true", ("trainer.channels_last=true",)),
    "32-true + compile": ("32-true", ("trainer.compile=true",)),
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    size: int  # side of every square image
    batch: int  # training batch
    repeats: int  # timed calls per mask regime and path
    warmup: int  # untimed training steps per mode and setting
    steps: int  # timed training steps per mode and setting
    members: str  # benchmarks/train_step.py's --members: paper or mobilenet
    settings: tuple[str, ...]  # keys of SETTINGS
    val_batch: int  # evaluation mode has no batch statistics: any batch gives the same scores
    val_rounds: int  # timed validation batches per way
    agree_batches: int  # batches fed to both meters
    run_steps: int  # steps of the short real training
    run_size: int  # its image side
    compile_members: str | None  # members of the torch.compile step (train_step_compile); None: not measured


COMPILE = "32-true + compile"
FULL = Sizes(size=768, batch=2, repeats=20, warmup=3, steps=10, members="paper",
             settings=tuple(s for s in SETTINGS if s != COMPILE), val_batch=4, val_rounds=6, agree_batches=2,
             run_steps=40, run_size=384, compile_members="mobilenet")  # the paper's ensemble: minutes to compile
TINY = Sizes(size=64, batch=2, repeats=3, warmup=1, steps=2, members="mobilenet",
             settings=("32-true", "bf16-mixed", "32-true + channels-last"),
             val_batch=2, val_rounds=2, agree_batches=2, run_steps=4, run_size=64,
             compile_members=None)  # inductor: minutes on a CPU


# --------------------------------------------------------------------------- helpers


def judged(device: torch.device, sizes: Sizes) -> bool:
    """Targets are for a GPU at the full sizes; elsewhere the figures are reported without a verdict."""
    return device.type == "cuda" and sizes == FULL


def seconds(fn, device: torch.device) -> float:
    """Wall time of one call of `fn`, the device's queued work included."""
    step_bench.sync(device)
    start = time.perf_counter()
    fn()
    step_bench.sync(device)
    return time.perf_counter() - start


def median_seconds(fn, device: torch.device, repeats: int) -> float:
    def call():
        fn()
        step_bench.sync(device)  # without it a CUDA call would be timed by its launch only

    step_bench.sync(device)
    return mask_bench.median_time(call, repeats)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def release(device: torch.device) -> None:
    """Give back what the last measurement held, so the next one's peak memory is its own."""
    gc.collect()
    torch._dynamo.reset()  # compiled graphs hold on to the compiled modules
    if device.type == "cuda":
        torch.cuda.empty_cache()


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]


def guarded(fn, device: torch.device, *args) -> dict:
    """`fn(device, *args)`, or its one-line error: one failing measurement must not lose the others."""
    try:
        return fn(device, *args)
    except Exception as err:
        return {"error": one_line(err)}
    finally:
        release(device)


# --------------------------------------------------------------------------- 1. instance masks


def masks(device: torch.device, sizes: Sizes) -> dict:
    """Per regime: instances per image and ms per image of torch labeling on the device and of cc3d via the host."""
    out = {}
    for regime in REGIMES:
        pred = mask_bench.predictions(regime, size=sizes.size).to(device)
        values = mask_bench.entropies(tuple(pred.shape)).to(device)
        _, counts = label_instances(pred, backend="torch")
        per_image = 1e3 / pred.shape[0]
        torch_ms = median_seconds(lambda: instance_uncertainty(pred, values, backend="torch"), device,
                                  sizes.repeats) * per_image
        # cc3d on device tensors is the host round trip: .cpu(), label, means, .to(device)
        cc3d_ms = median_seconds(lambda: instance_uncertainty(pred, values, backend="cc3d"), device,
                                 sizes.repeats) * per_image
        out[regime] = {"instances_per_image": float(counts.float().mean()), "torch_ms": torch_ms,
                       "cc3d_host_ms": cc3d_ms,
                       "target_met": torch_ms <= mask_bench.MAX_MS_PER_IMAGE_GPU if judged(device, sizes) else None}
    return {"batch": mask_bench.BATCH, "size": sizes.size, "target_ms": mask_bench.MAX_MS_PER_IMAGE_GPU,
            "regimes": out}


# --------------------------------------------------------------------------- 2. training step


def train_steps(device: torch.device, sizes: Sizes) -> dict:
    """instance_uncertainty against standard in every setting; a setting that fails records its error."""
    batches = step_bench.make_batches(sizes.size, sizes.batch, device)
    settings = {name: guarded(step_setting, device, name, batches, sizes) for name in sizes.settings}
    return {"size": sizes.size, "batch": sizes.batch, "members": sizes.members, "warmup": sizes.warmup,
            "steps": sizes.steps, "target_pct": step_bench.TARGET, "settings": settings}


def train_step_compile(device: torch.device, sizes: Sizes) -> dict:
    """The compile setting alone, with `sizes.compile_members`: the step of train_steps under torch.compile."""
    if sizes.compile_members is None:
        return {"skipped": "no torch.compile at these sizes (inductor compiles for minutes on a CPU)"}
    compiled = dataclasses.replace(sizes, members=sizes.compile_members, settings=(COMPILE,))
    return train_steps(device, compiled)


def step_setting(device: torch.device, setting: str, batches: list[dict], sizes: Sizes) -> dict:
    precision, extra = SETTINGS[setting]
    with warnings.catch_warnings():
        # Without a Trainer, LightningModule.log warns and returns (as in benchmarks/train_step.py).
        warnings.filterwarnings("ignore", message=re.escape("You are trying to `self.log()`"))
        runners = {mode: step_bench.Runner(mode, sizes.members, precision, device, extra=extra)
                   for mode in step_bench.MODES}
        times, peaks, warmup_s = interleaved(runners, batches, device, sizes)
    standard, iu = (statistics.median(times[mode]) for mode in step_bench.MODES)
    overhead = (iu / standard - 1) * 100
    return {"standard_s": standard, "instance_uncertainty_s": iu, "overhead_pct": overhead,
            "target_met": overhead <= step_bench.TARGET if judged(device, sizes) else None,
            "peak_gib": peaks, "warmup_s": warmup_s}


def interleaved(runners: dict, batches: list[dict], device: torch.device, sizes: Sizes):
    """Step times per mode after the warm-up, peak memory per mode, and the warm-up's wall time.

    The modes alternate in rounds (a, b, then b, a) as in benchmarks/train_step.py, so drift touches both.
    """
    modes = list(runners)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    peaks: dict[str, float | None] = {mode: None for mode in modes}
    start = time.perf_counter()
    warmup_s = 0.0
    for i in range(sizes.warmup + sizes.steps):
        if i == sizes.warmup:
            warmup_s = time.perf_counter() - start
        for mode in modes if i % 2 == 0 else modes[::-1]:
            reset_peak(device)
            took = runners[mode].step(batches[i % len(batches)])
            if i >= sizes.warmup:
                times[mode].append(took)
                peak = peak_gib(device)
                peaks[mode] = peak if peaks[mode] is None else max(peaks[mode], peak)
    return times, peaks, warmup_s


# --------------------------------------------------------------------------- 3. validation


def validation(device: torch.device, sizes: Sizes) -> dict:
    """Images per second of the one-pass validation and of separate passes, interleaved per batch."""
    module = validation_module(sizes.members, device)
    batches = step_bench.make_batches(sizes.size, sizes.val_batch, device)
    ways = {"one_pass": lambda batch: module.validation_step(batch, 0),
            "separate_passes": lambda batch: separate_passes(module, batch)}
    times: dict[str, list[float]] = {way: [] for way in ways}
    with torch.inference_mode():  # as Lightning runs validation
        module.on_validation_epoch_start()  # the confusion matrices validation_step adds to
        for i in range(1 + sizes.val_rounds):  # round 0 warms up
            batch = batches[i % len(batches)]
            for way in list(ways) if i % 2 == 0 else list(ways)[::-1]:
                took = seconds(lambda: ways[way](batch), device)
                if i:
                    times[way].append(took)
    ips = {way: sizes.val_batch / statistics.median(t) for way, t in times.items()}
    return {"size": sizes.size, "batch": sizes.val_batch, "members": sizes.members,
            "one_pass_ips": ips["one_pass"], "separate_passes_ips": ips["separate_passes"],
            "speedup": ips["one_pass"] / ips["separate_passes"]}


def validation_module(members: str, device: torch.device) -> EnsembleModule:
    overrides = ["model.pretrained=false", *([f"members={step_bench.MOBILENETS}"] if members == "mobilenet" else [])]
    config = load_config(step_bench.CONFIG, overrides)
    return EnsembleModule(config, [str(c) for c in range(CLASSES)]).to(device).eval()


def separate_passes(module: EnsembleModule, batch: dict) -> list[torch.Tensor]:
    """The published code's validation: each member in its own pass, then the ensemble in a pass of all members."""
    images, labels = batch["image"], batch["label"]
    scores = []
    for member in module.members:
        logits, _ = logits_and_aux(member(images))
        scores.append(confusion_matrix(logits.argmax(dim=1), labels, CLASSES))
    probs = torch.stack([z.float().softmax(dim=1) for z in module(images)]).mean(dim=0)
    scores.append(confusion_matrix(probs.argmax(dim=1), labels, CLASSES))
    return scores


# --------------------------------------------------------------------------- 4. agreement


def agreement(device: torch.device, sizes: Sizes) -> dict:
    meter = meter_agreement(device, sizes)
    labeling = labeling_agreement(device, sizes)
    return {"meter": meter, "labeling": labeling, "ok": meter["ok"] and labeling["ok"]}


def meter_agreement(device: torch.device, sizes: Sizes) -> dict:
    """An UncertaintyMeter on `device` against one on the CPU, fed the same batches."""
    on_device = UncertaintyMeter(CLASSES, device=device)
    on_cpu = UncertaintyMeter(CLASSES, device="cpu")
    for probs, target, members in meter_batches(sizes.size, sizes.agree_batches):
        on_device.update(probs.to(device), target.to(device), members.to(device))
        on_cpu.update(probs, target, members)
    stayed = on_device.calib_counts.device.type == device.type
    difference = max_difference(on_device.compute(), on_cpu.compute())
    return {"max_difference": difference, "state_on_device": stayed, "ok": stayed and difference <= TOLERANCE}


def meter_batches(size: int, count: int, members: int = 3, seed: int = 0):
    """(probs, target, member probs) of smooth random members, labels 20% wrong and 10% ignored.

    float64, as the meter's own CUDA test: in float32 the devices' log can differ by an ulp, enough to move
    one 4x4 patch across the PAvPU threshold (1/patches, ~5e-6 here): a difference of the input, not the meter.
    """
    g = torch.Generator().manual_seed(seed)
    batch = mask_bench.BATCH
    for _ in range(count):
        coarse = torch.randn(members * batch, CLASSES, 12, 12, generator=g, dtype=torch.float64) * 4
        logits = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        member_probs = logits.softmax(dim=1).view(members, batch, CLASSES, size, size)
        probs = member_probs.mean(dim=0)
        target = probs.argmax(dim=1)
        wrong = torch.rand(target.shape, generator=g) < 0.2
        target[wrong] = torch.randint(0, CLASSES, target.shape, generator=g)[wrong]
        target[torch.rand(target.shape, generator=g) < 0.1] = 255
        yield probs, target, member_probs


def max_difference(a, b) -> float:
    """Largest absolute difference between two nested results (dicts, lists, numbers, None, NaN).

    Infinite where they differ in shape, or where one holds None or NaN and the other does not.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return math.inf
        return max((max_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        return max((max_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
        return abs(a - b)
    return 0.0 if a == b else math.inf


def labeling_agreement(device: torch.device, sizes: Sizes) -> dict:
    """Torch labeling + instance_uncertainty on `device` against cc3d on the host, in every mask regime."""
    regimes = {}
    for regime in REGIMES:
        pred = mask_bench.predictions(regime, size=sizes.size)
        values = mask_bench.entropies(tuple(pred.shape))
        regimes[regime] = compare_backends(pred, values, device)
    return {"regimes": regimes, "ok": all(r["ok"] for r in regimes.values())}


def compare_backends(pred: torch.Tensor, values: torch.Tensor, device: torch.device) -> dict:
    mine, counts = instance_uncertainty(pred.to(device), values.to(device), backend="torch",
                                        return_num_instances=True)
    reference, reference_counts = instance_uncertainty(pred, values, backend="cc3d", return_num_instances=True)
    difference = float((mine.cpu() - reference).abs().max())
    partition = same_partition(label_instances(pred.to(device), backend="torch")[0].cpu(),
                               label_instances(pred, backend="cc3d")[0])
    same_counts = torch.equal(counts.cpu(), reference_counts)
    return {"max_difference": difference, "same_instances": partition, "same_counts": same_counts,
            "ok": difference <= TOLERANCE and partition and same_counts}


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labelings group the pixels alike (their label values may differ)."""
    a, b = a.reshape(-1).long(), b.reshape(-1).long()
    pairs = torch.unique(a * (int(b.max()) + 1) + b).numel()  # distinct (a, b) label pairs
    return pairs == torch.unique(a).numel() == torch.unique(b).numel()


# --------------------------------------------------------------------------- 5. a short real training


def short_training(device: torch.device, sizes: Sizes) -> dict:
    """The demo config through iwu.engine.train.train at `sizes.run_size` on synthetic scenes; final.json must be
    written."""
    with tempfile.TemporaryDirectory(prefix="iwu-bench-gpu-") as tmp:
        config = load_config(demo_config_path(), run_overrides(Path(tmp), device, sizes))
        start = time.perf_counter()
        final = train(config, progress=False)
        wall = time.perf_counter() - start
        written = (Path(config.out) / "final.json").is_file()
    return {"size": sizes.run_size, "steps": final["steps"], "wall_s": wall,
            "miou": final["results"]["ensemble"]["miou"], "final_json": written,
            "ok": written and final["steps"] == sizes.run_steps}


def run_overrides(tmp: Path, device: torch.device, sizes: Sizes) -> list[str]:
    # 2:1 scenes twice as wide as the training side, as the Cityscapes loader resizes them
    scenes = f"{{n_train: 24, n_val: 6, width: {2 * sizes.run_size}}}"
    return [f"out={tmp / 'run'}", f"data.root={tmp / 'data'}", f"data.cache_dir={tmp / 'cache'}",
            f"data.size={sizes.run_size}", f"data.synthetic={scenes}", f"trainer.max_steps={sizes.run_steps}",
            f"val_every={max(1, sizes.run_steps // 2)}",
            f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            "trainer.devices=1"]  # one device: several would start DDP processes from this script


# --------------------------------------------------------------------------- 6. the CUDA tests


def cuda_tests(device: torch.device, _sizes: Sizes) -> dict:
    """The tests that need CUDA, in a subprocess that sees the device this suite measures."""
    env = dict(os.environ)
    if device.type != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=CUDA_TESTS_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else done.stderr.strip()[-300:]
    # on CUDA a skipped test is one that did not see the device: it proved nothing
    ran = device.type != "cuda" or "skipped" not in summary
    return {"returncode": done.returncode, "summary": summary, "ok": done.returncode == 0 and ran}


# --------------------------------------------------------------------------- the suite


MEASUREMENTS = {
    "masks": (masks, "instance masks, torch labeling on the device vs cc3d via the host"),
    "train_step": (train_steps, "training step, instance_uncertainty vs standard, in each setting"),
    "validation": (validation, "validation throughput, one pass vs separate passes"),
    "agreement": (agreement, "agreement, UncertaintyMeter device vs CPU and torch labeling vs cc3d"),
    "training": (short_training, "a short real training through iwu.engine.train.train"),
    "cuda_tests": (cuda_tests, "the CUDA tests (pytest -k cuda)"),
    # last: its compile warm-up is the longest part, and a time cap that cuts it must lose nothing else
    "train_step_compile": (train_step_compile, "training step under torch.compile, MobileNetV2 members"),
}


def run_suite(names: list[str], device: torch.device, sizes: Sizes, measured=None) -> dict:
    """Every measurement in `names`; `measured(results)` after each, with the results so far."""
    results = {}
    for k, name in enumerate(names, 1):
        fn, what = MEASUREMENTS[name]
        print(f"bench-gpu [{k}/{len(names)}] {what}", flush=True)
        results[name] = guarded(fn, device, sizes)
        if measured is not None:
            measured(results)
    return results


def failed(node) -> bool:
    """Whether a result holds an error or a failed check anywhere."""
    if isinstance(node, dict):
        return "error" in node or node.get("ok") is False or any(failed(v) for v in node.values())
    return False


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} torch threads)"


def document(results: dict, device: torch.device, sizes: Sizes, tiny: bool, took: float) -> dict:
    return {
        "device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "tiny": tiny,
        "sizes": dataclasses.asdict(sizes), "seconds": took, "measurements": results,
        "failed": [name for name, result in results.items() if failed(result)],
    }


def result_path(out: Path, doc: dict) -> Path:
    name = doc["device"].split(" (")[0]  # "CPU (2 torch threads)" -> cpu
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    stamp = doc["date"].replace(":", "").replace("T", "-")[:15]  # 2026-01-31-1405
    return out / f"gpu_suite_{slug}{'_tiny' if doc['tiny'] else ''}_{stamp}.json"


# --------------------------------------------------------------------------- Markdown


def markdown(doc: dict) -> str:
    m = doc["measurements"]
    lines = [f"bench-gpu on {doc['device']}, torch {doc['torch']}, {doc['date'][:10]}"
             f"{' (tiny sizes)' if doc['tiny'] else ''}, {doc['seconds']:.0f} s", ""]
    for name, table in TABLES.items():
        if name in m:
            lines += [*table_lines(name, m[name], table), ""]
    rows = [f"| {label} | {verdict(m[name])} | {m[name]['error'] if 'error' in m[name] else figures(m[name])} |"
            for name, (label, figures) in CHECK_ROWS.items() if name in m]
    if rows:
        lines += ["| check | result | figures |", "|---|---|---|", *rows]
    return "\n".join(lines).rstrip()


def table_lines(name: str, result: dict, table) -> list[str]:
    if "error" in result:
        return [f"{name}: ERROR {result['error']}"]
    if "skipped" in result:
        return [f"{name}: skipped, {result['skipped']}"]
    return table(result)


def target_cell(met) -> str:
    return "not judged" if met is None else ("PASS" if met else "missed")


def masks_table(r: dict) -> list[str]:
    lines = [f"Instance masks, {r['batch']}x{r['size']}x{r['size']}, {CLASSES} classes, ms per image:", "",
             "| regime | instances / image | torch on the device | cc3d via the host "
             f"| torch <= {r['target_ms']:g} ms |",
             "|---|---|---|---|---|"]
    for regime, row in r["regimes"].items():
        lines.append(f"| {regime} | {row['instances_per_image']:,.0f} | {row['torch_ms']:.3f} | "
                     f"{row['cc3d_host_ms']:.3f} | {target_cell(row['target_met'])} |")
    return lines


def train_table(r: dict) -> list[str]:
    lines = [f"Training step, {r['members']} ensemble, {r['batch']}x{r['size']}x{r['size']}, median of "
             f"{r['steps']} steps per mode after {r['warmup']} warm-up:", "",
             f"| setting | standard s | instance_uncertainty s | overhead | <= {r['target_pct']:g}% "
             "| peak GiB standard / iu | warm-up s |",
             "|---|---|---|---|---|---|---|"]
    for setting, row in r["settings"].items():
        if "error" in row:
            lines.append(f"| {setting} | ERROR {row['error']} | | | | | |")
            continue
        peaks = row["peak_gib"]
        memory = "--" if peaks["standard"] is None else f"{peaks['standard']:.2f} / {peaks['instance_uncertainty']:.2f}"
        lines.append(f"| {setting} | {row['standard_s']:.4f} | {row['instance_uncertainty_s']:.4f} | "
                     f"{row['overhead_pct']:+.1f}% | {target_cell(row['target_met'])} | {memory} | "
                     f"{row['warmup_s']:.1f} |")
    return lines


def validation_table(r: dict) -> list[str]:
    return [f"Validation, {r['members']} ensemble, batches of {r['batch']}x{r['size']}x{r['size']}:", "",
            "| validation | images / s |", "|---|---|",
            f"| one pass (one forward per member, members and ensemble from the same logits) | "
            f"{r['one_pass_ips']:.2f} |",
            f"| separate passes (each member, then all members again for the ensemble) | "
            f"{r['separate_passes_ips']:.2f} |",
            f"| speed-up | {r['speedup']:.2f}x |"]


def verdict(result: dict) -> str:
    return "ERROR" if "error" in result else ("FAIL" if failed(result) else "PASS")


def agreement_figures(r: dict) -> str:
    regimes = r["labeling"]["regimes"].values()
    worst = max(row["max_difference"] for row in regimes)
    same = all(row["same_instances"] and row["same_counts"] for row in regimes)
    return (f"meter max difference {r['meter']['max_difference']:.1e}; labeling max difference {worst:.1e}, "
            f"{'same' if same else 'different'} instances")


def training_figures(r: dict) -> str:
    return (f"{r['steps']} steps at {r['size']}x{r['size']} in {r['wall_s']:.0f} s, ensemble mIoU {r['miou']:.4f}, "
            f"final.json {'written' if r['final_json'] else 'missing'}")


TABLES = {"masks": masks_table, "train_step": train_table, "validation": validation_table,
          "train_step_compile": train_table}
CHECK_ROWS = {  # measurement -> (label, its figures in words)
    "agreement": ("device vs CPU meter, torch vs cc3d labeling", agreement_figures),
    "training": ("short real training", training_figures),
    "cuda_tests": ("CUDA tests", lambda r: r["summary"]),
}


# --------------------------------------------------------------------------- command line


def measurement_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown measurement {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(MEASUREMENTS)}")
    return [n for n in MEASUREMENTS if n in names]  # in the suite's order


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: CUDA when there is one, else nothing to measure")
    parser.add_argument("--tiny", action="store_true", help="every measurement at small sizes (what the tests run)")
    parser.add_argument("--only", type=measurement_names, default=list(MEASUREMENTS),
                        help=f"comma-separated measurements to run, of {', '.join(MEASUREMENTS)} (default all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results JSON")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    if args.device == "cpu" and not args.tiny:
        parser.error("--device cpu: the full sizes are for a GPU (hours on a CPU); add --tiny")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "auto" and not torch.cuda.is_available():
        print("bench-gpu: no CUDA device here; nothing measured")
        return 0
    device = torch.device("cpu" if args.device == "cpu" else "cuda")
    sizes = TINY if args.tiny else FULL
    start = time.perf_counter()
    path = result_path(args.out, document({}, device, sizes, args.tiny, 0.0))

    def save(results: dict) -> dict:  # after every measurement: a suite stopped part way keeps what it measured
        doc = document(results, device, sizes, args.tiny, time.perf_counter() - start)
        atomic_write_json(path, doc)
        atomic_write_bytes(path.with_suffix(".md"), (markdown(doc) + "\n").encode())
        return doc

    save({})
    doc = save(run_suite(args.only, device, sizes, measured=save))
    print()
    print(markdown(doc))
    print()
    print(f"bench-gpu: results in {path}")
    if doc["failed"]:
        print(f"bench-gpu: FAILED {', '.join(doc['failed'])}")
        return 1
    print("bench-gpu: every check passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
