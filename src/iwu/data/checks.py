"""`iwu prepare --check`: every problem of a dataset at once, one line each.

The lines are the very messages the loaders raise (both go through
`list_*` for folders and pairing and `load_pair` for file contents), so what
`--check` lists is what training would have stopped on.
"""

from __future__ import annotations

import torch

from iwu.data.common import IGNORE_INDEX, Sample, load_pair, no_collate
from iwu.data.sources import list_samples
from iwu.util.bars import bar


class _PairProblems(torch.utils.data.Dataset):
    """Per pair: its problems, and whether its label has a pixel that is not ignore."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        _, values, problems = load_pair(sample)
        labeled = values is not None and bool((sample.labels.lut[values] != IGNORE_INDEX).any())
        return problems, labeled


def check_split(source: dict, split: str, workers: int = 0) -> tuple[int, list[str]]:
    """(number of pairs found, problems) for one split; decodes every file to find bad ones."""
    samples, problems = list_samples(source, split)
    loader = torch.utils.data.DataLoader(_PairProblems(samples), batch_size=None, num_workers=workers, collate_fn=no_collate)
    desc = f"checking {source['kind']} {split}"
    labeled = False
    for found, has_labels in bar(loader, total=len(samples), desc=desc, unit="pair"):
        problems += found
        labeled |= has_labels
    if samples and not labeled and not problems:
        problems.append(f"{source['root']}: the {split} split has no labeled pixel (every label is ignore): "
                        "nothing to learn from or score")
    return len(samples), problems


def check_dataset(source: dict, splits, workers: int = 0) -> tuple[dict[str, int], list[str]]:
    """Pairs per split and the problems of all splits."""
    counts, problems = {}, []
    for split in splits:
        counts[split], found = check_split(source, split, workers)
        problems += found
    return counts, list(dict.fromkeys(problems))  # a missing root is one problem, not one per split
