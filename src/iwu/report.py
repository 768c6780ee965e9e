"""`iwu report`: per-class IoU over seeds from run directories, Welch t-tests, tables and a figure.

    records = collect(["runs/acdc"], member="ensemble")   # one per (run, eval dataset)
    table = summarise(group(records), paper="table1_acdc")
    print(to_markdown(table))

Inputs are the files runs write and nothing else: every ``final.json`` found
below the given folders (its ``results`` score the training dataset's
validation set, its optional ``val_extra`` a second, cross-domain one) and the
``eval_<dataset>.json`` files `iwu evaluate` writes beside it. An eval file
scoring the same dataset and split as ``final.json`` replaces that column for
its run (it is the later, explicit evaluation).

Statistics, per group (column) and class, over the runs (seeds) of the group:
mean and sample standard deviation (ddof=1), and n, the number of runs whose
IoU for the class is not null (a class absent from a validation set scores
null, so n can differ between cells). With n = 1 the standard deviation is
NaN and the cell shows no spread; with n = 0 it shows ``--``. The mIoU row is
the mean and spread of each run's own mIoU. Two groups are compared with
Welch's t-test (unequal variances), written here with a continued-fraction
incomplete beta function so that scipy stays a test-only dependency.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from iwu.errors import UserError
from iwu.files import atomic_write_bytes

FINAL = "final.json"
EVAL_GLOB = "eval_*.json"
ENSEMBLE = "ensemble"
ALL = "all"
ALPHA = 0.05
MIOU = "mIoU"
FIELDS = ("mode", "model", "experiment", "train", "eval")
FORMATS = {"md": "report.md", "tex": "report.tex", "csv": "report.csv"}
FIGURE = "difference.png"
PAPER_FILE = "paper_tables.json"
# baselines first, so that with two groups the difference reads "method - baseline"
MODE_ORDER = ("standard", "class_weighted", "focal", "offline_masks", "instance_uncertainty")
RAW = "\u2020"  # marks a difference to the paper left in IoU units because the published std is 0


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    """One model of one run scored on one validation set."""

    experiment: str | None
    mode: str
    seed: int | None
    model: str
    train: str  # the dataset the run trained on
    eval: str  # the dataset scored ("cityscapes"; "cityscapes/test" for a split other than val)
    classes: tuple[str, ...]
    iou: tuple[float | None, ...]  # in the order of `classes`; None: class absent from this set
    miou: float | None
    source: Path  # the final.json or eval_*.json the numbers come from
    run: Path  # the run directory

    def value(self, name: str):
        return getattr(self, name)


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"{path}: unreadable ({err.strerror or err})") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _text(path: Path, data: dict, key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise UserError(f"{path}: `{key}` must be a non-empty string, found {value!r}")
    return value


def _score(value) -> float | None:
    """An IoU or mIoU: a finite number, or None for null/NaN (nothing to score)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _scores(path: Path, where: str, entry, classes: tuple[str, ...]) -> tuple[tuple[float | None, ...], float | None]:
    if not isinstance(entry, dict) or not isinstance(entry.get("iou"), list):
        raise UserError(f"{path}: {where} needs an `iou` list")
    if len(entry["iou"]) != len(classes):
        raise UserError(f"{path}: {where} has {len(entry['iou'])} IoUs for {len(classes)} classes")
    try:
        iou = tuple(_score(v) for v in entry["iou"])
        miou = _score(entry.get("miou"))
    except TypeError as err:
        raise UserError(f"{path}: {where} holds {err.args[0]!r} where a number or null belongs") from None
    return iou, miou


def _classes(path: Path, data: dict) -> tuple[str, ...]:
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{path}: `classes` must be a non-empty list of names")
    return tuple(classes)


def _eval_label(name: str) -> str:
    """A validation loader's name (``kind/split``) as an eval dataset: the kind alone for ``val``."""
    kind, _, split = name.partition("/")
    return kind if split in ("", "val") else name


def _members(path: Path, where: str, results: dict, member: str) -> list[str]:
    if member == ALL:
        return list(results)
    if member not in results:
        raise UserError(f"{path}: no model {member!r} in `{where}` (it has: {', '.join(results) or 'none'}); "
                        f"choose one with --member, or --member all")
    return [member]


