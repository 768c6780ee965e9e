"""A kind of dataset written for a test: pairs in ROOT/<split>/<name>_{image,label}.png, classes given."""

from pathlib import Path

import numpy as np
from PIL import Image

from iwu.data.common import LabelMap, PairDataset, Sample, raise_if_problems


def list_tiny(root, split, classes=None):
    folder = Path(root) / split
    if not folder.is_dir():
        return [], [f"{folder}: no such folder"]
    labels = LabelMap.identity(len(classes or ("a", "b")), 255, what="class ids")
    return [Sample(p.name[: -len("_image.png")], p, p.with_name(p.name.replace("_image", "_label")), labels)
            for p in sorted(folder.glob("*_image.png"))], []


class Tiny(PairDataset):
    kind = "tiny"

    def __init__(self, root, split="train", size=8, classes=None, augment=None):
        samples, problems = list_tiny(root, split, classes)
        raise_if_problems(problems)
        classes = tuple(classes or ("a", "b"))
        super().__init__(root, split, samples, size, classes, [(0, 0, 0), (255, 255, 255)][: len(classes)], augment)


def write_tiny(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / split / f"s{i}_image.png")
            Image.fromarray(rng.integers(0, 2, (8, 8), dtype=np.uint8)).save(root / split / f"s{i}_label.png")
    return root
