"""Optimisation as the paper: Adam, per-part learning rates, polynomial decay per iteration.

The paper steps one Adam per member. Here one Adam holds a parameter group
per (member, part) (backbone and head; see iwu.models.parts) and the engine
sums the members' losses:
that is exactly equivalent, because Adam is per-parameter and no member's loss
depends on another member's parameters (the uncertainty weights are detached).
One optimizer keeps Lightning's single-optimizer path simple.
"""

import torch
from torch import nn

from iwu.errors import UserError
from iwu.models.parts import parameter_parts

def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9, min_lr: float = 1e-6) -> float:
    """`max(base * (1 - step/max_steps)**power, min_lr)`, with step clamped to max_steps."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    step = min(step, max_steps)
    return max(base_lr * (1 - step / max_steps) ** power, min_lr)


def param_groups(members: list[nn.Module], lrs: list[float], backbone_lr_scale: float = 0.1) -> list[dict]:
    """One group per (member, part) of `iwu.models.parts.parameter_parts`; every parameter in exactly one."""
    if len(members) != len(lrs):
        raise ValueError(f"{len(members)} members but {len(lrs)} learning rates")
    groups, seen = [], set()
    for i, (model, lr) in enumerate(zip(members, lrs)):
        parts = parameter_parts(model, lr, backbone_lr_scale)
        ids = [id(p) for _, params, _ in parts for p in params]
        if not ids:
            raise UserError(f"member {i} ({type(model).__name__}): no parameters to train")
        left_out = [name for name, p in model.named_parameters() if id(p) not in set(ids)]
        if left_out:  # only a model's own param_groups can leave some out; they would never train
            raise UserError(f"member {i} ({type(model).__name__}): param_groups leaves out "
                            f"{', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}")
        if len(set(ids)) != len(ids) or seen.intersection(ids):  # a shared parameter would step twice
            raise UserError(f"member {i} ({type(model).__name__}): shares parameters with another part or member")
        seen.update(ids)
        groups += [{"params": params, "lr": rate, "base_lr": rate, "name": f"member{i}/{part}"}
                   for part, params, rate in parts if params]
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
