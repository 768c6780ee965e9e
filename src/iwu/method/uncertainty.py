"""Pixel and instance uncertainty of an ensemble (docs/method.md, section 1, steps 2-6).

An *instance* is a connected component (8-connected by default) of one
predicted class in one image; every pixel belongs to exactly one instance and
class 0 is a class like any other. The instance uncertainty of a pixel is the
mean pixel uncertainty over its instance.

Two labeling back-ends give the same instances:

- ``cc3d``: connected-components-3d on the host. The images of a batch are
  stacked into one tall 2-D image and labeled in a single call; neighbouring
  images use disjoint value ranges (class + 1 for even images, class + 1 + C
  for odd ones), so no component crosses from one image into the next and no
  separator rows have to be copied in.
- ``torch``: min-label propagation between same-class neighbours with root
  hooking (``scatter_reduce`` amin) and pointer jumping, on whatever device the
  tensors live, so a CUDA training step never goes through the host.

Per-instance means are sums over labels (``bincount``/``index_add``) in
float64, so both back-ends agree to float32 rounding.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import numpy as np
import torch

EPS = 1e-10  # inside the log of the entropy, as the published method defines it
BACKENDS = ("auto", "cc3d", "torch")


def pixel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy ``-sum_c p_c log(p_c + 1e-10)`` of probabilities (B,C,H,W) -> (B,H,W)."""
    if probs.dim() != 4:
        raise ValueError(f"pixel_entropy expects probabilities (B,C,H,W), got shape {tuple(probs.shape)}")
    return -(probs * torch.log(probs + EPS)).sum(dim=1)


