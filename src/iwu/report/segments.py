"""`iwu report --segments`: how well each mode's uncertainty flags wrong segments, over seeds.

Reads the `segments` summary `iwu evaluate --segments` writes into a run's eval file (of its best
ensemble; docs/segments.md) and sets the modes side by side on four numbers: the AUROC of IoU = 0 of the
headline feature (instance uncertainty) and of the logistic regression, the R² of the linear regression,
and the share of segments with IoU 0. The statistics are the IoU table's (`iwu.report.stats`): mean, std
and n per column; for two columns of one validation set, the difference with its 95% interval, the t-test
(paired by seed where both columns hold the same seeds of one experiment, else Welch's, unless asked),
Hedges' g (Cohen's d_z when paired) and the Benjamini-Hochberg adjusted p over the four rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from iwu.constants import ENSEMBLE
from iwu.errors import UserError
from iwu.engine.run_dir import BEST_ENSEMBLE, EVAL_GLOB
from iwu.report.formats import format_p
from iwu.report.records import final_files, read_json
from iwu.report.stats import (
    ALPHA, DDOF, PAIRED, SAMPLE, TEST_NAMES, TESTS, WELCH, Stat, TTest, bh_adjust, check_choice, cohen_dz,
    confidence_interval, describe, hedges_g, is_missing,
)

METRICS = {  # key in the eval file's `segments` -> the row's name
    "headline_auroc": "AUROC of IoU = 0: instance uncertainty",
    "logistic_auroc": "AUROC of IoU = 0: logistic regression",
    "linear_r2": "R² of the IoU: linear regression",
    "iou_zero_share": "share of segments with IoU 0",
}
REPORT = "report_segments.md"
BASELINE = "standard"  # the column others are compared against, where present


@dataclass(frozen=True)
class SegmentScores:
    """The segments' summary of one run's best ensemble on one validation set."""

    experiment: str | None
    mode: str
    seed: int | None
    dataset: str
    values: dict  # METRICS key -> number
    source: Path


@dataclass(frozen=True)
class SegmentComparison:
    a: str
    b: str
    test: str
    diff: tuple[float, ...]  # b - a per metric (paired: the mean per-seed difference)
    ci: tuple[tuple[float, float], ...]
    effect: tuple[float, ...]  # Hedges' g, or Cohen's d_z when paired
    tests: tuple[TTest, ...]
    p_adj: tuple[float, ...]
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class SegmentTable:
    labels: tuple[str, ...]
    runs: tuple[tuple[SegmentScores, ...], ...]  # per column
    cells: tuple[tuple[Stat, ...], ...]  # per column, per metric
    comparison: SegmentComparison | None
    std: str


def _number(path: Path, seg: dict, key: str) -> float:
    value = seg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{path}: `segments.{key}` must be a finite number, found {value!r}")
    return float(value)


def _run_scores(final: Path) -> list[SegmentScores]:
    data = read_json(final)
    mode, seed = data.get("mode"), data.get("seed")
    if not isinstance(mode, str) or not mode:
        raise UserError(f"{final}: `mode` must be a non-empty string, found {mode!r}")
    found = []
    for path in sorted(final.parent.glob(EVAL_GLOB)):
        ev = read_json(path)
        seg = ev.get("segments")
        if ev.get("checkpoint", BEST_ENSEMBLE) != BEST_ENSEMBLE or ev.get("evaluated", ENSEMBLE) != ENSEMBLE:
            continue  # another checkpoint or one member: not the run's ensemble
        if not isinstance(seg, dict) or "error" in seg:
            continue  # evaluated without --segments, or too few segments to fit
        values = {k: _number(path, seg, k) for k in METRICS}
        found.append(SegmentScores(data.get("experiment"), mode, seed if isinstance(seed, int) else None,
                                   str(ev.get("dataset")), values, path))
    return found


def collect_segments(run_dirs, eval_set: str | None = None) -> list[SegmentScores]:
    """Every run's segments summary below `run_dirs` (of validation set `eval_set` only, when given)."""
    finals = {p.resolve(): p for folder in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)
              for p in final_files(folder)}
    scores = [s for final in finals.values() for s in _run_scores(final)]
    if eval_set is not None:
        kept = [s for s in scores if s.dataset == eval_set]
        if scores and not kept:
            raise UserError(f"--eval {eval_set}: no segments summary of it; the runs hold "
                            f"{', '.join(sorted({s.dataset for s in scores}))}")
        scores = kept
    if not scores:
        raise UserError("no eval file with a `segments` summary in these runs: run iwu evaluate RUN --data "
                        "KIND:ROOT --segments first")
    seen = {}
    for s in scores:
        key = (s.experiment, s.mode, s.seed, s.dataset)
        if key in seen:
            raise UserError(f"{s.source} and {seen[key]}: two runs of experiment {s.experiment}, mode {s.mode}, "
                            f"seed {s.seed}; pass only one of them")
        seen[key] = s.source
    return scores


def _label(s: SegmentScores, experiments: int, datasets: int) -> str:
    label = f"{s.experiment} / {s.mode}" if experiments > 1 else s.mode
    return f"{label} ({s.dataset})" if datasets > 1 else label


