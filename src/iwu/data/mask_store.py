"""Instance-uncertainty masks on disk, for the ``offline_masks`` training mode.

The masks are computed once by a trained ensemble (``iwu masks``) and then
weight the loss of a single model, ``CE * (1 + U)**2``, so training one model
does not need the ensemble in memory. A store is a folder:

- ``masks.json``: ``{"format": 1, "num_classes": C, "scale": s, "count": n}``;
- ``<name>.png`` per dataset item (names may hold ``/``, i.e. subfolders): a
  16-bit grayscale PNG of ``round(U / s)`` with ``s = log(C) / 65535``.

``U`` is a mean of entropies, so it lies in ``[0, log C]`` and 16 bits lose at
most ``s / 2`` (about 2e-5 for 19 classes) plus the float32 rounding of the
loaded value (under 1e-7 for float32 ``U`` and up to about 150 classes); larger
values are clipped. ``U`` is constant over each instance, so PNG's filters and
deflate store it in little more than the instance boundaries. ``masks.json`` is
written last, when the writer is closed, so a store whose computation was
interrupted does not open.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_bytes, atomic_write_json

FORMAT = 1
INDEX = "masks.json"
PARTIAL = ".masks.partial.json"  # a store being written (or left by a killed `iwu masks`): ours to finish
LEVELS = 65535  # the largest 16-bit value: U = log C is stored as this
HOW = "masks are computed with `iwu masks RUN_DIR --data KIND:ROOT --out DIR`"


class MaskNameError(UserError, ValueError):
    """An item name that would leave the store folder (``..``, an absolute path)."""


def mask_scale(num_classes: int) -> float:
    """The value of one quantisation step: ``log(C) / 65535``."""
    return math.log(num_classes) / LEVELS


def _check_name(root: Path, name: str) -> str:
    if not isinstance(name, str) or not name or "\0" in name:
        raise MaskNameError(f"{root}: bad mask item name {name!r}; expected a relative path")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        raise MaskNameError(f"{root}: mask item name {name!r} is an absolute path; expected a relative one")
    if ".." in posix.parts or ".." in windows.parts:
        raise MaskNameError(f"{root}: mask item name {name!r} contains '..'; expected a path inside the store")
    return name


def _mask_path(root: Path, name: str) -> Path:
    return root / f"{_check_name(root, name)}.png"


def _read_index(root: Path) -> dict:
    """The validated contents of ``masks.json``, or a one-line UserError saying how to make it."""
    if not root.is_dir():
        raise UserError(f"{root}: no such mask folder; {HOW}")
    index = root / INDEX
    try:
        meta = json.loads(index.read_text())
        ok = (
            isinstance(meta, dict)
            and meta.get("format") == FORMAT
            and isinstance(meta.get("num_classes"), int)
            and meta["num_classes"] >= 2
            and isinstance(meta.get("scale"), (int, float))
            and meta["scale"] > 0
            and isinstance(meta.get("count"), int)
        )
    except FileNotFoundError:
        raise UserError(f"{root}: not a mask store (no {INDEX}; an interrupted computation leaves none); {HOW}") from None
    except (OSError, ValueError) as err:
        ok, meta = False, err
    if not ok:
        raise UserError(f"{index}: unreadable mask index (expected format {FORMAT}); {HOW}")
    return meta


def _as_array(u) -> np.ndarray:
    if isinstance(u, torch.Tensor):
        u = u.detach().to("cpu", torch.float64).numpy()
    return np.asarray(u, dtype=np.float64)


def _partial_classes(root: Path) -> int | None:
    """The class count of an unfinished store at `root`, or None where there is none."""
    try:
        return int(json.loads((root / PARTIAL).read_text())["num_classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_mask_store(root) -> bool:
    """Whether `root` holds a mask store, finished or left unfinished by an interrupted `iwu masks`."""
    root = Path(root)
    return (root / INDEX).exists() or _partial_classes(root) is not None


class MaskWriter:
    """Adds masks to a store folder; ``close()`` (or leaving the ``with``) writes ``masks.json``.

    Adding to a folder that already holds a store of the same class count
    keeps its masks (an item added again is replaced). Leaving the ``with``
    block through an exception writes no new ``masks.json``; the folder stays
    marked as an unfinished store, which the same command finishes.
    """

    def __init__(self, root, num_classes: int):
        self.root = Path(root)
        if int(num_classes) < 2:
            raise UserError(f"{self.root}: masks need at least 2 classes, got {num_classes}")
        self.num_classes = int(num_classes)
        self.scale = mask_scale(self.num_classes)
        if (self.root / INDEX).exists():
            existing = _read_index(self.root)["num_classes"]
        else:  # new, or an unfinished store of an interrupted run: mark it ours until masks.json is written
            existing = _partial_classes(self.root)
            if existing is None:
                self.root.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.root / PARTIAL, {"num_classes": self.num_classes})
                existing = self.num_classes
        if existing != self.num_classes:
            raise UserError(
                f"{self.root}: holds masks for {existing} classes, not {self.num_classes}; "
                "choose another --out folder or delete this one"
            )
        self.closed = False

    def add(self, name: str, u: np.ndarray | torch.Tensor) -> Path:
        """Quantise one (H,W) uncertainty map and write it atomically as ``<name>.png``."""
        if self.closed:
            raise ValueError(f"{self.root}: mask writer is closed")
        path = _mask_path(self.root, name)
        u = _as_array(u)
        if u.ndim != 2 or 0 in u.shape:
            raise ValueError(f"mask for item {name!r}: expected a non-empty (H,W) map, got shape {u.shape}")
        if not np.isfinite(u).all():
            raise ValueError(f"mask for item {name!r}: contains NaN or infinite values")
        q = np.rint(np.clip(u, 0.0, math.log(self.num_classes)) / self.scale).astype(np.uint16)
        buffer = io.BytesIO()
        Image.fromarray(q).save(buffer, format="PNG")
        return atomic_write_bytes(path, buffer.getvalue())

    def close(self) -> None:
        """Write ``masks.json`` with the number of masks now in the folder (idempotent)."""
        if self.closed:
            return
        count = sum(1 for p in self.root.rglob("*.png") if p.is_file())
        meta = {"format": FORMAT, "num_classes": self.num_classes, "scale": self.scale, "count": count}
        atomic_write_json(self.root / INDEX, meta)
        (self.root / PARTIAL).unlink(missing_ok=True)
        self.closed = True

    def __enter__(self) -> MaskWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.closed = True  # a partial store stays unopenable


class MaskStore:
    """Reads masks back as float32 ``(B,H,W)`` batches, keyed by dataset item name."""

    def __init__(self, root):
        self.root = Path(root)
        meta = _read_index(self.root)
        self.num_classes: int = meta["num_classes"]
        self.scale: float = float(meta["scale"])
        self.count: int = meta["count"]

    def __len__(self) -> int:
        return self.count

    def __contains__(self, name) -> bool:
        try:
            return _mask_path(self.root, name).is_file()
        except MaskNameError:
            return False

    def __repr__(self) -> str:
        return f"MaskStore({str(self.root)!r}, num_classes={self.num_classes}, count={self.count})"

    def _read(self, name: str, size: tuple[int, int]) -> np.ndarray:
        """The quantised mask at ``size = (H, W)``, resized with PIL's NEAREST as the labels are."""
        path = _mask_path(self.root, name)
        try:
            with Image.open(path) as img:
                img.load()
                if img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.NEAREST)
                q = np.asarray(img)
        except FileNotFoundError:
            raise UserError(
                f"{self.root}: no mask for item {name!r}; recompute masks for this dataset with iwu masks"
            ) from None
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise UserError(f"{path}: unreadable mask ({reason}); recompute masks with iwu masks") from None
        if q.ndim != 2:
            raise UserError(f"{path}: mask has shape {q.shape}; expected one 16-bit channel")
        return q

    def load(self, names: Sequence[str], size: tuple[int, int], device=None) -> torch.Tensor:
        """Masks of ``names`` as float32 (B,H,W), each resized (nearest) to ``size = (H, W)``."""
        if isinstance(names, str):
            names = [names]
        size = (int(size[0]), int(size[1]))
        out = np.empty((len(names), *size), dtype=np.float32)
        for i, name in enumerate(names):
            q = self._read(name, size)
            out[i] = q.astype(np.float64) * self.scale
        masks = torch.from_numpy(out)
        return masks if device is None else masks.to(device)
