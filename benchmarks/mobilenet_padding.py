"""The cost of the published MobileNetV2's padding: a training step of `deeplabv3plus_mobilenet`
(each block pads its input) against `deeplabv3plus_mobilenet_torchvision` (padding inside the
depthwise conv), interleaved in the same process so that the ratio, not the noisy times, is read.

    python benchmarks/mobilenet_padding.py [--size 256] [--batch 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from iwu.models import build_model

NAMES = ("deeplabv3plus_mobilenet", "deeplabv3plus_mobilenet_torchvision")


def step(model, x, y) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    models = {name: build_model(name, 19, pretrained=False).to(device).train() for name in NAMES}
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 19, (args.batch, args.size, args.size), device=device)
    times: dict[str, list[float]] = {name: [] for name in NAMES}
    for name in NAMES:  # warm-up
        step(models[name], x, y)
    for _ in range(args.repeats):
        for name in NAMES:  # interleaved: drifts of the machine hit both alike
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(models[name], x, y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:<40} {median * 1000:8.1f} ms median training step ({args.batch}x{args.size}x{args.size}, "
              f"{device.type})")
    published, torchvision = medians[NAMES[0]], medians[NAMES[1]]
    print(f"published padding / torchvision padding: {published / torchvision:.3f}")


if __name__ == "__main__":
    main()
