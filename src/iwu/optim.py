"""Optimisation as the paper: Adam, per-part learning rates, polynomial decay per iteration.

The paper steps one Adam per member. Here one Adam holds a parameter group
per (member, backbone|classifier) and the engine sums the members' losses:
that is exactly equivalent, because Adam is per-parameter and no member's loss
depends on another member's parameters (the uncertainty weights are detached).
One optimizer keeps Lightning's single-optimizer path simple.
"""

import torch
from torch import nn

from .errors import UserError

PARTS = ("backbone", "classifier")


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9, min_lr: float = 1e-6) -> float:
    """`max(base * (1 - step/max_steps)**power, min_lr)`, with step clamped to max_steps."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    step = min(step, max_steps)
    return max(base_lr * (1 - step / max_steps) ** power, min_lr)


def param_groups(members: list[nn.Module], lrs: list[float], backbone_lr_scale: float = 0.1) -> list[dict]:
    """One group per (member, part): the backbone at `backbone_lr_scale` x the member's rate."""
    if len(members) != len(lrs):
        raise ValueError(f"{len(members)} members but {len(lrs)} learning rates")
    groups, seen = [], set()
    for i, (model, lr) in enumerate(zip(members, lrs)):
        if not all(isinstance(getattr(model, part, None), nn.Module) for part in PARTS):
            raise UserError(
                f"member {i} ({type(model).__name__}): the optimizer needs a model with `.backbone` and "
                "`.classifier` modules (as iwu.models builds), to give the backbone its own learning rate"
            )
        for part, scale in zip(PARTS, (backbone_lr_scale, 1.0)):
            params = list(getattr(model, part).parameters())
            base = lr * scale
            groups.append({"params": params, "lr": base, "base_lr": base, "name": f"member{i}/{part}"})
        ids = [id(p) for g in groups[-2:] for p in g["params"]]
        grouped = set(ids)
        left_out = [name for name, p in model.named_parameters() if id(p) not in grouped]
        if left_out:  # they would silently never train
            raise UserError(
                f"member {i} ({type(model).__name__}): parameters outside .backbone and .classifier: "
                f"{', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}"
            )
        if len(grouped) != len(ids) or seen.intersection(ids):  # a shared parameter would step twice
            raise UserError(f"member {i} ({type(model).__name__}): shares parameters with another part or member")
        seen.update(ids)
    return groups


def build_optimizer(
    members: list[nn.Module],
    lrs: list[float],
    *,
    weight_decay: float,
    backbone_lr_scale: float,
    poly_power: float,
    min_lr: float,
    max_steps: int,
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam over `param_groups`, and a scheduler to step once per iteration.

    LambdaLR multiplies each group's base rate by a factor; the floor `min_lr`
    is absolute, not relative, so each group needs its own factor.
    """
    groups = param_groups(members, lrs, backbone_lr_scale)
    optimizer = torch.optim.Adam(groups, weight_decay=weight_decay)
    factors = [_poly_factor(g["base_lr"], max_steps, poly_power, min_lr) for g in groups]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def _poly_factor(base_lr: float, max_steps: int, power: float, min_lr: float):
    return lambda step: poly_lr(base_lr, step, max_steps, power, min_lr) / base_lr
