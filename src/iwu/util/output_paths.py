"""Where a command may write: never among its inputs, never over files it was not asked to replace.

A command that writes into a folder it also reads (`iwu predict photos --out
photos`) replaces the user's files and reads its own outputs back as inputs;
one that writes into a dataset (`--save-predictions DATA/labels/val`) replaces
the ground truth. Both are refused before anything is computed. Files that
exist at the names a command would write are replaced only with `--overwrite`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from iwu.errors import UserError


def refuse_overlap(out, inputs: Iterable, option: str) -> Path:
    """`out` resolved, unless it is, lies inside or holds one of the input folders: then a UserError naming
    `option` and the folder. Input files are not folders read as a whole: beside them is allowed, and
    `refuse_existing` keeps what is there."""
    target = Path(out).resolve()
    if target.exists() and not target.is_dir():
        raise UserError(f"{option} {out}: exists and is not a folder; choose a folder")
    for given in inputs:
        folder = Path(given).resolve()
        if not folder.is_dir():
            continue
        if target == folder or folder in target.parents or target in folder.parents:
            where = "is" if target == folder else ("lies inside" if folder in target.parents else "holds")
            raise UserError(f"{option} {out}: {where} the input folder {given}; choose a folder outside the "
                            "inputs (iwu never writes among the files it reads)")
    return target


def refuse_existing(paths: Iterable[Path], option: str, overwrite: bool) -> None:
    """Unless `overwrite`, a UserError when any of `paths` exists already (naming the first and the count)."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else ""
        raise UserError(f"{option}: {existing[0]} exists already{more}; add --overwrite to replace, "
                        "or choose another folder")
