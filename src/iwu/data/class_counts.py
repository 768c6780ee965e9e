"""Pixels per class of a split: written beside the cache, read for class weights and reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from iwu.util.atomic_files import atomic_write_json
from iwu.errors import UserError

COUNTS_FILE = "class_counts.json"


def write_class_counts(path: Path, classes, counts, ignored, **about) -> None:
    record = {**about, "classes": list(classes), "counts": [int(c) for c in counts], "ignored": int(ignored)}
    atomic_write_json(path, record)


def read_class_counts(path) -> dict:
    """The record: `classes`, `counts` (one per class), `ignored`, `split`, `size`, `fingerprint`."""
    path = Path(path)
    if path.is_dir():
        path = path / COUNTS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path}: no class counts here; run `iwu prepare` for this dataset") from None


def load_class_counts(path) -> np.ndarray:
    """Pixels per class (int64, one per class) from a cache folder or a class_counts.json."""
    return np.asarray(read_class_counts(path)["counts"], dtype=np.int64)


def format_proportions(classes, counts) -> str:
    """A plain table: class, pixels, share of labelled pixels, and how rare against the largest."""
    counts = np.asarray(counts, dtype=np.int64)
    total, top = max(int(counts.sum()), 1), max(int(counts.max()), 1)
    width = max(len("class"), *(len(c) for c in classes))
    lines = [f"{'class':<{width}}  {'pixels':>12}  {'share %':>8}  {'largest/this':>12}"]
    for name, c in zip(classes, counts):
        ratio = f"{top / c:12.1f}" if c else f"{'absent':>12}"
        lines.append(f"{name:<{width}}  {int(c):>12d}  {100 * c / total:8.3f}  {ratio}")
    return "\n".join(lines)