def mutual_information(member_probs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Epistemic uncertainty of an ensemble: H(mean_m p_m) - mean_m H(p_m).

    ``member_probs`` is (M,B,C,H,W) or a sequence of M tensors (B,C,H,W);
    returns (B,H,W). Clamped at 0: the difference is non-negative in exact
    arithmetic and only rounding takes it below.
    """
    probs = torch.stack(list(member_probs)) if not torch.is_tensor(member_probs) else member_probs
    if probs.dim() != 5:
        raise ValueError(f"mutual_information expects (M,B,C,H,W), got shape {tuple(probs.shape)}")
    total = pixel_entropy(probs.mean(dim=0))
    aleatoric = torch.stack([pixel_entropy(p) for p in probs]).mean(dim=0)
    return (total - aleatoric).clamp_min_(0)


# ---------------------------------------------------------------------------
# Instance labeling


def _check_inputs(pred, values, connectivity: int, backend: str) -> None:
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if tuple(pred.shape) != tuple(values.shape):
        raise ValueError(
            f"pred {tuple(pred.shape)} and pixel_uncertainty {tuple(values.shape)} must have the same shape"
        )
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred must be (B,H,W) or (H,W), got shape {tuple(pred.shape)}")
    is_int = not pred.is_floating_point() if torch.is_tensor(pred) else np.issubdtype(pred.dtype, np.integer)
    if not is_int or (torch.is_tensor(pred) and pred.dtype == torch.bool):
        raise TypeError(f"pred must hold integer class ids, got dtype {pred.dtype}")


def _label_cc3d(pred: torch.Tensor, connectivity: int) -> tuple[torch.Tensor, int]:
    """Label a CPU batch (B,H,W) with cc3d: int32 labels 1..N, unique across the batch."""
    import cc3d

    b, h, w = pred.shape
    low, high = torch.aminmax(pred) if pred.numel() else (torch.tensor(0), torch.tensor(0))
    if int(low) < 0:
        raise ValueError("pred holds negative class ids; instance labeling needs ids >= 0")
    num_classes = int(high) + 1
    # Even images take values 1..C, odd ones C+1..2C: vertically adjacent images
    # never share a value, so stacking them cannot join their components.
    dtype = torch.uint8 if 2 * num_classes <= 255 else torch.int32
    tall = pred.to(dtype) + 1
    tall[1::2] += num_classes
    labels, n = cc3d.connected_components(
        tall.numpy().reshape(b * h, w), connectivity=connectivity, return_N=True, out_dtype=np.uint32
    )
    # int32 labels keep bincount and index_select on their fast paths.
    return torch.from_numpy(labels.view(np.int32)).view(b, h, w), int(n)


_NEIGHBOURS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
}


def _label_torch(pred: torch.Tensor, connectivity: int, max_rounds: int = 10_000) -> tuple[torch.Tensor, int]:
    """Label a batch (B,H,W) with torch ops on its own device.

    Returns int64 labels where each pixel holds the flat index of one pixel of
    its component (unique per component, not consecutive) and the number of
    label slots (B*H*W) to size per-label sums.
    """
    b, h, w = pred.shape
    n = b * h * w
    device = pred.device
    # Same-class masks per neighbour direction do not change between rounds.
    padded_pred = torch.nn.functional.pad(pred.long(), (1, 1, 1, 1), value=-1)
    offsets = _NEIGHBOURS[connectivity]
    same = [padded_pred[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == pred for dy, dx in offsets]
    label = torch.arange(n, device=device, dtype=torch.int64).view(b, h, w)
    big = torch.tensor(n, device=device, dtype=torch.int64)
    for _ in range(max_rounds):
        padded = torch.nn.functional.pad(label, (1, 1, 1, 1), value=n)
        low = label
        for (dy, dx), mask in zip(offsets, same):
            neighbour = padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            low = torch.minimum(low, torch.where(mask, neighbour, big))
        if not bool((low < label).any()):
            return label, n
        flat_low = low.reshape(-1)
        # Hook: each pixel's current root adopts the smallest label seen next to
        # any of its pixels, so whole trees merge in one step, not one pixel.
        parent = torch.minimum(label.reshape(-1), flat_low)
        parent.scatter_reduce_(0, label.reshape(-1), flat_low, reduce="amin")
        # Pointer jumping halves every path per jump.
        for _ in range(4):
            parent = parent[parent]
        label = parent.view(b, h, w)
    raise RuntimeError(f"instance labeling did not converge in {max_rounds} rounds")


def label_instances(
    pred: torch.Tensor, *, connectivity: int = 8, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Instances of a batch of predictions (B,H,W).

    Returns ``(labels, num_instances)``: integer labels (B,H,W), equal within
    an instance and different between instances (of any image of the batch),
    and the number of instances per image (B,).
    """
    _check_inputs(pred, pred, connectivity, backend)
    batch = pred if pred.ndim == 3 else pred[None]
    backend = _resolve_backend(backend, batch.device)
    labels, _ = _label(batch, connectivity, backend)
    counts = _instances_per_image(labels, backend)
    return (labels if pred.ndim == 3 else labels[0]).to(pred.device), counts.to(pred.device)


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "cc3d" if device.type == "cpu" else "torch"
    return backend


def _label(pred: torch.Tensor, connectivity: int, backend: str) -> tuple[torch.Tensor, int]:
    """Labels of a batch on the back-end's device, and the number of label slots."""
    if backend == "torch":
        return _label_torch(pred, connectivity)
    labels, n = _label_cc3d(pred.cpu(), connectivity)
    return labels, n + 1


def _instances_per_image(labels: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "torch":  # an instance is named by its root pixel
        roots = labels == torch.arange(labels.numel(), device=labels.device).view_as(labels)
        return roots.flatten(1).sum(1)
    # cc3d numbers components in raster order, so the images of the stack own
    # consecutive blocks of labels: 1..n0, n0+1..n0+n1, ...
    highest = labels.flatten(1).amax(1).long()
    return torch.diff(highest, prepend=highest.new_zeros(1))


LANES = 4
FEW_INSTANCES = 4096


@functools.lru_cache(maxsize=4)
def _lane_ids(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int32) % LANES


def _sums_and_sizes_cpu(flat: torch.Tensor, slots: int, values: torch.Tensor):
    if slots <= FEW_INSTANCES:
        # With few instances, neighbouring pixels land in the same bin and each
        # add waits for the previous one; spreading them over interleaved copies
        # of every bin breaks that chain (about 2x on large smooth regions).
        spread = torch.add(_lane_ids(flat.numel()), flat, alpha=LANES)
        sums = torch.bincount(spread, weights=values, minlength=slots * LANES).view(slots, LANES).sum(1)
        sizes = torch.bincount(spread, minlength=slots * LANES).view(slots, LANES).sum(1)
        return sums, sizes
    return torch.bincount(flat, weights=values, minlength=slots), torch.bincount(flat, minlength=slots)


def _instance_means(labels: torch.Tensor, slots: int, values: torch.Tensor) -> torch.Tensor:
    flat = labels.reshape(-1)
    weights = values.reshape(-1).double()  # float32 sums drift on instances of 1e5+ pixels
    if labels.device.type == "cpu":
        sums, sizes = _sums_and_sizes_cpu(flat, slots, weights)
    else:  # index_add avoids bincount's device-to-host sync for its output size
        sums = torch.zeros(slots, dtype=torch.float64, device=labels.device).index_add_(0, flat, weights)
        sizes = torch.zeros(slots, dtype=torch.float64, device=labels.device)
        sizes.index_add_(0, flat, torch.ones_like(weights))
    means = sums.div_(sizes.clamp_min_(1)).float()  # in place: these arrays can hold 1e6 slots
    return means.index_select(0, flat).view(labels.shape)


def instance_uncertainty(
    pred,
    pixel_uncertainty,
    *,
    connectivity: int = 8,
    backend: str = "auto",
    return_num_instances: bool = False,
):
    """Mean pixel uncertainty of each pixel's instance.

    ``pred``: integer class ids (B,H,W) or (H,W); ``pixel_uncertainty``: float,
    same shape. Returns float32 of the same shape, as a tensor on the input's
    device (or a numpy array for numpy input). ``backend``: ``"cc3d"`` labels
    on the host, ``"torch"`` on the tensors' device, ``"auto"`` picks cc3d for
    CPU tensors and torch for others. With ``return_num_instances`` also
    returns the number of instances per image (B,).

    No gradient flows through the result: it is a loss weight.
    """
    _check_inputs(pred, pixel_uncertainty, connectivity, backend)
    as_numpy = isinstance(pred, np.ndarray)
    pred_t = torch.from_numpy(np.ascontiguousarray(pred)) if as_numpy else pred
    values_t = torch.as_tensor(pixel_uncertainty, device=pred_t.device)
    single = pred_t.ndim == 2
    if single:
        pred_t, values_t = pred_t[None], values_t[None]
    with torch.no_grad():
        backend = _resolve_backend(backend, pred_t.device)
        labels, slots = _label(pred_t, connectivity, backend)
        result = _instance_means(labels, slots, values_t.detach().to(labels.device)).to(pred_t.device)
        counts = _instances_per_image(labels, backend).to(pred_t.device) if return_num_instances else None
    if single:
        result = result[0]
    if as_numpy:
        result = result.numpy()
        counts = counts.numpy() if counts is not None else None
    return (result, counts) if return_num_instances else result


class EnsembleUncertainty(NamedTuple):
    probs: torch.Tensor  # (B,C,H,W) mean of the members' softmaxes
    pred: torch.Tensor  # (B,H,W) argmax of probs
    pixel: torch.Tensor  # (B,H,W) pixel uncertainty: the entropy of probs unless asked otherwise
    instance: torch.Tensor  # (B,H,W) mean of pixel over each pixel's instance
    num_instances: torch.Tensor  # (B,)


UNCERTAINTIES = ("entropy", "mutual_information", "predicted_std")


def predicted_std(member_probs: torch.Tensor) -> torch.Tensor:
    """U-CE's uncertainty (Landgraf et al., 2023): the standard deviation, over members or stochastic
    passes (M,B,C,H,W), of the probability of the class their mean predicts; (B,H,W)."""
    pred = member_probs.mean(dim=0).argmax(dim=1, keepdim=True)  # (B,1,H,W)
    chosen = member_probs.gather(2, pred.unsqueeze(0).expand(len(member_probs), -1, -1, -1, -1)).squeeze(2)
    return chosen.std(dim=0)


@torch.no_grad()
def uncertainty_of(member_probs: torch.Tensor, kind: str = "entropy", *, connectivity: int = 8,
                   backend: str = "auto") -> EnsembleUncertainty:
    """Steps 3-6 of the method for the probabilities (M,B,C,H,W) of M members (or stochastic passes),
    with the pixel uncertainty `kind`: the entropy of their mean (the paper's), their mutual information,
    or the std of the predicted class's probability."""
    if kind not in UNCERTAINTIES:
        raise ValueError(f"uncertainty must be one of {', '.join(UNCERTAINTIES)}, got {kind!r}")
    probs = member_probs.mean(dim=0)
    pred = probs.argmax(dim=1)
    if kind == "entropy":
        pixel = pixel_entropy(probs)
    elif kind == "mutual_information":
        pixel = mutual_information(member_probs)
    else:
        pixel = predicted_std(member_probs)
    instance, counts = instance_uncertainty(
        pred, pixel, connectivity=connectivity, backend=backend, return_num_instances=True
    )
    return EnsembleUncertainty(probs, pred, pixel, instance, counts)


@torch.no_grad()
def ensemble_uncertainty(
    member_logits: Sequence[torch.Tensor], *, kind: str = "entropy", connectivity: int = 8, backend: str = "auto"
) -> EnsembleUncertainty:
    """Steps 2-6 of the method for the logits (B,C,H,W) of M members."""
    if len(member_logits) == 0:
        raise ValueError("ensemble_uncertainty needs the logits of at least one member")
    member_probs = torch.stack([z.detach().float().softmax(dim=1) for z in member_logits])
    return uncertainty_of(member_probs, kind, connectivity=connectivity, backend=backend)
