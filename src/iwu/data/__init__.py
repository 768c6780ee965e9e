"""Datasets, the cache, synthetic scenes and the LightningDataModule.

    from iwu.data import Cityscapes, ACDC, Kvasir, VOC, SegmentationFolder, write_synthetic
    from iwu.data import SegmentationDataModule   # imports lightning on first use

Items are dicts: `image` float32 3xSxS (normalised by the dataset's `mean`/`std`, ImageNet's
unless it has its own), `label` int64
SxS (255 = ignore), `name` (a stable id), and on a training set given a mask
store, `mask` float32 SxS (its stored uncertainty). A training set's `augment`
(`iwu.data.augment`) transforms the three together.

Names are imported on first use: the config (`iwu.data.config`) is read without torch, and the
DataModule's lightning takes a second or two to import.
"""

import importlib

from iwu.data.kinds import TABLE

_HOMES = {
    "iwu.data.cache": ["CachedDataset", "cache_dir", "default_cache_root", "open_cached", "prepare_cache"],
    "iwu.data.checks": ["check_dataset", "check_split"],
    "iwu.data.cityscapes": ["CLASSES", "PALETTE"],
    "iwu.data.common": ["IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "DataFileError"],
    "iwu.data.config": ["CONDITIONS", "DataConfig"],
    "iwu.data.datamodule": ["SegmentationDataModule"],
    "iwu.data.kinds": ["KINDS"],
    "iwu.data.sources": ["build_dataset", "parse_data_spec"],
    "iwu.data.class_counts": ["format_proportions", "load_class_counts", "read_class_counts"],
    "iwu.data.synthetic": ["write_synthetic"],
}
for _kind in TABLE:  # every kind's reader, from the table of kinds
    _HOMES.setdefault(_kind.module, []).append(_kind.reader)
_HOME = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
