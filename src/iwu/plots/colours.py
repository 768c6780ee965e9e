"""Colours for display: the ensemble's in every figure, class ids in a palette, normalised images back to
[0, 1]. The figures are `iwu.plots`."""

from __future__ import annotations

import numpy as np
import torch

from iwu.constants import IGNORE_INDEX
from iwu.data.common import IMAGENET_MEAN, IMAGENET_STD

# The ensemble's colour wherever a figure draws it beside its members, whatever their number: outside the
# colour cycle ("C0".."C9") the members are drawn in, so no member takes it.
ENSEMBLE_COLOUR = "black"


def colorize(label: np.ndarray, palette, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H,W) class ids -> (H,W,3) uint8 colours; ignored and unknown ids are black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8)
    table[ignore_index] = 0
    return table[np.asarray(label).astype(np.uint8)]


def denormalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """A normalised (3,H,W) image, by its dataset's `mean` and `std` -> (H,W,3) floats in [0, 1] for display."""
    mean = torch.tensor(mean).view(3, 1, 1)
    std = torch.tensor(std).view(3, 1, 1)
    return (image.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
