"""Images per second from the training DataLoader: memory-mapped cache vs decoding PNGs.

Writes synthetic Cityscapes-layout files at 2048x1024 to a temporary folder,
then runs the same training loader (768x768, batch 2, shuffle, drop_last, the
same workers) over the cache and over the PNGs (decode + resize per item), in
this process, and prints both rates and their ratio. The target (at least
10x) is for the loaders a training run gets by default: the cache read in the
main process (`cache_workers: 0`) against PNGs decoded by `num_workers: 2`.

    python benchmarks/data_loading.py [--images 24] [--workers 0,2] [--epochs 2]

One line per worker count: with workers, the cache path also pays for moving
float batches between processes, which shows on a machine with few cores.

Then the cost of augmentation per image: building items from the cached arrays
with and without a pipeline like the published code's (flip, scale 0.5-2, a
crop of the training size), in ms per image, and the cache loader's rate with it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from iwu.data import Cityscapes, open_cached, write_synthetic
from iwu.data.augment import ItemKey, check_augment
from iwu.data.common import make_item
from iwu.data.config import DataConfig

TARGET = 10.0


def images_per_second(dataset, batch_size: int, workers: int, epochs: int) -> float:
    """Rate over whole epochs of the training loader, not counting worker start-up (the first batch)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    seen, start = 0, None
    for _ in range(epochs):
        for batch in loader:
            if start is None:
                start = time.perf_counter()  # workers are up; time from here
                continue
            seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - start)


def published_like(size: int) -> list:
    return ["hflip", {"random_scale": {"min": 0.5, "max": 2.0}}, {"random_crop": {"size": size}}]


def ms_per_item(cached, augment, epochs: int) -> float:
    """Milliseconds to build one item from arrays already in memory: conversion, augmentation, normalisation."""
    arrays = [cached.read(i) for i in range(len(cached))]
    start = time.perf_counter()
    for epoch in range(epochs):
        for i, (image, label) in enumerate(arrays):
            make_item(image, label, "x", augment=augment, key=ItemKey(i, epoch))
    return 1000 * (time.perf_counter() - start) / (epochs * len(arrays))


def report_augmentation(cached, args) -> None:
    spec = published_like(args.size)
    augment = check_augment(spec, key="benchmark", size=args.size)
    plain, augmented = ms_per_item(cached, None, args.epochs), ms_per_item(cached, augment, args.epochs)
    print(f"augmentation {spec}, per {args.size}x{args.size} image (items from memory, one process):")
    print(f"  without {plain:.1f} ms, with {augmented:.1f} ms: +{augmented - plain:.1f} ms ({augmented / plain:.1f}x)")
    cached.augment = augment
    rate = images_per_second(cached, args.batch_size, DataConfig.cache_workers, args.epochs)
    print(f"  the cache loader with it ({DataConfig.cache_workers} workers): {rate:.1f} images/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="synthetic 2048x1024 training images")
    parser.add_argument("--size", type=int, default=768, help="training side")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", default="0,2", help="comma-separated loader worker counts to measure")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the data per measurement")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="iwu-bench-") as tmp:
        start = time.perf_counter()
        root = write_synthetic(Path(tmp) / "cityscapes", "cityscapes", n_train=args.images, n_val=0, size=2048)
        print(f"wrote {args.images} images at 2048x1024 in {time.perf_counter() - start:.1f} s")

        pngs = Cityscapes(root, "train", size=args.size)
        start = time.perf_counter()
        cached = open_cached(pngs, Path(tmp) / "cache", workers=max(workers))
        print(f"built the {args.size}x{args.size} cache in {time.perf_counter() - start:.1f} s (once per dataset)")

        print(f"training loader at {args.size}x{args.size}, batch {args.batch_size}, shuffle, drop_last, "
              f"{os.cpu_count()} CPUs, images/s:")
        print(f"  {'workers':>7}  {'cache':>8}  {'PNG':>8}  {'ratio':>6}")
        rates = {}
        for n in workers:
            rates[n] = (images_per_second(cached, args.batch_size, n, args.epochs),
                        images_per_second(pngs, args.batch_size, n, args.epochs))
            print(f"  {n:>7}  {rates[n][0]:8.1f}  {rates[n][1]:8.1f}  {rates[n][0] / rates[n][1]:5.1f}x")
        # What a training run gets: the DataModule reads the cache with `cache_workers` and
        # decodes PNGs with `num_workers`, each at its default.
        cache_n, png_n = DataConfig.cache_workers, DataConfig.num_workers
        if cache_n in rates and png_n in rates:
            ratio = rates[cache_n][0] / rates[png_n][1]
            verdict = "PASS" if ratio >= TARGET else "FAIL"
            print(f"{verdict} defaults (cache with {cache_n} workers vs PNG with {png_n}): {ratio:.1f}x "
                  f"(target >= {TARGET:.0f}x)")
        report_augmentation(cached, args)
    if cache_n in rates and png_n in rates:
        return 0 if ratio >= TARGET else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
