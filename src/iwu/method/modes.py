"""Training modes, each one definition: its per-pixel weight source, its loss, what it needs, its place
in reports. A mode of your own is one function and one registration, reachable from a config once its
module is imported (`iwu train ... --import mymodes`):

    from iwu.method.modes import register_mode, uncertainty_weights

    @register_mode("sqrt_uncertainty", weights=uncertainty_weights(instance=True))
    def sqrt_uncertainty(ctx, logits, target, u):
        ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
        return (ce * (1 + u).sqrt()).mean()

`ctx` is the training module: `ctx.config.loss` holds the options, `ctx.class_weights`
and `ctx.members` what a mode needs (stored masks come in the batch, as `batch["mask"]`). A weight source returns, for a batch and
the members' logits, None, one (B,H,W) tensor for every member, or a list with one per member.

Light on purpose (torch is imported by the functions, not the module): configs and sweeps check
mode names without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iwu.constants import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

NEEDS = ("class_weights", "masks", "dropout", "two_classes")


@dataclass(frozen=True)
class Mode:
    name: str
    loss: Callable  # (ctx, logits, target, weight or None) -> scalar tensor
    weights: Callable | None  # (ctx, batch, logits) -> None | tensor (B,H,W) | [tensor per member]
    needs: tuple[str, ...]
    order: float  # columns of a report, ascending
    exponent: float | None  # default of loss.exponent for modes weighted by (1 + U)^exponent


MODES: dict[str, Mode] = {}


def register_mode(name: str, *, weights: Callable | None = None, needs=(), order: float = 100.0,
                  exponent: float | None = None) -> Callable:
    """Register `loss(ctx, logits, target, weight)` as mode `name`."""

    def decorator(loss: Callable) -> Callable:
        if name in MODES:
            raise ValueError(f"mode {name!r} is already registered")  # two plug-ins, one name: a bug
        unknown = set(needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"mode {name!r}: needs {sorted(unknown)}; known needs: {', '.join(NEEDS)}")
        MODES[name] = Mode(name, loss, weights, tuple(needs), order, exponent)
        return loss

    return decorator


def exponent(ctx) -> float:
    """loss.exponent, or the mode's own default (2: the paper's; 1: U-CE's)."""
    for value in (ctx.config.loss.exponent, MODES[ctx.config.mode].exponent):
        if value is not None:
            return value
    return 2.0


# --- weight sources ---------------------------------------------------------------------


def _mc_dropout_probs(ctx, batch, member) -> torch.Tensor:
    """(T,B,C,H,W) softmaxes of T stochastic passes of `member`, without gradient: dropout samples,
    BatchNorm normalises with its running statistics and leaves them as they were."""
    import torch
    from torch import nn

    from iwu.models.parts import logits_and_aux

    norms = [m for m in member.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.eval()
    try:
        with torch.no_grad():
            return torch.stack([logits_and_aux(member(batch["image"]))[0].float().softmax(dim=1)
                                for _ in range(ctx.config.loss.mc_samples)])
    finally:
        for m in norms:
            m.train()


def uncertainty_weights(instance: bool) -> Callable:
    """The ensemble's (or each member's MC dropout) uncertainty, averaged over predicted instances or not."""

    def weights(ctx, batch, logits):
        from iwu.method.uncertainty import ensemble_uncertainty, uncertainty_of

        loss = ctx.config.loss
        options = {"connectivity": loss.connectivity, "backend": loss.backend}
        if loss.source == "ensemble":
            found = [ensemble_uncertainty(logits, kind=loss.uncertainty, **options)]
        else:  # each member's own passes: one weight map per member
            found = [uncertainty_of(_mc_dropout_probs(ctx, batch, m), loss.uncertainty, **options)
                     for m in ctx.members]
        ctx.log_uncertainty(found)
        maps = [u.instance if instance else u.pixel for u in found]
        return maps[0] if loss.source == "ensemble" else maps

    weights.from_members = True  # follows loss.source: the members' predictions, or their dropout passes
    return weights


def stored_masks(ctx, batch, logits):
    """Masks a trained ensemble stored (`iwu masks`): the training set loads each item's from the mask
    store (`SegmentationDataModule.use_masks`) and augments it with the item, so it arrives in the batch
    aligned with the label."""
    if "mask" not in batch:
        raise ValueError("offline masks: the batch carries no `mask`; give the training set the mask store "
                         "(SegmentationDataModule.use_masks)")
    return batch["mask"]


# --- the modes ------------------------------------------------------------------------


def _weighted_ce(ctx, logits, target, u):
    from iwu.method.losses import uncertainty_weighted_cross_entropy

    return uncertainty_weighted_cross_entropy(logits, target, u, ignore_index=IGNORE_INDEX,
                                              normalize=ctx.config.loss.normalize, exponent=exponent(ctx))


@register_mode("standard", order=10)
def standard(ctx, logits, target, u):
    import torch.nn.functional as F

    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


@register_mode("class_weighted", needs=("class_weights",), order=20)
def class_weighted(ctx, logits, target, u):
    from iwu.method.losses import class_weighted_cross_entropy

    return class_weighted_cross_entropy(logits, target, ctx.class_weights, ignore_index=IGNORE_INDEX)


@register_mode("focal", order=30)
def focal(ctx, logits, target, u):
    from iwu.method.losses import focal_loss

    return focal_loss(logits, target, gamma=ctx.config.loss.focal_gamma, normalize=ctx.config.loss.normalize)


@register_mode("dice", needs=("two_classes",), order=40)
def dice(ctx, logits, target, u):
    from iwu.method.losses import dice_loss

    return dice_loss(logits, target, ignore_index=IGNORE_INDEX)


@register_mode("ce_dice", needs=("two_classes",), order=45)
def ce_dice(ctx, logits, target, u):
    """The published `hybrid`: (1 - w) CE + w Dice, w = loss.dice_weight (0.5)."""
    w = ctx.config.loss.dice_weight
    return (1 - w) * standard(ctx, logits, target, u) + w * dice(ctx, logits, target, u)


register_mode("pixel_uncertainty", weights=uncertainty_weights(instance=False), order=60, exponent=1.0)(_weighted_ce)
register_mode("offline_masks", weights=stored_masks, needs=("masks",), order=70, exponent=2.0)(_weighted_ce)
register_mode("instance_uncertainty", weights=uncertainty_weights(instance=True), order=80, exponent=2.0)(_weighted_ce)
