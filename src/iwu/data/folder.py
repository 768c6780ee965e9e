"""Users' own data: `images/{split}/*` and `labels/{split}/*` matched by path and stem.

The classes come from `classes.yaml` beside the data:

    classes: [background, crack, rust]   # label value i is class i
    ignore_index: 255                    # optional; label value never trained on
    palette: [[0, 0, 0], [255, 0, 0], [0, 0, 255]]   # optional, for figures
"""

from __future__ import annotations

from pathlib import Path

import yaml

from iwu.util.bounded import check_bounded
from iwu.constants import IMAGE_SUFFIXES
from iwu.data.common import (
    IGNORE_INDEX,
    LabelMap,
    PairDataset,
    Sample,
    missing_dirs,
    pair_files,
    raise_if_problems,
)
from iwu.errors import UserError

CLASSES_FILE = "classes.yaml"
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless only: ids must survive
_LAYOUT = "images/{split}/* and labels/{split}/* with the same names"


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map: distinct colours for any number of classes."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return colours


def read_classes(path: Path) -> dict:
    """`{"classes", "ignore_index", "palette"}` from a classes YAML, checked."""
    if not path.is_file():
        raise UserError(f"{path}: missing; write `classes: [name, ...]` (optional `ignore_index`, `palette`) "
                        "beside the data")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    check_bounded(spec, str(path))
    if not isinstance(spec, dict):
        raise UserError(f"{path}: expected a mapping with a `classes` list")
    ignore = spec.get("ignore_index", IGNORE_INDEX)
    return checked_classes(spec.get("classes"), ignore, spec.get("palette"), where=str(path))


def checked_classes(classes, ignore_index=IGNORE_INDEX, palette=None, where="classes") -> dict:
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{where}: `classes` must be a non-empty list of class names")
    if len(classes) > 255:
        raise UserError(f"{where}: {len(classes)} classes; at most 255 are supported (ids are stored as bytes)")
    if not isinstance(ignore_index, int) or not len(classes) <= ignore_index <= 255:
        raise UserError(f"{where}: `ignore_index` must be a whole number from {len(classes)} to 255")
    if palette is None:
        palette = default_palette(len(classes))
    def colour(c) -> bool:
        return isinstance(c, list | tuple) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)

    if not (isinstance(palette, list) and len(palette) == len(classes) and all(colour(c) for c in palette)):
        raise UserError(f"{where}: `palette` must list one [r, g, b] (0..255) per class")
    return {"classes": list(classes), "ignore_index": ignore_index, "palette": [tuple(c) for c in palette]}


def _files(folder: Path, suffixes: tuple[str, ...], what: str) -> tuple[dict[str, Path], list[str]]:
    """`{relative path without suffix: path}`; two files with one stem is a problem (which is meant?)."""
    found, problems = {}, []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            problems.append(f"{path}: another {what} has the same name ({found[key].name}); keep one")
        else:
            found[key] = path
    return found, problems


def list_folder(root, split: str, labels: LabelMap | None) -> tuple[list[Sample], list[str]]:
    root = Path(root)
    if not root.is_dir():
        return [], [f"{root}: no such folder (expected {_LAYOUT})"]
    img_dir, lab_dir = root / "images" / split, root / "labels" / split
    problems = missing_dirs(img_dir, lab_dir, expected=_LAYOUT)
    if problems:
        return [], problems
    images, problems = _files(img_dir, IMAGE_SUFFIXES, "image")
    label_files, dup = _files(lab_dir, LABEL_SUFFIXES, "label")
    names, unpaired = pair_files(
        images,
        label_files,
        label_for=lambda n: lab_dir / f"{n}.png",
        image_for=lambda n: img_dir / f"{n}.png (or .jpg)",
    )
    problems += dup + unpaired
    if not images:
        problems.append(f"{img_dir}: empty split (no images with suffix {', '.join(IMAGE_SUFFIXES)})")
    return [Sample(n, images[n], label_files[n], labels) for n in names], problems


def folder_classes(root, classes=None) -> dict:
    """The checked class spec (with its `labels` map): from `classes` if given, else root/classes.yaml."""
    spec = read_classes(Path(root) / CLASSES_FILE) if classes is None else checked_classes(list(classes))
    n, ignore = len(spec["classes"]), spec["ignore_index"]
    spec["labels"] = LabelMap.identity(n, ignore, what=f"class ids 0..{n - 1} and ignore {ignore}")
    return spec


def list_folder_split(root, split: str, classes=None) -> tuple[list[Sample], list[str]]:
    """`list_folder` with the classes of `classes` or root/classes.yaml (a problem of theirs is one of
    the problems, never raised)."""
    if not Path(root).is_dir():
        return list_folder(root, split, None)
    try:
        spec = folder_classes(root, classes)
    except UserError as err:
        return [], [str(err)]
    return list_folder(root, split, spec["labels"])


class SegmentationFolder(PairDataset):
    """Pairs from `images/{split}` and `labels/{split}`; label value `ignore_index` becomes 255.

    `classes` is a list of names (ignore index 255), or None to read `classes.yaml` in root.
    """

    kind = "folder"

    def __init__(self, root, split: str = "train", size: int = 768, classes=None, augment: list | None = None):
        if not Path(root).is_dir():
            raise_if_problems(list_folder(root, split, None)[1])
        spec = folder_classes(root, classes)
        samples, problems = list_folder(root, split, spec["labels"])
        raise_if_problems(problems)
        extra = (Path(root) / CLASSES_FILE,) if classes is None else ()
        super().__init__(root, split, samples, size, spec["classes"], spec["palette"], augment, extra)
        self.ignore_index = spec["ignore_index"]

    def identity(self) -> dict:
        # explicit class lists change the label checks, so they key the cache too
        return {**super().identity(), "classes": list(self.classes), "ignore_index": self.ignore_index}
