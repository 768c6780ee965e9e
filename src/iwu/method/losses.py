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


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    threshold: float = 0.7,
    min_kept: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Online hard example mining, as mmsegmentation's ``OhemCrossEntropy``: the mean cross-entropy over
    the labeled pixels kept, those whose softmax probability of their true class is below ``threshold``
    and, when fewer than ``min_kept`` are, the ``min_kept`` hardest (lowest true-class probability).

    A pixel is kept when ``p < threshold`` or ``p <= p_(k)``, ``p_(k)`` the k-th smallest true-class
    probability of the batch's labeled pixels, ``k = min_kept``. Without ties this is mmseg's rule (the
    threshold raised to the probability after the k-th smallest, pixels strictly below it). Two edges
    differ, so that at least ``min_kept`` are kept and never none: pixels tied with ``p_(k)`` are all kept
    (mmseg keeps none of a tie at its raised threshold, and no pixel at all when every one ties), and a
    batch with at most ``min_kept`` labeled pixels keeps them all (mmseg, clamping its index to the
    last, drops the easiest).

    ``min_kept`` counts per batch, as mmseg's: the whole (B,H,W) batch this loss is given, so each
    member's and each device's batch on its own under DDP. ``None``: a tenth of the batch's pixels,
    ``max(1, B*H*W // 10)``, labeled or not; mmseg's 100,000 for its batch of 2 crops of 512x1024
    (1,048,576 pixels) is 9.5% (the paper's batch of 2 x 768 x 768 keeps at least 117,964).

    Which pixels are kept is chosen without gradient; the gradient is the kept pixels' cross-entropy's.
    A batch without labeled pixels gives 0 (with a graph), not NaN.
    """
    _check(logits, target)
    if not 0 < threshold < 1:
        raise ValueError(f"OHEM threshold must be in (0, 1), got {threshold}")
    if min_kept is not None and min_kept < 1:
        raise ValueError(f"OHEM min_kept must be >= 1 or None, got {min_kept}")
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    with torch.no_grad():
        p = torch.exp(-ce.float())  # the true class's softmax probability (ignored pixels: 1, masked below)
        k = max(1, target.numel() // 10) if min_kept is None else min_kept
        # ignored pixels rank last, as +inf: with k beyond the labeled pixels the bar is inf and keeps them all
        ranked = p.where(valid, torch.inf).flatten()
        bar = ranked.kthvalue(min(k, ranked.numel())).values
        kept = valid & ((p < threshold) | (p <= bar))
    return (ce * kept).sum() / kept.sum().clamp_min(1)


def lovasz_softmax_loss(logits: torch.Tensor, target: torch.Tensor, *,
                        ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovasz-softmax (Berman et al. 2018), segmentation_models_pytorch's ``LovaszLoss`` in its multiclass
    mode: the Lovasz extension of the Jaccard loss of each class present in the batch's labels, on the
    softmax, averaged over those classes; ignored pixels take no part.

    Over the batch (smp's ``per_image=False``, its default and the original code's): each class's pixels
    of all the batch's images form one set, as the dataset mIoU this project reports pools a split's
    pixels; per image would average image IoUs, a different measure, and a class seen in one image of
    the batch would count as much as one covering both. Computed in float32. A batch without labeled
    pixels gives 0 (with a graph), not smp's empty tensor.
    """
    from segmentation_models_pytorch.losses import LovaszLoss

    _check(logits, target)
    if not bool((target != ignore_index).any()):
        return (logits * 0).sum()
    return LovaszLoss("multiclass", per_image=False, ignore_index=ignore_index)(logits.float(), target)


def recall_weights(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(C,) ``1 - recall_c`` of the batch's predictions (argmax of ``logits``), without gradient:
    the share of the labeled pixels of class c predicted as another class; 0 for a class absent from
    the labels (it has no pixels to weight)."""
    num_classes = logits.shape[1]
    with torch.no_grad():
        valid = target != ignore_index
        wrong = valid & (logits.argmax(dim=1) != target)
        # one extra bin, num_classes, takes the pixels not counted: no boolean indexing, no host sync
        labeled = torch.bincount(target.where(valid, num_classes).flatten(), minlength=num_classes + 1)
        missed = torch.bincount(target.where(wrong, num_classes).flatten(), minlength=num_classes + 1)
        return (missed[:num_classes] / labeled[:num_classes].clamp_min(1)).float()


def recall_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    normalize: str = "all",
) -> torch.Tensor:
    """Recall loss (Tian et al. 2022, "Striking the right balance: recall loss for semantic
    segmentation"): each pixel's cross-entropy weighted by ``1 - recall_c`` of its true class c
    (`recall_weights`), the recall of these logits' own predictions on this batch, without gradient.

    The paper's batch variant, as its code: the recall of the current batch alone, no moving average.
    The mean is over all B*H*W pixels, ignored ones adding 0, as the paper's code (``normalize="all"``);
    ``normalize="valid"`` divides by the labeled pixels instead.
    """
    _check(logits, target, normalize)
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    weight = recall_weights(logits, target, ignore_index=ignore_index)
    per_pixel = weight.to(ce.dtype)[target.where(target != ignore_index, 0)]  # ignored: any class, ce is 0
    return _mean(ce * per_pixel, target, ignore_index, normalize)
