"""A run's training curves (`iwu.plots.training_curves.curve_panels`): loss, validation mIoU, learning rate, uncertainty."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from iwu.constants import ENSEMBLE
from iwu.plots.training_curves import Panel, curve_panels, read_metrics
from iwu.plots import save_png

COLUMNS = 3  # panels per row
FEW = 20  # series with at most this many points are drawn with markers: a lone point shows


def curves_figure(metrics: dict[str, list[tuple[int, float]]], title: str = "") -> Figure:
    """The panels of `curve_panels(metrics)` side by side, three to a row, all on one step axis from 0.

    Validation curves: the ensemble thicker, validation sets other than the training dataset's dashed,
    each model keeping its colour across sets; mIoU from 0.
    """
    panels = curve_panels(metrics)
    rows = -(-len(panels) // COLUMNS)
    columns = min(len(panels), COLUMNS)
    fig = Figure(figsize=(5 * columns, 4.2 * rows + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True).ravel()
    last = max((step for panel in panels for s in panel.series for step in s.steps), default=0)
    for ax, panel in zip(axes, panels):
        _draw(ax, panel)
        ax.set_xlim(0, max(last, 1) * 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.tick_params(labelbottom=True)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def _draw(ax, panel: Panel) -> None:
    models = list(dict.fromkeys(s.model for s in panel.series if s.model))
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for s in panel.series:
        few = len(s.steps) <= FEW
        if s.model:
            ensemble = s.model == ENSEMBLE
            ax.plot(s.steps, s.values, label=s.label, color=colors[s.model], linestyle="--" if s.other_set else "-",
                    linewidth=2.6 if ensemble else 1.2, marker="o", markersize=5 if ensemble else 3,
                    zorder=3 if ensemble else 2)
        else:
            ax.plot(s.steps, s.values, label=s.label, linewidth=1.2, marker="o" if few else None, markersize=3)
    if not panel.series:
        ax.text(0.5, 0.5, panel.empty, transform=ax.transAxes, ha="center", va="center", color="0.4")
    elif panel.log:
        ax.set_yscale("log")
    if len(panel.series) > 1:
        ax.legend(fontsize="small")
    if panel.score and panel.series:
        top = max(v for s in panel.series for v in s.values)
        ax.set_ylim(0, min(1.0, top * 1.15 + 0.02))
    ax.set(title=panel.title, ylabel=panel.ylabel)
    ax.grid(True, alpha=0.3)


def save_curves(metrics_csv, path, title: str = "") -> Path:
    """`curves_figure` of a run's ``metrics.csv`` written to `path` as a PNG, atomically."""
    return save_png(curves_figure(read_metrics(metrics_csv), title), path)
