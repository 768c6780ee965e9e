"""From a user's words to a dataset: `KIND:ROOT` specs and config dicts."""

from __future__ import annotations

from pathlib import Path

from iwu.data.acdc import ACDC, list_acdc, parse_conditions
from iwu.data.cityscapes import Cityscapes, list_cityscapes
from iwu.data.common import PairDataset
from iwu.data.config import KINDS
from iwu.data.folder import SegmentationFolder, folder_classes, list_folder
from iwu.data.kvasir import DEFAULT_VAL_FRACTION, Kvasir, list_kvasir
from iwu.data.voc import VOC, list_voc
from iwu.errors import UserError

# the reader of each kind (their constructors differ in the options they take: build_dataset)
READERS = {"cityscapes": Cityscapes, "acdc": ACDC, "kvasir": Kvasir, "voc": VOC, "folder": SegmentationFolder}
_SPEC_HELP = "use cityscapes:ROOT, acdc:ROOT[:fog,night,rain,snow], kvasir:ROOT, voc:ROOT or folder:ROOT"


def image_statistics(kind) -> tuple[tuple, tuple]:
    """(mean, std) the images of a kind of dataset are normalised with: its own, or ImageNet's."""
    reader = READERS.get(kind, PairDataset)
    return reader.mean, reader.std


def parse_data_spec(spec: str) -> dict:
    """`"acdc:/data/acdc:fog,night"` -> `{"kind": "acdc", "root": "/data/acdc", "conditions": ["fog", "night"]}`."""
    kind, sep, rest = str(spec).partition(":")
    if not sep or not rest or kind not in KINDS:
        raise UserError(f"--data {spec}: {_SPEC_HELP}")
    if kind == "acdc" and not Path(rest).is_dir():
        root, sep, tail = rest.rpartition(":")
        # a trailing part without a path separator is a list of conditions (checked, so a typo is named);
        # a colon inside an existing folder's path is not
        if sep and root and "/" not in tail and "\\" not in tail:
            return {"kind": kind, "root": root, "conditions": list(parse_conditions(tail))}
    return {"kind": kind, "root": rest}


def build_dataset(source: dict, split: str, size: int, augment: list | None = None) -> PairDataset:
    """A dataset from `{"kind", "root", ["conditions" (acdc)], ["val_fraction" (kvasir)], ["classes" (folder)]}`."""
    kind, root = source.get("kind"), source.get("root")
    if kind not in KINDS:
        raise UserError(f"data kind {kind!r}: unknown; choose one of {', '.join(KINDS)}")
    if not root:
        raise UserError(f"data ({kind}): `root` is missing; give the dataset folder")
    if kind == "cityscapes":
        return Cityscapes(root, split, size, augment=augment)
    if kind == "acdc":
        return ACDC(root, split, size, conditions=source.get("conditions"), augment=augment)
    if kind == "kvasir":
        return Kvasir(root, split, size, val_fraction=_val_fraction(source), augment=augment)
    if kind == "voc":
        return VOC(root, split, size, augment=augment)
    return SegmentationFolder(root, split, size, classes=source.get("classes"), augment=augment)


def list_samples(source: dict, split: str) -> tuple[list, list[str]]:
    """A split's samples and every structural problem, without raising on them (for `--check`)."""
    kind, root = source.get("kind"), source.get("root")
    if kind not in KINDS or not root:
        build_dataset(source, split, size=1)  # raises the one-line message for the config
    if kind == "cityscapes":
        return list_cityscapes(root, split)
    if kind == "acdc":
        return list_acdc(root, split, source.get("conditions"))
    if kind == "kvasir":
        return list_kvasir(root, split, _val_fraction(source))
    if kind == "voc":
        return list_voc(root, split)
    if not Path(root).is_dir():
        return list_folder(root, split, None)
    try:
        spec = folder_classes(root, source.get("classes"))
    except UserError as err:
        return [], [str(err)]
    return list_folder(root, split, spec["labels"])


def _val_fraction(source: dict):
    fraction = source.get("val_fraction")
    return DEFAULT_VAL_FRACTION if fraction is None else fraction
