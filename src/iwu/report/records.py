"""Records: the scores of one model of one run on one validation set, collected from final.json and eval_*.json."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from iwu.util.bounded import check_bounded
from iwu.constants import ENSEMBLE
from iwu.errors import UserError
from iwu.engine.run_dir import BEST_ENSEMBLE, EVAL_GLOB, FINAL

ALL = "all"


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


def read_json(path: Path) -> dict:
    """A JSON object from `path`; a one-line UserError naming it if it is unreadable, not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"{path}: unreadable ({err.strerror or err})") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise UserError(f"{path}: nests deeper than Python can read; not a file iwu wrote") from None
    check_bounded(data, str(path))
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def shared_value(records, name: str):
    """The value of field `name` common to all `records`, else None."""
    values = {r.value(name) for r in records}
    return values.pop() if len(values) == 1 else None


def class_key(name: str) -> str:
    """A class name as matched across files: case, ``_`` and ``-`` ignored (``Traffic_light`` = ``traffic light``)."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def _text(path: Path, data: dict, key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise UserError(f"{path}: `{key}` must be a non-empty string, found {value!r}")
    return value


def _score(value, nan: bool = False) -> float | None:
    """An IoU or mIoU: a number from 0 to 1, or None for null (nothing to score) and, where `nan`, NaN.

    A TypeError for what is not a number, a ValueError for a number outside [0, 1], infinite, or NaN
    where `nan` is False.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    try:
        score = float(value)
    except OverflowError:  # a whole number too large for a float
        raise ValueError(value) from None
    if nan and math.isnan(score):
        return None
    if not 0.0 <= score <= 1.0:  # False for NaN too
        raise ValueError(value)
    return score


def _scores(path: Path, where: str, entry, classes: tuple[str, ...]) -> tuple[tuple[float | None, ...], float | None]:
    if not isinstance(entry, dict) or not isinstance(entry.get("iou"), list):
        raise UserError(f"{path}: {where} needs an `iou` list")
    if len(entry["iou"]) != len(classes):
        raise UserError(f"{path}: {where} has {len(entry['iou'])} IoUs for {len(classes)} classes")
    try:
        iou = tuple(_score(v) for v in entry["iou"])
        # a set without one labelled pixel scores every class null, and its mIoU NaN, as iwu writes it
        miou = _score(entry.get("miou"), nan=all(v is None for v in iou))
    except TypeError as err:
        raise UserError(f"{path}: {where} holds {err.args[0]!r} where a number or null belongs") from None
    except ValueError as err:
        raise UserError(f"{path}: {where} holds {err.args[0]!r} where an IoU belongs: a number from 0 to 1, "
                        "or null") from None
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


def _members(path: Path, eval_name: str, results: dict, member: str) -> list[str]:
    if member == ALL:
        return list(results)
    if member not in results:
        raise UserError(f"{path}: no model {member!r} scored on {eval_name} (it has: "
                        f"{', '.join(results) or 'none'}); choose one with --member, or --member all")
    return [member]


def _run_records(final_path: Path, member: str) -> list[Record]:
    data = read_json(final_path)
    run = final_path.parent
    mode, train = _text(final_path, data, "mode"), _text(final_path, data, "dataset")
    experiment = _text(final_path, data, "experiment", required=False)
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError(f"{final_path}: `seed` must be a whole number, found {seed!r}")
    classes = _classes(final_path, data)
    results = data.get("results")
    # an imported run (iwu import) was trained elsewhere: only `iwu evaluate` scores it
    if not isinstance(results, dict) or not (results or "imported" in data):
        raise UserError(f"{final_path}: `results` must map model names to their scores")

    # eval dataset -> model -> (source, where in it, scores); a later source replaces an earlier one's model
    sets: dict[str, dict[str, tuple[Path, str, dict]]] = {}

    def add(eval_name: str, source: Path, where: str, scores: dict) -> None:
        sets.setdefault(eval_name, {}).update({m: (source, f"{where}[{m!r}]", s) for m, s in scores.items()})

    if results:
        add(train, final_path, "results", results)
    extra = data.get("val_extra") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise UserError(f"{final_path}: `val_extra` must map validation sets to {{model: scores}}")
    for loader, scores in extra.items():
        add(_eval_label(loader), final_path, f"val_extra[{loader!r}]", scores)
    for eval_path, ev in _eval_files(run):
        dataset = _text(eval_path, ev, "dataset")
        split = ev.get("split") or "val"
        if _classes(eval_path, ev) != classes:
            raise UserError(f"{eval_path}: its classes differ from those of {final_path}")
        if not isinstance(ev.get("results"), dict) or not ev["results"]:
            raise UserError(f"{eval_path}: `results` must map model names to their scores")
        kind = dataset.removesuffix(f"_{split}")  # `iwu evaluate` names a split other than val in the dataset
        add(_eval_label(f"{kind}/{split}"), eval_path, "results", _as_evaluated(ev))

    records = []
    for eval_name, scored in sets.items():
        for model in _members(final_path, eval_name, scored, member):
            source, where, scores = scored[model]
            iou, miou = _scores(source, where, scores, classes)
            records.append(Record(experiment, mode, seed, model, train, eval_name, classes, iou, miou, source, run))
    return records


def _eval_files(run: Path) -> list[tuple[Path, dict]]:
    """The run's `iwu evaluate` files, those of its best ensemble first: a member's evaluation of its own best
    checkpoint then replaces that member's scores taken at the ensemble's best step."""
    files = [(path, read_json(path)) for path in sorted(run.glob(EVAL_GLOB))]
    return sorted(files, key=lambda f: f[1].get("checkpoint", BEST_ENSEMBLE) != BEST_ENSEMBLE)


def _as_evaluated(ev: dict) -> dict:
    """{model: scores} of an eval file; the models of a checkpoint other than the run's best ensemble (its
    last.ckpt, say) named ``<model>@<file>``, so they never pass for the run's own."""
    checkpoint = ev.get("checkpoint", BEST_ENSEMBLE)
    if checkpoint == BEST_ENSEMBLE or ev.get("evaluated", ENSEMBLE) != ENSEMBLE:
        return ev["results"]
    return {f"{model}@{Path(checkpoint).stem}": scores for model, scores in ev["results"].items()}


def final_files(folder) -> list[Path]:
    """Every final.json at or below `folder` (a run, a folder of runs, or a final.json itself), sorted;
    one line if there is none."""
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
        for path in final_files(folder):
            files.setdefault(path.resolve(), path)  # the same run reached twice counts once
    records = [r for path in files.values() for r in _run_records(path, member)]
    if not records:
        raise UserError(f"{', '.join(map(str, files.values()))[:200]}: imported runs, no scores yet: score them "
                        "with iwu evaluate RUN --data KIND:ROOT first")

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
