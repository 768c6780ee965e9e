"""`iwu predict`: segmentation and uncertainty maps of a run's ensemble for any images.

For each image: the segmentation in the dataset's palette with a legend of its
classes, the pixel-entropy and instance-uncertainty heat maps (both on one
scale, 0 to log C, with its colour bar) and the segmentation over the image;
or, with ``panel``, all of them side by side in one figure. The ensemble sees
the image at its training size; the maps are brought back to the image's own
size. An unreadable image is reported by name and skipped; the others are still
done. The colours are the run's dataset's (`run_palette`); a figure names an image
by its file name, bytes that are not UTF-8 shown as U+FFFD (`shown_name`).
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

from iwu.constants import IMAGE_SUFFIXES
from iwu.data import kinds
from iwu.data.common import image_tensor
from iwu.data.folder import folder_classes
from iwu.data.sources import image_statistics
from iwu.errors import UserError
from iwu.util.bars import bar
from iwu.inference.loading import load_models, member_probabilities
from iwu.inference.meta_seg import flag_segments, read_classifier
from iwu.engine.run_dir import segments_classifier_file
from iwu.method.segments import feature_names
from iwu.util.output_paths import refuse_existing, refuse_overlap
from iwu.plots import run_title
from iwu.plots.predictions import UNCERTAINTIES, save_panel, save_segmentation, save_uncertainty
from iwu.method.uncertainty import instance_uncertainty, pixel_entropy

OUTPUTS = ("seg", "entropy", "instance", "overlay")  # <stem>_<output>.png per image
PANEL = ("panel",)  # <stem>_panel.png per image, with --panel


def expand(paths) -> list[tuple[Path, str]]:
    """(file, output stem): folders give their images (recursively) named by relative path.

    Files given twice count once. Images that would share a stem (``a/x.png b/x.png``) are named by
    their path from the folder the clashing files share, so no output replaces another.
    """
    found: dict[Path, tuple[Path, str]] = {}
    for given in map(Path, paths):
        if given.is_dir():
            for f in sorted(p for p in given.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
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


def run_palette(data, classes) -> np.ndarray:
    """(C,3) uint8 colours of the run's dataset (`data`: its ``config.data``) for the model's `classes`.

    A folder dataset's colours come from its classes.yaml (its `palette`, or the colour map iwu.data.folder
    gives a dataset without one), read as iwu.data.folder reads it; a dataset of fixed classes has its
    reader module's PALETTE. Where the dataset's palette cannot be had (its folder is not on this machine, or its
    classes are no longer the model's), `palette_for(classes)`.
    """
    palette = _dataset_palette(data, list(classes))
    return np.array(palette, dtype=np.uint8) if palette is not None else palette_for(classes)


def _dataset_palette(data, classes: list[str]):
    """The palette of the dataset `data` names, if its classes are `classes`; else None."""
    kind = getattr(data, "kind", None)
    if kind == "folder":
        if not data.root:
            return None
        try:
            spec = folder_classes(data.root, data.classes)
        except (UserError, OSError):  # no classes.yaml here (the run was copied elsewhere), or a broken one
            return None
        names, palette = spec["classes"], spec["palette"]
    elif kind in kinds.BY_NAME:
        reader = kinds.BY_NAME[kind]
        try:
            names, palette = reader.load("CLASSES"), reader.load("PALETTE")
        except AttributeError:  # a reader without colours of its own
            return None
    else:
        return None
    return palette if list(names) == classes else None


def palette_for(classes) -> np.ndarray:
    """Colours without a dataset: Cityscapes' for its classes, tab20 for any others."""
    from iwu.data.cityscapes import CLASSES, PALETTE

    if tuple(classes) == tuple(CLASSES):
        return np.array(PALETTE, dtype=np.uint8)
    import matplotlib

    colors = matplotlib.colormaps["tab20"](np.arange(len(classes)) % 20)[:, :3]
    return (colors * 255).astype(np.uint8)


def _back_to(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    mode = Image.NEAREST if nearest else Image.BILINEAR
    image = Image.fromarray(array if nearest else array.astype(np.float32), mode=None if nearest else "F")
    return np.asarray(image.resize(size, mode))


@torch.no_grad()
def predict_image(loaded, image: Image.Image, size: int, connectivity: int = 8, classifier=None) -> dict:
    """Prediction, pixel entropy and instance uncertainty at the image's own size; with a segment
    `classifier` (`iwu.inference.meta_seg.read_classifier`), ``flags``: each pixel's segment and each
    segment's probability of IoU 0."""
    resized = np.asarray(image.resize((size, size), Image.BILINEAR))
    x = image_tensor(resized, *image_statistics(loaded.config.data.kind))  # as the model was trained
    members = member_probabilities(loaded.module, x[None].to(loaded.device))
    mean = members.mean(dim=0)
    pred = mean.argmax(dim=1)
    entropy = pixel_entropy(mean)
    instance = instance_uncertainty(pred, entropy, connectivity=connectivity)
    maps = {"pred": _back_to(pred[0].cpu().numpy().astype(np.uint8), image.size, nearest=True),
            "entropy": _back_to(entropy[0].cpu().numpy(), image.size, nearest=False),
            "instance": _back_to(instance[0].cpu().numpy(), image.size, nearest=False)}
    if classifier is not None:
        ids, probability = flag_segments(classifier, members, connectivity=connectivity)
        maps["flags"] = (_back_to(ids.astype(np.int32), image.size, nearest=True), probability)
    return maps


def shown_name(name: str) -> str:
    """A file name as text to draw: bytes that are not UTF-8 (which Python keeps as lone surrogates, and
    matplotlib cannot draw) replaced by U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


def prediction_title(config, path: Path) -> str:
    """What the figures of image `path` say: the run (`run_title`), and the image by its file name."""
    return run_title(config, f"ensemble on {shown_name(path.name)}")


def save_maps(out: Path, stem: str, image: Image.Image, maps: dict, classes, palette, title: str,
              panel: bool = False) -> None:
    """The figures of one image's `predict_image` maps: ``<stem>_<output>.png`` for each of OUTPUTS, or
    ``<stem>_panel.png``. `title` names the run; each figure adds what it shows."""
    pixels = np.asarray(image)
    if panel:
        save_panel(out / f"{stem}_panel.png", [{"image": pixels, **maps}], classes, palette, title)
        return
    save_segmentation(out / f"{stem}_seg.png", maps["pred"], classes, palette, f"{title}\nsegmentation")
    for key, what in UNCERTAINTIES.items():
        save_uncertainty(out / f"{stem}_{key}.png", maps[key], len(classes), what, f"{title}\n{what}")
    save_segmentation(out / f"{stem}_overlay.png", maps["pred"], classes, palette,
                      f"{title}\nsegmentation over the image", image=pixels)


def run_predict(target, images, out, size=None, device=None, overwrite: bool = False, panel: bool = False,
                segments: str | None = None) -> int:
    """Figures of the ensemble's prediction for each image (see the module); 1 if an image was skipped.
    `segments`: with `panel`, outline the segments the meta classifier `iwu evaluate --segments` fitted on that
    dataset flags (probability of IoU 0 at least 0.5), with the probability."""
    if segments is not None and not panel:
        raise UserError("--segments outlines segments on the panel: add --panel")
    refuse_overlap(out, images, "--out")
    files = expand(images)
    if not files:
        raise UserError(f"no images in {', '.join(map(str, images))} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    outputs = PANEL if panel else OUTPUTS
    refuse_existing((Path(out) / f"{stem}_{suffix}.png" for _, stem in files for suffix in outputs), "--out",
                    overwrite)
    loaded = load_models(target, device)
    size = size or loaded.config.data.size
    classes = loaded.module.classes
    palette = run_palette(loaded.config.data, classes)
    classifier = None
    if segments is not None:
        path = loaded.run_dir / segments_classifier_file(segments)
        if not path.exists():
            raise UserError(f"--segments {segments}: no {path}; run iwu evaluate RUN --data KIND:ROOT --segments first")
        classifier = read_classifier(path, feature_names(len(classes)))
    out = Path(out)
    skipped = []
    for path, stem in bar(files, desc="predict", unit="img"):
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            reason = " ".join(str(err).split())[:120] or type(err).__name__
            tqdm.write(f"iwu predict: skipped {path}: unreadable image ({reason})", file=sys.stderr)
            skipped.append(path)
            continue
        maps = predict_image(loaded, image, size, loaded.config.loss.connectivity, classifier)
        save_maps(out, stem, image, maps, classes, palette, prediction_title(loaded.config, path), panel)
    done = len(files) - len(skipped)
    print(f"wrote {done} prediction(s) to {out} ({', '.join(f'*_{o}' for o in outputs)}.png)"
          + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    return 1 if skipped else 0
