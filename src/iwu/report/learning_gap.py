"""The learning curve of a gap: two modes' difference at every validation of their runs, paired by seed.

Runs of two modes with the same seed start from the same weights and see the same batches in the same
order, so at each validation step the difference of their scores is one number per seed. Per step this
gives the mean of those differences and its paired 95% interval (the report's paired test,
`iwu.report.stats.confidence_interval`), for the ensemble's mIoU and for the mean IoU of the `k` classes
rarest in training, on every validation set the runs logged: does a gap at the end of training close,
hold or open as training goes on?

The scores come from each run's metrics.csv: the columns ``<set>/ensemble/miou`` and
``<set>/ensemble/iou/<class>`` that training logs at every validation (``val`` for the training dataset's
own validation split, ``val_<kind>`` for a `data.val_extra` set).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from iwu.constants import ENSEMBLE
from iwu.engine.run_dir import FINAL, METRICS
from iwu.errors import UserError
from iwu.plots.curves import read_metrics
from iwu.report.records import final_files, read_json
from iwu.report.stats import PAIRED, confidence_interval, differences
from iwu.report.table import load_class_share, rarest_indices, rarest_label
from iwu.util.atomic_files import atomic_write_bytes

MIOU = "mIoU"
TABLE, FIGURE = "learning_gap.md", "learning_gap.png"  # written by `iwu report --gap --out`
SET_MIOU = re.compile(rf"^(val[^/]*)/{ENSEMBLE}/miou$")


@dataclass(frozen=True)
class GapPoint:
    """One validation step: the per-seed differences (method - baseline, in the curve's seed order; NaN
    where a side has no score), their mean and the paired 95% interval (NaN, NaN: fewer than 2 pairs or
    no spread)."""

    step: int
    diffs: tuple[float, ...]
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class GapCurve:
    """One score on one validation set, at every step both modes validated."""

    eval_set: str  # the validation set, as metrics.csv names it (``val``, ``val_cityscapes``)
    metric: str  # ``mIoU`` or ``<k> rarest (mean)``
    seeds: tuple[int, ...]
    points: tuple[GapPoint, ...]


def seed_runs(folder) -> dict[int, Path]:
    """The runs below `folder` by seed (each a folder holding a final.json); one line if two share a seed."""
    runs: dict[int, Path] = {}
    for final in final_files(folder):
        seed = read_json(final).get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"{final}: no whole-number `seed`; the learning gap pairs runs by seed")
        if seed in runs:
            raise UserError(f"{folder}: two runs of seed {seed} ({runs[seed]} and {final.parent}); "
                            "give a folder of one mode's runs")
        runs[seed] = final.parent
    return runs


def validation_scores(metrics: dict[str, list[tuple[int, float]]], eval_set: str,
                      rare: Sequence[str]) -> dict[str, dict[int, float]]:
    """``{"mIoU": {step: value}, "<k> rarest (mean)": {step: value}}`` of one run on one validation set;
    a step's rare mean is over the rare classes scored there (none scored: no value at that step)."""
    scores = {MIOU: dict(metrics.get(f"{eval_set}/{ENSEMBLE}/miou", []))}
    if rare:
        per_class = [dict(metrics.get(f"{eval_set}/{ENSEMBLE}/iou/{name}", [])) for name in rare]
        steps = sorted({step for values in per_class for step in values})
        scores[rarest_label(len(rare))] = {
            step: sum(v[step] for v in per_class if step in v) / sum(step in v for v in per_class) for step in steps}
    return scores


def _metrics(run: Path) -> dict[str, list[tuple[int, float]]]:
    path = run / METRICS
    if not path.is_file():
        raise UserError(f"{path}: missing; the learning gap reads the validation scores a run logs as it trains")
    return read_metrics(path)


def _point(step: int, method: list[dict[int, float]], baseline: list[dict[int, float]]) -> GapPoint:
    a = [m.get(step) for m in method]
    b = [m.get(step) for m in baseline]
    diffs = tuple(x - y if x is not None and y is not None else math.nan for x, y in zip(a, b))
    kept = differences(a, b)
    mean = float(kept.mean()) if len(kept) else math.nan
    low, high = confidence_interval(a, b, test=PAIRED)
    return GapPoint(step, diffs, mean, low, high)


