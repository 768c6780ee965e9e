"""`iwu masks`: a trained ensemble's instance-uncertainty masks for every training image.

The paper's two-stage variant: compute the masks once with a trained ensemble,
then train a single model with `mode=offline_masks loss.masks_dir=DIR`. Masks
are computed at the training size, on unflipped images, and stored by item
name (`iwu.mask_store`).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iwu.inference import check_classes, load_models
from iwu.mask_store import MaskWriter
from iwu.uncertainty import ensemble_uncertainty


def run_masks(target, data: str, out, split: str = "train", size=None, batch_size: int = 1, workers: int = 0,
              device=None) -> int:
    from iwu.data.sources import build_dataset, parse_data_spec

    loaded = load_models(target, device)
    dataset = build_dataset(parse_data_spec(data), split, size or int(loaded.config.data.get("size", 768)))
    check_classes(loaded, dataset)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    loss = loaded.config.loss
    with torch.no_grad(), MaskWriter(out, num_classes=len(dataset.classes)) as writer:
        for batch in tqdm(loader, desc=f"masks {dataset.kind} {split}", unit="batch"):
            logits = loaded.module(batch["image"].to(loaded.device))
            unc = ensemble_uncertainty(logits, connectivity=loss.connectivity, backend=loss.backend)
            for name, u in zip(batch["name"], unc.instance):
                writer.add(name, u.cpu())
    print(f"wrote {len(dataset)} masks of {len(loaded.module.names)} member(s) to {out}; "
          f"train with mode=offline_masks loss.masks_dir={out}")
    return 0
