"""Segmentation metrics from confusion matrices.

A confusion matrix (rows: true class, columns: predicted class) accumulates
over a whole split in constant memory, and every IoU figure is read off it.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from iwu.constants import IGNORE_INDEX


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(C, C) int64 counts of (true, predicted) pairs over the non-ignored pixels."""
    return multiclass_confusion_matrix(
        pred.reshape(-1), target.reshape(-1), num_classes, ignore_index=ignore_index, validate_args=False
    ).long()


def confusion_matrices(preds, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(K, C, C) int64 confusion matrices of K predictions of the same target, in one `bincount`.

    Validation scores every member and the ensemble on every batch; one pass over
    the labels for all of them is several times faster than K separate matrices.
    """
    preds = torch.stack(list(preds)) if not torch.is_tensor(preds) else preds
    k = preds.shape[0]
    valid = target != ignore_index
    cells = target[valid] * num_classes + preds[:, valid]  # (K, N)
    cells = cells + torch.arange(k, device=cells.device).unsqueeze(1) * num_classes**2
    counts = torch.bincount(cells.reshape(-1), minlength=k * num_classes**2)
    return counts.view(k, num_classes, num_classes)


def iou_from_confusion(matrix: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-class IoU (NaN for a class absent from both truth and prediction) and their mean.

    A class never seen in the ground truth has no IoU to average, so it is NaN
    too even where it was predicted: mIoU averages the classes present.
    """
    matrix = matrix.double()
    hits = matrix.diag()
    truth = matrix.sum(1)
    union = truth + matrix.sum(0) - hits
    iou = torch.where(truth > 0, hits / union.clamp_min(1), torch.full_like(hits, float("nan")))
    present = ~iou.isnan()
    return iou, float(iou[present].mean()) if present.any() else float("nan")
