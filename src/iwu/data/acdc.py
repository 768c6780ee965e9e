"""ACDC (adverse conditions): `rgb_anon/{condition}/{split}/{sequence}/*_rgb_anon.png`
with `gt/{condition}/{split}/{sequence}/*_gt_labelTrainIds.png`, the 19 Cityscapes
train ids; any subset of the four conditions.
"""

from __future__ import annotations

from pathlib import Path

from iwu.data.cityscapes import CLASSES, PALETTE, TRAIN_IDS
from iwu.data.config import CONDITIONS, parse_condition_names
from iwu.data.common import (
    PairDataset,
    Sample,
    files_by_name,
    missing_dirs,
    pair_files,
    raise_if_problems,
)

_LAYOUT = (
    "ACDC layout rgb_anon/{condition}/{split}/{sequence}/*_rgb_anon.png, "
    "gt/{condition}/{split}/{sequence}/*_gt_labelTrainIds.png"
)


def parse_conditions(conditions) -> tuple[str, ...]:
    """A tuple of known conditions in canonical order, from a list or a comma-separated string."""
    return CONDITIONS if conditions is None else tuple(parse_condition_names(conditions, "ACDC conditions"))


def list_acdc(root, split: str, conditions=None) -> tuple[list[Sample], list[str]]:
    """Samples of a split over the chosen conditions, and every structural problem."""
    root = Path(root)
    if not root.is_dir():
        return [], [f"{root}: no such folder (expected an {_LAYOUT})"]
    samples, problems = [], []
    for cond in parse_conditions(conditions):
        img_dir, gt_dir = root / "rgb_anon" / cond / split, root / "gt" / cond / split
        missing = missing_dirs(img_dir, gt_dir, expected=_LAYOUT)
        if missing:
            problems += missing
            continue
        images = files_by_name(img_dir, "*/*_rgb_anon.png", "_rgb_anon.png")
        labels = files_by_name(gt_dir, "*/*_gt_labelTrainIds.png", "_gt_labelTrainIds.png")
        names, unpaired = pair_files(
            images,
            labels,
            label_for=lambda n, d=gt_dir: d / f"{n}_gt_labelTrainIds.png",
            image_for=lambda n, d=img_dir: d / f"{n}_rgb_anon.png",
        )
        problems += unpaired
        if not images:
            problems.append(f"{img_dir}: empty split (no {{sequence}}/*_rgb_anon.png images)")
        # names carry the condition: sequences are only unique within one
        samples += [Sample(f"{cond}/{n}", images[n], labels[n], TRAIN_IDS) for n in names]
    return samples, problems


class ACDC(PairDataset):
    """ACDC over the chosen conditions; items have train ids 0..18 and 255 = ignore."""

    kind = "acdc"

    def __init__(self, root, split: str = "train", size: int = 768, conditions=CONDITIONS, augment: list | None = None):
        self.conditions = parse_conditions(conditions)
        samples, problems = list_acdc(root, split, self.conditions)
        raise_if_problems(problems)
        super().__init__(root, split, samples, size, CLASSES, PALETTE, augment)

    def identity(self) -> dict:
        return {**super().identity(), "conditions": list(self.conditions)}
