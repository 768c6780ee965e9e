"""The config file of the tiny CPU runs the end-to-end tests share: two MobileNetV2 members on synthetic
street scenes at 32x32 (6 training scenes: 3 batches an epoch), written on first use."""

from pathlib import Path

import yaml

MEMBERS = [{"name": "deeplabv3plus_mobilenet", "lr": 1e-3}, {"name": "deeplabv3plus_mobilenet", "lr": 5e-4}]


def tiny_config(folder: Path, name: str = "tiny", *, data: dict | None = None, trainer: dict | None = None,
                **keys) -> Path:
    """`folder/<name>.yaml`; `data` and `trainer` add to those sections, other keys replace top-level ones."""
    config = {
        "experiment": "tiny", "val_every": 3, "members": MEMBERS, "model": {"pretrained": False, "bn_momentum": 0.1},
        "data": {"kind": "cityscapes", "root": str(folder / "scenes"), "size": 32, "cache_dir": str(folder / "cache"),
                 "synthetic": {"n_train": 6, "n_val": 2, "width": 64}, **(data or {})},
        "trainer": {"max_steps": 4, "accelerator": "cpu", "log_every_n_steps": 1, **(trainer or {})},
        **keys,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
