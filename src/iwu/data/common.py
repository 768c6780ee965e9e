"""What every dataset shares: pairs of files, decoding, checks, resizing, items.

A dataset is a list of `Sample`s (an image file, a label file, a stable name)
plus a `LabelMap` saying which stored label values are legal and how they map
to train ids. Everything that reads pixels goes through `load_pair` and
`resize_pair`, so the direct PNG path, the cache builder and `--check` agree
byte for byte and report the same one-line problems.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iwu.constants import IGNORE_INDEX
from iwu.data.augment import Augment, as_pipeline, item_generator, item_index
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_bytes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataFileError(UserError):
    """A bad data file or folder, as one line naming it.

    Raised inside DataLoader workers too. Torch re-creates a worker's exception
    in the main process as `type(exc)(formatted_traceback)`; the traceback's
    last line is "...DataFileError: <message>", so keep only that message and
    the user still sees one line.
    """

    def __init__(self, message: str):
        text = str(message)
        marker = f"{type(self).__name__}: "
        if "Traceback" in text and marker in text:
            text = text.rsplit(marker, 1)[1]
        super().__init__(text)


@dataclass(frozen=True)
class LabelMap:
    """Legal stored label values and their train ids (both indexed by value 0..255)."""

    lut: np.ndarray  # uint8[256]: stored value -> train id (255 = ignore)
    known: np.ndarray  # bool[256]: value may appear in a label file
    what: str  # e.g. "Cityscapes labelIds 0..33", for messages
    mode: str | None = None  # Pillow mode to convert label files to first ("L": masks stored as RGB JPEG)

    @classmethod
    def identity(cls, num_classes: int, ignore_index: int = IGNORE_INDEX, what: str = "") -> LabelMap:
        lut = np.arange(256, dtype=np.uint8)
        lut[ignore_index] = IGNORE_INDEX
        known = np.zeros(256, dtype=bool)
        known[:num_classes] = True
        known[ignore_index] = True
        return cls(lut, known, what or f"train ids 0..{num_classes - 1} and {ignore_index}")


@dataclass(frozen=True)
class Sample:
    name: str  # stable id, keys offline masks: path relative to the split without suffix
    image: Path
    label: Path
    labels: LabelMap


def first_problem(problems: list[str]) -> str:
    """The one line a loader raises: the first problem, and how many more `--check` will list."""
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problems; run `iwu prepare --check` to list them)" if more else "")


def no_collate(item):
    """DataLoader collate for per-item passes (cache building, checks): items as they are."""
    return item


def raise_if_problems(problems: list[str]) -> None:
    if problems:
        raise DataFileError(first_problem(problems))


def _open(path: Path, what: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now, so truncated files fail here and not later
        complete = img.format != "PNG" or png_rows_complete(path.read_bytes())
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataFileError(f"{path}: unreadable {what} ({reason})") from None
    if not complete:
        raise DataFileError(f"{path}: unreadable {what} (its pixel data stops before the last row; "
                            "the file was cut off when written or copied)")
    return img


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_rows_complete(data: bytes) -> bool:
    """Whether a PNG's compressed data holds every row its header promises.

    Pillow decodes a PNG whose zlib stream ends early (a whole, valid stream of half the rows) without a
    word and leaves the missing rows black; counting the inflated bytes against the header finds it.
    """
    if len(data) < 33 or data[12:16] != b"IHDR":
        return True  # not a PNG Pillow would have opened as one
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        cols, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if cols and rows:
            expected += rows * (1 + -(-cols * bits // 8))  # a filter byte and the packed samples per row
    inflate, got, pos = zlib.decompressobj(), 0, 8
    while pos + 8 <= len(data) and got < expected:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            got += len(inflate.decompress(data[pos + 8:pos + 8 + length], expected - got + 1))
        pos += 12 + length
    return got >= expected


def load_image(path: Path) -> Image.Image:
    return _open(path, "image").convert("RGB")


def load_label(path: Path, labels: LabelMap) -> np.ndarray:
    """Stored label values as a 2-D array, after checking they are all legal."""
    img = _open(path, "label")
    if labels.mode is not None:
        img = img.convert(labels.mode)
    if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise DataFileError(f"{path}: label has mode {img.mode}; expected one channel of class ids")
    values = np.asarray(img)
    if values.min() < 0 or values.max() > 255:
        raise DataFileError(f"{path}: label values outside 0..255; expected {labels.what}")
    values = values.astype(np.uint8, copy=False)
    bad = ~labels.known[values]
    if bad.any():
        shown = ", ".join(str(v) for v in np.unique(values[bad])[:8])
        raise DataFileError(f"{path}: label values {shown} are not known ids; expected {labels.what}")
    return values


def load_pair(sample: Sample) -> tuple[Image.Image | None, np.ndarray | None, list[str]]:
    """Decode a pair and collect every problem with it (image and label checked independently)."""
    problems: list[str] = []
    image = values = None
    try:
        image = load_image(sample.image)
    except DataFileError as err:
        problems.append(str(err))
    try:
        values = load_label(sample.label, sample.labels)
    except DataFileError as err:
        problems.append(str(err))
    if image is not None and values is not None and image.size != values.shape[::-1]:
        w, h = image.size
        problems.append(
            f"{sample.image}: image is {w}x{h} but its label {sample.label} is "
            f"{values.shape[1]}x{values.shape[0]}"
        )
    return image, values, problems


def resize_pair(image: Image.Image, values: np.ndarray, labels: LabelMap, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square uint8 image (SxSx3, PIL bilinear) and train-id label (SxS, nearest)."""
    image = image.resize((size, size), Image.BILINEAR)
    label = Image.fromarray(values).resize((size, size), Image.NEAREST)
    return np.array(image, dtype=np.uint8), labels.lut[np.asarray(label)]  # a writable copy for torch


