"""Per-class loss weights of mode `class_weighted` from the training split's pixel counts, as
`loss.class_weights` chooses (`iwu.engine.train`).

`inverse`, the default, is `iwu.method.losses.class_weights_from_counts`; the two here are normalised
as it is: a class with no pixels in training gets weight 0, not infinity, and the weights are scaled
so that their mean over all classes is 1. The scale changes nothing in training
(`class_weighted_cross_entropy` divides by the summed weights); it keeps the weights comparable.
"""

from __future__ import annotations

import numpy as np
import torch


def _checked(counts, ndim: int, what: str) -> torch.Tensor:
    counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if counts.dim() != ndim or counts.numel() == 0:
        raise ValueError(f"{what} must be a non-empty {ndim}-D array, got shape {tuple(counts.shape)}")
    if (counts < 0).any() or not torch.isfinite(counts).all():
        raise ValueError(f"{what} must be finite and non-negative")
    if counts.sum() == 0:
        raise ValueError(f"{what} are all zero: no labeled pixels to weight by")
    return counts


def _mean_one(weights: torch.Tensor) -> torch.Tensor:
    return (weights * (weights.numel() / weights.sum())).float()


def median_frequency_weights(image_counts) -> torch.Tensor:
    """Median frequency balancing (Eigen and Fergus 2015): ``w_c = median_f / f_c``.

    `image_counts` (N, C): labeled pixels of each class in each training image. ``f_c`` is class c's
    pixels over the labeled pixels of the images where c appears (their definition: a class seen in few
    images is not rare for that alone); the median is over the classes present. With ``f_c`` over all
    pixels instead the weights would be the inverse ones up to scale, which normalisation removes.
    """
    image_counts = _checked(image_counts, 2, "per-image class counts")
    pixels = image_counts.sum(dim=0)
    present = pixels > 0
    # the labeled pixels of the images holding each class: (N, C) presence against each image's total
    seen_in = ((image_counts > 0).to(torch.float64) * image_counts.sum(dim=1, keepdim=True)).sum(dim=0)
    frequency = pixels[present] / seen_in[present]
    weights = torch.zeros_like(pixels)
    # numpy's median: of an even number of classes the mean of the middle two (torch's takes the lower)
    weights[present] = float(np.median(frequency.numpy())) / frequency
    return _mean_one(weights)


def effective_number_weights(counts, beta: float) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): ``w_c = (1 - beta) / (1 - beta^n_c)``, n_c class c's pixels.

    `beta` in [0, 1): 0 weighs every present class alike, towards 1 the weights approach the inverse ones.
    """
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = _checked(counts, 1, "class counts")
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = (1 - beta) / (1 - beta ** counts[present])
    return _mean_one(weights)

