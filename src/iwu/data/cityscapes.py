"""Cityscapes (gtFine): `leftImg8bit/{split}/{city}/*_leftImg8bit.png` with
`gtFine/{split}/{city}/*_gtFine_labelIds.png`, mapped to the 19 train ids.

The label table is carried here (it equals `cityscapesscripts.helpers.labels`,
which the tests check) so the package needs no toolkit at run time.
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import numpy as np

from iwu.data.common import (
    IGNORE_INDEX,
    LabelMap,
    PairDataset,
    Sample,
    files_by_name,
    missing_dirs,
    pair_files,
    raise_if_problems,
)

Label = namedtuple("Label", ["name", "id", "train_id", "color"])

# fmt: off
LABELS = (
    Label("unlabeled",             0, 255, (0, 0, 0)),
    Label("ego vehicle",           1, 255, (0, 0, 0)),
    Label("rectification border",  2, 255, (0, 0, 0)),
    Label("out of roi",            3, 255, (0, 0, 0)),
    Label("static",                4, 255, (0, 0, 0)),
    Label("dynamic",               5, 255, (111, 74, 0)),
    Label("ground",                6, 255, (81, 0, 81)),
    Label("road",                  7, 0, (128, 64, 128)),
    Label("sidewalk",              8, 1, (244, 35, 232)),
    Label("parking",               9, 255, (250, 170, 160)),
    Label("rail track",           10, 255, (230, 150, 140)),
    Label("building",             11, 2, (70, 70, 70)),
    Label("wall",                 12, 3, (102, 102, 156)),
    Label("fence",                13, 4, (190, 153, 153)),
    Label("guard rail",           14, 255, (180, 165, 180)),
    Label("bridge",               15, 255, (150, 100, 100)),
    Label("tunnel",               16, 255, (150, 120, 90)),
    Label("pole",                 17, 5, (153, 153, 153)),
    Label("polegroup",            18, 255, (153, 153, 153)),
    Label("traffic light",        19, 6, (250, 170, 30)),
    Label("traffic sign",         20, 7, (220, 220, 0)),
    Label("vegetation",           21, 8, (107, 142, 35)),
    Label("terrain",              22, 9, (152, 251, 152)),
    Label("sky",                  23, 10, (70, 130, 180)),
    Label("person",               24, 11, (220, 20, 60)),
    Label("rider",                25, 12, (255, 0, 0)),
    Label("car",                  26, 13, (0, 0, 142)),
    Label("truck",                27, 14, (0, 0, 70)),
    Label("bus",                  28, 15, (0, 60, 100)),
    Label("caravan",              29, 255, (0, 0, 90)),
    Label("trailer",              30, 255, (0, 0, 110)),
    Label("train",                31, 16, (0, 80, 100)),
    Label("motorcycle",           32, 17, (0, 0, 230)),
    Label("bicycle",              33, 18, (119, 11, 32)),
    Label("license plate",        -1, -1, (0, 0, 142)),
)
# fmt: on

_TRAIN = sorted((lab for lab in LABELS if 0 <= lab.train_id < IGNORE_INDEX), key=lambda lab: lab.train_id)
CLASSES = tuple(lab.name for lab in _TRAIN)  # the 19 train classes, in train-id order
PALETTE = tuple(lab.color for lab in _TRAIN)
TRAIN_TO_LABEL_ID = np.array([lab.id for lab in _TRAIN], dtype=np.uint8)


def _label_id_map() -> LabelMap:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    for lab in LABELS:
        if lab.id >= 0:  # license plate (-1) never appears in a labelIds image
            lut[lab.id] = lab.train_id
            known[lab.id] = True
    return LabelMap(lut, known, "Cityscapes labelIds 0..33")


LABEL_IDS = _label_id_map()
TRAIN_IDS = LabelMap.identity(len(CLASSES), what="Cityscapes train ids 0..18 and 255")
_LAYOUT = "Cityscapes layout leftImg8bit/{split}/{city}/*_leftImg8bit.png, gtFine/{split}/{city}/*_gtFine_labelIds.png"


def list_cityscapes(root, split: str) -> tuple[list[Sample], list[str]]:
    """Samples of a split and every structural problem (missing folders, unpaired files, empty split)."""
    root = Path(root)
    if not root.is_dir():
        return [], [f"{root}: no such folder (expected a {_LAYOUT})"]
    img_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    problems = missing_dirs(img_dir, gt_dir, expected=_LAYOUT)
    if problems:
        return [], problems
    images = files_by_name(img_dir, "*/*_leftImg8bit.png", "_leftImg8bit.png")
    label_ids = files_by_name(gt_dir, "*/*_gtFine_labelIds.png", "_gtFine_labelIds.png")
    train_ids = files_by_name(gt_dir, "*/*_gtFine_labelTrainIds.png", "_gtFine_labelTrainIds.png")
    labels = {**label_ids, **train_ids}  # train ids win: used directly when present
    names, problems = pair_files(
        images,
        labels,
        label_for=lambda n: gt_dir / f"{n}_gtFine_labelIds.png",
        image_for=lambda n: img_dir / f"{n}_leftImg8bit.png",
    )
    if not images:
        problems.append(f"{img_dir}: empty split (no {{city}}/*_leftImg8bit.png images)")
    samples = [Sample(n, images[n], labels[n], TRAIN_IDS if n in train_ids else LABEL_IDS) for n in names]
    return samples, problems


class Cityscapes(PairDataset):
    """Cityscapes fine annotations; items have train ids 0..18 and 255 = ignore."""

    kind = "cityscapes"

    def __init__(self, root, split: str = "train", size: int = 768, augment: list | None = None):
        samples, problems = list_cityscapes(root, split)
        raise_if_problems(problems)
        super().__init__(root, split, samples, size, CLASSES, PALETTE, augment)
