"""`iwu demo`: instance-wise uncertainty training end to end, on a CPU in minutes.

Writes synthetic street scenes in the Cityscapes layout (once), trains an
ensemble of three DeepLabV3+ MobileNetV2 members jointly with the
uncertainty-weighted loss, Adam and the poly schedule (DESIGN section 1), then evaluates every member and
the ensemble on the validation scenes and draws the ensemble's uncertainty.
A plain PyTorch loop: the same few lines a user writes around their own models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iwu.data import CLASSES, PALETTE, Cityscapes, write_synthetic
from iwu.errors import UserError
from iwu.files import atomic_write_json
from iwu.losses import uncertainty_weighted_cross_entropy
from iwu.metrics import confusion_matrix, iou_from_confusion
from iwu.models import build_model, set_bn_momentum
from iwu.optim import build_optimizer
from iwu.uncertainty import ensemble_uncertainty
from iwu.viz import save_uncertainty_figure

MEMBERS = ("deeplabv3plus_mobilenet",) * 3
HEAD_LR = 1e-3  # the paper's MobileNetV2 rate; the backbone trains at 0.1x
# The paper's backbone BatchNorm momentum 0.01 suits 48,000 iterations; in a few
# hundred the running statistics would still be mostly their initial values.
BN_MOMENTUM = 0.1
WEIGHT_DECAY = 1e-4


def _batches(loader):
    while True:
        yield from loader


def _train(members, loader, steps: int) -> list[dict]:
    optimizer, schedule = build_optimizer(
        members, [HEAD_LR] * len(members), weight_decay=WEIGHT_DECAY, backbone_lr_scale=0.1,
        poly_power=0.9, min_lr=1e-6, max_steps=steps,
    )
    history = []
    batches = _batches(loader)
    for member in members:
        member.train()
    with tqdm(range(1, steps + 1), desc="train", unit="step") as progress:
        for step in progress:
            batch = next(batches)
            logits = [member(batch["image"]) for member in members]
            unc = ensemble_uncertainty(logits)
            losses = [uncertainty_weighted_cross_entropy(z, batch["label"], unc.instance) for z in logits]
            optimizer.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            optimizer.step()
            schedule.step()
            record = {
                "step": step,
                "loss": [round(loss.item(), 5) for loss in losses],
                "instance_uncertainty": round(unc.instance.mean().item(), 5),
                "pixel_entropy": round(unc.pixel.mean().item(), 5),
                "instances_per_image": round(unc.num_instances.float().mean().item(), 1),
            }
            history.append(record)
            progress.set_postfix(loss=f"{sum(record['loss']) / len(losses):.3f}", U=record["instance_uncertainty"],
                                 inst=record["instances_per_image"])
    return history


@torch.no_grad()
def _evaluate(members, dataset, figure_rows: int = 2):
    num_classes = len(CLASSES)
    matrices = [torch.zeros(num_classes, num_classes, dtype=torch.long) for _ in range(len(members) + 1)]
    rows = []
    for member in members:
        member.eval()
    for batch in tqdm(DataLoader(dataset, batch_size=4), desc="validate", unit="batch"):
        logits = [member(batch["image"]) for member in members]
        unc = ensemble_uncertainty(logits)
        for matrix, pred in zip(matrices, [z.argmax(1) for z in logits] + [unc.pred]):
            matrix += confusion_matrix(pred, batch["label"], num_classes)
        for i in range(min(len(batch["name"]), figure_rows - len(rows))):
            rows.append({"image": batch["image"][i], "label": batch["label"][i], "pred": unc.pred[i],
                         "pixel": unc.pixel[i], "instance": unc.instance[i]})
    return [iou_from_confusion(m) for m in matrices], rows


def _table(results: dict[str, tuple[torch.Tensor, float]]) -> str:
    names = list(results)
    lines = [f"{'class':<14}" + "".join(f"{n:>11}" for n in names)]
    for c, cls in enumerate(CLASSES):
        cells = [results[n][0][c].item() for n in names]
        lines.append(f"{cls:<14}" + "".join("        --" if v != v else f"{v:>11.3f}" for v in cells))
    lines.append(f"{'mIoU':<14}" + "".join(f"{results[n][1]:>11.3f}" for n in names))
    return "\n".join(lines)


def run_demo(out="runs/demo", steps: int = 300, size: int = 96, seed: int = 0) -> int:
    if steps < 1 or size < 32:
        raise UserError(f"demo needs --steps >= 1 and --size >= 32 (got {steps} and {size})")
    out = Path(out)
    torch.manual_seed(seed)
    data = out / "data"
    if not (data / "leftImg8bit").is_dir():
        write_synthetic(data, "cityscapes", n_train=24, n_val=6, size=2 * size, seed=seed)
    train, val = Cityscapes(data, "train", size=size), Cityscapes(data, "val", size=size)
    loader = DataLoader(train, batch_size=2, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    members = [build_model(name, len(CLASSES), pretrained=False) for name in MEMBERS]
    for member in members:
        set_bn_momentum(member, BN_MOMENTUM)
    print(f"iwu demo: {len(members)} x {MEMBERS[0]}, {len(train)} training scenes at {size}x{size}, {steps} steps")
    history = _train(members, loader, steps)
    scores, rows = _evaluate(members, val)
    names = [f"member{i}" for i in range(len(members))] + ["ensemble"]
    results = dict(zip(names, scores))
    print(_table(results))
    figure = save_uncertainty_figure(out / "uncertainty.png", rows, PALETTE)
    summary = {
        "classes": list(CLASSES),
        "results": {n: {"miou": s[1], "iou": [None if v != v else v for v in s[0].tolist()]} for n, s in results.items()},
        "history": history,
    }
    atomic_write_json(out / "demo.json", summary)
    print(f"wrote {figure} and {out / 'demo.json'}")
    return 0
