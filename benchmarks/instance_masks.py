"""Speed of `instance_uncertainty` against the naive per-component loop.

The naive baseline is what the published code does: for each class, label
the components of its binary mask, then for each component find its pixels
(``np.where(labels == k)``), average them and write the mean back. Both run in this process on the same 768x768 predictions with 19
classes, in three regimes:

  smooth  a few hundred instances per image (late in training)
  mid     about 15,000 instances per image
  noisy   per-pixel random classes (the first training step)

The naive loop costs one full-image mask per component, so on the regimes
with many components it is timed on a sample of components and extrapolated
linearly (the per-component cost does not depend on the component); the
printout says when it did. Run: `python benchmarks/instance_masks.py`
(`--quick` for a smaller sample).
"""

from __future__ import annotations

import argparse
import time

import cc3d
import numpy as np
import torch
import torch.nn.functional as F

from iwu.method.uncertainty import instance_uncertainty, label_instances

SIZE, CLASSES, BATCH = 768, 19, 2
TARGETS = {"mid": 1000.0, "smooth": 25.0}  # minimum speed-up over the naive loop
MAX_MS_PER_IMAGE = 10.0  # cc3d path, on this machine
MAX_MS_PER_IMAGE_GPU = 2.0  # torch path on a GPU


def predictions(regime: str, seed: int = 0, *, size: int = SIZE, batch: int = BATCH) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if regime == "noisy":
        return torch.randint(0, CLASSES, (batch, size, size), generator=g)
    if regime == "smooth":  # argmax of smooth random logits: large blobs
        logits = torch.randn(batch, CLASSES, 12, 12, generator=g)
        return F.interpolate(logits, size=(size, size), mode="bicubic", align_corners=False).argmax(1)
    side = max(1, size * 136 // SIZE)  # ~6x6-pixel cells at any size
    cells = torch.randint(0, CLASSES, (batch, 1, side, side), generator=g).float()
    return F.interpolate(cells, size=(size, size), mode="nearest")[:, 0].long()


def entropies(shape, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * float(np.log(CLASSES))


def naive(pred: np.ndarray, values: np.ndarray, budget_s: float):
    """Per-component loop; returns (seconds extrapolated to all components, result, mask of done pixels)."""
    out = np.zeros(values.shape, np.float32)
    done = np.zeros(values.shape, bool)
    label_s = loop_s = 0.0
    looped = total = 0
    for b in range(pred.shape[0]):
        for c in range(CLASSES):
            t0 = time.perf_counter()
            # uint8, as the published code: cc3d 4.1.1 mislabels bool images at 8-connectivity
            labels, n = cc3d.connected_components((pred[b] == c).view(np.uint8), connectivity=8, return_N=True)
            label_s += time.perf_counter() - t0
            total += n
            for k in range(1, n + 1):
                if loop_s > budget_s * (b * CLASSES + c + 1) / (pred.shape[0] * CLASSES):
                    break  # keep the sample spread over images and classes
                t0 = time.perf_counter()
                where = np.where(labels == k)
                out[b][where] = values[b][where].mean()
                loop_s += time.perf_counter() - t0
                done[b][where] = True
                looped += 1
    extrapolated = label_s + loop_s * total / max(looped, 1)
    return extrapolated, out, done, looped, total


def plain_cc3d_bincount(pred: torch.Tensor, values: torch.Tensor) -> np.ndarray:
    """The straightforward fast version: cc3d per image, bincount, fancy-index gather."""
    out = np.empty(values.shape, np.float32)
    for b in range(pred.shape[0]):
        labels = cc3d.connected_components(pred[b].numpy() + 1, connectivity=8)
        sums = np.bincount(labels.ravel(), weights=values[b].numpy().ravel())
        out[b] = sums[labels] / np.bincount(labels.ravel())[labels]
    return out


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def gpu_ms_per_image(pred: torch.Tensor, values: torch.Tensor, repeats: int = 50) -> float:
    pred, values = pred.cuda(), values.cuda()
    for _ in range(3):
        instance_uncertainty(pred, values, backend="torch")
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        instance_uncertainty(pred, values, backend="torch")
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats / pred.shape[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller naive sample and fewer repeats")
    args = parser.parse_args()
    budget = 2.0 if args.quick else 8.0
    repeats = 10 if args.quick else 30
    ok = True
    print(f"instance_uncertainty, {BATCH}x{SIZE}x{SIZE}, {CLASSES} classes, torch threads {torch.get_num_threads()}")
    header = (
        f"{'regime':<7} {'inst/img':>9} {'naive s/img':>12} {'plain ms/img':>13} {'cc3d ms/img':>12}"
        f" {'vs naive':>9} {'vs plain':>9} {'torch-cpu ms/img':>17}"
    )
    print(header)
    rows = []
    for regime in ("smooth", "mid", "noisy"):
        pred, values = predictions(regime), entropies((BATCH, SIZE, SIZE))
        _, counts = label_instances(pred)
        naive_s, naive_out, done, looped, total = naive(pred.numpy(), values.numpy(), budget)
        fast = instance_uncertainty(pred, values, backend="cc3d").numpy()
        assert np.abs(fast[done] - naive_out[done]).max() < 1e-5, f"{regime}: cc3d path disagrees with naive"
        fast_s = median_time(lambda: instance_uncertainty(pred, values, backend="cc3d"), repeats)
        plain_s = median_time(lambda: plain_cc3d_bincount(pred, values), repeats)
        torch_s = median_time(lambda: instance_uncertainty(pred, values, backend="torch"), 2)
        ratio = naive_s / fast_s
        note = "" if looped == total else f"  (naive extrapolated from {looped} of {total} components)"
        print(
            f"{regime:<7} {counts.float().mean():>9.0f} {naive_s / BATCH:>12.3f} {plain_s / BATCH * 1e3:>13.2f}"
            f" {fast_s / BATCH * 1e3:>12.2f} {ratio:>8.0f}x {plain_s / fast_s:>8.1f}x {torch_s / BATCH * 1e3:>17.1f}{note}"
        )
        rows.append((regime, ratio, fast_s / BATCH * 1e3))
        if torch.cuda.is_available():
            gpu_ms = gpu_ms_per_image(pred, values)
            gpu_ok = gpu_ms <= MAX_MS_PER_IMAGE_GPU
            ok &= gpu_ok
            print(f"        {'PASS' if gpu_ok else 'FAIL'} torch on {torch.cuda.get_device_name()}: {gpu_ms:.3f} ms/img"
                  f" (target <= {MAX_MS_PER_IMAGE_GPU:.0f} ms)")
    print()
    for regime, ratio, ms in rows:
        target = TARGETS.get(regime)
        if target is not None:
            met = ratio >= target
            ok &= met
            print(f"{'PASS' if met else 'FAIL'} {regime}: {ratio:.0f}x (target >= {target:.0f}x)")
    worst = max(ms for _, _, ms in rows)
    ok &= worst <= MAX_MS_PER_IMAGE
    print(f"{'PASS' if worst <= MAX_MS_PER_IMAGE else 'FAIL'} cc3d path: worst {worst:.2f} ms/img (target <= {MAX_MS_PER_IMAGE:.0f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
