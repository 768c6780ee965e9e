"""Training modes, each one definition: its per-pixel weight source, its loss, what it needs, its place
in reports. A mode of your own is one function and one registration, reachable from a config once its
module is imported (`iwu train ... --import mymodes`):

    from iwu.method.modes import register_mode, uncertainty_weights

    @register_mode("sqrt_uncertainty", weights=uncertainty_weights(instance=True))
    def sqrt_uncertainty(ctx, logits, target, u):
        ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
        return (ce * (1 + u).sqrt()).mean()

`ctx` is a `ModeContext`, all a mode sees of the run: `ctx.loss` holds the options (config.loss),
`ctx.class_weights` and `ctx.members` what a mode needs (stored masks come in the batch, as
`batch["mask"]`). The training module builds it for every step; a test builds one by hand, without
Lightning. A weight source returns, for a batch and the members' logits, None, one (B,H,W) tensor for
every member, or a list with one per member.

What a mode needs is one table, `NEEDS`, checked by one function, `check_needs`.

Light on purpose (torch is imported by the functions, not the module): configs and sweeps check
mode names without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iwu.constants import IGNORE_INDEX
from iwu.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn


def _unlogged(found: list) -> None:
    """A context's default `log_uncertainty`: the uncertainty is computed for the weights only."""


@dataclass(frozen=True)
class ModeContext:
    """What a mode's loss and weight source see of the run: its options and what it needs, no more."""

    mode: str  # the mode's name (its default exponent)
    # the run's config.loss, the options (an iwu.config.schema.LossConfig; that module imports this one)
    loss: Any
    class_weights: torch.Tensor | None = None  # (C,), for modes that need class_weights
    members: Sequence[nn.Module] = ()  # the networks, for their own dropout passes (loss.source=mc_dropout)
    log_uncertainty: Callable[[list], None] = _unlogged  # takes a weight source's uncertainties (one per map)


@dataclass(frozen=True)
class Mode:
    name: str
    loss: Callable  # (ctx, logits, target, weight or None) -> scalar tensor
    weights: Callable | None  # (ctx, batch, logits) -> None | tensor (B,H,W) | [tensor per member]
    needs: tuple[str, ...]
    order: float  # columns of a report, ascending
    exponent: float | None  # default of loss.exponent for modes weighted by (1 + U)^exponent
    loss_name: str = "loss"  # what its loss is, on the axes of figures ("uncertainty-weighted cross-entropy")


MODES: dict[str, Mode] = {}


# --- needs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFacts:
    """What a mode's needs are checked against: each need looks at what is known when it is checked."""

    loss: Any  # config.loss, as ModeContext's
    classes: Sequence[str]
    members: Mapping[str, nn.Module] = field(default_factory=dict)  # name -> network, once built
    class_weights: torch.Tensor | None = None  # (C,), once computed from the training split


@dataclass(frozen=True)
class Need:
    """One entry of `NEEDS`: what a mode asks of a run, when that is known, how a run lacking it is refused."""

    means: str
    # "built": of the members and classes, whenever the training module is built (a trained run loaded too);
    # "training": of the training data, when a run is about to train (a trained run loads without them)
    when: str
    lacking: Callable[[Mode, RunFacts], Exception | None]  # the refusal, or None where the run has it


def _samples_dropout(mode: Mode, loss) -> bool:
    """Its weights follow loss.source, and that is each member's own dropout passes."""
    return loss.source == "mc_dropout" and getattr(mode.weights, "from_members", False)


def _lacking_class_weights(mode: Mode, run: RunFacts) -> Exception | None:
    if run.class_weights is None or run.class_weights.numel() != len(run.classes):
        return ValueError(f"{mode.name} mode needs class_weights, one per class")
    return None


def _lacking_masks(mode: Mode, run: RunFacts) -> Exception | None:
    if not run.loss.masks_dir:
        return UserError(f"loss.masks_dir: {mode.name} mode needs the folder written by `iwu masks`")
    return None


