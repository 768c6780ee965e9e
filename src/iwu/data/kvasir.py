"""Kvasir-SEG (polyps in colonoscopy): `images/*.jpg` with `masks/*.jpg` of the same stem.

The release stores its 0/255 masks as JPEG, so their grey values scatter around
0 and 255 near the polyp's outline; a mask value above 127 is a polyp (1), any
other value background (0), the threshold the published code applies. The
release has no split: `train.txt` and `val.txt` beside the folders (image stems,
one a line) give one; without them a fixed `val_fraction` of the images, chosen
by a hash of their names, is the validation split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from iwu.data.common import LabelMap, PairDataset, Sample, missing_dirs, pair_files, raise_if_problems
from iwu.data.config import DataConfig
from iwu.errors import UserError

CLASSES = ("background", "polyp")
PALETTE = ((0, 0, 0), (255, 255, 255))
# Kvasir-SEG's own per-channel statistics, as the published code normalises with
MEAN = (0.55713434, 0.32152654, 0.23528269)
STD = (0.30677355, 0.21518466, 0.1778166)
SUFFIXES = (".jpg", ".jpeg", ".png")
SPLIT_FILES = ("train.txt", "val.txt")
DEFAULT_VAL_FRACTION = DataConfig.val_fraction
_LAYOUT = "Kvasir-SEG layout images/*.jpg, masks/*.jpg with the same names"


def _threshold_map() -> LabelMap:
    lut = np.where(np.arange(256) > 127, 1, 0).astype(np.uint8)
    return LabelMap(lut, np.ones(256, dtype=bool), "grey masks (above 127 = polyp)", mode="L")


MASKS = _threshold_map()


def checked_fraction(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise UserError(f"data.val_fraction {value!r}: must be a number between 0 and 1 (e.g. 0.2)")
    return float(value)


def _by_stem(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The files by stem, and a problem for each stem two files share (`a.jpg`, `a.png`): which one the
    split means is not for iwu to guess."""
    found, problems = {}, []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in SUFFIXES:
            if p.stem in found:
                problems.append(f"{p}: {found[p.stem].name} has the same name; keep one of them")
            found.setdefault(p.stem, p)
    return found, problems


def _hash_order(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def split_by_name(names: list[str], split: str, val_fraction: float) -> list[str]:
    """The names of `split` ("train" or "val"): the first round(n * fraction) by a hash of the name are val.

    A hash, not the listing order, so the split does not follow how the files happen to be named; at least
    one image goes to each side when there are two or more.
    """
    n = len(names)
    n_val = min(max(round(n * val_fraction), 1), n - 1) if n > 1 else 0
    val = set(sorted(names, key=_hash_order)[:n_val])
    return sorted(n for n in names if (n in val) == (split == "val"))


def _read_split_file(path: Path, stems: dict[str, Path]) -> tuple[list[str], list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [], [f"{path}: not UTF-8 text; a split file names image stems, one a line"]
    names = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    problems = [f"{path}: names {n}, which has no image in {path.parent / 'images'}" for n in names if n not in stems]
    return [n for n in names if n in stems], problems


def split_files(root: Path) -> dict[str, Path]:
    """The split files present (`train.txt`, `val.txt`)."""
    return {f.split(".")[0]: root / f for f in SPLIT_FILES if (root / f).is_file()}


def list_kvasir(root, split: str, val_fraction=DEFAULT_VAL_FRACTION) -> tuple[list[Sample], list[str]]:
    """Samples of a split and every structural problem (unpaired files, split file names without images);
    a `val_fraction` of None is the default's."""
    val_fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    root = Path(root)
    if not root.is_dir():
        return [], [f"{root}: no such folder (expected a {_LAYOUT})"]
    img_dir, mask_dir = root / "images", root / "masks"
    problems = missing_dirs(img_dir, mask_dir, expected=_LAYOUT)
    if problems:
        return [], problems
    (images, same_images), (masks, same_masks) = _by_stem(img_dir), _by_stem(mask_dir)
    paired, problems = pair_files(
        images,
        masks,
        label_for=lambda n: mask_dir / f"{n}.jpg",
        image_for=lambda n: img_dir / f"{n}.jpg",
    )
    problems = same_images + same_masks + problems
    present = split_files(root)
    if present:
        if split not in present:
            wanted = root / f"{split}.txt"
            return [], problems + [f"{wanted}: missing; with split files, each split needs one (image stems, "
                                   "one a line)"]
        names, unknown = _read_split_file(present[split], images)
        problems += unknown
        others = {n for s, path in present.items() if s != split for n in _read_split_file(path, images)[0]}
        problems += [f"{present[split]}: names {n}, which {', '.join(sorted(set(present) - {split}))}.txt "
                     "names too; an image belongs to one split" for n in names if n in others]
        names = [n for n in names if n in masks]
    elif split in ("train", "val"):
        names = split_by_name(paired, split, checked_fraction(val_fraction))
    else:
        return [], problems + [f"{root / (split + '.txt')}: missing; without split files only train and val "
                               "exist (val_fraction of the images by name)"]
    if not names:
        problems.append(f"{root}: empty {split} split (no image with a mask in {img_dir})")
    return [Sample(n, images[n], masks[n], MASKS) for n in names], problems


class Kvasir(PairDataset):
    """Kvasir-SEG; items have 0 = background, 1 = polyp, normalised with Kvasir-SEG's statistics."""

    kind = "kvasir"
    mean, std = MEAN, STD

    def __init__(self, root, split: str = "train", size: int = 513, val_fraction=DEFAULT_VAL_FRACTION,
                 augment: list | None = None):
        val_fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
        samples, problems = list_kvasir(root, split, val_fraction)
        raise_if_problems(problems)
        present = split_files(Path(root))
        # the split files, or without them the fraction, decide which images a split holds
        self.val_fraction = None if present else checked_fraction(val_fraction)
        super().__init__(root, split, samples, size, CLASSES, PALETTE, augment, tuple(present.values()))

    def identity(self) -> dict:
        return {**super().identity(), "val_fraction": self.val_fraction}
