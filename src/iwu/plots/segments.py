"""How well uncertainty flags wrong segments (`iwu evaluate --segments`): segment IoU against instance
uncertainty as a 2-D histogram, beside the ROC curves of the meta classifiers (docs/segments.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from iwu.plots import plain_text, save_png

BINS = 20


def segments_figure(uncertainty, iou, curves: dict, title: str = ""):
    """Left: segments counted per (instance uncertainty, IoU) bin, IoU in [0, 1] on the y axis. Right: each
    of ``curves`` ({label: (false positive rates, true positive rates, AUROC)}) as a ROC curve of finding
    the segments with IoU 0, labelled ``<label> (AUROC 0.xxx)``, beside the diagonal of chance."""
    uncertainty, iou = np.asarray(uncertainty, np.float64), np.asarray(iou, np.float64)
    fig = Figure(figsize=(12, 5), layout="constrained")
    hist_ax, roc_ax = fig.subplots(1, 2)
    if len(iou):
        high = max(float(uncertainty.max()), 1e-6)
        counts, _, _, image = hist_ax.hist2d(uncertainty, iou, bins=(BINS, BINS), range=((0, high), (0, 1)),
                                             cmin=1, cmap="viridis")
        fig.colorbar(image, ax=hist_ax, label="segments")
    else:
        hist_ax.text(0.5, 0.5, "no segment with a ground truth", ha="center", va="center",
                     transform=hist_ax.transAxes)
    hist_ax.set(xlabel="instance uncertainty (mean entropy over the segment)", ylabel="segment IoU",
                ylim=(0, 1), title=f"segment IoU against instance uncertainty ({len(iou)} segments)")

    roc_ax.plot([0, 1], [0, 1], "--", color="0.5", linewidth=1, label="chance")
    for label, (fpr, tpr, auroc) in curves.items():
        roc_ax.plot(fpr, tpr, linewidth=2, label=f"{label} (AUROC {auroc:.3f})")
    roc_ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (right segments flagged)",
               ylabel="true positive rate (segments with IoU 0 flagged)", title="meta classification: IoU = 0")
    roc_ax.legend(loc="lower right", fontsize="small")
    for ax in (hist_ax, roc_ax):
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    return plain_text(fig)


def save_segments_figure(uncertainty, iou, curves: dict, path, title: str = "") -> Path:
    """`segments_figure` written to ``path`` as a PNG, atomically."""
    return save_png(segments_figure(uncertainty, iou, curves, title), path)


FLAG_COLOUR = (1.0, 0.0, 0.0)
MAX_TEXTS = 12  # probabilities written on the largest flagged segments only: more would hide the image


def outline_flagged(ax, ids, probability, threshold: float = 0.5) -> int:
    """Outline on `ax` (over whatever it shows, pixel for pixel) the segments whose probability of IoU 0
    is at least `threshold`, and write that probability on the MAX_TEXTS largest of them.

    `ids` (H,W): each pixel's segment, the row of `probability` (N,) that holds its probability, as
    `iwu.method.segments.segment_ids` numbers them. The outline is each flagged segment's boundary pixels
    (`iwu.method.segments.boundary_mask`). Returns the number of segments flagged."""
    import torch

    from iwu.method.segments import boundary_mask

    ids = np.asarray(ids, np.int64)
    probability = np.asarray(probability, np.float64)
    flagged = probability >= threshold
    edge = boundary_mask(torch.from_numpy(ids)[None])[0].numpy() & flagged[ids]
    overlay = np.zeros((*ids.shape, 4))
    overlay[edge] = (*FLAG_COLOUR, 1.0)
    ax.imshow(overlay, interpolation="nearest")
    size = np.bincount(ids.ravel(), minlength=len(probability))
    ys, xs = np.indices(ids.shape)
    cy = np.bincount(ids.ravel(), weights=ys.ravel(), minlength=len(probability)) / np.maximum(size, 1)
    cx = np.bincount(ids.ravel(), weights=xs.ravel(), minlength=len(probability)) / np.maximum(size, 1)
    for k in sorted(np.flatnonzero(flagged), key=lambda k: (-size[k], k))[:MAX_TEXTS]:
        ax.text(cx[k], cy[k], f"{probability[k]:.2f}", color="white", fontsize="x-small", ha="center", va="center",
                bbox={"facecolor": FLAG_COLOUR, "alpha": 0.7, "pad": 1, "linewidth": 0})
    return int(flagged.sum())
