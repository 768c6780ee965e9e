"""`iwu predict`: segmentation and uncertainty maps of a run's ensemble for any images.

For each image: the segmentation in the dataset's palette, the pixel-entropy
heat map, the instance-uncertainty map (both on one scale, 0 to log C) and the
segmentation over the image. The ensemble sees the image at its training size;
outputs are brought back to the image's own size. An unreadable image is
reported by name and skipped; the others are still done.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from iwu.data.common import atomic_save_png, image_tensor
from iwu.errors import UserError
from iwu.inference import load_models, member_probabilities
from iwu.uncertainty import instance_uncertainty, pixel_entropy

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def expand(paths) -> list[tuple[Path, str]]:
    """(file, output stem): folders give their images (recursively) named by relative path."""
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            for f in sorted(p for p in given.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()):
                found.append((f, str(f.relative_to(given).with_suffix(""))))
        else:
            found.append((given, given.stem))
    return found


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


def run_predict(target, images, out, size=None, device=None) -> int:
    loaded = load_models(target, device)
    files = expand(images)
    if not files:
        raise UserError(f"no images in {', '.join(map(str, images))} (looked for {', '.join(sorted(SUFFIXES))})")
    size = size or int(loaded.config.data.get("size", 768))
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
        for suffix, array in (("seg", seg), ("entropy", heat(maps["entropy"], top)),
                              ("instance", heat(maps["instance"], top)), ("overlay", overlay)):
            atomic_save_png(array, out / f"{stem}_{suffix}.png")
    done = len(files) - len(skipped)
    print(f"wrote {done} prediction(s) to {out} (*_seg, *_entropy, *_instance, *_overlay.png)"
          + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    return 1 if skipped else 0