def _lacking_dropout(mode: Mode, run: RunFacts) -> Exception | None:
    from torch import nn

    why = "loss.source=mc_dropout" if _samples_dropout(mode, run.loss) else f"mode={mode.name}"
    for name, member in run.members.items():
        if not any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in member.modules()):
            return UserError(f"{why}: member {name} has no dropout to sample; give it some "
                             "(args: {dropout: 0.1} on a DeepLab ResNet) or use loss.source=ensemble")
    return None


def _lacking_two_classes(mode: Mode, run: RunFacts) -> Exception | None:
    if len(run.classes) < 2:
        return UserError(f"mode={mode.name}: needs at least two classes; this dataset has {len(run.classes)}")
    return None


NEEDS: dict[str, Need] = {
    "class_weights": Need("one loss weight per class, from the training split's pixel counts (ctx.class_weights)",
                          "training", _lacking_class_weights),
    "masks": Need("the masks `iwu masks` stored, from loss.masks_dir, in each batch as batch['mask']",
                  "training", _lacking_masks),
    "dropout": Need("dropout in every member, to sample passes from (ctx.members); also asked by a weight "
                    "source that follows loss.source when it is mc_dropout", "built", _lacking_dropout),
    "two_classes": Need("at least two classes", "built", _lacking_two_classes),
}


def check_needs(name: str, when: str, run: RunFacts) -> None:
    """Refuse, with the first unmet need's error in `NEEDS`' order, a run that lacks what mode `name`
    needs at `when` ("built" or "training", see `Need.when`)."""
    mode = MODES[name]
    wanted = {*mode.needs, *(["dropout"] if _samples_dropout(mode, run.loss) else [])}
    for need, what in NEEDS.items():
        if need in wanted and what.when == when:
            error = what.lacking(mode, run)
            if error is not None:
                raise error


def register_mode(name: str, *, weights: Callable | None = None, needs=(), order: float = 100.0,
                  exponent: float | None = None, loss_name: str | None = None) -> Callable:
    """Register `loss(ctx, logits, target, weight)` as mode `name` (`loss_name`: what the loss is, for the
    axes of figures; `<name> loss` by default)."""

    def decorator(loss: Callable) -> Callable:
        if name in MODES:
            raise ValueError(f"mode {name!r} is already registered")  # two plug-ins, one name: a bug
        unknown = set(needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"mode {name!r}: needs {sorted(unknown)}; known needs: {', '.join(NEEDS)}")
        MODES[name] = Mode(name, loss, weights, tuple(needs), order, exponent, loss_name or f"{name} loss")
        return loss

    return decorator


def exponent(ctx: ModeContext) -> float:
    """loss.exponent, or the mode's own default (2: the paper's; 1: U-CE's)."""
    for value in (ctx.loss.exponent, MODES[ctx.mode].exponent):
        if value is not None:
            return value
    return 2.0


# --- weight sources ---------------------------------------------------------------------


def _mc_dropout_probs(ctx: ModeContext, batch, member) -> torch.Tensor:
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
                                for _ in range(ctx.loss.mc_samples)])
    finally:
        for m in norms:
            m.train()


def uncertainty_weights(instance: bool) -> Callable:
    """The ensemble's (or each member's MC dropout) uncertainty, averaged over predicted instances or not."""

    def weights(ctx: ModeContext, batch, logits):
        from iwu.method.uncertainty import ensemble_uncertainty, uncertainty_of

        loss = ctx.loss
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
                                              normalize=ctx.loss.normalize, exponent=exponent(ctx))


@register_mode("standard", order=10, loss_name="cross-entropy")
def standard(ctx, logits, target, u):
    import torch.nn.functional as F

    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


