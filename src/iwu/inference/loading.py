"""A trained run's models, for the commands that use them (evaluate, predict, masks).

`RUN_DIR_OR_CKPT` is a run directory (its `checkpoints/best_ensemble.ckpt`),
a Lightning checkpoint of a run (`best_ensemble.ckpt`, `last.ckpt`), or one
member's `best_<member>.pt`, which evaluates as an ensemble of one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from iwu.engine.checkpoint_io import read_run_checkpoint
from iwu.config.schema import RunConfig, config_from_dict
from iwu.engine.ensemble import EnsembleModule, member_names
from iwu.errors import UserError
from iwu.models import names_at_revision, registry
from iwu.engine.run_dir import CHECKPOINTS


class Loaded(NamedTuple):
    module: EnsembleModule  # in evaluation mode, on `device`
    config: RunConfig
    run_dir: Path  # where results about this model are written
    device: torch.device
    checkpoint: Path | None = None  # the file the weights came from


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _build_as_trained(config: RunConfig, about: dict, path: Path) -> list[str]:
    """Point the config's members at the networks the weights were trained as (an older models
    revision may name them differently today); returns the members' names as the run knew them."""
    saved = [m.name for m in config.members]
    today = names_at_revision(saved, about.get("models_revision", 1))
    if today != saved:
        for member, name in zip(config.members, today):
            member.name = name
        changed = ", ".join(sorted({f"{a} as {b}" for a, b in zip(saved, today) if a != b}))
        print(f"note: {path} was saved by an earlier iwu; loading {changed}, the network it was trained as",
              file=sys.stderr)
    return member_names(saved)


def _require_recorded_imports(raw: dict, path: Path) -> None:
    """A run records the `--import` modules it was trained with, but a file never chooses code to run:
    a member or mode only those modules register is refused with the `--import` that would trust them."""
    from iwu.method.modes import MODES

    imports = raw.get("imports") or []  # its shape was checked with the record (read_run_checkpoint)
    if not imports:
        return
    unknown = [f"member {m['name']}" for m in raw["members"] if ":" not in m["name"] and m["name"] not in registry.MODELS]
    if isinstance(raw.get("mode"), str) and raw["mode"] not in MODES:
        unknown.append(f"mode {raw['mode']}")
    if unknown:
        given = " ".join(f"--import {module}" for module in imports)
        raise UserError(f"{path}: its {unknown[0]} comes from a module the run was trained with; if you trust "
                        f"that module, pass {given} (iwu imports nothing a file names)")


def load_models(target, device=None) -> Loaded:
    """The models of a run directory or checkpoint file (see the module docstring)."""
    path = Path(target)
    try:
        device = torch.device(device) if device is not None else default_device()
    except RuntimeError:
        raise UserError(f"--device {device}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device here; use --device cpu")
    path, checkpoint, about = read_run_checkpoint(path)
    _require_recorded_imports(about["config"], path)
    config = config_from_dict(about["config"], str(path))
    config.model.pretrained = False  # the weights come from the checkpoint
    run_dir = path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
    if "member" in about:  # best_<member>.pt: one member's weights
        config.members = [type(config.members[0])(**about["member"])]
    names = _build_as_trained(config, about, path)
    module = EnsembleModule(config, about["classes"])
    target = module.members[0] if "member" in about else module
    try:
        target.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:  # weights of other members or another class count than its record says
        detail = " ".join(str(err).split("\n\t")[1:2]).strip()[:200]
        raise UserError(f"{path}: its weights do not fit the {len(about['classes'])} classes and members "
                        f"({', '.join(names)}) its record names: {detail}; the file was altered or mixed up") from None
    module.names = [about["name"]] if "member" in about else names
    return Loaded(module.to(device).eval(), config, run_dir, device, path)


def dataset_for(loaded: Loaded, source: dict, split: str, size: int | None = None):
    """The dataset `source` as the run's models take it: at the run's size unless `size` says otherwise,
    normalised with the statistics the run trained with (whatever the dataset's own), and, for the run's
    own kind of dataset, split with the run's `val_fraction`."""
    from iwu.data.sources import build_dataset, image_statistics

    data = loaded.config.data
    if source.get("kind") == data.kind:
        source = {"val_fraction": data.val_fraction, **source}
    dataset = build_dataset(source, split, size or data.size)
    dataset.mean, dataset.std = image_statistics(data.kind)
    return dataset


def check_classes(loaded: Loaded, dataset) -> None:
    if tuple(dataset.classes) != tuple(loaded.module.classes):
        raise UserError(f"{dataset.kind}:{dataset.root}: its {len(dataset.classes)} classes are not the "
                        f"{len(loaded.module.classes)} classes the model was trained on")


@torch.no_grad()
def member_probabilities(module: EnsembleModule, images: torch.Tensor, size=None) -> torch.Tensor:
    """(M, B, C, H, W) softmax of every member, in float32; with `size` (H, W), of its logits upsampled
    (bilinear) to that size first, as a prediction at a label's own resolution is made."""
    logits = [z.float() for z in module(images)]
    if size is not None and tuple(size) != tuple(logits[0].shape[-2:]):
        logits = [F.interpolate(z, size=tuple(size), mode="bilinear", align_corners=False) for z in logits]
    return torch.stack([z.softmax(dim=1) for z in logits])
