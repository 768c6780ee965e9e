"""`model.init_from`: a new run's members start from the trained weights of another run.

A run directory or ensemble checkpoint gives member k to member k (the same members); one member's
`best_<member>.pt` gives itself to every member of its kind. A tensor whose shape differs (a head for
another class count) keeps its fresh initialisation, with a note, unless `model.init_strict`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from iwu.engine.checkpoint_io import read_run_checkpoint
from iwu.engine.ensemble import EnsembleModule
from iwu.errors import UserError
from iwu.models import names_at_revision


def init_members(module: EnsembleModule, source, strict: bool = False) -> None:
    """Start `module`'s members from the trained weights of `source` (model.init_from): a run directory or
    ensemble checkpoint gives member k to member k; a member's .pt gives itself to every member of its kind.
    A tensor whose shape differs (a head for another class count) keeps its fresh initialisation, with a
    note, unless `strict`."""
    path, checkpoint, about = read_run_checkpoint(Path(source))
    state = checkpoint["state_dict"]
    ours = [m.name for m in module.config.members]
    if "member" in about:
        kind = names_at_revision([about["member"]["name"]], about.get("models_revision", 1))[0]
        targets = {k: state for k, name in enumerate(ours) if name == kind}
        if not targets:
            raise UserError(f"model.init_from {path}: holds a {kind}, and no member is one ({', '.join(ours)})")
    else:
        raw = about["config"].get("members", []) if isinstance(about["config"], dict) else []
        theirs = names_at_revision([m.get("name") for m in raw], about.get("models_revision", 1))
        if theirs != ours:
            raise UserError(f"model.init_from {path}: its members ({', '.join(map(str, theirs))}) are not this "
                            f"run's ({', '.join(ours)}); give a member's best_<member>.pt to start one kind")
        targets = {k: {key[len(f"members.{k}."):]: v for key, v in state.items() if key.startswith(f"members.{k}.")}
                   for k in range(len(ours))}
    for k, weights in targets.items():
        _load_fitting(module.members[k], weights, f"model.init_from {path}, member {module.names[k]}", strict)


def _load_fitting(member, weights: dict, where: str, strict: bool) -> None:
    own = member.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        raise UserError(f"{where}: not the same network ({len(missing)} tensors missing from the checkpoint, "
                        f"{len(unexpected)} it has in excess, e.g. {(missing or unexpected)[0]})")
    other = [key for key in own if own[key].shape != weights[key].shape]
    if other and strict:
        raise UserError(f"{where}: {len(other)} tensors of other shapes (e.g. {other[0]}: "
                        f"{tuple(weights[other[0]].shape)} here {tuple(own[other[0]].shape)}); model.init_strict=true")
    if other:
        print(f"note: {where}: {len(other)} tensors of other shapes ({', '.join(other[:3])}"
              f"{', ...' if len(other) > 3 else ''}) keep their fresh initialisation", file=sys.stderr)
    member.load_state_dict({key: (own[key] if key in other else weights[key]) for key in own})
