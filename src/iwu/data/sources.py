"""From a user's words to a dataset: `KIND:ROOT` specs and config dicts."""

from __future__ import annotations

from pathlib import Path

from iwu.data.acdc import parse_conditions
from iwu.data.common import PairDataset
from iwu.data import kinds
from iwu.errors import UserError


def image_statistics(kind) -> tuple[tuple, tuple]:
    """(mean, std) the images of a kind of dataset are normalised with: its own, or ImageNet's."""
    reader = kinds.BY_NAME[kind].load(kinds.BY_NAME[kind].reader) if kind in kinds.BY_NAME else PairDataset
    return reader.mean, reader.std


def parse_data_spec(spec: str) -> dict:
    """`"acdc:/data/acdc:fog,night"` -> `{"kind": "acdc", "root": "/data/acdc", "conditions": ["fog", "night"]}`."""
    kind, sep, rest = str(spec).partition(":")
    if not sep or not rest or kind not in kinds.KINDS:
        raise UserError(f"--data {spec}: {kinds.spec_help()}")
    if kind == "acdc" and not Path(rest).is_dir():
        root, sep, tail = rest.rpartition(":")
        # a trailing part without a path separator is a list of conditions (checked, so a typo is named);
        # a colon inside an existing folder's path is not
        if sep and root and "/" not in tail and "\\" not in tail:
            return {"kind": kind, "root": root, "conditions": list(parse_conditions(tail))}
    return {"kind": kind, "root": rest}


def build_dataset(source: dict, split: str, size: int, augment: list | None = None) -> PairDataset:
    """A dataset from `{"kind", "root", ["conditions" (acdc)], ["val_fraction" (kvasir)], ["classes" (folder)]}`."""
    kind, root = source.get("kind"), source.get("root")
    if kind not in kinds.KINDS:
        raise UserError(f"data kind {kind!r}: unknown; choose one of {', '.join(kinds.KINDS)}")
    if not root:
        raise UserError(f"data ({kind}): `root` is missing; give the dataset folder")
    kind = kinds.BY_NAME[kind]
    return kind.load(kind.reader)(root, split, size, augment=augment, **_options(kind, source))


def list_samples(source: dict, split: str) -> tuple[list, list[str]]:
    """A split's samples and every structural problem, without raising on them (for `--check`)."""
    kind, root = source.get("kind"), source.get("root")
    if kind not in kinds.KINDS or not root:
        build_dataset(source, split, size=1)  # raises the one-line message for the config
    kind = kinds.BY_NAME[kind]
    return kind.load(kind.lister)(root, split, **_options(kind, source))


def _options(kind, source: dict) -> dict:
    """The source keys the kind's reader takes; None (absent) is the reader's default."""
    return {key: source.get(key) for key in kind.options}
