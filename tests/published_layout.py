"""Checkpoints in the published code's layout, built from iwu's members (whose state dicts are the
published ones with two prefixes renamed), and the fixture's formula-defined weights."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

FIXTURES = Path(__file__).parent / "fixtures" / "published_mobilenet"
PUBLISHED_PREFIXES = {"backbone.low_level.": "backbone.low_level_features.",
                      "backbone.out.": "backbone.high_level_features."}


def published_key(key: str) -> str:
    for ours, theirs in PUBLISHED_PREFIXES.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def fill_with_the_fixture_weights(model: nn.Module) -> nn.Module:
    """The fixture README's formula, in the state dict's order (integer entries counted, left as they are)."""
    state = {}
    for i, (key, value) in enumerate(model.state_dict().items()):
        if not value.is_floating_point():
            state[key] = value
            continue
        s = torch.sin(0.37 * torch.arange(value.numel(), dtype=torch.float64) + i).reshape(value.shape)
        state[key] = 1 + 0.5 * s**2 if key.endswith("running_var") else (0.5 if value.dim() == 1 else 0.1) * s
    model.load_state_dict(state)
    return model


def save_published_checkpoint(model: nn.Module, path, *, steps: int = 1000, best: float = 0.61) -> Path:
    """What the published `save_ckpt` writes: iteration, weights, optimiser and schedule, numpy best mIoU."""
    torch.save({"cur_itrs": steps, "model_state": {published_key(k): v for k, v in model.state_dict().items()},
                "optimizer_state": {"state": {}, "param_groups": []}, "scheduler_state": {"last_epoch": steps},
                "best_score": np.float64(best)}, path)
    return Path(path)
