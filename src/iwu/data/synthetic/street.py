"""Street scenes (iwu.data.synthetic.scenes, weather) written in the Cityscapes and ACDC layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iwu.data.acdc import CONDITIONS
from iwu.data.cityscapes import TRAIN_TO_LABEL_ID
from iwu.data.common import atomic_save_png
from iwu.data.synthetic.scenes import HOOD, make_scene, render, train_ids
from iwu.data.synthetic.weather import CONDITIONS as WEATHER
from iwu.util.bars import bar

LAYOUTS = ("cityscapes", "acdc")
FOLDERS = ("leftImg8bit", "gtFine", "rgb_anon", "gt")  # what the two layouts write at the root
CITIES = {"train": ("synthburg", "pixelstadt"), "val": ("renderheim",)}
_SPLIT_CODE = {"train": 0, "val": 1}
_EGO_VEHICLE = 1  # Cityscapes labelId of the hood


def scene_arrays(seed: int, split: str, index: int, height: int, width: int, condition: str | None = None):
    """(uint8 image h x w x 3, scene) of one synthetic frame, deterministic from its arguments."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    scene = make_scene(rng, height, width)
    image = render(scene, rng)
    if condition is not None:
        image = WEATHER[condition](image, scene, rng)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), scene


def _label_ids(scene) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(TRAIN_TO_LABEL_ID)] = TRAIN_TO_LABEL_ID
    lut[HOOD] = _EGO_VEHICLE
    return lut[scene.label]


def _cityscapes_frame(root: Path, split: str, index: int, image, scene, write_train_ids: bool) -> None:
    city = CITIES[split][index % len(CITIES[split])]
    stem = f"{city}_{index // len(CITIES[split]):06d}_000019"
    img_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_png(image, img_dir / f"{stem}_leftImg8bit.png")
    atomic_save_png(_label_ids(scene), gt_dir / f"{stem}_gtFine_labelIds.png")
    if write_train_ids:
        atomic_save_png(train_ids(scene), gt_dir / f"{stem}_gtFine_labelTrainIds.png")


def _acdc_frame(root: Path, split: str, index: int, condition: str, image, scene) -> None:
    k = index // len(CONDITIONS)  # index within its condition
    sequence = f"GOPR{CONDITIONS.index(condition)}{k // 8:03d}"
    stem = f"{sequence}_frame_{k:06d}"
    img_dir = root / "rgb_anon" / condition / split / sequence
    gt_dir = root / "gt" / condition / split / sequence
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_png(image, img_dir / f"{stem}_rgb_anon.png")
    atomic_save_png(train_ids(scene), gt_dir / f"{stem}_gt_labelTrainIds.png")


def write_street(root: Path, layout: str, n_train: int, n_val: int, width: int, height: int, seed: int,
                  write_train_ids: bool) -> None:
    jobs = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    for split, i in bar(jobs, desc=f"synth {layout}", unit="img"):
        condition = CONDITIONS[i % len(CONDITIONS)] if layout == "acdc" else None
        image, scene = scene_arrays(seed, split, i, height, width, condition)
        if layout == "acdc":
            _acdc_frame(root, split, i, condition, image, scene)
        else:
            _cityscapes_frame(root, split, i, image, scene, write_train_ids)