def _run_records(final_path: Path, member: str) -> list[Record]:
    data = _load_json(final_path)
    run = final_path.parent
    mode, train = _text(final_path, data, "mode"), _text(final_path, data, "dataset")
    experiment = _text(final_path, data, "experiment", required=False)
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError(f"{final_path}: `seed` must be a whole number, found {seed!r}")
    classes = _classes(final_path, data)
    results = data.get("results")
    if not isinstance(results, dict) or not results:
        raise UserError(f"{final_path}: `results` must map model names to their scores")

    # eval dataset -> (source, {model: scores}); later sources replace earlier ones for the same dataset
    sets: dict[str, tuple[Path, str, dict]] = {train: (final_path, "results", results)}
    extra = data.get("val_extra") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise UserError(f"{final_path}: `val_extra` must map validation sets to {{model: scores}}")
    for loader, scores in extra.items():
        sets[_eval_label(loader)] = (final_path, f"val_extra[{loader!r}]", scores)
    for eval_path in sorted(run.glob(EVAL_GLOB)):
        ev = _load_json(eval_path)
        dataset = _text(eval_path, ev, "dataset")
        split = ev.get("split") or "val"
        if _classes(eval_path, ev) != classes:
            raise UserError(f"{eval_path}: its classes differ from those of {final_path}")
        if not isinstance(ev.get("results"), dict) or not ev["results"]:
            raise UserError(f"{eval_path}: `results` must map model names to their scores")
        sets[_eval_label(f"{dataset}/{split}")] = (eval_path, "results", ev["results"])

    records = []
    for eval_name, (source, where, scores) in sets.items():
        for model in _members(source, where, scores, member):
            iou, miou = _scores(source, f"{where}[{model!r}]", scores[model], classes)
            records.append(Record(experiment, mode, seed, model, train, eval_name, classes, iou, miou, source, run))
    return records


def _final_files(folder) -> list[Path]:
    path = Path(folder)
    if path.is_file() and path.name == FINAL:
        return [path]
    if path.is_file():
        raise UserError(f"{path}: not a folder of runs nor a {FINAL}")
    if not path.is_dir():
        raise UserError(f"{path}: no such folder")
    found = sorted(path.rglob(FINAL))
    if not found:
        raise UserError(f"{path}: no {FINAL} in this folder or below it (a run writes it when it finishes)")
    return found


