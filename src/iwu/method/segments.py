"""Per-segment features and IoU targets of an ensemble's prediction, for meta classification (docs/segments.md).

A *segment* is an instance of the method (`iwu.method.uncertainty`): an
8-connected component (by default) of one predicted class of the ensemble's
mean prediction in one image. For every segment this module computes, in one
pass of sums over the segment labels (``bincount``; no loop over segments):

- sizes: ``size`` (S, its pixels), ``size_in`` (S_in, its inner pixels),
  ``size_bd`` (S_bd, its boundary pixels). A *boundary* pixel is a pixel of the
  segment with at least one of its 8 neighbours outside the segment or outside
  the image; every other pixel of the segment is *inner*. S = S_in + S_bd and
  S_bd >= 1 (a segment's first pixel in raster order always has a neighbour
  outside it).
- relative sizes: ``size_rel`` = S / S_bd, ``size_in_rel`` = S_in / S_bd.
- for each pixel measure D of ``entropy`` (the entropy of the mean prediction
  divided by log C, so in [0, 1]) and ``margin`` (the probability margin
  ``1 - p1 + p2`` of its two largest class probabilities): the mean over the
  segment (``entropy``), over its inner pixels (``entropy_in``; 0 when it has
  none), over its boundary pixels (``entropy_bd``), and the relative versions
  ``entropy_rel`` = (sum of D over the segment) / S_bd and
  ``entropy_in_rel`` = (sum of D over the inner pixels) / S_bd.
- the ensemble's own measures: ``mutual_information`` (its mean over the
  segment) and ``instance_uncertainty``: the mean of the method's pixel entropy
  (not normalised) over the segment, the value `instance_uncertainty` gives
  each of its pixels.
- ``prob_<c>``: the mean probability of class c over the segment, per class.

Beside the features: the segment's predicted class, and its IoU with the
ground truth: for a segment k of class c, G is the union of the ground-truth
connected components of class c (same connectivity) that share a pixel with k,
and IoU = |k ∩ G| / |k ∪ G|, ignored pixels left out of k (G holds none). A
segment lying entirely on ignored pixels has no target: its IoU is NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from iwu.constants import IGNORE_INDEX
from iwu.method.uncertainty import label_instances, mutual_information, pixel_entropy

MEASURES = ("entropy", "margin")  # the pixel measures averaged over the whole, inner and boundary pixels
SIZES = ("size", "size_in", "size_bd", "size_rel", "size_in_rel")
ENSEMBLE_MEASURES = ("mutual_information", "instance_uncertainty")


def feature_names(num_classes: int) -> tuple[str, ...]:
    """The feature columns of `segment_table`, in order, for `num_classes` classes."""
    per_measure = tuple(f"{m}{part}" for m in MEASURES for part in ("", "_in", "_bd", "_rel", "_in_rel"))
    return (*SIZES, *per_measure, *ENSEMBLE_MEASURES, *(f"prob_{c}" for c in range(num_classes)))


class Segments(NamedTuple):
    """The segments of a batch, one entry per segment, ordered by image, then by the raster position of
    their first pixel (so ``segment`` numbers them 0, 1, ... in that order within each image)."""

    image: torch.Tensor  # (N,) int64: the image's index in the batch
    segment: torch.Tensor  # (N,) int64: the segment's number within its image
    cls: torch.Tensor  # (N,) int64: its predicted class
    features: dict  # name (feature_names) -> (N,) float64
    iou: torch.Tensor  # (N,) float64: its IoU with the ground truth; NaN without target (or without labels)


def boundary_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B,H,W) bool: pixels with at least one of their 8 neighbours in another segment or outside the image."""
    b, h, w = labels.shape
    padded = torch.nn.functional.pad(labels.long(), (1, 1, 1, 1), value=-1)  # -1: no segment's label
    boundary = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                boundary |= padded[:, 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w] != labels
    return boundary


