"""What the engine needs of any member: its parameters in learning-rate parts, its output as logits.

Parts, in this order of preference:
- a model's own `param_groups(lr)` -> [{"params": ..., "lr": ...}, ...];
- its backbone (`.backbone`: iwu, torchvision; `.encoder`: segmentation_models_pytorch)
  at `backbone_lr_scale` x the member's rate, everything else (decoder, heads, auxiliary
  heads) at the rate, as the paper trains its backbones at 0.1x;
- otherwise one group at the member's rate.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from iwu.errors import UserError

BACKBONES = ("backbone", "encoder")


def _backbone(model: nn.Module) -> tuple[str, nn.Module] | None:
    for name in BACKBONES:
        part = getattr(model, name, None)
        if isinstance(part, nn.Module) and any(True for _ in part.parameters()):
            return name, part
    return None


def backbone_of(model: nn.Module) -> nn.Module | None:
    """The member's backbone (`.backbone` or `.encoder`), or None."""
    found = _backbone(model)
    return found[1] if found else None


def parameter_parts(model: nn.Module, lr: float, backbone_lr_scale: float) -> list[tuple[str, list, float]]:
    """(part name, parameters, learning rate) for every part of `model` (see the module docstring)."""
    custom = getattr(model, "param_groups", None)
    if callable(custom):
        return [(str(g.get("name", f"group{k}")), list(g["params"]), float(g["lr"]))
                for k, g in enumerate(custom(lr))]
    params = list(model.parameters())
    found = _backbone(model)
    if found is None:
        return [("all", params, lr)]
    inside = {id(p) for p in found[1].parameters()}
    return [("backbone", [p for p in params if id(p) in inside], lr * backbone_lr_scale),
            ("head", [p for p in params if id(p) not in inside], lr)]


def logits_and_aux(output) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A member's output as (logits, auxiliary logits or None): a tensor; torchvision's dict
    ("out", "aux"); a tuple whose first item is the logits (smp with a classification head)."""
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, Mapping) and isinstance(output.get("out"), torch.Tensor):
        return output["out"], output.get("aux")
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0], None
    raise UserError(f"a member returned {type(output).__name__}; a member returns logits (B, C, H, W), "
                    "a dict with 'out', or a tuple starting with them")


def check_logits(member: str, logits: torch.Tensor, images: torch.Tensor, num_classes: int) -> None:
    expected = (images.shape[0], num_classes, *images.shape[-2:])
    if tuple(logits.shape) != expected:
        raise UserError(f"member {member}: returned shape {tuple(logits.shape)} for input {tuple(images.shape)}; "
                        f"a member returns logits {expected}: (B, classes, H, W) at the input size")
