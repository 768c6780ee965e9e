"""A memory-mapped uint8 store of a resized split, so epochs skip PNG decoding.

One folder per (kind, root, split, size, conditions) under the cache root
(`$IWU_CACHE`, else `$XDG_CACHE_HOME/iwu` or `~/.cache/iwu`) holds

    images-<fp>.npy        N x S x S x 3 uint8 (PIL bilinear, as the PNG path)
    labels-<fp>.npy        N x S x S uint8 train ids (255 = ignore)
    class_counts.json      pixels per class of this split at size S, in all and per image
    manifest.json          identity, source fingerprint, names; written last

`<fp>` fingerprints the source files (paths, sizes, mtimes), so a changed
source gets new data files. Each file is written under a temporary name and
renamed when complete, and the manifest is the commit point: a reader sees the
old store or the new one, never a half-built one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from iwu.data.augment import as_pipeline
from iwu.data.common import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, Items, PairDataset, no_collate
from iwu.data.class_counts import COUNTS_FILE, write_class_counts
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_json, locked
from iwu.util.bars import bar

CACHE_VERSION = 2  # bump when resizing or the store format changes (2: per-image class counts)
MANIFEST = "manifest.json"
_STALE_TMP_S = 3600


def default_cache_root() -> Path:
    if os.environ.get("IWU_CACHE"):
        return Path(os.environ["IWU_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iwu"


def cache_root_dir(cache_root=None) -> Path:
    """The folder holding the stores: `cache_root` when given (--cache-dir, data.cache_dir), else the default."""
    return Path(cache_root).expanduser() if cache_root else default_cache_root()


def cache_dir(dataset: PairDataset, cache_root=None) -> Path:
    """The store's folder, keyed by a hash of the dataset's identity."""
    ident = dataset.identity()
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root_dir(cache_root) / f"{ident['kind']}-{ident['split']}-{ident['size']}-{key}"


def fingerprint(dataset: PairDataset) -> str:
    """Hash of every source file's path, size and mtime (and the version of this format)."""
    h = hashlib.sha256(f"iwu-cache-{CACHE_VERSION}\n".encode())
    files = [p for s in dataset.samples for p in (s.image, s.label)] + list(dataset.extra_sources)
    for path in files:
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_fresh(dataset: PairDataset, directory: Path) -> bool:
    m = read_manifest(directory)
    return bool(
        m
        and m.get("fingerprint") == fingerprint(dataset)
        and (directory / m["images"]).is_file()
        and (directory / m["labels"]).is_file()
    )


def prepare_cache(dataset: PairDataset, cache_root=None, workers: int = 0, rebuild: bool = False) -> Path:
    """The folder of an up-to-date store of `dataset`, building it when missing or stale."""
    directory = cache_dir(dataset, cache_root)
    try:
        # runs of a sweep, or the ranks of a DDP run, may prepare the same store at once: one builds it,
        # the others wait and find it fresh (two builders would each remove the other's files as stale)
        with locked(directory / ".lock"):
            if rebuild or not is_fresh(dataset, directory):
                _build(dataset, directory, fingerprint(dataset), workers)
    except OSError as err:  # a full disk or a read-only cache folder is the user's to fix, not a traceback
        where = err.filename or directory
        if err.errno in (errno.ENOENT, errno.ENOTDIR) and not Path(where).is_relative_to(directory.parent):
            raise UserError(f"{where}: {err.strerror}; a file the dataset lists cannot be opened (a broken link?); "
                            "`iwu prepare --check` lists every such file") from None
        raise UserError(f"{where}: {err.strerror or err}; free space or choose another cache folder "
                        "(--cache-dir, $IWU_CACHE)") from None
    return directory