def collect(run_dirs, member: str = ENSEMBLE) -> list[Record]:
    """One `Record` per (run, eval dataset, model) from every final.json below `run_dirs`.

    `run_dirs` is a folder or a list of them; each may be a run directory or
    hold runs at any depth. `member` picks the model: ``ensemble`` (default), a
    member's name, or ``all`` for every model in the results.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise UserError("no run folders given")
    files: dict[Path, Path] = {}
    for folder in run_dirs:
        for path in _final_files(folder):
            files.setdefault(path.resolve(), path)  # the same run reached twice counts once
    records = [r for path in files.values() for r in _run_records(path, member)]

    first = records[0]
    seen: dict[tuple, Path] = {}
    for r in records:
        if r.classes != first.classes:
            raise UserError(f"{r.source}: its classes ({len(r.classes)}: {', '.join(r.classes[:3])}, ...) differ "
                            f"from those of {first.source}; report runs of one class set at a time")
        key = (r.experiment, r.mode, r.seed, r.model, r.train, r.eval)
        if key in seen and seen[key] != r.run:
            raise UserError(f"{r.run} and {seen[key]}: two runs of experiment {r.experiment}, mode {r.mode}, "
                            f"seed {r.seed}; pass only one of them")
        seen[key] = r.run
    return records


# ----------------------------------------------------------------------------------------------- groups


def _order(name: str, value) -> tuple:
    if name == "mode" and value in MODE_ORDER:
        return (0, MODE_ORDER.index(value), "")
    if name == "model" and value == ENSEMBLE:
        return (0, 0, "")
    return (1, 0, str(value))


def _parse_by(by) -> tuple[str, ...]:
    if isinstance(by, str):
        by = [part.strip() for part in by.replace("->", ",").split(",") if part.strip()]
    by = tuple(by)
    unknown = [b for b in by if b not in FIELDS]
    if unknown or not by:
        raise UserError(f"--by {','.join(map(str, by)) or '(empty)'}: group by some of {', '.join(FIELDS)}")
    return tuple(dict.fromkeys(by))


def default_by(records: Sequence[Record]) -> tuple[str, ...]:
    """By mode; plus model when there are several; plus train->eval when there are several."""
    by = ["mode"]
    if len({r.model for r in records}) > 1:
        by.append("model")
    if len({(r.train, r.eval) for r in records}) > 1:
        by += ["train", "eval"]
    return tuple(by)


def _label(by: tuple[str, ...], record: Record) -> str:
    parts = []
    for name in by:
        if name == "eval" and "train" in by:
            continue
        if name == "train":
            parts.append(f"{record.train}->{record.eval}" if "eval" in by else f"train={record.train}")
        elif name == "eval":
            parts.append(f"eval={record.eval}")
        else:
            parts.append(str(record.value(name)))
    return " / ".join(parts)


def group(records: Sequence[Record], by=None) -> dict[str, list[Record]]:
    """Records by column label, e.g. ``instance_uncertainty`` or ``instance_uncertainty / acdc->cityscapes``.

    `by` names fields from mode, model, experiment, train, eval (a sequence or
    a comma-separated string); None picks `default_by`. Columns come baseline
    modes first, the ensemble first, then by name. A column may hold one
    record per run only: grouping that would mix, say, two models of a run is
    a UserError naming the field to add.
    """
    records = list(records)
    by = default_by(records) if by is None else _parse_by(by)
    keyed: dict[tuple, tuple[str, list[Record]]] = {}
    for r in records:
        key = tuple(_order(name, r.value(name)) for name in by)
        keyed.setdefault(key, (_label(by, r), []))[1].append(r)
    groups = {label: rs for _, (label, rs) in sorted(keyed.items(), key=lambda kv: kv[0])}
    for label, rs in groups.items():
        runs: dict[Path, Record] = {}
        for r in rs:
            if r.run in runs:
                other = runs[r.run]
                mixed = [f for f in ("model", "train", "eval", "experiment") if r.value(f) != other.value(f)]
                raise UserError(f"{r.run}: appears twice in column {label!r} ({', '.join(mixed)} differ); "
                                f"add {', '.join(mixed)} to --by")
            runs[r.run] = r
    return groups


# ----------------------------------------------------------------------------------------------- statistics


class Stat(NamedTuple):
    """Mean, sample std (ddof=1; NaN for n < 2) and n of some values; mean NaN for n = 0."""

    mean: float
    std: float
    n: int


def describe(values: Iterable[float]) -> Stat:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    return Stat(mean, std, n)


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, evaluated by Lentz's method.

    Converges fast for x < (a + 1) / (a + b + 2); the caller swaps a and b otherwise.
    """
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),  # even step
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):  # odd step
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1.

    `y` is 1 - x when the caller knows it more precisely than 1 - x computes it.
    """
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, y) / b


def t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` (not necessarily whole) degrees of freedom."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2)))


class Welch(NamedTuple):
    """Welch's t-test of two samples: t (of mean(a) - mean(b)), degrees of freedom, two-sided p."""

    t: float
    df: float
    p: float

    @property
    def significant(self) -> bool:
        return self.p < ALPHA  # False for NaN


def welch_t(a: Iterable[float], b: Iterable[float]) -> Welch:
    """As ``scipy.stats.ttest_ind(a, b, equal_var=False)``; NaN where a side has fewer than 2 values."""
    sa, sb = describe(a), describe(b)
    if sa.n < 2 or sb.n < 2:
        return Welch(math.nan, math.nan, math.nan)
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se2 = va + vb
    if se2 == 0.0:  # both constant: no spread to test against
        return Welch(math.nan, math.nan, math.nan)
    t = (sa.mean - sb.mean) / math.sqrt(se2)
    df = se2 ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    return Welch(t, df, t_two_sided(t, df))


def _samples(group) -> tuple[list[list[float]], list[float]]:
    """Per class the non-null IoUs, and the non-null mIoUs, of a list of records or a `Column`."""
    if isinstance(group, Column):
        return [list(s) for s in group.samples], list(group.miou_samples)
    records = list(group)
    if not records:
        raise UserError("an empty group has nothing to compare")
    width = len(records[0].iou)
    per_class = [[r.iou[c] for r in records if r.iou[c] is not None] for c in range(width)]
    return per_class, [r.miou for r in records if r.miou is not None]


def welch(group_a, group_b) -> dict[str, Welch]:
    """Welch's t-test per class (by name) and for mIoU (key ``mIoU``, last) of two groups.

    A group is a list of records or a `Column`. t is that of a against b, as
    ``scipy.stats.ttest_ind(a, b, equal_var=False)``; null IoUs are left out.
    """
    (ca, ma), (cb, mb) = _samples(group_a), _samples(group_b)
    first = group_a.records[0] if isinstance(group_a, Column) else list(group_a)[0]
    tests = {name: welch_t(a, b) for name, a, b in zip(first.classes, ca, cb)}
    tests[MIOU] = welch_t(ma, mb)
    return tests


# ----------------------------------------------------------------------------------------------- the paper


