"""`iwu predict`: segmentation and uncertainty maps of a run's ensemble for any images.

For each image: the segmentation in the dataset's palette, the pixel-entropy
heat map, the instance-uncertainty map (both on one scale, 0 to log C) and the
segmentation over the image. The ensemble sees the image at its training size;
outputs are brought back to the image's own size. An unreadable image is
reported by name and skipped; the others are still done.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from iwu.data.common import atomic_save_png, image_tensor
from iwu.errors import UserError
from iwu.inference import load_models, member_probabilities
from iwu.outputs import refuse_existing, refuse_overlap
from iwu.uncertainty import instance_uncertainty, pixel_entropy

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
OUTPUTS = ("seg", "entropy", "instance", "overlay")  # <stem>_<output>.png per image


def expand(paths) -> list[tuple[Path, str]]:
    """(file, output stem): folders give their images (recursively) named by relative path.

    Files given twice count once. Images that would share a stem (``a/x.png b/x.png``) are named by
    their path from the folder the clashing files share, so no output replaces another.
    """
    found: dict[Path, tuple[Path, str]] = {}
    for given in map(Path, paths):
        if given.is_dir():
            for f in sorted(p for p in given.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()):
                found.setdefault(f.resolve(), (f, str(f.relative_to(given).with_suffix(""))))
        else:
            found.setdefault(given.resolve(), (given, given.stem))
    return _unique_stems(list(found.values()))


def _unique_stems(found: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    counts = Counter(stem for _, stem in found)
    clash = [f.resolve() for f, stem in found if counts[stem] > 1]
    if not clash:
        return found
    base = Path(os.path.commonpath([f.parent for f in clash]))
    renamed = [(f, str(f.resolve().relative_to(base).with_suffix("")) if counts[stem] > 1 else stem)
               for f, stem in found]
    seen: dict[str, Path] = {}
    for f, stem in renamed:
        if stem in seen:  # x.png and x.jpg side by side
            raise UserError(f"{seen[stem]} and {f} would write the same {stem}_*.png; predict them separately")
        seen[stem] = f
    return renamed


def palette_for(classes) -> np.ndarray:
    from iwu.data.cityscapes import CLASSES, PALETTE

    if tuple(classes) == tuple(CLASSES):
        return np.array(PALETTE, dtype=np.uint8)
    import matplotlib

    colors = matplotlib.colormaps["tab20"](np.arange(len(classes)) % 20)[:, :3]
    return (colors * 255).astype(np.uint8)


def heat(values: np.ndarray, top: float) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["inferno"](np.clip(values / top, 0, 1))[..., :3] * 255).astype(np.uint8)


def _back_to(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    mode = Image.NEAREST if nearest else Image.BILINEAR
    image = Image.fromarray(array if nearest else array.astype(np.float32), mode=None if nearest else "F")
    return np.asarray(image.resize(size, mode))


@torch.no_grad()
def predict_image(loaded, image: Image.Image, size: int, connectivity: int = 8) -> dict:
    """Prediction, pixel entropy and instance uncertainty at the image's own size."""
    resized = np.asarray(image.resize((size, size), Image.BILINEAR))
    mean = member_probabilities(loaded.module, image_tensor(resized)[None].to(loaded.device)).mean(dim=0)
    pred = mean.argmax(dim=1)
    entropy = pixel_entropy(mean)
    instance = instance_uncertainty(pred, entropy, connectivity=connectivity)
    return {"pred": _back_to(pred[0].cpu().numpy().astype(np.uint8), image.size, nearest=True),
            "entropy": _back_to(entropy[0].cpu().numpy(), image.size, nearest=False),
            "instance": _back_to(instance[0].cpu().numpy(), image.size, nearest=False)}


def run_predict(target, images, out, size=None, device=None, overwrite: bool = False) -> int:
    refuse_overlap(out, images, "--out")
    files = expand(images)
    if not files:
        raise UserError(f"no images in {', '.join(map(str, images))} (looked for {', '.join(sorted(SUFFIXES))})")
    refuse_existing((Path(out) / f"{stem}_{suffix}.png" for _, stem in files for suffix in OUTPUTS), "--out",
                    overwrite)
    loaded = load_models(target, device)
    size = size or loaded.config.data.size
    palette = palette_for(loaded.module.classes)
    top = float(np.log(len(loaded.module.classes)))
    out = Path(out)
    skipped = []
    for path, stem in tqdm(files, desc="predict", unit="img"):
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            reason = " ".join(str(err).split())[:120] or type(err).__name__
            tqdm.write(f"iwu predict: skipped {path}: unreadable image ({reason})", file=sys.stderr)
            skipped.append(path)
            continue
        maps = predict_image(loaded, image, size, loaded.config.loss.connectivity)
        seg = palette[maps["pred"]]
        overlay = (0.5 * np.asarray(image, dtype=np.float32) + 0.5 * seg).astype(np.uint8)
        arrays = (seg, heat(maps["entropy"], top), heat(maps["instance"], top), overlay)
        for suffix, array in zip(OUTPUTS, arrays):
            atomic_save_png(array, out / f"{stem}_{suffix}.png")
    done = len(files) - len(skipped)
    print(f"wrote {done} prediction(s) to {out} (*_seg, *_entropy, *_instance, *_overlay.png)"
          + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    return 1 if skipped else 0
