"""`iwu prepare`: cache the splits of a dataset and show its class proportions, or `--check` it."""

from __future__ import annotations

import sys

from iwu.data.cache import prepare_cache
from iwu.data.checks import check_dataset
from iwu.data.sources import build_dataset, parse_data_spec
from iwu.data.stats import format_proportions, read_class_counts
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
            print(format_proportions(record["classes"], record["counts"]) + "\n")
    return 0
