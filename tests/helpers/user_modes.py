"""A user's own training mode, registered from the user's own module (`--import user_modes`)."""

import torch.nn.functional as F

from iwu.method.modes import ModeContext, register_mode, uncertainty_weights


@register_mode("sqrt_uncertainty", weights=uncertainty_weights(instance=True), order=90)
def sqrt_uncertainty(ctx: ModeContext, logits, target, u):
    """CE weighted by sqrt(1 + U); of `ctx` (ctx.loss, ctx.class_weights, ctx.members) it needs nothing."""
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    return (ce * (1 + u).sqrt()).mean()
