"""Checkpoint files as iwu writes and reads them: a digest of the weights beside them, a reader that loads
nothing but tensors and plain values and answers every unreadable file in one line, and a run's
checkpoint with its record checked.

torch only (no Lightning), so commands that only read or write checkpoints start fast.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from iwu.engine.run_dir import BEST
from iwu.errors import UserError

DIGEST = "weights_sha256"  # beside the weights in every checkpoint iwu writes


def weights_digest(state_dict: dict) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes, in name order.

    torch.load does not check its archive's CRCs, so a byte flipped inside a tensor on disk or on the
    way between machines loads and evaluates to other numbers; the digest finds it (0.25 s for the
    paper's 415 MB of weights).
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not torch.is_tensor(t):
            continue
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def verify_weights(checkpoint: dict, path) -> None:
    """A UserError naming `path` when the weights differ from the digest stored with them (files without
    one, written by an earlier iwu or elsewhere, are taken as they are)."""
    stored = checkpoint.get(DIGEST) if isinstance(checkpoint, dict) else None
    if stored is not None and weights_digest(checkpoint.get("state_dict", {})) != stored:
        raise UserError(f"{path}: its weights differ from the digest saved with them: the file was damaged "
                        "after it was written (disk, copy, transfer); use another copy or checkpoint")


def _numpy_scalars() -> list:
    """The numpy types a scalar pickles as (the published code saves `best_score` as one): plain values,
    which `weights_only` loading may accept without running code."""
    scalar = getattr(np, "_core", None) or np.core  # numpy 2 moved it
    return [scalar.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)}]


def load_plain(path: Path, mmap: bool = False):
    """`torch.load(path, weights_only=True)` on the CPU, numpy scalars allowed, any failure one line naming
    the file in iwu's words (torch's own text can run to pages and carry terminal escapes)."""
    try:
        with torch.serialization.safe_globals(_numpy_scalars()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # no refused class or function named: not a checkpoint at all (text)
            raise UserError(f"{path}: cannot read the checkpoint (not a PyTorch file)") from None
        raise UserError(f"{path}: refused: it holds code or objects besides tensors and plain values, which iwu "
                        "never loads from a shared file (weights_only)") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the checkpoint ({err.strerror or 'unreadable'})") from None
    except (RuntimeError, EOFError, ValueError, TypeError, KeyError, AttributeError):
        raise UserError(f"{path}: cannot read the checkpoint (truncated, damaged or not a PyTorch file)") from None


def read_checkpoint(path: Path, mmap: bool = False) -> dict:
    """An iwu checkpoint (`load_plain`): a dict with its `state_dict`."""
    checkpoint = load_plain(path, mmap)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_state"), dict):
        raise UserError(f"{path}: a checkpoint of the published code; turn it into a run with `iwu import {path} "
                        "--out DIR` and give the run directory")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path}: not a checkpoint of iwu (no weights inside)")
    return checkpoint


def read_run_checkpoint(path: Path) -> tuple[Path, dict, dict]:
    """(file, checkpoint, its "iwu" record) of a run directory (its best ensemble) or checkpoint file."""
    if path.is_dir():
        if not (path / BEST).is_file():
            raise UserError(f"{path}: no {BEST} here; give a run directory of `iwu train` or a checkpoint file")
        path = path / BEST
    elif not path.is_file():
        raise UserError(f"{path}: no such run directory or checkpoint")
    checkpoint = read_checkpoint(path)
    verify_weights(checkpoint, path)
    about = checkpoint.get("iwu") if isinstance(checkpoint, dict) else None
    if not isinstance(about, dict) or "config" not in about:
        raise UserError(f"{path}: not a checkpoint of an iwu run (no run config inside)")
    damage = _record_damage(about)
    if damage:
        raise UserError(f"{path}: its run record is damaged ({damage}); the file was altered, use another copy")
    return path, checkpoint, about


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _record_damage(about: dict) -> str | None:
    """What in a checkpoint's "iwu" record has not the shape iwu writes, or None."""
    config = about["config"]
    if not isinstance(config, dict):
        return "its config is not a mapping"
    if not _strings(about.get("classes")) or not about["classes"]:
        return "`classes` is not a list of class names"
    revision = about.get("models_revision", 1)
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        return f"`models_revision` is {revision!r}, not a revision number"
    if "imports" in config and not _strings(config["imports"]):
        return "`imports` is not a list of module names"
    members = config.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                               for m in members):
        return "`members` is not a list of named members"
    if "member" in about and not (isinstance(about["member"], dict) and isinstance(about["member"].get("name"), str)
                                  and isinstance(about.get("name"), str)):
        return "its member's record has no name"
    return None
