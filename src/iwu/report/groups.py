"""Grouping records into the columns of a report (by mode, model, experiment, train, eval)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from iwu.errors import UserError
from iwu.method.modes import MODES
from iwu.report.records import ENSEMBLE, Record

FIELDS = ("mode", "model", "experiment", "train", "eval")


def _order(name: str, value) -> tuple:
    # modes in their registered order, baselines first, so that with two groups the difference
    # reads "method - baseline"
    if name == "mode" and value in MODES:
        return (0, MODES[value].order, "")
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
    """By mode; plus experiment, model and train->eval, each when the records hold several.

    A sweep's axes (`iwu sweep ... key=a,b`) are in the experiment's name, so each value gets its column.
    """
    by = ["mode"]
    if len({r.experiment for r in records}) > 1:
        by.append("experiment")
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
