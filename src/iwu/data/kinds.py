"""The kinds of dataset iwu reads, one row each: the table every consumer reads.

The loaders and `--data KIND:ROOT` (iwu.data.sources), the config's check of `data.kind`, the help of
every command that takes `--data`, `prepare --check`, image statistics, `iwu synth --layout` and the
class lists of `iwu import` all read `TABLE`. Light on purpose (no torch): configs and `--help` read it.

Adding a kind is a reader module and one row. The module defines
- a `PairDataset` subclass, built as `Reader(root, split, size, augment=..., **options)`;
- a function listing a split, `lister(root, split, **options) -> (samples, problems)`, which never
  raises on a problem of the data (`prepare --check` reports them all);
- `CLASSES`, when its classes are fixed (not read from the dataset).
`options` are the source keys (`data.conditions`, `data.val_fraction`, `data.classes`) its reader and
lister take, under the same names; a missing one is passed as None, which means the reader's default.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str  # the `kind` of a config's data section and the KIND of `--data KIND:ROOT`
    module: str  # its reader module, imported on first use
    reader: str  # the dataset class in it
    lister: str  # the function in it listing a split's samples and problems
    spec: str  # how `--data` names it, for help and errors
    options: tuple[str, ...] = ()  # source keys its reader and lister take
    fixed_classes: bool = True  # its module defines CLASSES (so `iwu import` knows them from the kind alone)
    synthetic: bool = False  # `iwu synth --layout` writes fakes of its layout

    def load(self, attribute: str):
        """An attribute of the reader module (its reader class, its lister, CLASSES)."""
        return getattr(importlib.import_module(self.module), attribute)


TABLE = (
    Kind("cityscapes", "iwu.data.cityscapes", "Cityscapes", "list_cityscapes", "cityscapes:ROOT", synthetic=True),
    Kind("acdc", "iwu.data.acdc", "ACDC", "list_acdc", "acdc:ROOT[:fog,night,rain,snow]", ("conditions",),
         synthetic=True),
    Kind("kvasir", "iwu.data.kvasir", "Kvasir", "list_kvasir", "kvasir:ROOT", ("val_fraction",), synthetic=True),
    Kind("voc", "iwu.data.voc", "VOC", "list_voc", "voc:ROOT", synthetic=True),
    Kind("folder", "iwu.data.folder", "SegmentationFolder", "list_folder_split", "folder:ROOT", ("classes",),
         fixed_classes=False),
)
KINDS = tuple(kind.name for kind in TABLE)
BY_NAME = {kind.name: kind for kind in TABLE}
SYNTHETIC_LAYOUTS = tuple(kind.name for kind in TABLE if kind.synthetic)


def spec_help() -> str:
    """"use cityscapes:ROOT, ..., or folder:ROOT": every kind as `--data` takes it."""
    specs = [kind.spec for kind in TABLE]
    return f"use {', '.join(specs[:-1])} or {specs[-1]}" if len(specs) > 1 else f"use {specs[0]}"
