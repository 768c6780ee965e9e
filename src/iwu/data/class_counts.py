"""Pixels per class of a split, in all and per image: written beside the cache, read for class weights,
rare-class sampling and reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from iwu.util.atomic_files import atomic_write_bytes
from iwu.errors import UserError

COUNTS_FILE = "class_counts.json"


def write_class_counts(path: Path, classes, counts, ignored, per_image, **about) -> None:
    """The record as JSON; `per_image` (N, C), one row per image in the store's order, one line each."""
    record = {**about, "classes": list(classes), "counts": [int(c) for c in counts], "ignored": int(ignored)}
    rows = ",\n".join(f"  {json.dumps([int(c) for c in row])}" for row in per_image)
    # the record as json.dumps(indent=1) writes it, with the rows last, one line each rather than one number
    text = json.dumps(record, indent=1).removesuffix("\n}") + f',\n "per_image": [\n{rows}\n ]\n}}'
    atomic_write_bytes(path, text.encode())


def read_class_counts(path) -> dict:
    """The record: `classes`, `counts` (one per class), `ignored`, `split`, `size`, `fingerprint`, and
    `per_image` (pixels per class of each image, in the store's order; absent from stores before it)."""
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


def load_image_class_counts(path) -> np.ndarray:
    """Pixels per class of each image (int64, N x C, in the store's order) from a cache folder or a
    class_counts.json."""
    record = read_class_counts(path)
    if "per_image" not in record:
        raise UserError(f"{path}: class counts without the per-image ones; run `iwu prepare --rebuild` for "
                        "this dataset")
    counts = np.asarray(record["per_image"], dtype=np.int64)
    return counts.reshape(len(counts), len(record["classes"]))


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
