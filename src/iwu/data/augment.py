"""Joint augmentation of an item: the image, its label and its stored uncertainty mask move together.

A pipeline is a list of named steps, as `data.augment` gives it in YAML:

    augment: [hflip, {random_scale: {min: 0.5, max: 2.0}}, {random_crop: {size: 513}}]

(the published code's augmentation for Pascal VOC and Kvasir-SEG; the paper's
configs use none). Every step works on torchvision v2 tv_tensors through its
functional ops: the image is a `tv_tensors.Image` (uint8, bilinear), the label
and the mask are `tv_tensors.Mask`s (nearest), so a flip, scale or crop moves
each pixel of the three to the same place and the mask stays aligned with the
label. Padding fills the image with 0, the label with 255 (ignored) and the
mask with 0.

Random draws come from a generator seeded by (seed, epoch, item index) only
(`item_generator`): the same item of the same epoch is augmented the same way
whatever the worker count, and a resumed run sees the images the uninterrupted
one saw. The training sampler hands the dataset an `ItemKey` that carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import NamedTuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from iwu.constants import IGNORE_INDEX
from iwu.errors import UserError
from iwu.util.suggest import did_you_mean
from iwu.util.bounded import MAX_SIDE

FILL = {"image": 0, "label": IGNORE_INDEX, "mask": 0}  # what padding puts under each part of an item


class ItemKey(NamedTuple):
    """What the training sampler gives the dataset: the item and what its random draws depend on."""

    index: int
    epoch: int = 0
    seed: int = 0


def item_index(key) -> int:
    """The index of a dataset key: an `ItemKey` from the training sampler, or a plain index."""
    return key.index if isinstance(key, ItemKey) else int(key)


def item_generator(key) -> torch.Generator:
    """The generator of an item's draws, a function of (seed, epoch, index) alone (plain index: epoch 0)."""
    key = key if isinstance(key, ItemKey) else ItemKey(int(key))
    # SeedSequence mixes the three so that nearby keys give unrelated streams
    entropy = [key.seed % 2**63, key.epoch, key.index]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


# --- argument checks: each raises ValueError with the argument's part of the message ---------------


def _number(value, name: str, low: float | None = None, high: float | None = None, above: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (low is None or (value > low if above else value >= low)) and (high is None or value <= high)
    if not ok:
        bounds = " and ".join(b for b in (
            None if low is None else f"{'>' if above else '>='} {low}", None if high is None else f"<= {high}") if b)
        raise ValueError(f"`{name}` must be a number{' ' + bounds if bounds else ''}, not {value!r}")
    return float(value)


def _side(value, name: str) -> tuple[int, int]:
    """A crop size: one whole number (square) or [height, width]."""
    pair = value if isinstance(value, list | tuple) else [value, value]
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in pair):
        raise ValueError(f"`{name}` must be a whole number from 1 to {MAX_SIDE} or [height, width], not {value!r}")
    return int(pair[0]), int(pair[1])


# --- the steps ---------------------------------------------------------------------------------------
# A step is called with the item's parts {"image", "label"[, "mask"]} and the generator, and returns the
# parts transformed. `size_after(low, high)` is the range of image sides it leaves, for the checks.


def _all(parts: dict, op) -> dict:
    return {k: op(v) for k, v in parts.items()}


@dataclass(frozen=True)
class HFlip:
    p: float = 0.5

    def __post_init__(self):
        _number(self.p, "p", 0, 1)

    def __call__(self, parts, generator):
        return _all(parts, F.horizontal_flip) if _uniform(generator, 0, 1) < self.p else parts

    def size_after(self, low, high):
        return low, high


@dataclass(frozen=True)
class VFlip(HFlip):
    def __call__(self, parts, generator):
        return _all(parts, F.vertical_flip) if _uniform(generator, 0, 1) < self.p else parts