@dataclass(frozen=True)
class PaperColumn:
    """One published column: mean ± std over seeds per class, as transcribed in ``paper_tables.json``."""

    table: str
    mode: str
    model: str
    train: str
    eval: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    miou: float
    miou_std: float | None

    @property
    def label(self) -> str:
        return f"{self.mode} / {self.model} / {self.train}->{self.eval}"

    def lookup(self, name: str) -> tuple[float, float] | None:
        """(mean, std) of a class by name (case, ``_`` and ``-`` ignored), None if not published."""
        key = _class_key(name)
        for c, m, s in zip(self.classes, self.mean, self.std):
            if _class_key(c) == key:
                return m, s
        return None


def _class_key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def _paper_tables() -> dict:
    return json.loads(resources.files("iwu").joinpath(PAPER_FILE).read_text(encoding="utf-8"))


def paper_tables() -> list[str]:
    """Names of the published tables (``table1_acdc``, ...)."""
    return [k for k, v in _paper_tables().items() if isinstance(v, dict) and "columns" in v]


def paper_columns(name: str) -> list[PaperColumn]:
    """The columns of a published table, by its name or its short name (``table1``)."""
    data = _paper_tables()
    names = paper_tables()
    short = {n.split("_")[0]: n for n in names}
    key = name if name in names else short.get(name)
    if key is None:
        raise UserError(f"--paper {name}: no such table; known: {', '.join(names)} "
                        f"(or {', '.join(short)})")
    table, classes = data[key], tuple(data["classes"])
    columns = []
    for col in table["columns"]:
        train = col.get("train", table.get("dataset"))
        columns.append(PaperColumn(
            table=key, mode=col["mode"], model=col["model"], train=train, eval=col.get("eval", train),
            classes=classes, mean=tuple(col["iou_mean"]), std=tuple(col["iou_std"]),
            miou=col["miou"], miou_std=col.get("miou_std")))
    return columns


def _shared(records: Sequence[Record], name: str):
    values = {r.value(name) for r in records}
    return values.pop() if len(values) == 1 else None


def match_paper(group, table) -> PaperColumn | None:
    """The published column with the group's mode, model and train->eval datasets, or None.

    `group` is a list of records or a `Column`; `table` a table name or `paper_columns`' list.
    A group mixing modes, models or datasets matches nothing.
    """
    records = group.records if isinstance(group, Column) else list(group)
    columns = paper_columns(table) if isinstance(table, str) else table
    want = {f: _shared(records, f) for f in ("mode", "model", "train", "eval")}
    if None in want.values():
        return None
    for col in columns:
        if all(getattr(col, f) == v for f, v in want.items()):
            return col
    return None


class PaperCell(NamedTuple):
    """A published value beside ours: their mean and std, ours - theirs, and that in units of their std."""

    mean: float
    std: float | None
    diff: float  # ours - paper, IoU
    z: float  # diff / paper std; NaN when the std is 0 or not published (then `raw` is True)

    @property
    def raw(self) -> bool:
        return not math.isfinite(self.z)


def _paper_cell(ours: float, mean: float, std: float | None) -> PaperCell:
    diff = ours - mean
    z = diff / std if std else math.nan
    return PaperCell(mean, std, diff, z)


@dataclass(frozen=True)
class PaperMatch:
    column: PaperColumn
    cells: tuple[PaperCell | None, ...]  # per class of our table; None where the paper lacks the class
    miou: PaperCell


# ----------------------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Column:
    label: str
    records: tuple[Record, ...]
    samples: tuple[tuple[float, ...], ...]  # per class: the non-null IoUs
    miou_samples: tuple[float, ...]
    cells: tuple[Stat, ...]
    miou: Stat

    def shared(self, name: str):
        """The value of a record field common to the whole column, else None."""
        return _shared(self.records, name)


@dataclass(frozen=True)
class Comparison:
    """Column b against column a: b - a per class, the standard error of that, and Welch's test of b against a."""

    a: str
    b: str
    diff: tuple[float, ...]
    se: tuple[float, ...]
    tests: tuple[Welch, ...]  # t has the sign of b - a
    miou_diff: float
    miou_se: float
    miou_test: Welch


@dataclass(frozen=True)
class Table:
    classes: tuple[str, ...]
    columns: tuple[Column, ...]
    comparison: Comparison | None = None  # when exactly two columns
    paper: Mapping[str, PaperMatch | None] = field(default_factory=dict)  # column label -> match
    share: tuple[float, ...] | None = None  # training-set share per class

    def column(self, which) -> Column:
        if isinstance(which, int):
            return self.columns[which]
        for col in self.columns:
            if col.label == which:
                return col
        raise UserError(f"no column {which!r}; the columns are: {', '.join(c.label for c in self.columns)}")


