"""The LightningDataModule: training and validation loaders from the run config's data section
(`iwu.data.config.DataConfig`, or a plain mapping of its keys):

    {"kind": "cityscapes", "root": "/data/cityscapes", "size": 768,
     "batch_size": 2, "val_batch_size": 1, "num_workers": 2, "cache": True,
     "val_extra": {"kind": "acdc", "root": "/data/acdc"}}

Training shuffles and drops the last partial batch (the poly schedule counts
full batches); the order is a pure function of (seed, epoch) so a run resumes
mid-epoch exactly (`start_at`). With `sampler: rare_class` each epoch's items
are drawn by rare-class sampling instead (`iwu.data.rare_class`), from the
per-image class counts of the training split's cache store. Validation keeps
order. With `val_extra` a second validation loader follows the main one
(dataloader_idx 1), for cross-domain evaluation. With `cache` on, both read
the memory-mapped store (`iwu prepare`), built here on first use, in the main
process unless `cache_workers` says otherwise.

`root: null` must be given before training (`data.root=/data/acdc`); a
`val_extra` whose root is null is left out, so a config can name the
cross-domain set and it is used when its root is given. With `synthetic`
(`{n_train, n_val, width}`), `root` is filled with synthetic street scenes on
first use (the demo's data).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from iwu.config.schema import data_config
from iwu.data.cache import CachedDataset, open_cached, prepare_cache
from iwu.data.config import DataConfig, ValExtraConfig
from iwu.data.rare_class import RareClassPlan, default_min_pixels, rare_class_plan
from iwu.data.sampler import EpochSampler, RareClassSampler, ShardSampler
from iwu.data import kinds
from iwu.data.sources import build_dataset
from iwu.data.class_counts import load_class_counts, load_image_class_counts
from iwu.errors import UserError
from iwu.util.atomic_files import locked


def _source(cfg: DataConfig | ValExtraConfig, val_fraction: float) -> dict:
    # val_fraction: the main set's, also for an extra set released without a split of its own
    return {"kind": cfg.kind, "root": cfg.root, "conditions": cfg.conditions, "classes": cfg.classes,
            "val_fraction": val_fraction}


class SegmentationDataModule(L.LightningDataModule):
    """Train/val loaders for any dataset of `iwu.data.sources`; see the module docstring for the config."""

    def __init__(self, config: DataConfig | Mapping, seed: int = 0):
        super().__init__()
        self.config = data_config(dict(config)) if isinstance(config, Mapping) else config
        if self.config.kind is None:
            raise UserError(f"data.kind: not set; choose one of {', '.join(kinds.KINDS)}")
        if not self.config.root:
            kind = self.config.kind
            raise UserError(f"data.root: not set; give the {kind} folder, e.g. data.root=/data/{kind}")
        self.seed = seed
        self.train_set = None
        self.val_sets: list = []
        self._sampler: EpochSampler | None = None
        self._set_up: dict | None = None  # the specs of the datasets built last
        self._train_store: Path | None = None  # the training split's cache store, once found or built
        self._train_counts: np.ndarray | None = None
        self._image_counts: np.ndarray | None = None
        self._rare_class: RareClassPlan | None = None  # with sampler rare_class, from the training split
        self._prepared = False
        self.masks = None  # a MaskStore: training items carry their stored mask (`use_masks`)

    # the (source, split, size, augment) of every dataset this module serves
    def _specs(self, stage: str | None) -> dict[str, tuple]:
        cfg = self.config
        specs = {}
        if stage in (None, "fit"):
            specs["train"] = (_source(cfg, cfg.val_fraction), cfg.train_split, cfg.size, cfg.augment)
        if stage in (None, "fit", "validate"):
            specs["val"] = (_source(cfg, cfg.val_fraction), cfg.val_split, cfg.size, None)
            extra = cfg.val_extra
            if extra is not None and extra.root:  # named but its root not given: no cross-domain validation
                specs["val_extra"] = (_source(extra, cfg.val_fraction), extra.split, extra.size or cfg.size, None)
        return specs

    def _dataset(self, spec: tuple):
        dataset = build_dataset(spec[0], spec[1], spec[2], augment=spec[3])
        if self.config.cache:
            return open_cached(dataset, self.config.cache_dir, workers=self.config.num_workers)
        return dataset

    def prepare_data(self) -> None:
        # Lightning calls this once per node before setup: write and cache there, not in every rank
        if self._prepared:  # done already by the caller; checking the stores again would list every file
            return
        self._write_synthetic()
        if self.config.cache:
            for spec in self._specs(None).values():
                prepare_cache(build_dataset(*spec[:3]), self.config.cache_dir, self.config.num_workers)
        self._prepared = True

    def _write_synthetic(self) -> None:
        from iwu.data.synthetic import MARKER, write_synthetic

        spec, root = self.config.synthetic, Path(self.config.root)
        if spec is None or (root / MARKER).is_file():
            return
        with locked(root.parent / f".{root.name}.lock"):  # other processes may be writing it too
            if not (root / MARKER).is_file():
                write_synthetic(root, "cityscapes", n_train=spec.n_train, n_val=spec.n_val, size=spec.width, seed=0)

    def setup(self, stage: str | None = None) -> None:
        specs = self._specs(stage)
        if specs == self._set_up:  # Lightning sets up again what the caller already did: listing files twice
            return
        self._write_synthetic()  # also here, for use without a Trainer
        datasets = {name: self._dataset(spec) for name, spec in specs.items()}
        if "train" in datasets:
            self.train_set = datasets["train"]
            self.train_set.masks = self.masks
            if len(self.train_set) < self.config.batch_size:
                raise UserError(f"data.batch_size: the {self.config.train_split} split has {len(self.train_set)} "
                                f"images, fewer than batch_size {self.config.batch_size}")
            if self.config.sampler == "rare_class":  # here, so that a split it cannot draw from stops a run early
                self._rare_class = self._rare_class_plan()
        self.val_sets = [datasets[k] for k in ("val", "val_extra") if k in datasets]
        for extra in self.val_sets[1:]:  # the models take every image as they were trained on the main set's
            extra.mean, extra.std = self.val_sets[0].mean, self.val_sets[0].std
        self._set_up = specs
        if len(self.val_sets) == 2 and self.val_sets[0].classes != self.val_sets[1].classes:
            raise UserError("data.val_extra: it has other classes than the main dataset; "
                            "cross-domain evaluation needs the same classes")

    def use_masks(self, store) -> None:
        """Training items carry their mask from `store` (an `iwu.data.mask_store.MaskStore`), loaded in the
        loader's workers and augmented with the item."""
        self.masks = store
        if self.train_set is not None:
            self.train_set.masks = store

    @property
    def classes(self) -> tuple[str, ...]:
        return (self.train_set if self.train_set is not None else self.val_sets[0]).classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def val_names(self) -> list[str]:
        """One label per validation loader, in dataloader_idx order, e.g. ["cityscapes/val", "acdc/val"]."""
        return [f"{d.kind}/{d.split}" for d in self.val_sets]

    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        workers = self.config.cache_workers if isinstance(dataset, CachedDataset) else self.config.num_workers
        pin = self.config.pin_memory
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=isinstance(sampler, EpochSampler),
            # its own generator: making an iterator must not draw from the global RNG, or a resumed
            # run's dropout would see other random numbers than the uninterrupted one
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=workers,
            pin_memory=torch.cuda.is_available() if pin is None else pin,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        if self._sampler is None:  # one for the module's life: Lightning may ask for the loader twice
            if self._rare_class is not None:
                self._sampler = RareClassSampler(self._rare_class, self.config.batch_size, self.seed)
            else:
                self._sampler = EpochSampler(len(self.train_set), self.config.batch_size, self.seed)
        return self._loader(self.train_set, self.config.batch_size, self._sampler)

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Full training batches per epoch on each of `world_size` processes (as EpochSampler serves them)."""
        if self.train_set is None:
            self.setup("fit")
        return len(self.train_set) // world_size // self.config.batch_size

    def start_at(self, step: int) -> None:
        """Serve batches from training step `step` on: from its epoch, after the batches already done."""
        self.train_dataloader()
        self._sampler.start_at(step)

    def val_dataloader(self):
        """One loader, or [main, extra] when `val_extra` is set."""
        if not self.val_sets:
            self.setup("validate")
        loaders = [self._loader(d, self.config.val_batch_size, ShardSampler(len(d))) for d in self.val_sets]
        return loaders[0] if len(loaders) == 1 else loaders

    def train_class_counts(self) -> np.ndarray:
        """Pixels per class of the training split at the training size (for class weights).

        Counting needs a pass over the split, so this builds (and keeps) its cache store if missing; asked
        again (the empty-split check, then class weights), it answers from memory.
        """
        if self._train_counts is None:
            self._train_counts = load_class_counts(self._store())
        return self._train_counts

    def train_image_class_counts(self) -> np.ndarray:
        """Pixels per class of each training image (N x C, in the training set's order), as
        `train_class_counts` finds them."""
        if self._image_counts is None:
            self._image_counts = load_image_class_counts(self._store())
        return self._image_counts

    def _store(self) -> Path:
        if self._train_store is None:
            dataset = build_dataset(_source(self.config, self.config.val_fraction), self.config.train_split, self.config.size)
            self._train_store = prepare_cache(dataset, self.config.cache_dir, self.config.num_workers)
        return self._train_store

    def _rare_class_plan(self) -> RareClassPlan:
        cfg = self.config
        min_pixels = cfg.rcs_min_pixels or default_min_pixels(cfg.size)
        try:
            return rare_class_plan(self.train_image_class_counts(), cfg.rcs_temperature, min_pixels)
        except ValueError as err:
            raise UserError(f"data.rcs_min_pixels: in the {cfg.train_split} split, {err}; set it lower") from None