@dataclass(frozen=True)
class RandomScale:
    """Both sides times one factor drawn from [min, max] (the published code: 0.5 to 2)."""

    min: float = 0.5
    max: float = 2.0

    def __post_init__(self):
        _number(self.min, "min", 0, above=True)
        _number(self.max, "max", self.min)

    def __call__(self, parts, generator):
        scale = _uniform(generator, self.min, self.max)
        h, w = parts["image"].shape[-2:]
        size = [max(1, int(h * scale)), max(1, int(w * scale))]
        return _all(parts, lambda x: F.resize(x, size, antialias=True))  # masks resize by nearest

    def size_after(self, low, high):
        return max(1, int(low * self.min)), max(1, int(high * self.max))


@dataclass(frozen=True)
class RandomCrop:
    """A `size` window at a random place; the image is padded first by `padding` on every side and, with
    `pad_if_needed` (as the published code), up to the window where it is smaller."""

    size: int | list[int]
    padding: int = 0
    pad_if_needed: bool = True

    def __post_init__(self):
        _side(self.size, "size")
        # bounded like an image side: a padded image of 100,000 pixels a side is tens of gigabytes a batch
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or not 0 <= self.padding <= MAX_SIDE:
            raise ValueError(f"`padding` must be a whole number from 0 to {MAX_SIDE}, not {self.padding!r}")
        if not isinstance(self.pad_if_needed, bool):
            raise ValueError(f"`pad_if_needed` must be true or false, not {self.pad_if_needed!r}")

    def __call__(self, parts, generator):
        (ch, cw), p = _side(self.size, "size"), self.padding
        h, w = (s + 2 * p for s in parts["image"].shape[-2:])
        if self.pad_if_needed:
            dh, dw = max(0, ch - h), max(0, cw - w)
            pads = [p + dw // 2, p + dh // 2, p + dw - dw // 2, p + dh - dh // 2]  # left, top, right, bottom
            h, w = h + dh, w + dw
        else:
            pads = [p] * 4
            if ch > h or cw > w:
                raise ValueError(f"random_crop: a {ch}x{cw} crop is larger than the padded {h}x{w} image; "
                                 "set pad_if_needed: true or crop less")
        if any(pads):
            parts = {k: F.pad(v, pads, fill=FILL[k]) for k, v in parts.items()}
        top = int(torch.randint(h - ch + 1, (), generator=generator))
        left = int(torch.randint(w - cw + 1, (), generator=generator))
        return _all(parts, lambda x: F.crop(x, top, left, ch, cw))

    def size_after(self, low, high):
        return min(_side(self.size, "size")), max(_side(self.size, "size"))


@dataclass(frozen=True)
class ColorJitter:
    """Brightness, contrast, saturation (factors from [1 - v, 1 + v]) and hue (shift from [-v, v]), in a
    random order, as torchvision's ColorJitter; the image only."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation"):
            _number(getattr(self, name), name, 0)
        _number(self.hue, "hue", 0, 0.5)

    def __call__(self, parts, generator):
        ops = {
            "brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
            "saturation": F.adjust_saturation, "hue": F.adjust_hue,
        }
        image = parts["image"]
        for i in torch.randperm(4, generator=generator).tolist():
            name = list(ops)[i]
            v = getattr(self, name)
            if v:
                low, high = (-v, v) if name == "hue" else (max(0.0, 1 - v), 1 + v)
                image = ops[name](image, _uniform(generator, low, high))
        return {**parts, "image": image}

    def size_after(self, low, high):
        return low, high


TRANSFORMS = {
    "hflip": HFlip,
    "vflip": VFlip,
    "random_scale": RandomScale,
    "random_crop": RandomCrop,
    "color_jitter": ColorJitter,
}
EXAMPLE = "[hflip, {random_scale: {min: 0.5, max: 2.0}}, {random_crop: {size: 513}}]"


@dataclass(frozen=True)
class Augment:
    """A checked pipeline: the steps, applied in order to an item's uint8 image, label and mask."""

    steps: tuple
    spec: tuple  # the (name, arguments) it was built from, for messages and equality

    def __call__(self, image: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """uint8 3xHxW image, HxW label and optional HxW mask -> the three transformed, as plain tensors."""
        parts = {"image": tv_tensors.Image(image), "label": tv_tensors.Mask(label)}
        if mask is not None:
            parts["mask"] = tv_tensors.Mask(mask)
        for step in self.steps:
            parts = step(parts, generator)
        out = {k: v.as_subclass(torch.Tensor) for k, v in parts.items()}
        return out["image"], out["label"], out.get("mask")


def _step(entry, where: str):
    """One list entry (a name, or {name: {argument: value}}) as a built step."""
    if isinstance(entry, str):
        name, args = entry, {}
    elif isinstance(entry, Mapping) and len(entry) == 1:
        (name, args), = entry.items()
        args = {} if args is None else args
    else:
        raise UserError(f"{where}: expected a transform name or a one-key mapping such as "
                        f"{{random_crop: {{size: 513}}}}, not {entry!r}")
    if name not in TRANSFORMS:
        raise UserError(f"{where}: unknown transform {name!r}; {did_you_mean(str(name), TRANSFORMS, 'did you mean {}? ')}"
                        f"known: {', '.join(TRANSFORMS)}")
    where = f"{where}.{name}"
    known = {f.name: f.default is MISSING for f in fields(TRANSFORMS[name])}  # argument -> required
    if not isinstance(args, Mapping):
        raise UserError(f"{where}: expected a mapping of arguments ({', '.join(known) or 'none'}), not {args!r}")
    for arg in args:
        if arg not in known:
            raise UserError(f"{where}: unknown argument {arg!r}; {did_you_mean(str(arg), known, 'did you mean {}? ')}"
                            f"arguments: {', '.join(known)}")
    missing = [a for a, required in known.items() if required and a not in args]
    if missing:
        raise UserError(f"{where}: `{missing[0]}` is required, e.g. {{{name}: {{{missing[0]}: 513}}}}")
    try:
        return TRANSFORMS[name](**args), (name, tuple(sorted(args.items())))
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None


def check_augment(spec, key: str = "data.augment", size: int | None = None) -> Augment | None:
    """The pipeline of a `data.augment` value (None when off), or a one-line UserError naming `key`.

    `spec` is the raw YAML value: null, or a list of transform names and one-key mappings. With the
    training `size`, a crop that could not fit the (padded) image is found here rather than in a worker.
    """
    if spec is None or isinstance(spec, Augment):
        return spec
    if not isinstance(spec, list | tuple):
        raise UserError(f"{key}: expected null (no augmentation) or a list of transforms, e.g. {EXAMPLE}")
    built = [_step(entry, f"{key}[{i}]") for i, entry in enumerate(spec)]
    low = high = size
    for i, (step, (name, _)) in enumerate(built):
        if isinstance(step, RandomCrop) and not step.pad_if_needed and low is not None:
            ch, cw = _side(step.size, "size")
            if max(ch, cw) > low + 2 * step.padding:
                raise UserError(f"{key}[{i}].{name}: a {ch}x{cw} crop is larger than the padded image (as small "
                                f"as {low}+2x{step.padding} pixels a side); set pad_if_needed: true or crop less")
        if low is not None:
            low, high = step.size_after(low, high)
    rescaled = [i for i, (step, _) in enumerate(built) if isinstance(step, RandomScale)]
    if rescaled and not any(isinstance(step, RandomCrop) for step, _ in built[rescaled[-1]:]):
        raise UserError(f"{key}[{rescaled[-1]}].random_scale: changes the image size; add a random_crop after it "
                        "so that the images of a batch have one size")
    return Augment(tuple(s for s, _ in built), tuple(n for _, n in built)) if built else None


def as_pipeline(augment) -> Augment | None:
    """A dataset's `augment` argument: a pipeline, a `data.augment` list, None, or the old bool (True: hflip)."""
    if isinstance(augment, bool):
        return check_augment(["hflip"] if augment else None, key="augment")
    return check_augment(augment, key="augment")