def _paired_reason(a: list[SegmentScores], b: list[SegmentScores]) -> str:
    seeds_a, seeds_b = [s.seed for s in a], [s.seed for s in b]
    if len({s.experiment for s in a + b}) > 1:
        return "the columns hold runs of other experiments"
    if None in seeds_a + seeds_b or len(set(seeds_a)) != len(seeds_a) or set(seeds_a) != set(seeds_b):
        return f"the columns hold other seeds ({sorted(map(str, seeds_a))}; {sorted(map(str, seeds_b))})"
    return ""


def compare_segments(a_label: str, a: list[SegmentScores], b_label: str, b: list[SegmentScores],
                     test: str | None = None) -> SegmentComparison:
    """Column b against column a on every metric (module docstring); `test` None pairs where it can."""
    why = _paired_reason(a, b)
    if test == PAIRED and why:
        raise UserError(f"--test paired: {why}; pair runs of the same seeds, or choose --test welch")
    test = test or (WELCH if why else PAIRED)
    if test == PAIRED:  # aligned by seed
        a, b = sorted(a, key=lambda s: s.seed), sorted(b, key=lambda s: s.seed)
    diffs, cis, effects, tests = [], [], [], []
    for key in METRICS:
        x, y = [s.values[key] for s in b], [s.values[key] for s in a]
        diffs.append(describe(x).mean - describe(y).mean)  # paired and complete: the mean difference too
        cis.append(confidence_interval(x, y, test))
        effects.append((cohen_dz if test == PAIRED else hedges_g)(x, y))
        tests.append(TESTS[test](x, y))
    seeds = tuple(s.seed for s in a) if test == PAIRED else ()
    return SegmentComparison(a_label, b_label, test, tuple(diffs), tuple(cis), tuple(effects), tuple(tests),
                             tuple(bh_adjust([t.p for t in tests])), seeds)


def segment_table(scores: list[SegmentScores], *, std: str = SAMPLE, test: str | None = None) -> SegmentTable:
    """Columns per (experiment, mode, validation set), `standard` first; a comparison for two columns of one set."""
    check_choice(std, DDOF, "std")
    if test is not None:
        check_choice(test, TESTS, "test")
    experiments, datasets = len({s.experiment for s in scores}), len({s.dataset for s in scores})
    columns: dict[str, list[SegmentScores]] = {}
    for s in scores:
        columns.setdefault(_label(s, experiments, datasets), []).append(s)
    labels = sorted(columns, key=lambda k: (columns[k][0].mode != BASELINE, k))
    runs = tuple(tuple(columns[k]) for k in labels)
    cells = tuple(tuple(describe([s.values[key] for s in col], std) for key in METRICS) for col in runs)
    comparison = None
    if len(labels) == 2 and datasets == 1:
        comparison = compare_segments(labels[0], list(runs[0]), labels[1], list(runs[1]), test)
    return SegmentTable(tuple(labels), runs, cells, comparison, std)


def _num(x, sign: bool = False) -> str:
    return "--" if is_missing(x) else f"{x:{'+' if sign else ''}.3f}"


def to_markdown(table: SegmentTable) -> str:
    """The table as Markdown, with a note on its statistics."""
    cmp = table.comparison
    header = ["segments", *table.labels]
    if cmp:
        effect = "d_z" if cmp.test == PAIRED else "g"
        header += [f"{cmp.b} - {cmp.a}", "95% CI", effect, f"p ({TEST_NAMES[cmp.test]})", "p (BH)",
                   f"p (BH) < {ALPHA:g}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, name in enumerate(METRICS.values()):
        row = [name]
        for col in table.cells:
            c = col[i]
            row.append("--" if c.n == 0 else f"{_num(c.mean)}" + ("" if is_missing(c.std) else f" ± {_num(c.std)}")
                       + f" ({c.n})")
        if cmp:
            low, high = cmp.ci[i]
            ci = "--" if is_missing(low) else f"[{_num(low, True)}, {_num(high, True)}]"
            g = "--" if is_missing(cmp.effect[i]) else f"{cmp.effect[i]:+.2f}"
            row += [_num(cmp.diff[i], True), ci, g, format_p(cmp.tests[i].p), format_p(cmp.p_adj[i]),
                    "*" if cmp.p_adj[i] < ALPHA else ""]
        lines.append("| " + " | ".join(row) + " |")
    note = (f"Mean ± {table.std} std (n runs) of each run's segments summary (iwu evaluate --segments): "
            "AUROC of finding the segments with IoU 0, R² of predicting the IoU, both cross-validated by image.")
    if cmp:
        note += (f" {TEST_NAMES[cmp.test]} t-test of {cmp.b} against {cmp.a}"
                 + (f" over seeds {', '.join(map(str, cmp.seeds))}" if cmp.seeds else "")
                 + "; Benjamini-Hochberg over the rows.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def run_segment_report(runs, out=None, *, std: str = SAMPLE, test: str | None = None,
                       eval_set: str | None = None) -> int:
    """Print the segments table; with `out`, also write it to `out`/report_segments.md."""
    from iwu.util.atomic_files import atomic_write_bytes

    text = to_markdown(segment_table(collect_segments(runs, eval_set), std=std, test=test))
    print(text, end="")
    if out is not None:
        print(f"wrote {atomic_write_bytes(Path(out) / REPORT, text.encode('utf-8'))}")
    return 0
