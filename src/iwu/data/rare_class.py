"""What rare-class sampling draws from (DAFormer's RCS, Hoyer et al. 2022), from per-image class counts.

A draw picks a class c with probability proportional to exp((1 - f_c) / T), f_c the class's share of
the training pixels, then an image uniformly among those holding at least `min_pixels` of c. Only the
classes that at least one image holds that much of can be drawn, and f_c is the share among them.
A small T favours the rarest classes; a large one draws classes alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# DAFormer's threshold: 3000 pixels of a 512x512 crop (about 1.14% of it)
DAFORMER_MIN_PIXELS, DAFORMER_CROP = 3000, 512


def default_min_pixels(size: int) -> int:
    """DAFormer's share of a crop, of a size x size image: 6750 pixels at the default 768."""
    return max(1, round(DAFORMER_MIN_PIXELS * size * size / DAFORMER_CROP**2))


@dataclass(frozen=True)
class RareClassPlan:
    """The classes that can be drawn, their probabilities, and the images each is drawn from."""

    classes: np.ndarray  # (K,) class ids
    probabilities: np.ndarray  # (K,) float64, summing to 1
    holders: tuple[np.ndarray, ...]  # per class, the images holding at least min_pixels of it
    size: int  # images in the split

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` image indices: a class by its probability, then one of its holders uniformly, each draw."""
        probabilities = torch.as_tensor(self.probabilities, dtype=torch.float64)
        picked = torch.multinomial(probabilities, n, replacement=True, generator=generator)
        lengths = torch.tensor([len(h) for h in self.holders], dtype=torch.int64)
        starts = torch.cumsum(lengths, 0) - lengths
        flat = torch.as_tensor(np.concatenate(self.holders), dtype=torch.int64)
        uniform = torch.rand(n, generator=generator, dtype=torch.float64)
        within = (uniform * lengths[picked]).long().clamp(max=lengths[picked] - 1)
        return flat[starts[picked] + within]


def rare_class_plan(image_counts, temperature: float, min_pixels: int) -> RareClassPlan:
    """The plan for per-image class counts `image_counts` (N, C); a ValueError when no image holds
    `min_pixels` of any class (nothing could be drawn)."""
    counts = np.asarray(image_counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError(f"expected per-image class counts (N, C), got shape {counts.shape}")
    if temperature <= 0 or min_pixels < 1:
        raise ValueError(f"expected temperature > 0 and min_pixels >= 1, got {temperature} and {min_pixels}")
    eligible = counts >= min_pixels
    classes = np.flatnonzero(eligible.any(axis=0))
    if classes.size == 0:
        raise ValueError(f"no image holds {min_pixels} pixels of one class (the most: {int(counts.max())})")
    pixels = counts[:, classes].sum(axis=0).astype(np.float64)
    share = pixels / pixels.sum()
    logits = (1 - share) / temperature
    weights = np.exp(logits - logits.max())  # softmax: exp((1 - f) / T) overflows for small T
    holders = tuple(np.flatnonzero(eligible[:, c]) for c in classes)
    return RareClassPlan(classes, weights / weights.sum(), holders, counts.shape[0])
