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
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from iwu.data import Cityscapes, open_cached, write_synthetic
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
            return 0 if ratio >= TARGET else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