def _column(label: str, records: Sequence[Record]) -> Column:
    per_class, mious = _samples(records)
    return Column(label, tuple(records), tuple(map(tuple, per_class)), tuple(mious),
                  tuple(describe(v) for v in per_class), describe(mious))


def _se(a: Stat, b: Stat) -> float:
    if a.n < 2 or b.n < 2:
        return math.nan
    return math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)


def compare(a: Column, b: Column) -> Comparison:
    tests = welch(b, a)
    return Comparison(
        a.label, b.label,
        diff=tuple(cb.mean - ca.mean for ca, cb in zip(a.cells, b.cells)),
        se=tuple(_se(ca, cb) for ca, cb in zip(a.cells, b.cells)),
        tests=tuple(tests[c] for c in a.records[0].classes),
        miou_diff=b.miou.mean - a.miou.mean, miou_se=_se(a.miou, b.miou), miou_test=tests[MIOU])


def summarise(groups: Mapping[str, Sequence[Record]], *, paper: str | None = None, class_share=None) -> Table:
    """Per column and class: mean, std, n over the runs; Welch's test when there are two columns.

    `paper` names a published table to set beside each column it matches (a
    UserError if it matches none); `class_share` (one training-set share per
    class, or {class: share}) is kept for the formats and the figure.
    """
    if not groups:
        raise UserError("no runs to report")
    columns = tuple(_column(label, rs) for label, rs in groups.items())
    classes = columns[0].records[0].classes
    comparison = compare(*columns) if len(columns) == 2 else None
    matches: dict[str, PaperMatch | None] = {}
    if paper is not None:
        published = paper_columns(paper)
        for col in columns:
            found = match_paper(col, published)
            if found is None:
                matches[col.label] = None
                continue
            cells = []
            for name, stat in zip(classes, col.cells):
                theirs = found.lookup(name)
                cells.append(None if theirs is None else _paper_cell(stat.mean, *theirs))
            matches[col.label] = PaperMatch(found, tuple(cells), _paper_cell(col.miou.mean, found.miou,
                                                                               found.miou_std))
        if not any(matches.values()):
            ours = "; ".join(f"{c.shared('mode')} / {c.shared('model')} / {c.shared('train')}->{c.shared('eval')}"
                             for c in columns)
            theirs = "; ".join(c.label for c in published)
            raise UserError(f"--paper {paper}: no published column matches a column of this report "
                            f"(ours: {ours}; published: {theirs}); pick runs or --member to match")
    return Table(classes, columns, comparison, matches, _shares(classes, class_share))


def _shares(classes: tuple[str, ...], share) -> tuple[float, ...] | None:
    if share is None:
        return None
    if isinstance(share, Mapping):
        by_key = {_class_key(k): float(v) for k, v in share.items()}
        missing = [c for c in classes if _class_key(c) not in by_key]
        if missing:
            raise UserError(f"class shares: none given for {', '.join(missing)}")
        return tuple(by_key[_class_key(c)] for c in classes)
    share = tuple(float(s) for s in share)
    if len(share) != len(classes):
        raise UserError(f"class shares: {len(share)} given for {len(classes)} classes")
    return share