def _dense(labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Labels renumbered 0..N-1 in the order of their values (flat, int64), and N. Both labeling back-ends
    name a segment by a value that grows with the raster position of its first pixel, batch-wide."""
    flat = labels.reshape(-1).long()
    used = torch.bincount(flat) > 0
    rank = used.cumsum(0) - 1
    return rank.index_select(0, flat), int(used.sum())


def segment_ids(pred: torch.Tensor, *, connectivity: int = 8, backend: str = "auto") -> tuple[torch.Tensor, int]:
    """(B,H,W) int64: each pixel's segment as the row of `segment_table` for the same prediction (numbered
    0..N-1 over the batch), and N."""
    labels, _ = label_instances(pred, connectivity=connectivity, backend=backend)
    index, n = _dense(labels)
    return index.view(pred.shape), n


def _sums(index: torch.Tensor, n: int, values: torch.Tensor) -> torch.Tensor:
    return torch.bincount(index, weights=values.reshape(-1).double(), minlength=n)


def _margin(probs: torch.Tensor) -> torch.Tensor:
    top = probs.topk(2, dim=1).values
    return 1 - top[:, 0] + top[:, 1]


def segment_table(member_probs: torch.Tensor, target: torch.Tensor | None = None, *, connectivity: int = 8,
                  ignore_index: int = IGNORE_INDEX, backend: str = "auto") -> Segments:
    """The segments of the ensemble's prediction for probabilities (M,B,C,H,W) of M members, with their
    features and, given ground-truth labels ``target`` (B,H,W), their IoU (module docstring)."""
    if member_probs.dim() != 5:
        raise ValueError(f"segment_table expects member probabilities (M,B,C,H,W), got {tuple(member_probs.shape)}")
    num_classes = member_probs.shape[2]
    if num_classes < 2:
        raise ValueError("segment features need at least two classes (the margin takes the two largest)")
    with torch.no_grad():
        probs = member_probs.mean(dim=0)
        pred = probs.argmax(dim=1)
        ids, n = segment_ids(pred, connectivity=connectivity, backend=backend)
        index = ids.reshape(-1)
        inner = (~boundary_mask(ids)).reshape(-1).double()

        size = torch.bincount(index, minlength=n).double()
        size_in = _sums(index, n, inner)
        size_bd = size - size_in  # >= 1 (docstring)
        features = {"size": size, "size_in": size_in, "size_bd": size_bd,
                    "size_rel": size / size_bd, "size_in_rel": size_in / size_bd}
        entropy = pixel_entropy(probs)
        for name, values in (("entropy", entropy / math.log(num_classes)), ("margin", _margin(probs))):
            whole = _sums(index, n, values)
            in_sum = _sums(index, n, values.reshape(-1) * inner)
            features.update({name: whole / size, f"{name}_in": in_sum / size_in.clamp_min(1),
                             f"{name}_bd": (whole - in_sum) / size_bd,
                             f"{name}_rel": whole / size_bd, f"{name}_in_rel": in_sum / size_bd})
        features["mutual_information"] = _sums(index, n, mutual_information(member_probs)) / size
        features["instance_uncertainty"] = _sums(index, n, entropy) / size
        for c in range(num_classes):
            features[f"prob_{c}"] = _sums(index, n, probs[:, c]) / size

        # any pixel of a segment tells its image and class (scatter: all of them write the same value)
        b, h, w = pred.shape
        image = torch.arange(b, device=pred.device).repeat_interleave(h * w)
        seg_image = torch.zeros(n, dtype=torch.long, device=pred.device).scatter_(0, index, image)
        seg_class = torch.zeros(n, dtype=torch.long, device=pred.device).scatter_(0, index, pred.reshape(-1))
        per_image = torch.bincount(seg_image, minlength=b)
        first = per_image.cumsum(0) - per_image
        segment = torch.arange(n, device=pred.device) - first.index_select(0, seg_image)
        iou = (segment_iou(index, n, pred, target, connectivity=connectivity, ignore_index=ignore_index,
                           backend=backend) if target is not None
               else torch.full((n,), float("nan"), dtype=torch.float64, device=pred.device))
    return Segments(seg_image, segment, seg_class, features, iou)


def segment_iou(index: torch.Tensor, n: int, pred: torch.Tensor, target: torch.Tensor, *,
                connectivity: int = 8, ignore_index: int = IGNORE_INDEX, backend: str = "auto") -> torch.Tensor:
    """(n,) float64: the IoU of each predicted segment (``index``: its number per pixel, flat) with the union
    G of the ground-truth components of its class that it touches; NaN for a segment on ignored pixels only.

    |k ∩ G| is the number of pixels of k whose label is k's class (each lies in a component of G by
    definition), |G| the summed sizes of the distinct components those pixels lie in, and
    |k ∪ G| = |k without ignored pixels| + |G| - |k ∩ G|.
    """
    if tuple(target.shape) != tuple(pred.shape):
        raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(pred.shape)} differ in shape")
    target = target.to(pred.device)
    gt_labels, _ = label_instances(target.long(), connectivity=connectivity, backend=backend)
    gt_flat = gt_labels.reshape(-1).long()
    gt_slots = int(gt_flat.max()) + 1 if gt_flat.numel() else 1
    gt_size = torch.bincount(gt_flat, minlength=gt_slots).double()

    labeled = (target != ignore_index).reshape(-1)
    hit = labeled & (target.reshape(-1).long() == pred.reshape(-1))
    size_labeled = torch.bincount(index[labeled], minlength=n).double()
    intersection = torch.bincount(index[hit], minlength=n).double()
    # each (segment, component) pair that shares a pixel once: the components that make up G
    pairs = torch.unique(index[hit] * gt_slots + gt_flat[hit])
    g = torch.bincount(pairs // gt_slots, weights=gt_size.index_select(0, pairs % gt_slots), minlength=n)
    union = size_labeled + g - intersection
    iou = intersection / union
    return torch.where(size_labeled > 0, iou, torch.full_like(iou, float("nan")))
