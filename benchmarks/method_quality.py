"""Does instance-wise uncertainty training help, in this implementation? A fixed protocol that measures it.

The analogue of the paper's ACDC column and its ACDC -> Cityscapes column
(Table 3) on synthetic street scenes: every mode trains on `iwu synth`'s ACDC
layout (fog, night, rain, snow) and is scored on its ACDC validation split
(in-domain) and on a Cityscapes-layout validation split of clear scenes
(cross-domain, `data.val_extra`). Runs go through `iwu sweep` (finished runs are
skipped, interrupted ones resume: the same command finishes an interrupted
benchmark) and the tables through `iwu report`: for each mode against
`standard`, in-domain and cross-domain, per-class IoU and mIoU, the mean IoU of
the five classes rarest in training, the difference with its 95% interval,
the effect size, the report's test (paired by seed where both columns hold the same seeds, Welch's
otherwise) and Benjamini-Hochberg adjusted p, and the figure.

    python benchmarks/method_quality.py --budget cpu      # 32 runs: about 4 hours on 2 CPU cores
    python benchmarks/method_quality.py --budget cpu-long # the same, 2,400 steps, two modes: 138 min here, beside other work
    python benchmarks/method_quality.py --budget gpu      # the paper's members at 768x768, 10 seeds
    python benchmarks/method_quality.py --budget gpu-day  # benchmarks/gpu_day.py's stage 2: minutes on one H200
    python benchmarks/method_quality.py --quick           # minutes: a check that the script runs

Written under `--out` (default runs/method_quality/<budget>): the scenes, the
runs, `class_counts.json`, and `report/<eval>/<mode>/report.{md,csv}` with
`difference.png`, plus `report/<eval>/all/report.md` with every mode side by
side, `<out>/report/summary.md` with every mode's and variant's difference from
`standard` (mIoU and the five rarest, both domains) in one table and
`<out>/report/summary.png` as a forest plot, and
`report/learning_gap/<mode>/learning_gap.{md,png}`: each mode's paired
difference from `standard` at every validation step (`iwu report --gap`); the
last lines printed are the Markdown of the main comparison, the summary and
the main comparison's gap.

The protocol is fixed here and is not to be tuned after looking at a
difference between modes: a benchmark adjusted until one mode wins measures
the adjusting. Changing the synthetic generator to favour a mode defeats it
the same way.

How the CPU protocol was chosen (from `standard` runs alone, before any other
mode was trained). A preview at 96x96 with three MobileNetV2 members for 600
steps left 11 of the 19 classes at IoU 0: a protocol where the rare classes are
never learned cannot show a rare-class effect either way. Two pilots of
`standard` at 128x128, batch 4, 800 steps, two members:
- DeepLabV3+ MobileNetV2 (the paper's smallest member): 13 of 19 classes at
  IoU >= 0.1 in-domain, 14 cross-domain (mIoU 0.346 / 0.401), still rising;
- smp U-Net on a MobileNetV2 encoder: 10 of 19 (mIoU 0.377 / 0.380).
So: two DeepLabV3+ MobileNetV2 members (the fewest that make an ensemble; a
third costs half as much again), scenes rendered at the training size (a
wide scene squeezed to a square loses poles and lights to resampling), batch
4, 800 steps, validation every 200. What stays unlearned in that budget
(walls, fences, poles, traffic lights and signs: thin or pale-on-pale shapes)
is unlearned by `standard`, not by choice. Seeds: 5 each for `standard` and
`instance_uncertainty`, 2 for the other baselines, 16 runs, two at a time.
The baselines added since join it at 2 seeds each without changing the runs
above: `ohem`, `lovasz`, `ce_lovasz`, `recall`, and as variants (a mode with
options, its runs under runs/variants/<name>, another experiment in the
report, so compared by Welch's test) `class_weighted` with median-frequency
and effective-number weights, and `standard` and `instance_uncertainty` with
rare-class sampling: 32 runs in all.

The GPU protocol is the paper's: DeepLabV3+ ResNet-101, ResNet-50 and
MobileNetV2 at their learning rates, 768x768, batch 2, 10 seeds per mode;
from scratch (`pretrained: false`, as nothing downloads here), 400 training
scenes and 4,000 steps, so a run takes minutes on one GPU rather than the
paper's hours; `--pretrained` starts from ImageNet weights in the local caches.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_bytes, atomic_write_json

BASELINE, METHOD = "standard", "instance_uncertainty"
RARE = 5  # the report's row: mean IoU of this many classes rarest in training
LEARNED = 0.1  # an IoU at or above this counts a class as learned
MOBILENET = {"name": "deeplabv3plus_mobilenet", "lr": 1.0e-3}
PAPER_MEMBERS = ({"name": "deeplabv3plus_resnet101", "lr": 1.0e-4}, {"name": "deeplabv3plus_resnet50", "lr": 1.0e-4},
                 MOBILENET)


@dataclass(frozen=True)
class Protocol:
    size: int  # scenes are rendered and trained at size x size
    n_train: int  # ACDC-layout training scenes (a quarter per condition)
    n_val: int  # validation scenes of each layout
    members: tuple[dict, ...]
    steps: int
    val_every: int
    batch_size: int
    seeds: dict[str, int] = field(default_factory=dict)  # mode -> seeds, in the order they run
    parallel: int = 1  # runs at a time (iwu sweep --parallel)
    accelerator: str = "auto"
    bn_momentum: float = 0.01  # the paper's, for runs long enough to settle it
    max_epochs: int = 60  # trainer.max_epochs, iwu's default: the first of it and `steps` reached ends a run
    # a mode with options, by name: (mode, overrides), `variant_seeds` seeds each, in runs/variants/<name>
    variants: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    variant_seeds: int = 2

    @property
    def trained_steps(self) -> int:
        """The steps a run trains (and its poly schedule spans): `steps`, or the epoch bound if it comes first
        (`iwu.engine.train.total_steps`: full batches of `n_train` scenes per epoch)."""
        return min(self.steps, self.max_epochs * (self.n_train // self.batch_size))


# The class-imbalance options on the modes they apply to: class weights other than inverse frequency, and
# rare-class sampling under the baseline and under the method.
BASELINE_VARIANTS = {
    "class_weighted+median_frequency": ("class_weighted", ("loss.class_weights=median_frequency",)),
    "class_weighted+effective_number": ("class_weighted", ("loss.class_weights=effective_number",)),
    "standard+rare_class": (BASELINE, ("data.sampler=rare_class",)),
    "instance_uncertainty+rare_class": (METHOD, ("data.sampler=rare_class",)),
}
VARIANTS = "variants"  # their runs' folder, beside the modes'

PROTOCOLS = {
    # The baselines added later (ohem to recall, and the variants) join at 2 seeds each after the first
    # five modes, whose protocol and runs stay as they were; fixed here before any of their runs.
    "cpu": Protocol(size=128, n_train=160, n_val=40, members=(MOBILENET, MOBILENET), steps=800, val_every=200,
                    batch_size=4, seeds={BASELINE: 5, METHOD: 5, "class_weighted": 2, "focal": 2,
                                         "pixel_uncertainty": 2, "ohem": 2, "lovasz": 2, "ce_lovasz": 2,
                                         "recall": 2},
                    parallel=2, accelerator="cpu", bn_momentum=0.1, variants=BASELINE_VARIANTS),
    # Does the gap close with training? The cpu protocol's scenes, members, size and batch, the two modes
    # only, three seeds, four times the steps. Fixed here before any of its runs, not to be tuned after.
    # It trains 2,400 steps, three times the cpu protocol's: 60 epochs of 40 batches end a run before
    # its 3,200 (`trained_steps`). Seen in the runs' logs after they had started and before any of their
    # scores was read, and kept, with its validation every 400 steps: the protocol that ran.
    "cpu-long": Protocol(size=128, n_train=160, n_val=40, members=(MOBILENET, MOBILENET), steps=3200,
                         val_every=400, batch_size=4, seeds={BASELINE: 3, METHOD: 3}, parallel=2,
                         accelerator="cpu", bn_momentum=0.1),
    "gpu": Protocol(size=768, n_train=400, n_val=100, members=PAPER_MEMBERS, steps=4000, val_every=500,
                    batch_size=2, seeds={BASELINE: 10, METHOD: 10, "class_weighted": 10, "focal": 10,
                                         "pixel_uncertainty": 10}),
    # The GPU day (benchmarks/gpu_day.py): the cpu protocol's members on a GPU at 384x384, batch 8, all ten runs
    # at once; its steps are that script's estimate of what fits its six minutes on one H200, fixed there before
    # any of its runs (the first GPU day may correct the step count once, from the measured rate alone).
    "gpu-day": Protocol(size=384, n_train=320, n_val=40, members=(MOBILENET, MOBILENET), steps=700, val_every=100,
                        batch_size=8, seeds={BASELINE: 5, METHOD: 5}, parallel=10, accelerator="gpu",
                        bn_momentum=0.1),
    "quick": Protocol(size=32, n_train=8, n_val=4, members=(MOBILENET, MOBILENET), steps=4, val_every=2,
                      batch_size=2, seeds={BASELINE: 2, METHOD: 2}, parallel=2, accelerator="cpu",
                      bn_momentum=0.1, variants={"standard+rare_class": (BASELINE, ("data.sampler=rare_class",
                                                                                   "data.rcs_min_pixels=1"))}),
}
DOMAINS = {"acdc": "in-domain", "cityscapes": "cross-domain"}  # the validation sets, and what each measures
EVAL_SETS = tuple(DOMAINS)


def write_scenes(root: Path, p: Protocol) -> dict[str, Path]:
    """The ACDC-layout training and validation scenes and the Cityscapes-layout validation scenes,
    written once (kept when a finished set with the same settings is there)."""
    from iwu.data.synthetic import MARKER, write_synthetic

    sets = {"acdc": (p.n_train, 0), "cityscapes": (0, 1)}  # (training scenes, seed): other scenes each
    roots = {}
    for layout, (n_train, seed) in sets.items():
        out = root / layout
        want = {"layout": layout, "n_train": n_train, "n_val": p.n_val, "width": p.size, "height": p.size,
                "seed": seed}
        marker = out / MARKER
        if not (marker.is_file() and json.loads(marker.read_text()) == want):
            write_synthetic(out, layout, n_train=n_train, n_val=p.n_val, size=p.size, height=p.size, seed=seed)
        roots[layout] = out
    return roots


def run_config(p: Protocol, budget: str, roots: dict[str, Path], cache: Path, pretrained: bool) -> dict:
    """The config every run of the benchmark shares; the sweep sets mode, seed and out."""
    return {
        "experiment": f"method_quality_{budget}",
        "val_every": p.val_every,
        "members": [dict(m) for m in p.members],
        "model": {"pretrained": pretrained, "bn_momentum": p.bn_momentum},
        "data": {"kind": "acdc", "root": str(roots["acdc"]), "size": p.size, "batch_size": p.batch_size,
                 "val_batch_size": 8, "num_workers": 0, "cache_dir": str(cache),
                 "val_extra": {"kind": "cityscapes", "root": str(roots["cityscapes"])}},
        "trainer": {"max_steps": p.steps, "max_epochs": p.max_epochs, "accelerator": p.accelerator,
                    "log_every_n_steps": 20},
    }


def train_all(config_file: Path, runs: Path, p: Protocol, experiment: str) -> None:
    """Every run, baseline and method first; finished runs are skipped. Seed by seed (one sweep each, every
    mode of that seed in it), so a benchmark stopped half-way holds whole pairs of runs to compare (the
    order runs in changes none of their results); in one sweep per seed count where all runs go at once."""
    from iwu.sweep import run_sweep

    if p.parallel >= sum(p.seeds.values()):
        by_count: dict[int, list[str]] = {}
        for mode, n in p.seeds.items():
            by_count.setdefault(n, []).append(mode)
        sweeps = [(str(n), modes) for n, modes in sorted(by_count.items(), reverse=True)]
    else:
        sweeps = [(f"{seed}-{seed}", [mode for mode, n in p.seeds.items() if n > seed])
                  for seed in range(max(p.seeds.values()))]
    for seeds, modes in sweeps:
        status = run_sweep(config_file, seeds=seeds, modes=",".join(modes), overrides=[f"out={runs}"],
                           parallel=p.parallel)
        _check(status, runs)
    for name, (mode, overrides) in p.variants.items():
        folder = runs / VARIANTS / name
        # its own experiment, so that the report tells a variant from its mode (the sweep names experiments)
        config = yaml.safe_load(config_file.read_text()) | {"experiment": f"{experiment}+{name}"}
        variant_file = atomic_write_bytes(config_file.with_name(f"config+{name}.yaml"),
                                          yaml.safe_dump(config, sort_keys=False).encode())
        status = run_sweep(variant_file, seeds=str(p.variant_seeds), modes=mode, parallel=p.parallel,
                           overrides=[f"out={folder}", *overrides])
        _check(status, folder)


def _check(status: int, runs: Path) -> None:
    if status:
        raise UserError(f"some runs failed (see {runs / 'sweep' / 'summary.json'}); run the same command "
                        "again to retry them")


def class_counts(config_file: Path, out: Path) -> Path:
    """The training split's pixels per class, as `iwu prepare` writes them, for the report's order and --rare."""
    from iwu.config.schema import load_config
    from iwu.data import SegmentationDataModule

    dm = SegmentationDataModule(load_config(config_file).data)
    counts = dm.train_class_counts()
    dm.setup("validate")  # for the class names
    return atomic_write_json(out, {"classes": list(dm.classes), "counts": [int(c) for c in counts]})


def write_reports(runs: Path, out: Path, counts: Path, p: Protocol) -> dict[tuple[str, str], dict]:
    """Per eval set: every mode side by side, and each mode against the baseline (tables and figure)."""
    from iwu.report import write_report

    written = {}
    folders = compared(runs, p)
    for eval_set in EVAL_SETS:
        write_report(list(folders.values()), out / eval_set / "all", class_counts=counts, fmt="md,csv",
                     eval_set=eval_set, rare=RARE)
        for name, folder in folders.items():
            if name != BASELINE:
                written[eval_set, name] = write_report([runs / BASELINE, folder], out / eval_set / name,
                                                       class_counts=counts, fmt="md,csv", eval_set=eval_set,
                                                       rare=RARE)
    return written


SUMMARY_ROWS = ("mIoU", "rare")  # per eval set, of each mode's report.csv: mIoU and the RARE rarest classes
SUMMARY_COLUMNS = tuple((eval_set, row) for eval_set in EVAL_SETS for row in SUMMARY_ROWS)


def summary_rows(written: dict[tuple[str, str], dict]) -> dict[str, dict[tuple[str, str], dict]]:
    """Per mode and variant of `written` (write_reports()'s pairs, in their order), per SUMMARY_COLUMNS
    entry, that row of its report.csv against the baseline: difference, interval, p (BH), test and seeds."""
    from iwu.report import rarest_label

    labels = {"mIoU": "mIoU", "rare": rarest_label(RARE)}
    found = {}
    for name in dict.fromkeys(name for _, name in written):
        found[name] = {}
        for eval_set in EVAL_SETS:
            rows = {r["class"]: r for r in csv.DictReader(written[eval_set, name]["csv"].open())}
            for row in SUMMARY_ROWS:
                found[name][eval_set, row] = rows[labels[row]]
    return found


def write_summary(written: dict[tuple[str, str], dict], out: Path) -> Path:
    """Every mode and variant against the baseline in one table, `<out>/summary.md`, and one figure,
    `<out>/summary.png`: per eval set, the difference of mIoU and of the RARE rarest classes' mean IoU, its
    95% interval and its BH-adjusted p, read back from the report.csv of each pair (its test too: paired
    where the seeds match, Welch's otherwise)."""
    from iwu.plots.forest import save_forest

    found = summary_rows(written)
    header = ["mode (seeds)", *(_column_title(*c) for c in SUMMARY_COLUMNS), "test"]
    lines = [f"Every mode against `{BASELINE}` (difference of means, its 95% CI, and the Benjamini-Hochberg "
             "adjusted p of its table; `*` below 0.05):", "", "| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(header) - 2) + "---|"]
    for name, rows in found.items():
        first = rows[SUMMARY_COLUMNS[0]]
        lines.append(f"| {name} ({_seeds(first)}) | " + " | ".join(_summary_cell(rows[c]) for c in SUMMARY_COLUMNS)
                     + f" | {first['test']} |")
    save_forest(summary_forest(found), out / "summary.png")
    return atomic_write_bytes(out / "summary.md", ("\n".join(lines) + "\n").encode())


def _seeds(row: dict[str, str]) -> str:
    """The compared column's number of runs (the row's " n" columns: the baseline's, then this one's)."""
    return [row[k] for k in row if k.endswith(" n")][1]


def _column_title(eval_set: str, row: str) -> str:
    return f"{DOMAINS[eval_set]} {'mIoU' if row == 'mIoU' else f'{RARE} rarest'}"


def _summary_cell(row: dict[str, str]) -> str:
    if not row["p"]:  # both columns the same constant (a class no run learned): nothing to test
        return f"{float(row['difference']):+.3f}"
    from iwu.report.formats import format_p

    star = " *" if _significant(row) else ""
    return (f"{float(row['difference']):+.3f} [{float(row['ci low']):+.3f}, {float(row['ci high']):+.3f}], "
            f"p (BH) {format_p(float(row['p (BH)']))}{star}")


def _significant(row: dict[str, str]) -> bool:
    """Whether the report marks the row's difference (its column "p (BH) < 0.05")."""
    return bool(row["p (BH) < 0.05"])


def summary_forest(found: dict[str, dict[tuple[str, str], dict]]):
    """summary_rows()'s figures as a forest plot: a panel per SUMMARY_COLUMNS entry, a row per mode or
    variant, marked where the table marks it."""
    from iwu.plots.forest import Forest, ForestPanel

    def number(text: str) -> float:
        return float(text) if text else math.nan

    panels = []
    for column in SUMMARY_COLUMNS:
        rows = [found[name][column] for name in found]
        panels.append(ForestPanel(
            title=_column_title(*column), diffs=tuple(number(r["difference"]) for r in rows),
            intervals=tuple((number(r["ci low"]), number(r["ci high"])) for r in rows),
            significant=tuple(_significant(r) for r in rows)))
    return Forest(
        names=tuple(f"{name} ({_seeds(rows[SUMMARY_COLUMNS[0]])})" for name, rows in found.items()),
        panels=tuple(panels), title=f"Every mode against {BASELINE}: difference of mean IoU, 95% CI",
        xlabel="IoU difference", legend=("higher, p (BH) < 0.05", "lower, p (BH) < 0.05", "not significant",
                                         "95% CI"))


def compared(runs: Path, p: Protocol) -> dict[str, Path]:
    """Every mode's and variant's folder of runs, by name, the baseline first. A variant's runs are another
    experiment than the baseline's (the report tells them apart by it), so its test is Welch's, not paired."""
    return {**{m: runs / m for m in p.seeds}, **{name: runs / VARIANTS / name for name in p.variants}}


# metrics.csv's names of the validation sets, and the learning gap's titles of them
GAP_SETS = {"val": f"{DOMAINS['acdc']} (acdc)", "val_cityscapes": f"{DOMAINS['cityscapes']} (cityscapes)"}


def write_learning_gaps(runs: Path, out: Path, counts: Path, p: Protocol) -> dict[str, Path]:
    """Per mode against the baseline: the paired difference at every validation step (mIoU and the RARE
    rarest classes, both validation sets), its table and figure as `iwu report --gap --out` writes them."""
    from iwu.plots.learning_gap import save_learning_gap
    from iwu.report.learning_gap import gap_markdown, learning_gap, rare_names, seed_runs

    first = seed_runs(runs / BASELINE)
    rare = rare_names(first[min(first)], counts, RARE)
    written = {}
    for mode, folder in compared(runs, p).items():
        if mode == BASELINE:
            continue
        curves = learning_gap(runs / BASELINE, folder, rare)
        table = gap_markdown(curves, GAP_SETS, method=mode, baseline=BASELINE)
        written[mode] = atomic_write_bytes(out / mode / "learning_gap.md", table.encode())
        save_learning_gap(curves, out / mode / "learning_gap.png", GAP_SETS,
                          title=f"{mode} - {BASELINE} at every validation, paired by seed")
    return written


def learned_by_baseline(runs: Path, counts: Path) -> dict[str, tuple[int, int]]:
    """Per eval set: (classes whose mean IoU over the baseline's seeds is >= LEARNED, classes scored)."""
    from iwu.report import build_table

    learned = {}
    for eval_set in EVAL_SETS:
        cells = build_table([runs / BASELINE], eval_set=eval_set).columns[0].cells
        scored = [c.mean for c in cells if c.n]
        learned[eval_set] = (sum(m >= LEARNED for m in scored), len(scored))
    return learned


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=list(PROTOCOLS), default="cpu", help="the protocol (see the docstring)")
    parser.add_argument("--quick", action="store_const", const="quick", dest="budget",
                        help="the same as --budget quick: minutes, a check that the script runs")
    parser.add_argument("--out", type=Path, default=None, help="folder for scenes, runs and reports "
                                                                "(default runs/method_quality/<budget>)")
    parser.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (local caches only)")
    args = parser.parse_args(argv)
    p = PROTOCOLS[args.budget]
    out = (args.out or Path("runs") / "method_quality" / args.budget).resolve()
    start = time.perf_counter()
    try:
        roots = write_scenes(out / "data", p)
        config_file = atomic_write_bytes(out / "config.yaml", yaml.safe_dump(
            run_config(p, args.budget, roots, out / "cache", args.pretrained), sort_keys=False).encode())
        train_all(config_file, out / "runs", p, f"method_quality_{args.budget}")
        counts = class_counts(config_file, out / "class_counts.json")
        written = write_reports(out / "runs", out / "report", counts, p)
        summary = write_summary(written, out / "report")
        learned = learned_by_baseline(out / "runs", counts)
        gaps = write_learning_gaps(out / "runs", out / "report" / "learning_gap", counts, p)
    except UserError as err:
        print(f"method_quality: {err}", file=sys.stderr)
        return 2
    minutes = (time.perf_counter() - start) / 60
    runs = sum(p.seeds.values()) + p.variant_seeds * len(p.variants)
    print(f"\nmethod_quality --budget {args.budget}: {runs} runs, {minutes:.1f} min (runs already finished "
          f"were skipped); reports in {out / 'report'}")
    for eval_set, (n, scored) in learned.items():
        print(f"{BASELINE} learns {n} of the {scored} classes of the {eval_set} validation set "
              f"(mean IoU >= {LEARNED})")
    for eval_set in EVAL_SETS:
        if (eval_set, METHOD) in written:
            print(f"\n{METHOD} against {BASELINE}, trained on acdc, scored on {eval_set}:\n")
            print(written[eval_set, METHOD]["md"].read_text(), end="")
    print(f"\n{summary.read_text()}", end="")
    if METHOD in gaps:
        print(f"\nThe gap as training goes on ({gaps[METHOD].with_suffix('.png')}):\n")
        print(gaps[METHOD].read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