class _Resized(torch.utils.data.Dataset):
    """The resized uint8 pairs of a dataset, for reading them in worker processes."""

    def __init__(self, dataset: PairDataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset.read(index)


def _tmp_name(directory: Path, name: str) -> Path:
    return directory / f".{name}.{os.getpid()}-{time.monotonic_ns()}.tmp"


def _remove_stale(directory: Path, keep: set[str]) -> None:
    """Data files of older fingerprints, and temporaries that a crashed build left behind."""
    now = time.time()
    for path in directory.iterdir():
        if path.name.endswith(".tmp") and now - path.stat().st_mtime > _STALE_TMP_S:
            path.unlink(missing_ok=True)
        elif path.suffix == ".npy" and path.name not in keep:
            path.unlink(missing_ok=True)  # open memmaps elsewhere keep their data (POSIX)


def _reserve(path: Path) -> None:
    """Give a new memmap file its disk blocks now. The file is sparse until written, and a write through a
    mapping that finds the disk full is a SIGBUS that kills the process without a word; reserving turns a
    full disk into an OSError (ENOSPC) here, before any image is decoded."""
    size = path.stat().st_size
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    elif shutil.disk_usage(path.parent).free < size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _build(dataset: PairDataset, directory: Path, fp: str, workers: int) -> None:
    if len(dataset) == 0:
        raise UserError(f"{dataset.root}: split {dataset.split} has no images to cache")
    directory.mkdir(parents=True, exist_ok=True)
    n, s = len(dataset), dataset.size
    names = {"images": f"images-{fp}.npy", "labels": f"labels-{fp}.npy"}
    tmp = {k: _tmp_name(directory, v) for k, v in names.items()}
    try:
        images = np.lib.format.open_memmap(tmp["images"], mode="w+", dtype=np.uint8, shape=(n, s, s, 3))
        labels = np.lib.format.open_memmap(tmp["labels"], mode="w+", dtype=np.uint8, shape=(n, s, s))
        for path in tmp.values():
            _reserve(path)
        counts = np.zeros(256, dtype=np.int64)
        per_image = np.zeros((n, dataset.num_classes), dtype=np.int64)  # for rare-class sampling
        loader = torch.utils.data.DataLoader(_Resized(dataset), batch_size=None, num_workers=workers, collate_fn=no_collate)
        desc = f"caching {dataset.kind} {dataset.split} at {s}"
        for i, (image, label) in enumerate(bar(loader, total=n, desc=desc, unit="img")):
            images[i], labels[i] = image, label
            in_image = np.bincount(label.ravel(), minlength=256)
            counts += in_image
            per_image[i] = in_image[: dataset.num_classes]
        images.flush(), labels.flush()
        del images, labels
        for key in names:
            os.replace(tmp[key], directory / names[key])
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    write_class_counts(directory / COUNTS_FILE, dataset.classes, counts[: dataset.num_classes], counts[IGNORE_INDEX],
                       per_image, split=dataset.split, size=s, fingerprint=fp)
    manifest = {"version": CACHE_VERSION, **dataset.identity(), "fingerprint": fp, "count": n,
                "classes": list(dataset.classes), "palette": [list(c) for c in dataset.palette],
                "mean": list(dataset.mean), "std": list(dataset.std),
                **names, "names": dataset.names}
    atomic_write_json(directory / MANIFEST, manifest)
    _remove_stale(directory, keep=set(names.values()))


class CachedDataset(Items):
    """Items of a prepared store, equal to the PNG path's items for the same dataset (augmented alike)."""

    def __init__(self, directory, augment=None):
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        if manifest is None:
            raise UserError(f"{self.directory / MANIFEST}: no prepared cache here; run `iwu prepare`")
        self.manifest = manifest
        self.kind, self.split, self.size = manifest["kind"], manifest["split"], manifest["size"]
        self.root = Path(manifest["root"])
        self.names = manifest["names"]
        self.classes = tuple(manifest["classes"])
        self.palette = tuple(tuple(c) for c in manifest["palette"])
        # stores written before the statistics were recorded hold ImageNet-normalised datasets
        self.mean = tuple(manifest.get("mean", IMAGENET_MEAN))
        self.std = tuple(manifest.get("std", IMAGENET_STD))
        self.augment = as_pipeline(augment)
        self._arrays = None  # opened lazily, once per worker process

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self):
        # workers map the files themselves; never pickle the mapped arrays
        return {**self.__dict__, "_arrays": None}

    def _open(self):
        if self._arrays is None:
            m = self.manifest
            self._arrays = tuple(np.load(self.directory / m[k], mmap_mode="r") for k in ("images", "labels"))
        return self._arrays

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._open()
        return np.array(images[index]), np.array(labels[index])

    def name_of(self, index: int) -> str:
        return self.names[index]


def open_cached(dataset: PairDataset, cache_root=None, workers: int = 0) -> CachedDataset:
    """The dataset's store, built first if missing or stale; keeps the dataset's augmentation."""
    return CachedDataset(prepare_cache(dataset, cache_root, workers), augment=dataset.augment)