def load_class_share(path, classes: Sequence[str]) -> tuple[float, ...]:
    """Training-set share per class (in the order of `classes`) from a class_counts.json or its folder.

    The file holds ``{"classes": [...], "counts": [...]}`` (as `iwu prepare` writes); classes are
    matched by name.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "class_counts.json"
    data = _load_json(path)
    names, counts = data.get("classes"), data.get("counts")
    if (not isinstance(names, list) or not isinstance(counts, list) or len(names) != len(counts)
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0 for c in counts)):
        raise UserError(f"{path}: needs `classes` and as many non-negative `counts`")
    total = float(sum(counts))
    if total <= 0:
        raise UserError(f"{path}: the counts add up to 0")
    by_key = {_class_key(str(n)): c / total for n, c in zip(names, counts)}
    missing = [c for c in classes if _class_key(c) not in by_key]
    if missing:
        raise UserError(f"{path}: no count for {', '.join(missing)}")
    return tuple(by_key[_class_key(c)] for c in classes)


# ----------------------------------------------------------------------------------------------- formats


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


class _Style:
    """Number formatting shared by the text formats."""

    def __init__(self, percent: bool, decimals: int | None):
        self.scale = 100.0 if percent else 1.0
        self.d = decimals if decimals is not None else (1 if percent else 3)
        self.paper_d = max(self.d - 1, 0) if percent else 2  # the paper prints two decimals of a fraction

    def num(self, x, d=None, sign=False) -> str:
        if _nan(x):
            return "--"
        return f"{x * self.scale:{'+' if sign else ''}.{self.d if d is None else d}f}"

    @staticmethod
    def p(p, tex: bool = False) -> str:
        if _nan(p):
            return "--"
        if p >= 0.001:
            return f"{p:.3f}"
        mantissa, exponent = f"{p:.1e}".split("e")
        return f"${mantissa} \\times 10^{{{int(exponent)}}}$" if tex else f"{p:.1e}"


def _pm(style: _Style, stat: Stat, tex: bool) -> str:
    if stat.n == 0:
        return "--"
    mean = style.num(stat.mean)
    body = mean if _nan(stat.std) else (f"{mean} \\pm {style.num(stat.std)}" if tex
                                        else f"{mean} ± {style.num(stat.std)}")
    return f"${body}$ ({stat.n})" if tex else f"{body} ({stat.n})"


def _paper_pm(style: _Style, cell: PaperCell | None, tex: bool) -> str:
    if cell is None:
        return ""
    mean = style.num(cell.mean, style.paper_d)
    if cell.std is None:
        return f"${mean}$" if tex else mean
    std = style.num(cell.std, style.paper_d)
    return f"${mean} \\pm {std}$" if tex else f"{mean} ± {std}"


def _paper_z(style: _Style, cell: PaperCell | None, tex: bool) -> str:
    if cell is None or _nan(cell.diff):
        return "" if cell is None else "--"
    if cell.raw:
        return f"${style.num(cell.diff, sign=True)}^\\dagger$" if tex else f"{style.num(cell.diff, sign=True)}{RAW}"
    return f"${cell.z:+.1f}$" if tex else f"{cell.z:+.1f}"


def _rows(table: Table, style: _Style, tex: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows (classes, then mIoU) of the text formats."""
    header = ["class"]
    if table.share is not None:
        header.append("train %")
    for col in table.columns:
        header.append(col.label)
        if table.paper.get(col.label):
            header += [f"paper {table.paper[col.label].column.table}", "(ours - paper) / paper std"]
    cmp = table.comparison
    if cmp:
        header += [f"{cmp.b} - {cmp.a}", "p (Welch)", "p < 0.05"]
    rows = []
    for i in range(len(table.classes) + 1):
        is_miou = i == len(table.classes)
        row = [MIOU if is_miou else table.classes[i]]
        if table.share is not None:
            row.append("" if is_miou else f"{100 * table.share[i]:.2f}")
        for col in table.columns:
            row.append(_pm(style, col.miou if is_miou else col.cells[i], tex))
            match = table.paper.get(col.label)
            if match:
                cell = match.miou if is_miou else match.cells[i]
                row += [_paper_pm(style, cell, tex), _paper_z(style, cell, tex)]
        if cmp:
            diff, test = (cmp.miou_diff, cmp.miou_test) if is_miou else (cmp.diff[i], cmp.tests[i])
            d = style.num(diff, sign=True)
            row += [f"${d}$" if tex and d != "--" else d, style.p(test.p, tex), "*" if test.significant else ""]
        rows.append(row)
    return header, rows


def _notes(table: Table, style: _Style) -> list[str]:
    unit = "IoU x 100" if style.scale == 100 else "IoU"
    notes = [f"Cells: {unit}, mean ± sample std over runs (n runs with a score for the class); "
             f"the mIoU row is over each run's mIoU."]
    if table.comparison:
        notes.append("Difference of means and Welch's t-test (unequal variances), two-sided; "
                     "the last column marks p < 0.05.")
    if any(table.paper.values()):
        notes.append(f"Paper: published mean ± std; (ours - paper) / paper std, or, marked {RAW}, "
                     f"ours - paper in {unit} where the published std is 0 or not given.")
    unmatched = [label for label, m in table.paper.items() if m is None]
    if unmatched:
        notes.append(f"No published column for: {', '.join(unmatched)}.")
    return notes


def to_markdown(table: Table, *, percent: bool = False, decimals: int | None = None) -> str:
    """A GitHub-flavoured Markdown table: rows classes and mIoU, columns the groups (and comparisons)."""
    style = _Style(percent, decimals)
    header, rows = _rows(table, style, tex=False)

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---"] + ["---:"] * (len(header) - 1)
    if table.comparison:
        align[-1] = ":---:"
    out = [line(header), "|" + "|".join(align) + "|", *(line(r) for r in rows), ""]
    out += _notes(table, style)
    return "\n".join(out) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text).replace("->", r"$\to$").replace("±", r"$\pm$")
    return text.replace("<", "$<$")


