"""Datasets, the cache, synthetic scenes and the LightningDataModule.

    from iwu.data import Cityscapes, ACDC, Kvasir, VOC, SegmentationFolder, write_synthetic
    from iwu.data import SegmentationDataModule   # imports lightning on first use

Items are dicts: `image` float32 3xSxS (normalised by the dataset's `mean`/`std`, ImageNet's
unless it has its own), `label` int64
SxS (255 = ignore), `name` (a stable id), and on a training set given a mask
store, `mask` float32 SxS (its stored uncertainty). A training set's `augment`
(`iwu.data.augment`) transforms the three together.
"""

from iwu.data.acdc import ACDC, CONDITIONS
from iwu.data.cache import (
    CachedDataset,
    cache_dir,
    default_cache_root,
    open_cached,
    prepare_cache,
)
from iwu.data.checks import check_dataset, check_split
from iwu.data.cityscapes import CLASSES, PALETTE, Cityscapes
from iwu.data.common import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, DataFileError
from iwu.data.folder import SegmentationFolder
from iwu.data.kvasir import Kvasir
from iwu.data.sources import KINDS, build_dataset, parse_data_spec
from iwu.data.stats import format_proportions, load_class_counts, read_class_counts
from iwu.data.synthetic import write_synthetic
from iwu.data.voc import VOC

__all__ = [
    "ACDC", "CONDITIONS", "CLASSES", "PALETTE", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "KINDS",
    "CachedDataset", "Cityscapes", "DataFileError", "Kvasir", "SegmentationDataModule", "SegmentationFolder", "VOC",
    "build_dataset", "cache_dir", "check_dataset", "check_split", "default_cache_root", "format_proportions",
    "load_class_counts", "open_cached", "parse_data_spec", "prepare_cache", "read_class_counts", "write_synthetic",
]


def __getattr__(name):
    # lightning takes a second or two to import; only pay for it when the DataModule is used
    if name == "SegmentationDataModule":
        from iwu.data.datamodule import SegmentationDataModule

        return SegmentationDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
