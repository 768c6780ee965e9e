"""`iwu demo`: the method against plain cross-entropy, end to end, on a CPU in minutes.

Trains the demo config (`iwu/configs/demo.yaml`: an ensemble of three small
members on synthetic street scenes written on first use) in `standard` and
`instance_uncertainty` modes, two seeds each, through the same engine as
`iwu train`; then prints the ensemble's per-class IoU of the two modes (classes
from the most to the least frequent in training) and draws the uncertainty of
the method's ensemble. Runs that finished are not trained again.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from iwu.config.schema import load_config
from iwu.constants import ENSEMBLE
from iwu.util.atomic_files import atomic_write_json
from iwu.config.packaged import packaged_configs_dir

MODES = ("standard", "instance_uncertainty")


def demo_config_path() -> Path:
    return packaged_configs_dir() / "demo.yaml"


def _cell(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return f"{'--':>13}"
    if len(present) == 1:  # one seed has no spread to show
        return f"{present[0]:>7.3f}      "
    return f"{statistics.fmean(present):>7.3f}±{statistics.stdev(present):<5.3f}"


def per_class_table(classes, results: dict[str, list[dict]], share) -> str:
    """Rows: classes (most frequent first) and mIoU; columns: mean ± std over seeds per mode, and the gain."""
    modes = list(results)
    width = max(14, *(len(m) + 1 for m in modes))
    lines = [f"{'class':<14}{'train %':>8}" + "".join(f"{m:>{width}}" for m in modes) + f"{'gain':>8}"]
    order = sorted(range(len(classes)), key=lambda c: -share[c])

    def row(label: str, pct: str, cells: list[list[float | None]]) -> str:
        means = [statistics.fmean(v) if (v := [x for x in col if x is not None]) else None for col in cells]
        gain = f"{means[-1] - means[0]:>+8.3f}" if None not in means else f"{'--':>8}"
        return f"{label:<14}{pct:>8}" + "".join(f"{_cell(col):>{width}}" for col in cells) + gain

    for c in order:
        lines.append(row(classes[c], f"{100 * share[c]:.2f}", [[r["iou"][c] for r in results[m]] for m in modes]))
    lines.append(row("mIoU", "", [[r["miou"] for r in results[m]] for m in modes]))
    return "\n".join(lines)


@torch.no_grad()
def _uncertainty_rows(run: Path, config, count: int = 2) -> tuple[list[dict], str]:
    """`iwu.plots.predictions.panel_figure`'s rows for the first validation images, and the title naming the run."""
    from iwu.data import SegmentationDataModule
    from iwu.inference.loading import load_models
    from iwu.plots import run_title
    from iwu.method.uncertainty import ensemble_uncertainty
    from iwu.plots.colours import denormalize

    loaded = load_models(run, "cpu")
    module = loaded.module
    dm = SegmentationDataModule(config.data)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    unc = ensemble_uncertainty(module(batch["image"][:count]))
    stats = (dm.val_sets[0].mean, dm.val_sets[0].std)
    rows = [{"image": denormalize(batch["image"][i], *stats), "label": batch["label"][i].numpy(),
             "pred": unc.pred[i].numpy(), "entropy": unc.pixel[i].numpy(), "instance": unc.instance[i].numpy()}
            for i in range(min(count, len(batch["image"])))]
    return rows, run_title(loaded.config, "ensemble on validation images")


def run_demo(out="runs/demo", seeds: int = 2, overrides=(), config_path=None) -> int:
    from iwu.data import SegmentationDataModule
    from iwu.data.cityscapes import PALETTE
    from iwu.plots.predictions import save_panel
    from iwu.report import write_report
    from iwu.engine.train import train

    out = Path(out)
    config_path = config_path or demo_config_path()
    where = [f"data.root={out / 'data'}", f"data.cache_dir={out / 'cache'}", *overrides]
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for mode in MODES:
        for seed in range(seeds):
            run = out / mode / f"seed{seed}"
            config = load_config(config_path, [*where, f"mode={mode}", f"seed={seed}", f"out={run}", "resume=true"])
            final = train(config, resume_hint="the same `iwu demo` command")
            results[mode].append(final["results"][ENSEMBLE])
    counts = SegmentationDataModule(config.data).train_class_counts().astype(float)
    share = counts / counts.sum()
    table = per_class_table(final["classes"], results, share)
    print(f"\nensemble IoU on the validation scenes, mean ± std over {seeds} seed(s):\n{table}")
    counts_file = atomic_write_json(out / "class_counts.json", {"classes": final["classes"],
                                                                "counts": counts.astype(int).tolist()})
    written = write_report([out / mode for mode in MODES], out / "report", class_counts=counts_file)
    rows, title = _uncertainty_rows(out / MODES[-1] / "seed0", config)
    figure = save_panel(out / "uncertainty.png", rows, final["classes"], PALETTE, title)
    atomic_write_json(out / "demo.json", {"classes": final["classes"], "train_share": share.tolist(),
                                          "results": results})
    print(f"\nwrote {figure}, {out / 'demo.json'}, and {written['md']} with {written['figure']} "
          f"(a paired t-test per class: iwu report {out}); the runs are in {out}/<mode>/seed<k>")
    return 0