def to_latex(table: Table, *, percent: bool = False, decimals: int | None = None) -> str:
    """A booktabs ``tabular`` with the same rows and columns as `to_markdown` (needs ``\\usepackage{booktabs}``)."""
    style = _Style(percent, decimals)
    header, rows = _rows(table, style, tex=True)
    spec = "l" + "r" * (len(header) - 1)
    if table.comparison:
        spec = spec[:-1] + "c"
    out = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
           " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            out.append(r"\midrule")
        cells = [_tex(row[0])] + [c if c.startswith("$") else _tex(c) for c in row[1:]]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out += [f"% {note}" for note in _notes(table, style)]
    return "\n".join(out) + "\n"


def _csv_num(x, scale: float = 1.0) -> str:
    return "" if _nan(x) else repr(float(x) * scale)


def to_csv(table: Table, *, percent: bool = False) -> str:
    """The same numbers at full precision, one row per class and mIoU; empty cells for none.

    Columns: ``class``, ``train share`` (with class shares), per group
    ``<label> mean|std|n`` (and ``<label> paper mean|paper std|ours-paper|(ours-paper)/paper std``
    with a matched published column), and with two groups ``difference``
    (b - a), ``se``, ``t`` (of b against a), ``df``, ``p``, ``p < 0.05`` (``*`` or empty).
    """
    scale = 100.0 if percent else 1.0
    header = ["class"] + (["train share"] if table.share is not None else [])
    for col in table.columns:
        header += [f"{col.label} mean", f"{col.label} std", f"{col.label} n"]
        if table.paper.get(col.label):
            header += [f"{col.label} paper mean", f"{col.label} paper std", f"{col.label} ours-paper",
                       f"{col.label} (ours-paper)/paper std"]
    cmp = table.comparison
    if cmp:
        header += ["difference", "se", "t", "df", "p", "p < 0.05"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i in range(len(table.classes) + 1):
        is_miou = i == len(table.classes)
        row = [MIOU if is_miou else table.classes[i]]
        if table.share is not None:
            row.append("" if is_miou else _csv_num(table.share[i]))
        for col in table.columns:
            stat = col.miou if is_miou else col.cells[i]
            row += [_csv_num(stat.mean, scale), _csv_num(stat.std, scale), str(stat.n)]
            match = table.paper.get(col.label)
            if match:
                cell = match.miou if is_miou else match.cells[i]
                row += ["", "", "", ""] if cell is None else [
                    _csv_num(cell.mean, scale), _csv_num(cell.std, scale), _csv_num(cell.diff, scale),
                    _csv_num(cell.z)]
        if cmp:
            diff, se, test = ((cmp.miou_diff, cmp.miou_se, cmp.miou_test) if is_miou
                              else (cmp.diff[i], cmp.se[i], cmp.tests[i]))
            row += [_csv_num(diff, scale), _csv_num(se, scale), _csv_num(test.t), _csv_num(test.df),
                    _csv_num(test.p), "*" if test.significant else ""]
        writer.writerow(row)
    return buffer.getvalue()


RENDER = {"md": to_markdown, "tex": to_latex, "csv": to_csv}


# ----------------------------------------------------------------------------------------------- figure


def save_difference_figure(table: Table, a, b, path, class_share=None, *, percent: bool = False) -> Path:
    """Per-class IoU difference b - a (and mIoU) with error bars, as a PNG written atomically.

    `a`, `b` are column labels or indices. Error bars are the standard error of
    the difference, sqrt(s_a^2/n_a + s_b^2/n_b) (none where a side has one run).
    With `class_share` (or the table's) classes run from the most to the least
    frequent in training, their share in the tick labels. Classes where
    Welch's p < 0.05 are drawn in colour, the others grey.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    col_a, col_b = table.column(a), table.column(b)
    cmp = compare(col_a, col_b)
    share = _shares(table.classes, class_share) if class_share is not None else table.share
    order = list(range(len(table.classes)))
    if share is not None:
        order.sort(key=lambda c: -share[c])
    scale = 100.0 if percent else 1.0

    names = [f"{table.classes[c]} ({100 * share[c]:.2f}%)" if share is not None else table.classes[c]
             for c in order] + [MIOU]
    diffs = [cmp.diff[c] for c in order] + [cmp.miou_diff]
    errs = [cmp.se[c] for c in order] + [cmp.miou_se]
    tests = [cmp.tests[c] for c in order] + [cmp.miou_test]
    xs = list(range(len(order))) + [len(order) + 0.6]  # mIoU a little apart
    heights = [0.0 if _nan(d) else d * scale for d in diffs]
    colors = [("C2" if d >= 0 else "C3") if t.significant else "0.7" for d, t in zip(heights, tests)]

    fig = Figure(figsize=(max(8.0, 0.45 * len(xs) + 2), 5), layout="constrained")
    ax = fig.subplots()
    ax.bar(xs, heights, color=colors, edgecolor="0.3", linewidth=0.5)
    bars = [(x, h, e) for x, h, e in zip(xs, heights, errs) if not _nan(e)]
    if bars:
        ax.errorbar([x for x, _, _ in bars], [h for _, h, _ in bars], yerr=[e * scale for _, _, e in bars],
                    fmt="none", ecolor="0.2", elinewidth=1, capsize=3)
    for x, d, e in zip(xs, diffs, errs):
        if _nan(d) or _nan(e):  # a side without a score, or with one run only: no spread, no test
            ax.text(x, 0 if _nan(d) else d * scale, "n/a" if _nan(d) else "n<2", ha="center",
                    va="bottom" if _nan(d) or d >= 0 else "top", fontsize="x-small", color="0.4")
    ax.axhline(0, color="0.2", linewidth=0.8)
    ax.set_xticks(xs, names, rotation=60, ha="right", fontsize="small")
    for tick, t in zip(ax.get_xticklabels(), tests):
        if t.significant:
            tick.set_fontweight("bold")
    unit = "IoU x 100" if percent else "IoU"
    ax.set_ylabel(f"difference in {unit}")
    ax.set_title(f"{col_b.label} - {col_a.label}, per class (mean over runs; bars: standard error)",
                 fontsize="medium")
    ax.legend(handles=[Patch(color="C2", label="higher, Welch p < 0.05"),
                       Patch(color="C3", label="lower, Welch p < 0.05"),
                       Patch(color="0.7", label="not significant")], fontsize="small", loc="best")
    ax.grid(True, axis="y", alpha=0.3)
    if share is not None:
        ax.set_xlabel("classes from the most to the least frequent in training (share of labelled pixels)")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------------------------- report


def _formats(fmt) -> list[str]:
    if isinstance(fmt, str):
        fmt = list(FORMATS) if fmt == "all" else [f.strip() for f in fmt.split(",") if f.strip()]
    fmt = list(dict.fromkeys(fmt))
    bad = [f for f in fmt if f not in FORMATS]
    if bad or not fmt:
        raise UserError(f"--format {','.join(bad) or '(empty)'}: choose from {', '.join(FORMATS)} or all")
    return fmt


def build_table(run_dirs, by=None, member: str = ENSEMBLE, paper: str | None = None,
                class_counts=None) -> Table:
    """collect -> group -> summarise, with class shares from a class_counts.json when given."""
    records = collect(run_dirs, member)
    share = load_class_share(class_counts, records[0].classes) if class_counts is not None else None
    return summarise(group(records, by), paper=paper, class_share=share)


def write_report(run_dirs, out_dir, by=None, member: str = ENSEMBLE, fmt="md", paper: str | None = None,
                 class_counts=None, percent: bool = False) -> dict[str, Path]:
    """Write ``report.<fmt>`` (md, tex, csv; several comma-separated, or all) and, with exactly two
    columns, ``difference.png`` into `out_dir`; returns {format or "figure": path}."""
    formats = _formats(fmt)
    table = build_table(run_dirs, by, member, paper, class_counts)
    return _write(table, Path(out_dir), formats, percent)


def _render(table: Table, fmt: str, percent: bool) -> str:
    return RENDER[fmt](table, percent=percent)


def _write(table: Table, out: Path, formats: list[str], percent: bool) -> dict[str, Path]:
    written = {f: atomic_write_bytes(out / FORMATS[f], _render(table, f, percent).encode("utf-8"))
               for f in formats}
    if len(table.columns) == 2:
        written["figure"] = save_difference_figure(table, 0, 1, out / FIGURE, percent=percent)
    return written


def run_report(runs, out=None, by=None, member: str = ENSEMBLE, fmt="md", paper: str | None = None,
               class_counts=None, percent: bool = False) -> int:
    """Print the table (in the first format asked for); with `out`, also write the report files there."""
    formats = _formats(fmt)
    table = build_table(runs, by, member, paper, class_counts)
    print(_render(table, formats[0], percent), end="")
    if out is not None:
        for path in _write(table, Path(out), formats, percent).values():
            print(f"wrote {path}")
    return 0