@register_mode("class_weighted", needs=("class_weights",), order=20, loss_name="class-weighted cross-entropy")
def class_weighted(ctx, logits, target, u):
    from iwu.method.losses import class_weighted_cross_entropy

    if ctx.class_weights is None:  # a module fitted by hand, not through iwu.engine.train
        raise ValueError("class_weighted mode needs class_weights, one per class")
    return class_weighted_cross_entropy(logits, target, ctx.class_weights, ignore_index=IGNORE_INDEX)


@register_mode("focal", order=30, loss_name="focal loss")
def focal(ctx, logits, target, u):
    from iwu.method.losses import focal_loss

    return focal_loss(logits, target, gamma=ctx.loss.focal_gamma, normalize=ctx.loss.normalize)


@register_mode("dice", needs=("two_classes",), order=40, loss_name="Dice loss")
def dice(ctx, logits, target, u):
    from iwu.method.losses import dice_loss

    return dice_loss(logits, target, ignore_index=IGNORE_INDEX)


def _with_ce(w: float, other, ctx, logits, target, u):
    """`(1 - w) CE + w other`: cross-entropy mixed with a region loss, as the published hybrid."""
    return (1 - w) * standard(ctx, logits, target, u) + w * other(ctx, logits, target, u)


@register_mode("ce_dice", needs=("two_classes",), order=45, loss_name="cross-entropy + Dice")
def ce_dice(ctx, logits, target, u):
    """The published `hybrid`: (1 - w) CE + w Dice, w = loss.dice_weight (0.5)."""
    return _with_ce(ctx.loss.dice_weight, dice, ctx, logits, target, u)


@register_mode("ohem", order=50, loss_name="OHEM cross-entropy")
def ohem(ctx, logits, target, u):
    """Online hard example mining (mmsegmentation's OhemCrossEntropy): the mean CE of the labeled pixels
    whose true class has a probability below loss.ohem_threshold (0.7), at least loss.ohem_min_kept of the
    hardest (null: a tenth of the batch's pixels); see `iwu.method.losses.ohem_cross_entropy`."""
    from iwu.method.losses import ohem_cross_entropy

    return ohem_cross_entropy(logits, target, threshold=ctx.loss.ohem_threshold, min_kept=ctx.loss.ohem_min_kept,
                              ignore_index=IGNORE_INDEX)


@register_mode("lovasz", needs=("two_classes",), order=52, loss_name="Lovasz-softmax loss")
def lovasz(ctx, logits, target, u):
    """Lovasz-softmax (Berman et al. 2018), segmentation_models_pytorch's, over the batch."""
    from iwu.method.losses import lovasz_softmax_loss

    return lovasz_softmax_loss(logits, target, ignore_index=IGNORE_INDEX)


@register_mode("ce_lovasz", needs=("two_classes",), order=54, loss_name="cross-entropy + Lovasz-softmax")
def ce_lovasz(ctx, logits, target, u):
    """(1 - w) CE + w Lovasz-softmax, w = loss.lovasz_weight (0.5)."""
    return _with_ce(ctx.loss.lovasz_weight, lovasz, ctx, logits, target, u)


@register_mode("recall", order=56, loss_name="recall-weighted cross-entropy")
def recall(ctx, logits, target, u):
    """Recall loss (Tian et al. 2022): CE weighted by 1 - the batch recall of each pixel's class, the mean
    as loss.normalize says (all: the paper's code)."""
    from iwu.method.losses import recall_cross_entropy

    return recall_cross_entropy(logits, target, ignore_index=IGNORE_INDEX, normalize=ctx.loss.normalize)


_WEIGHTED = "uncertainty-weighted cross-entropy"
register_mode("pixel_uncertainty", weights=uncertainty_weights(instance=False), order=60, exponent=1.0,
              loss_name=_WEIGHTED)(_weighted_ce)
register_mode("offline_masks", weights=stored_masks, needs=("masks",), order=70, exponent=2.0,
              loss_name=_WEIGHTED)(_weighted_ce)
register_mode("instance_uncertainty", weights=uncertainty_weights(instance=True), order=80, exponent=2.0,
              loss_name=_WEIGHTED)(_weighted_ce)
