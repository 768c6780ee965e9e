"""`iwu synth`: synthetic street scenes written in the real Cityscapes or ACDC layout
(and small Kvasir-SEG and VOC fakes).

The loaders the demo and the tests exercise are then the real ones. Every
image is a pure function of (seed, split, index), so the same seed writes the
same bytes. The dataset is built in a temporary folder beside `out` and
renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from iwu.data.acdc import CONDITIONS
from iwu.data.synthetic import fakes, street
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_json

LAYOUTS = (*street.LAYOUTS, *fakes.LAYOUTS)
MARKER = "iwu-synthetic.json"  # marks a folder we wrote, so writing again may replace it
# what a synthetic set's folder holds
_OWN = {MARKER, *street.FOLDERS, *(f for fs in fakes.FOLDERS.values() for f in fs)}
def _check_out(out: Path, layout: str, seed: int, force: bool) -> None:
    """Writing replaces the folder: only an empty one or an earlier synthetic set of the same layout and seed
    (another with `force`), and only if it holds nothing the generator did not write."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose a folder for --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = out / MARKER
    if not marker.is_file():
        raise UserError(f"{out}: folder is not empty and holds no synthetic dataset; choose an empty or new folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN)
    if foreign:
        raise UserError(f"{out}: holds {foreign[0]}, which is not part of the synthetic dataset there; move it "
                        "away or choose another folder (writing replaces the whole folder)")
    try:
        before = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = {}
    if not force and (before.get("layout"), before.get("seed")) != (layout, seed):
        raise UserError(f"{out}: holds a synthetic {before.get('layout', '?')} set of seed {before.get('seed', '?')}; "
                        "add --force to replace it, or choose another folder")


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished folder at `out`, replacing an earlier synthetic dataset there."""
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "data")
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)  # also onto an empty folder


def write_synthetic(out, layout: str = "cityscapes", n_train: int = 20, n_val: int = 5, size: int = 256,
                    height: int | None = None, seed: int = 0, write_train_ids: bool = False,
                    force: bool = False) -> Path:
    """Write n_train + n_val scenes of `size` x `height` (default size // 2) pixels; returns the root.

    cityscapes: leftImg8bit + gtFine labelIds (and labelTrainIds with `write_train_ids`).
    acdc: rgb_anon + gt labelTrainIds; frames take the conditions fog, night, rain, snow in
    turn, so n images hold n/4 of each (a split has none or at least one per condition).
    kvasir, voc: see iwu.data.synthetic.fakes. An earlier set at `out` is replaced if it has the same layout and
    seed (any, with `force`) and `out` holds nothing else.
    """
    if layout not in LAYOUTS:
        raise UserError(f"--layout {layout}: unknown; choose {', '.join(LAYOUTS)}")
    height = size // 2 if height is None else height
    if min(size, height) < 16 or n_train < 0 or n_val < 0:
        raise UserError(f"synthetic dataset {size}x{height}, {n_train}+{n_val} images: "
                        "need sizes >= 16 and counts >= 0")
    short = [(flag, n) for flag, n in (("--n-train", n_train), ("--n-val", n_val)) if 0 < n < len(CONDITIONS)]
    if layout == "acdc" and short:
        flag, n = short[0]
        raise UserError(f"{flag} {n}: an ACDC split needs at least {len(CONDITIONS)} images, one per condition "
                        f"({', '.join(CONDITIONS)}), or none")
    out = Path(out)
    _check_out(out, layout, seed, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is not
    try:
        if layout in fakes.LAYOUTS:
            fakes.write_fake(tmp, layout, n_train, n_val, size, height, seed)
        else:
            street.write_street(tmp, layout, n_train, n_val, size, height, seed, write_train_ids)
        about = {"layout": layout, "n_train": n_train, "n_val": n_val, "width": size, "height": height, "seed": seed}
        atomic_write_json(tmp / MARKER, about)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
