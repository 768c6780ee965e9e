"""Small fake Kvasir-SEG and Pascal VOC sets in their release layouts, for tests and the demo.

Kvasir-SEG: a pink mucosa with one brighter, textured polyp; images and 0/255
masks both JPEG (as the release stores them, so masks carry grey values at the
outline), with `train.txt` / `val.txt`. VOC: a few objects of random classes on
background, their outlines marked 255 as VOC's border band, palette PNG labels
and the official lists, under `VOCdevkit/VOC2012`. Each image is a pure function
of (seed, split, index).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from iwu.data.common import IGNORE_INDEX
from iwu.data.voc import CLASSES as VOC_CLASSES
from iwu.data.voc import PALETTE as VOC_PALETTE
from iwu.util.atomic_files import atomic_write_bytes
from iwu.util.bars import bar

LAYOUTS = ("kvasir", "voc")
FOLDERS = {"kvasir": ("images", "masks", "train.txt", "val.txt"), "voc": ("VOCdevkit",)}
_SPLIT_CODE = {"train": 0, "val": 1}
_VOC_BORDER = (224, 224, 192)  # the colour VOC's palette gives index 255
# one base colour per VOC class (background included), fixed so every seed draws the same look
_VOC_LOOK = np.random.default_rng(2012).integers(30, 226, size=(len(VOC_CLASSES), 3))


def _save(image: Image.Image, path: Path, **options) -> None:
    buf = io.BytesIO()
    image.save(buf, **options)
    atomic_write_bytes(path, buf.getvalue())


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.ogrid[:h, :w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def kvasir_arrays(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image h x w x 3, bool polyp mask)."""
    polyp = _ellipse(h, w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w,
                     rng.uniform(0.12, 0.3) * h, rng.uniform(0.12, 0.3) * w)
    image = np.empty((h, w, 3), dtype=np.float32)
    image[:] = (200, 95, 80)  # mucosa
    image[polyp] = (235, 150, 120)  # the polyp: paler
    image += rng.normal(0, 12, (h, w, 1)) * np.where(polyp, 1.6, 1.0)[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), polyp


def voc_arrays(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image h x w x 3, uint8 label: class ids 0..20, 255 on each object's outline)."""
    label = np.zeros((h, w), dtype=np.uint8)
    for cls in rng.choice(np.arange(1, len(VOC_CLASSES)), size=rng.integers(1, 4), replace=False):
        shape = _ellipse(h, w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w,
                         rng.uniform(0.12, 0.3) * h, rng.uniform(0.12, 0.3) * w)
        label[shape] = cls
    image = _VOC_LOOK[label].astype(np.float32) + rng.normal(0, 10, (h, w, 3))
    # VOC marks a band along each object's outline as "don't care": here the pixels with another class
    # in their 3x3 neighbourhood
    edge = ndimage.maximum_filter(label, size=3) != ndimage.minimum_filter(label, size=3)
    label[edge] = IGNORE_INDEX
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _palette_png(label: np.ndarray) -> Image.Image:
    image = Image.fromarray(label, mode="P")
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[: len(VOC_PALETTE)] = VOC_PALETTE
    colours[IGNORE_INDEX] = _VOC_BORDER
    image.putpalette(colours.ravel().tolist())
    return image


def _write_kvasir(root: Path, name: str, image: np.ndarray, polyp: np.ndarray) -> None:
    _save(Image.fromarray(image), root / "images" / f"{name}.jpg", format="JPEG", quality=90)
    mask = np.repeat((polyp * 255).astype(np.uint8)[..., None], 3, axis=2)  # RGB, as the release's masks
    _save(Image.fromarray(mask), root / "masks" / f"{name}.jpg", format="JPEG", quality=75)


def _write_voc(root: Path, name: str, image: np.ndarray, label: np.ndarray) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    _save(Image.fromarray(image), voc / "JPEGImages" / f"{name}.jpg", format="JPEG", quality=90)
    _save(_palette_png(label), voc / "SegmentationClass" / f"{name}.png", format="PNG")


def write_fake(root: Path, layout: str, n_train: int, n_val: int, width: int, height: int, seed: int) -> None:
    """Write n_train + n_val fakes of `layout` into the (empty) folder root."""
    arrays, write = (kvasir_arrays, _write_kvasir) if layout == "kvasir" else (voc_arrays, _write_voc)
    lists = {"train": [], "val": []}
    jobs = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    for split, i in bar(jobs, desc=f"synth {layout}", unit="img"):
        name = f"synth{len(lists['train']) + len(lists['val']):05d}" if layout == "kvasir" else f"2012_{split}{i:05d}"
        image, label = arrays(np.random.default_rng([seed, _SPLIT_CODE[split], i]), height, width)
        write(root, name, image, label)
        lists[split].append(name)
    list_dir = root if layout == "kvasir" else root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    for split, names in lists.items():
        atomic_write_bytes(list_dir / f"{split}.txt", "".join(f"{n}\n" for n in names).encode())
