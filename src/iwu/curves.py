"""Training curves of a run, drawn from Lightning's CSVLogger ``metrics.csv``.

The CSV is sparse: every ``log`` call writes a row with only its own columns
filled (training loss on some steps, validation mIoU once per validation), so
each column is read as its own series of ``(step, value)`` pairs. The figure
is drawn on a bare `matplotlib.figure.Figure`, which needs no backend and no
pyplot state, so it is safe to call from a training callback.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from iwu.errors import UserError
from iwu.files import atomic_write_bytes

# val/<model>/miou for the main validation set, val_<dataset>/<model>/miou for another
VAL_MIOU = re.compile(r"^(val[^/]*)/(.+)/miou$")


def read_metrics(metrics_csv) -> dict[str, list[tuple[int, float]]]:
    """Every column except ``step`` as ``(step, value)`` pairs in file order, skipping empty cells.

    Cells that are not numbers are skipped too, and so is a last line without
    its newline: the logger may be writing it while we read.
    """
    path = Path(metrics_csv)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such metrics file (written by the run's CSV logger)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: unreadable metrics file ({' '.join(str(err).split())})") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines = lines[:-1] if len(lines) > 1 else lines  # keep a lone header line
    reader = csv.DictReader(lines)
    series: dict[str, list[tuple[int, float]]] = {c: [] for c in reader.fieldnames or () if c and c != "step"}
    for row in reader:
        step = _number(row.get("step"))
        if step is None or not math.isfinite(step):
            continue
        for column, pairs in series.items():
            value = _number(row.get(column))
            if value is not None:
                pairs.append((int(step), value))
    return series


def _number(cell) -> float | None:
    if cell is None or not str(cell).strip():
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _finite(pairs: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    kept = [(s, v) for s, v in pairs if math.isfinite(v)]
    return [s for s, _ in kept], [v for _, v in kept]


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def save_curves(metrics_csv, path) -> Path:
    """Training loss and validation mIoU against step, side by side, as a PNG written atomically.

    Loss columns are ``train*`` columns with ``loss`` in their name (log scale
    when all values are positive). mIoU columns are ``val*/<model>/miou``; the
    ensemble is drawn thicker and validation sets other than ``val`` dashed,
    each model keeping its colour across sets.
    """
    from matplotlib.figure import Figure

    metrics = read_metrics(metrics_csv)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    loss_ax, val_ax = fig.subplots(1, 2)

    losses = {c: _finite(p) for c, p in metrics.items() if c.startswith("train") and "loss" in c}
    losses = {c: xy for c, xy in losses.items() if xy[0]}
    for column, (steps, values) in losses.items():
        loss_ax.plot(steps, values, label=column, linewidth=1.2, marker="o" if len(steps) <= 20 else None,
                     markersize=3)
    if losses:
        if all(v > 0 for _, values in losses.values() for v in values):
            loss_ax.set_yscale("log")
        if len(losses) > 1:
            loss_ax.legend(fontsize="small")
    else:
        _note(loss_ax, "no training loss logged yet")
    loss_ax.set(title="training loss", xlabel="step", ylabel="loss")

    curves = []
    for column, pairs in metrics.items():
        match = VAL_MIOU.match(column)
        steps, values = _finite(pairs)
        if match and steps:
            curves.append((match.group(1), match.group(2), steps, values))
    models = list(dict.fromkeys(model for _, model, _, _ in curves))
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for split, model, steps, values in curves:
        ensemble = model == "ensemble"
        val_ax.plot(
            steps, values,
            label=model if split == "val" else f"{model} ({split})",
            color=colors[model],
            linestyle="-" if split == "val" else "--",
            linewidth=2.6 if ensemble else 1.2,
            marker="o", markersize=4 if ensemble else 2.5,
            zorder=3 if ensemble else 2,
        )
    if curves:
        val_ax.legend(fontsize="small")
    else:
        _note(val_ax, "no validation yet")
    val_ax.set(title="validation mIoU", xlabel="step", ylabel="mIoU")
    for ax in (loss_ax, val_ax):
        ax.grid(True, alpha=0.3)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())
