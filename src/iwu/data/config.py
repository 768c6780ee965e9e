"""The run config's `data:` section: which dataset, at what size, in what batches.

Built and type-checked by `iwu.config.schema` like every other section; `check_data` adds the ranges and the
names (dataset kinds, ACDC conditions). Light on purpose (no torch): `iwu sweep` checks every run's config
before it starts one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from iwu.data import kinds
from iwu.util.bounded import MAX_SIDE
from iwu.errors import UserError
from iwu.util.suggest import did_you_mean

# The names a config may use: the kinds from their table (light, as this module), ACDC's conditions here
# rather than beside its reader (iwu.data.acdc re-exports them), because the reader imports torch.
CONDITIONS = ("fog", "night", "rain", "snow")  # ACDC's adverse conditions, in its folder order


@dataclass
class ValExtraConfig:
    """A second validation set after the main one (cross-domain evaluation); left out while its root is null."""

    kind: str  # its dataset reader, as data.kind
    root: str | None = None  # its folder; null: no second validation set this run
    conditions: list[str] | str | None = None  # acdc: as data.conditions
    classes: list[str] | None = None  # folder: as data.classes
    split: str = "val"  # the split it is validated on
    size: int | None = None  # its image side; null: data.size


@dataclass
class SyntheticConfig:
    """Synthetic street scenes written to data.root when it holds none (the demo's data)."""

    n_train: int  # training scenes
    n_val: int  # validation scenes
    width: int  # their side in pixels


@dataclass
class DataConfig:
    kind: str | None = None  # the dataset reader: cityscapes, acdc, kvasir, voc, folder (iwu.data.kinds)
    root: str | None = None  # the dataset folder; must be given to train, e.g. data.root=/data/cityscapes
    conditions: list[str] | str | None = None  # acdc: a list or "fog,night" of fog, night, rain, snow; null: all
    classes: list[str] | None = None  # folder: class names in label order; null: the folder's classes.yaml
    size: int = 768  # the side images are resized to (bilinear; labels nearest)
    train_split: str = "train"  # the split trained on
    val_split: str = "val"  # the split validated on
    val_fraction: float = 0.2  # datasets without a validation split: the share kept for it, chosen by name
    batch_size: int = 2  # training images per step
    val_batch_size: int = 1  # validation images per step (no batch statistics: any size gives the same scores)
    num_workers: int = 2  # processes decoding PNGs (and building the cache)
    cache: bool = True  # read from a memory-mapped store of the resized pairs (`iwu prepare`), built on first use
    # Reading the memmap in the main process beat two workers 917 to 163 images/s at 768x768
    # (benchmarks/data_loading.py, 2 CPUs): a worker ships every float batch through shared memory.
    cache_workers: int = 0  # loader processes reading the cache
    cache_dir: str | None = None  # where the cache lives; null: $IWU_CACHE or ~/.cache/iwu
    augment: list | None = None  # training transforms: names (hflip) or {name: {args}}; null: none (the paper's)
    sampler: Literal["shuffle", "rare_class"] = "shuffle"  # training order: shuffled, or rare_class (DAFormer's RCS)
    rcs_temperature: float = 0.01  # rare_class: T of p_c ~ exp((1 - f_c) / T), f_c c's pixel share; lower: rarer
    rcs_min_pixels: int | None = None  # rare_class: c's pixels an image needs to be drawn for c; null: 1.14% of size^2
    pin_memory: bool | None = None  # page-locked batches; null: when CUDA is available
    val_extra: ValExtraConfig | None = None  # a second validation set, e.g. {kind: acdc, root: /data/acdc}
    synthetic: SyntheticConfig | None = None  # {n_train, n_val, width}: scenes written to root when it has none

    @staticmethod
    def upgrade(raw: dict, key: str) -> dict:
        """Keys of earlier versions, as today's. Every run saved before `augment` carries `hflip`
        (config.yaml, checkpoints): `hflip: false` is dropped, `hflip: true` is `augment: [hflip]`."""
        if "hflip" not in raw:
            return raw
        raw = dict(raw)
        hflip = raw.pop("hflip")
        if not isinstance(hflip, bool):
            raise UserError(f"{key}.hflip: expected true or false, got {hflip!r} (now {key}.augment: [hflip])")
        if hflip and raw.get("augment") is not None:
            raise UserError(f"{key}.hflip: replaced by {key}.augment; add hflip to its list instead")
        if hflip:
            raw["augment"] = ["hflip"]
        return raw


def check_data(d: DataConfig, key: str = "data") -> None:
    """Ranges and names that types alone do not say; ACDC conditions become a list in canonical order."""
    for name in ("size", "batch_size", "val_batch_size"):
        _require(f"{key}.{name}", getattr(d, name), getattr(d, name) >= 1, "an integer >= 1")
    _require(f"{key}.size", d.size, d.size <= MAX_SIDE, f"an integer from 1 to {MAX_SIDE} (the largest image side)")
    for name in ("num_workers", "cache_workers"):
        _require(f"{key}.{name}", getattr(d, name), getattr(d, name) >= 0, "an integer >= 0")
    _require(f"{key}.val_fraction", d.val_fraction, 0 < d.val_fraction < 1, "a number between 0 and 1")
    _require(f"{key}.rcs_temperature", d.rcs_temperature, d.rcs_temperature > 0, "a number > 0")
    _require(f"{key}.rcs_min_pixels", d.rcs_min_pixels, d.rcs_min_pixels is None or d.rcs_min_pixels >= 1,
             "null or an integer >= 1")
    if d.sampler == "rare_class" and not d.cache:
        raise UserError(f"{key}.sampler: rare_class draws by each image's class counts, which the cache holds; "
                        f"set {key}.cache=true")
    _check_source(d, key)
    if d.augment:
        # the transforms need torchvision: imported only when there are steps, so that reading the
        # paper's configs (and planning a sweep of them) stays free of torch
        from iwu.data.augment import check_augment

        check_augment(d.augment, key=f"{key}.augment", size=d.size)
    if d.val_extra is not None:
        extra, where = d.val_extra, f"{key}.val_extra"
        _check_source(extra, where)
        if extra.size is not None:
            _require(f"{where}.size", extra.size, 1 <= extra.size <= MAX_SIDE,
                     f"null or an integer from 1 to {MAX_SIDE}")
    if d.synthetic is not None:
        for name in ("n_train", "n_val", "width"):
            _require(f"{key}.synthetic.{name}", getattr(d.synthetic, name), getattr(d.synthetic, name) >= 1,
                     "an integer >= 1")
        _require(f"{key}.synthetic.width", d.synthetic.width, d.synthetic.width <= MAX_SIDE,
                 f"an integer from 1 to {MAX_SIDE}")


def _require(key: str, value, ok: bool, expected: str) -> None:
    if not ok:
        raise UserError(f"{key}: expected {expected}, got {value!r}")


def _unknown(key: str, what: str, value: str, known) -> UserError:
    hint = did_you_mean(value, known, "; did you mean {}?")
    return UserError(f"{key}: unknown {what} {value!r}{hint} ({what}s: {', '.join(known)})")


def _check_source(source: DataConfig | ValExtraConfig, key: str) -> None:
    if source.kind is not None and source.kind not in kinds.KINDS:
        raise _unknown(f"{key}.kind", "kind", source.kind, kinds.KINDS)
    if source.conditions is not None:
        source.conditions = parse_condition_names(source.conditions, f"{key}.conditions")
    if source.classes is not None:
        _require(f"{key}.classes", source.classes, source.classes != [], "null or a list of class names")


def parse_condition_names(conditions: list[str] | str, key: str) -> list[str]:
    """`"night,fog"` or `[night, fog]` -> `["fog", "night"]`; an unknown or empty name is a UserError."""
    names = conditions.split(",") if isinstance(conditions, str) else conditions
    chosen = [c.strip() for c in names if c.strip()]  # "fog,night," too
    for name in chosen:
        if name not in CONDITIONS:
            raise _unknown(key, "condition", name, CONDITIONS)
    if not chosen:
        raise UserError(f"{key}: expected null (all four) or at least one of {', '.join(CONDITIONS)}, "
                        f"got {conditions!r}")
    return [c for c in CONDITIONS if c in chosen]
