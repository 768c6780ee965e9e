"""`iwu masks`: a trained ensemble's instance-uncertainty masks for every training image.

The paper's two-stage variant: compute the masks once with a trained ensemble,
then train a single model with `mode=offline_masks loss.masks_dir=DIR`. Masks
are computed at the training size, on unflipped images, and stored by item
name (`iwu.data.mask_store`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from iwu.util.bars import bar
from iwu.inference.loading import check_classes, dataset_for, load_models
from iwu.data.mask_store import MaskWriter, is_mask_store
from iwu.util.output_paths import refuse_existing, refuse_overlap
from iwu.method.uncertainty import ensemble_uncertainty


def refuse_foreign_files(out, overwrite: bool) -> None:
    """A mask folder is new, empty or a mask store already (masks are added to it, an unfinished one is
    finished); a folder of other files is not replaced without --overwrite."""
    out = Path(out)
    if out.is_dir() and not is_mask_store(out):
        refuse_existing(list(out.iterdir())[:1], "--out", overwrite)


def run_masks(target, data: str, out, split: str = "train", size=None, batch_size: int = 1, workers: int = 0,
              device=None, overwrite: bool = False) -> int:
    from iwu.data.sources import parse_data_spec

    source = parse_data_spec(data)
    refuse_overlap(out, [source["root"]], "--out")
    refuse_foreign_files(out, overwrite)
    loaded = load_models(target, device)
    dataset = dataset_for(loaded, source, split, size)
    check_classes(loaded, dataset)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    loss = loaded.config.loss
    with torch.no_grad(), MaskWriter(out, num_classes=len(dataset.classes)) as writer:
        for batch in bar(loader, desc=f"masks {dataset.kind} {split}", unit="batch"):
            logits = loaded.module(batch["image"].to(loaded.device))
            unc = ensemble_uncertainty(logits, connectivity=loss.connectivity, backend=loss.backend)
            for name, u in zip(batch["name"], unc.instance):
                writer.add(name, u.cpu())
    print(f"wrote {len(dataset)} masks of {len(loaded.module.names)} member(s) to {out}; "
          f"train with mode=offline_masks loss.masks_dir={out}")
    return 0
