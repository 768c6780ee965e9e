"""Per-pixel losses of the method and of its baselines.

Every loss here averages per-pixel terms the way the published results did:
over *all* B*H*W pixels, ignored ones contributing 0 (``normalize="all"``).
``normalize="valid"`` divides by the non-ignored pixels instead, which keeps
the loss scale independent of how much of an image is unlabeled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iwu.constants import IGNORE_INDEX

NORMALIZE = ("all", "valid")


def _check(logits: torch.Tensor, target: torch.Tensor, normalize: str | None = None) -> None:
    if normalize is not None and normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}; got {normalize!r}")
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"expected logits (B,C,H,W) and target (B,H,W); got {tuple(logits.shape)} and {tuple(target.shape)}")


def _mean(per_pixel: torch.Tensor, target: torch.Tensor, ignore_index: int, normalize: str) -> torch.Tensor:
    if normalize == "all":
        return per_pixel.mean()
    valid = (target != ignore_index).sum().clamp_min(1)  # an all-ignored batch gives 0, not NaN
    return per_pixel.sum() / valid


def uncertainty_weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    uncertainty: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    normalize: str = "all",
    exponent: float = 2.0,
) -> torch.Tensor:
    """Mean of ``CE(logits, target) * (1 + U)^exponent`` (docs/method.md, section 1, step 7: exponent 2).

    ``uncertainty`` (B,H,W) is the instance (or pixel) uncertainty ``U``; it is
    a weight, so no gradient flows into it. Exponent 1 with a pixel uncertainty
    is U-CE's weighting.
    """
    _check(logits, target, normalize)
    if uncertainty.shape != target.shape:
        raise ValueError(f"uncertainty {tuple(uncertainty.shape)} must have the target's shape {tuple(target.shape)}")
    if exponent < 0:
        raise ValueError(f"exponent must be >= 0, got {exponent}")
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    weight = (1 + uncertainty.detach().to(ce.dtype)) ** exponent
    return _mean(ce * weight, target, ignore_index, normalize)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
              smooth: float = 1e-6) -> torch.Tensor:
    """Soft multi-class Dice loss, ``1 - mean_c (2 sum p_c y_c + s) / (sum p_c + sum y_c + s)``, over
    the classes present in the batch's labels; ignored pixels count for neither side."""
    _check(logits, target)
    probs = logits.float().softmax(dim=1)
    valid = (target != ignore_index).unsqueeze(1)
    onehot = F.one_hot(target.where(valid.squeeze(1), 0), logits.shape[1]).permute(0, 3, 1, 2).to(probs)
    probs, onehot = probs * valid, onehot * valid
    dims = (0, 2, 3)
    present = onehot.sum(dims) > 0
    if not present.any():  # nothing labeled: no Dice to learn from, and no NaN either
        return (logits * 0).sum()
    dice = (2 * (probs * onehot).sum(dims) + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    return 1 - dice[present].mean()


def class_weights_from_counts(counts) -> torch.Tensor:
    """Inverse-class-proportion weights from per-class pixel counts.

    ``w_c`` is proportional to ``1 / p_c`` and scaled so the mean weight over
    all classes is 1; a class with no pixels gets weight 0, not infinity.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"class counts must be a non-empty 1-D sequence, got shape {tuple(counts.shape)}")
    if (counts < 0).any() or not torch.isfinite(counts).all():
        raise ValueError("class counts must be finite and non-negative")
    if counts.sum() == 0:
        raise ValueError("class counts are all zero: no labeled pixels to weight by")
    present = counts > 0
    inverse = torch.zeros_like(counts)
    inverse[present] = counts.sum() / counts[present]
    return (inverse * (counts.numel() / inverse.sum())).float()


def class_weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Cross-entropy with per-class weights: ``sum w_y CE / sum w_y`` over valid pixels.

    This is ``torch.nn.CrossEntropyLoss(weight=...)``, the usual class-weighted
    baseline; its weighted mean keeps the loss scale of plain cross-entropy.
    """
    _check(logits, target)
    if weights.shape != (logits.shape[1],):
        raise ValueError(f"expected {logits.shape[1]} class weights, got shape {tuple(weights.shape)}")
    return F.cross_entropy(logits, target, weight=weights.to(logits), ignore_index=ignore_index)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    ignore_index: int = IGNORE_INDEX,
    normalize: str = "all",
) -> torch.Tensor:
    """Focal loss ``(1 - p_t)^gamma * CE``; gamma 0 is plain cross-entropy."""
    _check(logits, target, normalize)
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    p_t = torch.exp(-ce)  # ignored pixels have ce 0, so their term stays 0
    return _mean((1 - p_t) ** gamma * ce, target, ignore_index, normalize)
