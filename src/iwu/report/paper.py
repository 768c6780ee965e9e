"""The paper's published tables (``iwu/paper_tables.json``) and matching report columns against them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

from iwu.errors import UserError
from iwu.report.records import Record, class_key, shared_value

PAPER_FILE = "paper_tables.json"


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
        key = class_key(name)
        for c, m, s in zip(self.classes, self.mean, self.std):
            if class_key(c) == key:
                return m, s
        return None


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


def match_paper(records: Sequence[Record], table) -> PaperColumn | None:
    """The published column with the mode, model and train->eval datasets of a group's `records`, or None.

    `table` is a table name or `paper_columns`' list. A group mixing modes, models or datasets matches nothing.
    """
    columns = paper_columns(table) if isinstance(table, str) else table
    want = {f: shared_value(records, f) for f in ("mode", "model", "train", "eval")}
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

    @classmethod
    def beside(cls, ours: float, mean: float, std: float | None) -> PaperCell:
        """The published `mean` ± `std` set beside our mean `ours`."""
        diff = ours - mean
        return cls(mean, std, diff, diff / std if std else math.nan)


@dataclass(frozen=True)
class PaperMatch:
    column: PaperColumn
    cells: tuple[PaperCell | None, ...]  # per class of our table; None where the paper lacks the class
    miou: PaperCell
