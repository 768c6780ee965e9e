"""`iwu prepare`: cache the splits of a dataset and show its class proportions, or `--check` it."""

from __future__ import annotations

import sys
from pathlib import Path

from iwu.data.cache import cache_dir, cache_root_dir, is_fresh, prepare_cache
from iwu.data.checks import check_dataset
from iwu.data import kinds
from iwu.data.sources import build_dataset, parse_data_spec
from iwu.data.class_counts import COUNTS_FILE, format_proportions, read_class_counts
from iwu.errors import UserError


def parse_splits(text: str) -> list[str]:
    splits = [s.strip() for s in str(text).split(",") if s.strip()]
    if not splits:
        raise UserError(f"--split {text!r}: give split names, e.g. train,val")
    return splits


def run_check(source: dict, splits: list[str], workers: int = 0) -> int:
    """Print every problem (stdout, one line each); 1 if there were any, else 0."""
    counts, problems = check_dataset(source, splits, workers)
    for line in problems:
        print(line)
    found = ", ".join(f"{n} pairs in {s}" for s, n in counts.items())
    if problems:
        print(f"iwu prepare: {len(problems)} problems in {source['kind']}:{source['root']} ({found})", file=sys.stderr)
        return 1
    print(f"ok: {source['kind']}:{source['root']} has {found}")
    return 0


def run_prepare(data: str, size: int = 768, splits: str = "train,val", check: bool = False,
                cache_dir=None, workers: int = 0, rebuild: bool = False) -> int:
    source = parse_data_spec(data)
    split_list = parse_splits(splits)
    if check:
        return run_check(source, split_list, workers)
    for split in split_list:
        dataset = build_dataset(source, split, size)
        directory = prepare_cache(dataset, cache_dir, workers, rebuild=rebuild)
        print(f"{source['kind']} {split}: {len(dataset)} images at {size}x{size} cached in {directory}")
        if split == "train" or len(split_list) == 1:
            record = read_class_counts(directory)
            print(f"\nclass proportions of {split} (labelled pixels; {record['ignored']} ignored):")
            print(format_proportions(record["classes"], record["counts"]))
            print(f"class counts in {directory / COUNTS_FILE} (for iwu report --class-counts)\n")
    return 0


def class_counts_file(text: str, cache_root=None) -> Path:
    """A class_counts.json (or its folder) as given, or for a dataset (`acdc:ROOT`, as --data takes it) the one
    `iwu prepare` wrote beside its training split's store.

    Counting a split means decoding all of it, so a dataset without an up-to-date store is an error naming the
    `iwu prepare` command that makes one, not a silent pass over the data. Of stores at several sizes the largest
    is read: its counts are the nearest to those at full resolution.
    """
    if Path(text).exists() or str(text).partition(":")[0] not in kinds.KINDS:
        return Path(text)
    source = parse_data_spec(text)
    root = cache_root_dir(cache_root)
    prefix = f"{source['kind']}-train-"  # the stores' folders: <kind>-<split>-<size>-<key>
    sizes = {d.name.removeprefix(prefix).split("-")[0] for d in root.glob(f"{prefix}*")}
    for size in sorted((int(s) for s in sizes if s.isdigit()), reverse=True):
        dataset = build_dataset(source, "train", size)
        if is_fresh(dataset, cache_dir(dataset, cache_root)):
            return cache_dir(dataset, cache_root) / COUNTS_FILE
    raise UserError(f"{text}: no up-to-date store of its train split in {root} to count classes from; make one "
                    f"with `iwu prepare --data {text} --split train` (prepared under --cache-dir D: IWU_CACHE=D)")
