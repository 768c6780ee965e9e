"""Pascal VOC 2012 segmentation: `JPEGImages/*.jpg`, `SegmentationClass/*.png` (palette PNGs whose
index is the class, 255 on object borders = ignore) and the lists `ImageSets/Segmentation/{split}.txt`.

ROOT is the `VOC2012` folder or one holding `VOCdevkit/VOC2012`. The augmented
training set (SBD's extra annotations) is used for the train split when its
labels `SegmentationClassAug/` and its list `train_aug.txt` are both there; the
list is looked for in `ImageSets/Segmentation/` and beside `VOCdevkit` (where
the published code keeps it). Validation always uses the official labels.
"""

from __future__ import annotations

from pathlib import Path

from iwu.data.common import IGNORE_INDEX, LabelMap, PairDataset, Sample, missing_dirs, raise_if_problems
from iwu.data.folder import default_palette

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
PALETTE = tuple(default_palette(len(CLASSES)))
LABELS = LabelMap.identity(len(CLASSES), IGNORE_INDEX, what="VOC class ids 0..20 and 255 (borders)")
AUG_LIST = "train_aug.txt"
_LAYOUT = "VOC layout JPEGImages/*.jpg, SegmentationClass/*.png, ImageSets/Segmentation/{split}.txt"


def voc_folder(root: Path) -> Path:
    """The folder holding JPEGImages: ROOT itself or ROOT/VOCdevkit/VOC2012."""
    nested = root / "VOCdevkit" / "VOC2012"
    return nested if not (root / "JPEGImages").is_dir() and nested.is_dir() else root


def augmented_list(root: Path) -> Path | None:
    """The augmented set's list, when its labels and list are both present."""
    voc = voc_folder(root)
    if not (voc / "SegmentationClassAug").is_dir():
        return None
    places = (voc / "ImageSets" / "Segmentation" / AUG_LIST, root / AUG_LIST, voc.parent.parent / AUG_LIST)
    return next((p for p in places if p.is_file()), None)


def split_source(root, split: str) -> tuple[Path, Path]:
    """(list file, label folder) of a split."""
    root = Path(root)
    voc = voc_folder(root)
    aug = augmented_list(root) if split == "train" else None
    if aug is not None:
        return aug, voc / "SegmentationClassAug"
    return voc / "ImageSets" / "Segmentation" / f"{split}.txt", voc / "SegmentationClass"


def list_voc(root, split: str) -> tuple[list[Sample], list[str]]:
    """Samples named by a split's list and every structural problem (the list, files it names that are missing)."""
    root = Path(root)
    if not root.is_dir():
        return [], [f"{root}: no such folder (expected a {_LAYOUT})"]
    list_file, label_dir = split_source(root, split)
    image_dir = voc_folder(root) / "JPEGImages"
    problems = missing_dirs(image_dir, label_dir, expected=_LAYOUT)
    if not list_file.is_file():
        problems.append(f"{list_file}: missing split list (image names without .jpg, one a line)")
    if problems:
        return [], problems
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [], [f"{list_file}: not UTF-8 text; a split list names images without .jpg, one a line"]
    names = list(dict.fromkeys(ln.strip() for ln in text.splitlines() if ln.strip()))
    samples = []
    for name in names:
        image, label = image_dir / f"{name}.jpg", label_dir / f"{name}.png"
        missing = [p for p in (image, label) if not p.is_file()]
        problems += [f"{list_file}: names {name}, but {p} is missing" for p in missing]
        if not missing:
            samples.append(Sample(name, image, label, LABELS))
    if not names:
        problems.append(f"{list_file}: empty split list (no image names)")
    return samples, problems


class VOC(PairDataset):
    """Pascal VOC 2012; items have class ids 0..20 and 255 = ignore (object borders)."""

    kind = "voc"

    def __init__(self, root, split: str = "train", size: int = 513, augment: list | None = None):
        samples, problems = list_voc(root, split)
        raise_if_problems(problems)
        super().__init__(root, split, samples, size, CLASSES, PALETTE, augment, (split_source(root, split)[0],))
