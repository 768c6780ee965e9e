"""Time of the segment features and IoU targets (`iwu.method.segments.segment_table`) against the ensemble's
own forward pass, on one 1024x2048 image with 19 classes, on the CPU.

The forward pass: two `deeplabv3plus_mobilenet` members (random weights) on the image, softmaxed at full
size, as `iwu evaluate` runs them. The features: a blocky random prediction (cells of about 16x16 pixels
with noisy logits, a few thousand segments) and a random label map of the same kind, 5% of it ignored.
Target: the features take no longer than the forward pass (ratio <= 1). Run:
`python benchmarks/segment_features.py` (`--height 256` for a quick look at a smaller size).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from iwu.constants import IGNORE_INDEX
from iwu.method.segments import segment_table
from iwu.models.registry import build_model

CLASSES, MEMBERS, CELL = 19, 2, 16


def blocky_probs(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Member probabilities (M,1,C,H,W): smooth per cell, a little noise per member and pixel."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randn(1, CLASSES, height // CELL, width // CELL, generator=g) * 3
    logits = F.interpolate(cells, size=(height, width), mode="nearest")
    return torch.stack([(logits + 0.3 * torch.randn(logits.shape, generator=g)).softmax(dim=1)
                        for _ in range(MEMBERS)])


def blocky_target(height: int, width: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, CLASSES, (1, 1, height // CELL, width // CELL), generator=g).float()
    target = F.interpolate(cells, size=(height, width), mode="nearest")[:, 0].long()
    target[torch.rand(target.shape, generator=g) < 0.05] = IGNORE_INDEX
    return target


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def forward_seconds(height: int, width: int, repeats: int) -> float:
    members = [build_model("deeplabv3plus_mobilenet", CLASSES, pretrained=False).eval() for _ in range(MEMBERS)]
    image = torch.randn(1, 3, height, width)

    def forward():
        torch.stack([F.interpolate(m(image), size=(height, width), mode="bilinear", align_corners=False)
                     .softmax(dim=1) for m in members])

    forward()  # warm-up: first-call allocations
    return best_of(repeats, forward)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    height, width = args.height, 2 * args.height
    probs, target = blocky_probs(height, width), blocky_target(height, width)
    segment_table(probs, target)  # warm-up
    features_s = best_of(args.repeats, lambda: segment_table(probs, target))
    n = len(segment_table(probs, target).iou)
    forward_s = forward_seconds(height, width, args.repeats)
    print(f"{height}x{width}, {CLASSES} classes, {n} segments, {torch.get_num_threads()} threads")
    print(f"segment features + IoU: {features_s:.3f} s; forward of {MEMBERS} members: {forward_s:.3f} s; "
          f"ratio {features_s / forward_s:.3f} (target <= 1)")


if __name__ == "__main__":
    main()