def learning_gap(baseline, method, rare: Sequence[str] = ()) -> list[GapCurve]:
    """The gap curves of the runs under `method` against those under `baseline` (each a folder of one
    mode's runs), paired by seed: per validation set both logged, mIoU then the mean of the `rare`
    classes (names, as the runs' classes are named; none: mIoU only).

    A step enters a curve where both runs of at least one seed validated at it. One line if the
    folders share no seed or no validation set."""
    base_runs, method_runs = seed_runs(baseline), seed_runs(method)
    seeds = tuple(sorted(set(base_runs) & set(method_runs)))
    if not seeds:
        raise UserError(f"{baseline} (seeds {sorted(base_runs)}) and {method} (seeds {sorted(method_runs)}) share "
                        "no seed; the learning gap pairs runs of the same seed")
    base_metrics = [_metrics(base_runs[s]) for s in seeds]
    method_metrics = [_metrics(method_runs[s]) for s in seeds]
    sets = [m.group(1) for m in map(SET_MIOU.match, base_metrics[0]) if m]
    sets = [s for s in sets if all(f"{s}/{ENSEMBLE}/miou" in m for m in (*base_metrics, *method_metrics))]
    if not sets:
        raise UserError(f"{baseline} and {method}: no validation set logged by every run; were they trained "
                        "with validation (val_every)?")
    curves = []
    for eval_set in sets:
        base = [validation_scores(m, eval_set, rare) for m in base_metrics]
        meth = [validation_scores(m, eval_set, rare) for m in method_metrics]
        for metric in base[0]:
            b, m = [s[metric] for s in base], [s[metric] for s in meth]
            steps = sorted({step for x, y in zip(m, b) for step in x.keys() & y.keys()})
            curves.append(GapCurve(eval_set, metric, seeds, tuple(_point(step, m, b) for step in steps)))
    return curves


def _cell(p: GapPoint, scale: float) -> str:
    if math.isnan(p.mean):
        return "n/a"
    if math.isnan(p.low):
        return f"{p.mean * scale:+.3f}"
    return f"{p.mean * scale:+.3f} [{p.low * scale:+.3f}, {p.high * scale:+.3f}]"


def gap_markdown(curves: Sequence[GapCurve], names: dict[str, str] | None = None, *, method: str = "method",
                 baseline: str = "baseline") -> str:
    """A Markdown table: one row per validation step, one column per (validation set, score): the mean
    paired difference with its 95% interval. `names`: how to call each validation set (default its name
    in metrics.csv)."""
    names = names or {}
    steps = sorted({p.step for c in curves for p in c.points})
    header = ["step", *(f"{names.get(c.eval_set, c.eval_set)}: {c.metric}" for c in curves)]
    by_step = [{p.step: p for p in c.points} for c in curves]
    rows = [[str(step), *(_cell(b[step], 1.0) if step in b else "" for b in by_step)] for step in steps]
    seeds = ", ".join(str(s) for s in curves[0].seeds) if curves else ""
    lines = [f"{method} - {baseline}, paired by seed (seeds {seeds}): mean difference [95% interval]", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rare_names(run: Path, class_counts, k: int) -> tuple[str, ...]:
    """The names of the `k` classes rarest in training (by `class_counts`, as `iwu report --rare` picks
    them), in the classes of the run at `run`."""
    classes = read_json(run / FINAL).get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{run}: its final.json names no `classes`")
    share = load_class_share(class_counts, classes)
    return tuple(classes[i] for i in rarest_indices(share, k))


def run_learning_gap(runs: Sequence, out=None, class_counts=None, rare: int | None = None) -> int:
    """`iwu report BASELINE METHOD --gap`: print the gap's table; with `out`, write it and its figure."""
    if len(runs) != 2:
        raise UserError(f"--gap compares two folders of runs (the baseline's, then the other mode's), "
                        f"not {len(runs)}")
    if rare is not None and class_counts is None:
        raise UserError(f"--rare {rare}: needs --class-counts, the training set's class_counts.json")
    baseline, method = (Path(r) for r in runs)
    first = seed_runs(baseline)
    names = rare_names(first[min(first)], class_counts, rare) if rare else ()
    curves = learning_gap(baseline, method, names)
    text = gap_markdown(curves, method=method.name, baseline=baseline.name)
    print(text, end="")
    if out is not None:
        out = Path(out)
        print(f"wrote {atomic_write_bytes(out / TABLE, text.encode())}")
        from iwu.plots.learning_gap import save_learning_gap

        title = f"{method.name} - {baseline.name} at every validation, paired by seed"
        print(f"wrote {save_learning_gap(curves, out / FIGURE, title=title)}")
    return 0
