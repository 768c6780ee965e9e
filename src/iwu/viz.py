"""Colours and figures: segmentations in a palette, uncertainty as heat maps."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from iwu.data.common import IMAGENET_MEAN, IMAGENET_STD
from iwu.files import atomic_write_bytes


def colorize(label: np.ndarray, palette, ignore_index: int = 255) -> np.ndarray:
    """(H,W) class ids -> (H,W,3) uint8 colours; ignored and unknown ids are black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8)
    table[ignore_index] = 0
    return table[np.asarray(label).astype(np.uint8)]


def denormalize(image: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised (3,H,W) -> (H,W,3) floats in [0, 1] for display."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def save_uncertainty_figure(path, rows, palette) -> Path:
    """One row per image: image, label, prediction, pixel entropy, instance uncertainty.

    ``rows``: dicts with ``image`` (3,H,W normalised), ``label``, ``pred`` (H,W)
    and ``pixel``, ``instance`` (H,W) uncertainties. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("image", "label", "ensemble prediction", "pixel entropy", "instance uncertainty")
    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3.1 * len(rows)), squeeze=False)
    top = max(float(max(r["pixel"].max(), r["instance"].max())) for r in rows) or 1.0
    for axes_row, row in zip(axes, rows):
        panels = (denormalize(row["image"]), colorize(row["label"], palette), colorize(row["pred"], palette))
        for ax, panel in zip(axes_row, panels):
            ax.imshow(panel)
        for ax, key in zip(axes_row[3:], ("pixel", "instance")):
            shown = ax.imshow(np.asarray(row[key]), cmap="inferno", vmin=0, vmax=top)
        fig.colorbar(shown, ax=axes_row[3:].tolist(), fraction=0.025)
    for ax, title in zip(axes[0], titles):
        ax.set_title(title)
    for ax in axes.flat:
        ax.axis("off")
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
