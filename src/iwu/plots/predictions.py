"""What an ensemble predicts for images: the segmentation with a legend of its classes, the uncertainty
heat maps with a colour bar from 0 to log C (the largest entropy of C classes), and side-by-side panels.

The maps come from `iwu.inference.prediction` and `iwu.sweep.demo`; colours from `iwu.plots.colours`.

A figure of one map names the run in a title wrapped to fit, however small the image: over the image,
left of the legend, for the segmentation; over the whole figure for a heat map (its colour bar's width
follows the map's height, so a title over the map alone would wrap to a width the layout has not
settled yet).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from iwu.constants import IGNORE_INDEX
from iwu.plots import plain_text, save_png
from iwu.plots.colours import colorize
from iwu.plots.segments import outline_flagged

CMAP = "inferno"
DPI = 100
UNCERTAINTIES = {"entropy": "pixel entropy", "instance": "instance uncertainty"}  # map key -> what it shows
MAX_LEGEND = 25  # classes named in a legend; the rarest beyond it are left out
LEGEND_INCHES = 1.2  # added to a figure's width for its legend, so the image and its title keep theirs


def _side(width: int, height: int) -> tuple[float, float]:
    """Inches of an image shown at about one figure pixel per image pixel, kept between 4 and 16 wide."""
    inches = min(max(width / DPI, 4.0), 16.0)
    return inches, inches * height / width


def class_patches(preds, classes, palette, ignore_index: int = IGNORE_INDEX) -> list[Patch]:
    """Legend entries of the classes present in `preds` (arrays of class ids), the most frequent first."""
    ids = np.concatenate([np.asarray(p).ravel() for p in preds])
    counts = np.bincount(ids[ids != ignore_index].astype(np.int64), minlength=len(classes))[: len(classes)]
    present = [c for c in np.argsort(-counts, kind="stable") if counts[c] > 0][:MAX_LEGEND]
    return [Patch(color=np.asarray(palette[c]) / 255, label=str(classes[c])) for c in present]


def _legend(fig: Figure, patches: list[Patch]) -> None:
    if patches:
        fig.legend(handles=patches, loc="outside right upper", fontsize="small", title="classes")


def _scale_label(classes: int) -> str:
    return f"nats, 0 to log {classes} = {math.log(classes):.2f}"


def segmentation_figure(pred: np.ndarray, classes, palette, title: str = "", image: np.ndarray | None = None) -> Figure:
    """The predicted classes (H,W) in `palette`, over `image` (H,W,3 uint8) half-transparent when given,
    with a legend of the classes present; `title` over the image, wrapped to the image's column."""
    shown = colorize(pred, palette)
    if image is not None:
        shown = (0.5 * np.asarray(image, np.float32) + 0.5 * shown).astype(np.uint8)
    patches = class_patches([pred], classes, palette)
    width, height = _side(pred.shape[1], pred.shape[0])
    fig = Figure(figsize=(width + (LEGEND_INCHES if patches else 0.0), height), layout="constrained", dpi=DPI)
    ax = fig.subplots()
    ax.imshow(shown, interpolation="nearest")
    ax.set_axis_off()
    # wrapped to twice the distance from the image's centre to the figure's nearer edge: the image's
    # column, left of the legend
    ax.set_title(title, fontsize="medium", wrap=True)
    _legend(fig, patches)
    return plain_text(fig)


def uncertainty_figure(values: np.ndarray, classes: int, what: str = "pixel entropy", title: str = "") -> Figure:
    """A heat map of `values` (H,W) on the fixed scale 0..log `classes`, with its colour bar; `title` over
    the figure, wrapped to its width."""
    fig = Figure(figsize=_side(values.shape[1], values.shape[0]), layout="constrained", dpi=DPI)
    ax = fig.subplots()
    shown = ax.imshow(values, cmap=CMAP, vmin=0.0, vmax=math.log(classes))
    ax.set_axis_off()
    fig.colorbar(shown, ax=ax, label=f"{what}, {_scale_label(classes)}", shrink=0.9)
    if title:
        fig.suptitle(title, fontsize="medium", wrap=True)
    return plain_text(fig)


def panel_figure(rows: list[dict], classes, palette, title: str = "") -> Figure:
    """One row per image, side by side: the image, its labels (when the rows have ``label``), the prediction,
    the pixel entropy and the instance uncertainty; one legend of the classes and one colour bar, 0 to log C.

    A row holds ``image`` (H,W,3: uint8, or floats in [0, 1]), ``pred`` and optionally ``label`` (H,W class
    ids), ``entropy`` and ``instance`` (H,W), and optionally ``flags``: (each pixel's segment (H,W), each
    segment's probability of IoU 0), outlined on the prediction where flagged (`outline_flagged`).
    """
    top = math.log(len(classes))
    labelled = all("label" in r for r in rows)
    names = ["image", *(["labels"] if labelled else []), "prediction", *UNCERTAINTIES.values()]
    height, width = np.asarray(rows[0]["pred"]).shape
    side = min(max(3.2 * width / max(height, width), 2.4), 4.0)
    fig = Figure(figsize=(side * len(names) + 2.5, side * height / width * len(rows) + 0.8), layout="constrained",
                 dpi=DPI)
    axes = fig.subplots(len(rows), len(names), squeeze=False)
    for axes_row, row in zip(axes, rows):
        maps = [row["image"], *([colorize(row["label"], palette)] if labelled else []), colorize(row["pred"], palette)]
        for ax, shown in zip(axes_row, maps):
            ax.imshow(shown, interpolation="nearest")
        if "flags" in row:  # the segments a meta classifier flags, outlined on the prediction
            outline_flagged(axes_row[len(maps) - 1], *row["flags"])
        for ax, key in zip(axes_row[len(maps):], UNCERTAINTIES):
            heat = ax.imshow(np.asarray(row[key]), cmap=CMAP, vmin=0.0, vmax=top)
        for ax in axes_row:
            ax.set_axis_off()
    for ax, name in zip(axes[0], names):
        ax.set_title(name, fontsize="medium")
    fig.colorbar(heat, ax=axes[:, -2:].ravel().tolist(), label=f"uncertainty, {_scale_label(len(classes))}",
                 location="bottom", shrink=0.8)
    ids = [r["pred"] for r in rows] + ([r["label"] for r in rows] if labelled else [])
    _legend(fig, class_patches(ids, classes, palette))
    if title:
        fig.suptitle(title)
    return plain_text(fig)


def save_segmentation(path, pred, classes, palette, title: str = "", image=None) -> Path:
    """`segmentation_figure` written to `path` as a PNG, atomically."""
    return save_png(segmentation_figure(pred, classes, palette, title, image), path, dpi=DPI)


def save_uncertainty(path, values, classes: int, what: str = "pixel entropy", title: str = "") -> Path:
    """`uncertainty_figure` written to `path` as a PNG, atomically."""
    return save_png(uncertainty_figure(values, classes, what, title), path, dpi=DPI)


def save_panel(path, rows: list[dict], classes, palette, title: str = "") -> Path:
    """`panel_figure` written to `path` as a PNG, atomically."""
    return save_png(panel_figure(rows, classes, palette, title), path, dpi=DPI)
