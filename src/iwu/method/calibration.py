"""How good an ensemble's uncertainty is, over every pixel of a split in constant memory.

`UncertaintyMeter` measures calibration (ECE, classwise ECE, reliability
bins), how well uncertainty flags misclassified pixels (AUROC) and PAvPU
(patch accuracy versus patch uncertainty, Mukhoti & Gal). Each of them is
read off binned counts and sums that stay on the tensors' device, so a 500-image
split at 768x768 is measured from all of its 3e8 pixels, not a subsample, and
the state is a few hundred kilobytes however long the split is.

Every piece of state is a sum (int64 counts, float64 sums), so meters of
several processes combine by adding them: the meter is a `torchmetrics.Metric`
whose states reduce by sum under DDP, and `merge_state` adds another meter's in
one process. Its figure is `iwu.plots.reliability`.

Bins are left-open, ``(e_k, e_k+1]``, the first one closed at 0 (and catching
anything below), the last one catching anything above the top edge: a value
``> t`` for a threshold ``t`` on an edge is then exactly a value in the bins
above it. Confidence bins follow Guo et al. (2017), who bin the same way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics import Metric

from iwu.constants import IGNORE_INDEX
from iwu.method.uncertainty import mutual_information, pixel_entropy

KINDS = ("entropy", "mutual_information")
CHUNK = 1 << 24  # elements of (pixels x classes) binned at once: bounds the temporaries of one update


def _state_shapes(c: int, bins: int, unc_bins: int) -> dict:
    """Name -> (shape, dtype) of every sum the meter keeps."""
    shapes = {"calib_counts": ((bins, 2), torch.int64),  # [wrong, right] pixels per confidence bin
              "calib_conf": ((bins,), torch.float64),  # sum of confidence per bin
              "class_counts": ((c, bins, 2), torch.int64),  # [target != c, target == c] per bin of p_c
              "class_prob": ((c, bins), torch.float64)}  # sum of p_c per bin of p_c
    for kind in KINDS:
        shapes[f"{kind}_pixels"] = ((unc_bins, 2), torch.int64)  # [right, wrong] pixels per bin
        shapes[f"{kind}_sum"] = ((1,), torch.float64)  # sum over pixels
        shapes[f"{kind}_patches"] = ((unc_bins, 2), torch.int64)  # [inaccurate, accurate] patches per bin
        shapes[f"{kind}_patch_sum"] = ((1,), torch.float64)  # sum of patch means
    return shapes


class UncertaintyMeter(Metric):
    """Calibration, misclassification AUROC and PAvPU of ensemble probabilities, accumulated batch by batch.

    A `torchmetrics.Metric`: ``reset``, ``.to(device)``, ``merge_state`` and the
    sum over processes under DDP (every state is a sum) come from torchmetrics.
    ``bins`` equal-width confidence bins on [0, 1]; ``unc_bins`` equal-width
    uncertainty bins on [0, ``max_uncertainty``] (default log(C), the largest
    entropy, which bounds the mutual information too); PAvPU on non-overlapping
    ``patch`` x ``patch`` patches, a patch being accurate when at least
    ``accuracy_threshold`` of its valid pixels are right. ``uncertainty_threshold``
    (a number, or a mapping kind -> number) fixes the PAvPU threshold of
    `compute`; by default it is the mean patch uncertainty of the split.
    ``device``: where the state lives; by default that of the first update.
    Other keyword arguments go to `torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_classes: int, *, bins: int = 15, unc_bins: int = 1000, patch: int = 4,
                 accuracy_threshold: float = 0.5, uncertainty_threshold=None, ignore_index: int = IGNORE_INDEX,
                 max_uncertainty: float | None = None, device=None, **metric_kwargs):
        super().__init__(**metric_kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if bins < 1 or unc_bins < 1 or patch < 1:
            raise ValueError(f"bins, unc_bins and patch must be positive, got {bins}, {unc_bins}, {patch}")
        top = math.log(num_classes) if max_uncertainty is None else float(max_uncertainty)
        if not top > 0:
            raise ValueError(f"max_uncertainty must be positive, got {max_uncertainty}")
        self.num_classes = num_classes
        self.bins, self.unc_bins, self.patch = bins, unc_bins, patch
        self.accuracy_threshold = float(accuracy_threshold)
        self.uncertainty_threshold = uncertainty_threshold
        self.ignore_index = ignore_index
        self.max_uncertainty = top
        # numpy edges are the definition; the device copies are the same float64 numbers
        self.conf_edges = np.linspace(0.0, 1.0, bins + 1)
        self.unc_edges = np.linspace(0.0, top, unc_bins + 1)
        self.register_buffer("_conf_inner", torch.from_numpy(self.conf_edges[1:-1].copy()), persistent=False)
        self.register_buffer("_unc_inner", torch.from_numpy(self.unc_edges[1:-1].copy()), persistent=False)
        self._device_fixed = device is not None
        self._members: bool | None = None  # whether updates carry member probabilities; all or none must
        for name, (shape, dtype) in _state_shapes(num_classes, bins, unc_bins).items():
            self.add_state(name, default=torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")
        if device is not None:
            self.to(device)

    @property
    def state_names(self) -> list[str]:
        """The names of the sum tensors, in a fixed order."""
        return list(self._defaults)

    def reset(self) -> None:
        super().reset()
        self._members = None

    # ------------------------------------------------------------------ accumulating

    @torch.no_grad()
    def update(self, probs: torch.Tensor, target: torch.Tensor, member_probs: torch.Tensor | None = None) -> None:
        """Add a batch: mean ensemble probabilities (B,C,H,W), labels (B,H,W), members' probabilities (M,B,C,H,W).

        Pixels labelled ``ignore_index`` count nowhere. Without ``member_probs``
        there is no mutual information; a split must be fed all with or all without.
        """
        self._check(probs, target, member_probs)
        if not self._device_fixed and self._members is None and probs.device != self.device:
            self.to(probs.device)  # first update: the state follows the data
        device = self.device
        probs = probs.detach().to(device)
        target = target.to(device)
        valid = target != self.ignore_index
        labels = target[valid].long()
        if labels.numel() and bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(f"target holds ids outside 0..{self.num_classes - 1} that are not "
                             f"ignore_index {self.ignore_index}")
        self._members = member_probs is not None
        pred = probs.argmax(dim=1)
        right_map = (pred == target) & valid
        right = right_map[valid]
        conf = probs.amax(dim=1)[valid].double()

        b = torch.bucketize(conf, self._conf_inner)
        self._add("calib_counts", b * 2 + right)
        self._add("calib_conf", b, conf)
        self._add_classwise(probs, valid, labels)

        kinds = {"entropy": pixel_entropy(probs)}
        if member_probs is not None:
            kinds["mutual_information"] = mutual_information(member_probs.detach().to(device))
        patches = self._patch_counts(valid, right_map)
        for kind, unc in kinds.items():
            values = unc[valid].double()
            self._add(f"{kind}_pixels", torch.bucketize(values, self._unc_inner) * 2 + ~right)
            getattr(self, f"{kind}_sum").add_(values.sum())
            if patches is not None:
                self._add_patches(kind, unc, valid, *patches)

    def _check(self, probs, target, member_probs) -> None:
        if probs.dim() != 4 or probs.shape[1] != self.num_classes:
            raise ValueError(f"probs must be (B,{self.num_classes},H,W), got shape {tuple(probs.shape)}")
        if tuple(target.shape) != (probs.shape[0], *probs.shape[2:]):
            raise ValueError(f"target {tuple(target.shape)} does not match probs {tuple(probs.shape)}")
        if member_probs is not None and (member_probs.dim() != 5 or member_probs.shape[1:] != probs.shape):
            raise ValueError(f"member_probs must be (M,{','.join(map(str, probs.shape))}), "
                             f"got shape {tuple(member_probs.shape)}")
        if self._members is not None and self._members != (member_probs is not None):
            raise ValueError("member_probs given for some batches and not others: the mutual information "
                             "would cover part of the split")

    def _add(self, name: str, index: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        flat = getattr(self, name).view(-1)
        if index.device.type == "cpu":
            flat += torch.bincount(index, weights=weights, minlength=flat.numel())
        else:  # index_add avoids bincount's device-to-host sync for its output size
            flat.index_add_(0, index, weights if weights is not None else torch.ones_like(index))

    def _add_classwise(self, probs: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor) -> None:
        """Bins of every class's probability p_c at every valid pixel, a few classes at a time."""
        per_pixel = probs.permute(0, 2, 3, 1)[valid]  # (N, C)
        step = max(1, CHUNK // max(1, per_pixel.shape[0]))
        for first in range(0, self.num_classes, step):
            last = min(first + step, self.num_classes)
            classes = torch.arange(first, last, device=probs.device)
            p = per_pixel[:, first:last].double()
            cells = torch.bucketize(p, self._conf_inner).add_(classes * self.bins)  # (N, k)
            self._add("class_prob", cells.reshape(-1), p.reshape(-1))
            self._add("class_counts", cells.mul_(2).add_(labels[:, None] == classes).reshape(-1))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Sums over non-overlapping patch x patch squares of (B,H,W), cropped to multiples of patch."""
        b, h, w = x.shape
        k = self.patch
        return x[:, : h // k * k, : w // k * k].reshape(b, h // k, k, w // k, k).sum(dim=(2, 4))

    def _patch_counts(self, valid, right_map):
        """Valid pixels of each patch with at least one, and whether each of those patches is accurate."""
        if valid.shape[1] < self.patch or valid.shape[2] < self.patch:
            return None
        count = self._pool(valid.double())
        keep = count > 0
        count = count[keep]
        accurate = self._pool(right_map.double())[keep] / count >= self.accuracy_threshold
        return keep, count, accurate

    def _add_patches(self, kind, unc, valid, keep, count, accurate) -> None:
        means = self._pool(torch.where(valid, unc.double(), 0.0))[keep] / count
        self._add(f"{kind}_patches", torch.bucketize(means, self._unc_inner) * 2 + accurate)
        getattr(self, f"{kind}_patch_sum").add_(means.sum())

    # ------------------------------------------------------------------ combining

    def merge_state(self, incoming_state) -> None:
        """Add another meter's sums (same settings) or a dict of them (torchmetrics' merge)."""
        if isinstance(incoming_state, UncertaintyMeter):
            if self._settings() != incoming_state._settings():
                raise ValueError("cannot merge meters with different settings")
            incoming_state = {name: getattr(incoming_state, name).to(self.device) for name in self.state_names}
        super().merge_state(incoming_state)

    def _settings(self):
        return (self.num_classes, self.bins, self.unc_bins, self.patch, self.accuracy_threshold,
                self.ignore_index, self.max_uncertainty)

    # ------------------------------------------------------------------ reading

    def _host(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).cpu().numpy() for name in self.state_names}

    def kinds(self, state=None) -> list[str]:
        """The uncertainty kinds measured: entropy, and mutual information when members were given."""
        state = self._host() if state is None else state
        pixels = int(state["calib_counts"].sum())
        mi = int(state["mutual_information_pixels"].sum())
        if mi not in (0, pixels):
            raise ValueError(f"mutual information covers {mi} of {pixels} pixels: member_probs were given "
                             "for some batches (or processes) and not others")
        return ["entropy", "mutual_information"] if mi else ["entropy"]

    def default_threshold(self, kind: str, state=None) -> float:
        """The PAvPU threshold of `compute`: ``uncertainty_threshold`` when set, else the mean patch uncertainty."""
        fixed = self.uncertainty_threshold
        if isinstance(fixed, dict):
            fixed = fixed.get(kind)
        if fixed is not None:
            return float(fixed)
        state = self._host() if state is None else state
        patches = int(state[f"{kind}_patches"].sum())
        return float(state[f"{kind}_patch_sum"][0]) / patches if patches else float("nan")

    def pavpu(self, kind: str = "entropy", threshold: float | None = None, state=None) -> float:
        """PAvPU = (n_ac + n_iu) / (n_ac + n_au + n_ic + n_iu) over the patches, uncertain meaning mean > threshold.

        Exact for a threshold on a bin edge ``unc_edges[k]``, k >= 1, or inside a
        bin that holds no patch; otherwise the patches of the threshold's bin are
        split linearly (as if spread evenly over it), an error of at most their
        share of all patches. ``threshold`` defaults to `default_threshold`.
        """
        state = self._host() if state is None else state
        t = self.default_threshold(kind, state) if threshold is None else float(threshold)
        hist = state[f"{kind}_patches"].astype(np.float64)
        total = hist.sum()
        if not total or math.isnan(t):
            return float("nan")
        edges = self.unc_edges
        j = min(int(np.searchsorted(edges[1:-1], t, side="left")), self.unc_bins - 1)  # bin of t: e_j < t <= e_j+1
        uncertain = np.zeros(self.unc_bins)
        uncertain[j + 1:] = 1.0
        uncertain[j] = min(1.0, max(0.0, (edges[j + 1] - t) / (edges[j + 1] - edges[j])))
        inaccurate, accurate = hist[:, 0], hist[:, 1]
        return float((accurate @ (1 - uncertain) + inaccurate @ uncertain) / total)

    def pavpu_curve(self, kind: str = "entropy", state=None) -> tuple[list[float], list[float]]:
        """PAvPU at every bin edge (exact there): ``(thresholds, values)``, unc_bins + 1 of each."""
        state = self._host() if state is None else state
        hist = state[f"{kind}_patches"].astype(np.float64)
        total = hist.sum()
        inaccurate, accurate = hist[:, 0], hist[:, 1]
        below_accurate = np.concatenate([[0.0], np.cumsum(accurate)])  # certain at edge k: bins < k
        above_inaccurate = inaccurate.sum() - np.concatenate([[0.0], np.cumsum(inaccurate)])
        values = (below_accurate + above_inaccurate) / total if total else np.full(len(self.unc_edges), np.nan)
        return self.unc_edges.tolist(), values.tolist()

    def compute(self) -> dict:
        """Every figure of the split as plain floats and lists (JSON-ready; None for an empty bin or absent class).

        - ``ece``: sum over confidence bins of n_b/N |accuracy_b - confidence_b|.
        - ``classwise_ece`` (Kull et al. 2019): for each class c, the same over bins
          of p_c with the frequency of c against the mean p_c; averaged over the
          classes present in the targets (a class never labelled has no frequency
          to calibrate against, as mIoU averages the classes present).
        - per uncertainty kind: ``auroc`` of the uncertainty as a detector of
          misclassified pixels (Mann-Whitney from the histograms, pairs in one bin
          counting a half: exact up to ties within a bin of width
          max_uncertainty / unc_bins, log(C)/1000 by default), ``pavpu`` at
          ``pavpu_threshold`` (see `pavpu`), ``mean`` pixel uncertainty and the
          number of ``patches``.
        """
        state = self._host()
        calib = state["calib_counts"]
        count = calib.sum(1)
        n = int(count.sum())
        confidence = _ratio(state["calib_conf"], count)
        accuracy = _ratio(calib[:, 1], count)
        ece = float(np.nansum(count / n * np.abs(accuracy - confidence))) if n else float("nan")

        per_class = state["class_counts"]
        class_count = per_class.sum(2)
        class_freq = _ratio(per_class[..., 1], class_count)
        class_conf = _ratio(state["class_prob"], class_count)
        support = per_class[..., 1].sum(1)
        class_ece = np.where(support > 0, np.nansum(class_count / max(n, 1) * np.abs(class_freq - class_conf), 1),
                             np.nan)
        present = support > 0
        result = {
            "pixels": n,
            "accuracy": float(calib[:, 1].sum()) / n if n else float("nan"),
            "ece": ece,
            "classwise_ece": float(class_ece[present].mean()) if present.any() else float("nan"),
            "reliability": {"bin_edges": self.conf_edges.tolist(), "count": count.tolist(),
                            "confidence": _listed(confidence), "accuracy": _listed(accuracy)},
            "classwise_reliability": {"bin_edges": self.conf_edges.tolist(), "count": class_count.tolist(),
                                      "confidence": _listed(class_conf), "accuracy": _listed(class_freq),
                                      "ece": _listed(class_ece), "support": support.tolist()},
        }
        for kind in self.kinds(state):
            hist = state[f"{kind}_pixels"]
            threshold = self.default_threshold(kind, state)
            result[kind] = {"auroc": auroc_from_histograms(hist[:, 1], hist[:, 0]),
                            "pavpu": self.pavpu(kind, threshold, state),
                            "pavpu_threshold": threshold,
                            "mean": float(state[f"{kind}_sum"][0]) / n if n else float("nan"),
                            "patches": int(state[f"{kind}_patches"].sum())}
        return result


def auroc_from_histograms(positive, negative) -> float:
    """P(score of a positive > score of a negative), pairs in the same bin counting a half.

    ``positive``, ``negative``: counts per bin, bins in increasing score order.
    With every value at its bin's centre this is the Mann-Whitney AUROC exactly.
    """
    pos = np.asarray(positive, np.float64)
    neg = np.asarray(negative, np.float64)
    if not pos.sum() or not neg.sum():
        return float("nan")
    below = np.cumsum(neg) - neg
    return float(pos @ (below + 0.5 * neg) / (pos.sum() * neg.sum()))


def _ratio(num, den) -> np.ndarray:
    num = np.asarray(num, np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=np.asarray(den) > 0)


def _listed(values: np.ndarray):
    """NaN -> None, so the lists are valid JSON."""
    return np.where(np.isnan(values), None, values).tolist()