def read_sample(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resized uint8 image and train ids of one sample; a bad file raises its one-line message."""
    image, values, problems = load_pair(sample)
    raise_if_problems(problems)
    return resize_pair(image, values, sample.labels, size)


@functools.lru_cache(maxsize=8)
def _affine(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    std_t = torch.tensor(std).view(-1, 1, 1)
    return 1 / (255 * std_t), torch.tensor(mean).view(-1, 1, 1) / std_t


def normalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 3xHxW -> float (x/255 - mean)/std, done after augmentation."""
    scale, shift = _affine(tuple(mean), tuple(std))
    # a multiply and a subtract in place on one float copy: several times faster than the
    # textbook form, which matters on the cache path
    return image.float().mul_(scale).sub_(shift)


def chw(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> a contiguous 3xHxW uint8 tensor (converting a permuted view later is slower)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def image_tensor(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """HxWx3 uint8 -> normalised float 3xHxW."""
    return normalize(chw(image), mean, std)


def make_item(image: np.ndarray, label: np.ndarray, name: str, *, augment: Augment | None = None, key=0,
              mask: torch.Tensor | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """The dataset item: normalised float image 3xHxW, int64 label HxW, name, and `mask` (HxW float32) when
    the item carries its stored uncertainty mask.

    `augment` transforms image, label and mask together with the draws of `key` (see `iwu.data.augment`),
    before normalisation.
    """
    x, y = chw(image), torch.from_numpy(np.ascontiguousarray(label))
    if augment is not None:
        x, y, mask = augment(x, y, mask, item_generator(key))
    item = {"image": normalize(x, mean, std), "label": y.long(), "name": name}
    if mask is not None:
        item["mask"] = mask
    return item


def stored_mask(masks, name: str, shape: tuple[int, int]) -> torch.Tensor:
    """An item's uncertainty mask from a `MaskStore` at the label's shape; read in loader workers, so a
    missing or bad mask is a `DataFileError` (one line in the main process too)."""
    try:
        return masks.load([name], shape)[0]
    except UserError as err:
        raise DataFileError(str(err)) from None


class Items(torch.utils.data.Dataset):
    """The items of a dataset that can `read(index)` its resized uint8 pairs and name them (`name_of`).

    A key is an index or the training sampler's `ItemKey` (whose epoch and seed drive augmentation).
    `augment` (a pipeline) and `masks` (a `MaskStore`, for the modes that train on stored masks) are
    set on the training set only.
    """

    augment: Augment | None = None
    masks = None
    # per-channel statistics the images are normalised with; a dataset with its own overrides them
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def name_of(self, index: int) -> str:
        raise NotImplementedError

    def __getitem__(self, key) -> dict:
        index = item_index(key)
        name = self.name_of(index)
        image, label = self.read(index)
        mask = None if self.masks is None else stored_mask(self.masks, name, label.shape)
        return make_item(image, label, name, augment=self.augment, key=key, mask=mask, mean=self.mean, std=self.std)


def atomic_save_png(array: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


class PairDataset(Items):
    """Image/label pairs from files, resized to size x size on every read.

    Subclasses list the samples; this class reads them. `identity` is what the
    cache is keyed by (kind, root, split, size, conditions).
    """

    kind = "pairs"

    def __init__(self, root, split: str, samples: list[Sample], size: int, classes, palette, augment=False,
                 extra_sources: tuple[Path, ...] = ()):
        if int(size) < 1:
            raise UserError(f"size {size}: must be a positive number of pixels")
        self.root = Path(root).resolve()
        self.split = split
        self.samples = samples
        self.size = int(size)
        self.classes = tuple(classes)
        self.palette = tuple(tuple(c) for c in palette)
        self.augment = as_pipeline(augment)
        self.extra_sources = tuple(extra_sources)  # files besides the pairs that change the data (a YAML)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def identity(self) -> dict:
        return {"kind": self.kind, "root": str(self.root), "split": self.split, "size": self.size}

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return read_sample(self.samples[index], self.size)

    def name_of(self, index: int) -> str:
        return self.samples[index].name


def missing_dirs(*dirs: Path, expected: str) -> list[str]:
    return [f"{d}: missing folder (expected {expected})" for d in dirs if not d.is_dir()]


def pair_files(images: dict[str, Path], labels: dict[str, Path], label_for, image_for) -> tuple[list[str], list[str]]:
    """Names with both files, and one problem per image without a label and label without an image.

    `label_for(name)` / `image_for(name)` give the expected partner path for the message.
    """
    problems = [f"{images[n]}: image without a label (expected {label_for(n)})"
                for n in sorted(images.keys() - labels.keys())]
    problems += [f"{labels[n]}: label without an image (expected {image_for(n)})"
                 for n in sorted(labels.keys() - images.keys())]
    return sorted(images.keys() & labels.keys()), problems


def files_by_name(folder: Path, pattern: str, suffix: str) -> dict[str, Path]:
    """`{relative path without suffix: path}` for files matching a glob pattern under folder."""
    found = {}
    for path in sorted(folder.glob(pattern)):
        rel = path.relative_to(folder).as_posix()
        found[rel[: -len(suffix)] if suffix else rel] = path
    return found
