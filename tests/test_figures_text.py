"""The text of every figure: names from users (experiments, modes, classes, files) drawn as typed, never
as mathtext or TeX, while the numbers of a log axis keep theirs; and the per-image figures of `iwu predict`
laid out, at 96x96, with their titles inside the figure and clear of the legend."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

import iwu.plots.difference
from iwu.data.cityscapes import CLASSES as CITYSCAPES, PALETTE as CITYSCAPES_PALETTE
from iwu.inference.prediction import prediction_title
from iwu.plots.curves import curves_figure
from iwu.plots.predictions import panel_figure, segmentation_figure, uncertainty_figure
from iwu.plots.reliability import reliability_figure
from iwu.report import write_report

from drawn import drawn_figures

NAMES = [r"$\input{x}$", "$", r"a\b $x^2$ c"]  # TeX that mathtext cannot parse, a lone dollar, a backslash
CLASSES = ("road", r"$\input{x}$", "$", r"a\b $x^2$ c")
PALETTE = ((128, 64, 128), (0, 0, 142), (70, 130, 180), (107, 142, 35))


def draw(fig):
    """`fig` drawn as `save_png` draws it (raises what matplotlib raises); its renderer."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def shown(text: Text) -> tuple[str, bool]:
    """What matplotlib draws of `text`: the string, and whether it is typeset as math."""
    string, ismath = text._preprocess_math(text.get_text())
    return string, bool(ismath)


def texts(fig) -> dict[str, Text]:
    """The figure's texts by what they show, those shown as math excluded."""
    return {shown(t)[0]: t for t in fig.findobj(Text) if t.get_text() and not shown(t)[1]}


def assert_as_typed(fig, *strings):
    """Each of `strings` is drawn by some text of `fig` as it is, and nothing holding a name is math."""
    draw(fig)
    found = texts(fig)
    for string in strings:
        assert any(string in s for s in found), (string, sorted(found))
    typeset = [t.get_text() for t in fig.findobj(Text) if shown(t)[1]]
    assert not [t for t in typeset if NAMES[0] in t or NAMES[2] in t], typeset


def test_an_experiment_named_in_tex_gets_its_report_and_figure(tmp_path, monkeypatch):
    experiment = NAMES[0]
    for mode, base in (("standard", 0.3), ("instance_uncertainty", 0.5)):
        for seed in range(2):
            run = tmp_path / "runs" / mode / f"seed{seed}"
            run.mkdir(parents=True)
            iou = [base + 0.01 * seed + 0.02 * c for c in range(len(CLASSES))]
            (run / "final.json").write_text(json.dumps({
                "experiment": experiment, "dataset": "acdc", "mode": mode, "seed": seed, "classes": list(CLASSES),
                "results": {"ensemble": {"miou": sum(iou) / len(iou), "iou": iou}}}))
    drawn = drawn_figures(monkeypatch, iwu.plots.difference)
    written = write_report(tmp_path / "runs", tmp_path / "report")
    assert written["figure"].is_file()
    (fig,) = drawn.values()
    assert_as_typed(fig, f"instance_uncertainty - standard ({experiment}, ensemble, on acdc/val)", *CLASSES[1:])


def test_curves_draw_names_as_typed_and_log_ticks_as_math():
    name = NAMES[2]
    metrics = {"train/loss": [(1, 10.0), (2, 0.5)], f"val/{name}/miou": [(2, 0.3)], "val/ensemble/miou": [(2, 0.4)]}
    fig = curves_figure(metrics, title=f"{NAMES[0]} / {NAMES[1]} / seed 0", mode=NAMES[1])
    assert_as_typed(fig, f"{NAMES[0]} / {NAMES[1]} / seed 0", name, f"{NAMES[1]} loss")
    loss_ax = fig.axes[0]
    assert loss_ax.get_yscale() == "log"
    assert any(shown(t)[1] for t in loss_ax.get_yticklabels() if t.get_text())  # 10^0, typeset


def test_prediction_figures_draw_class_and_file_names_as_typed():
    pred = np.array([[0, 1, 2, 3]] * 3, np.uint8)
    title = f"{NAMES[0]} / standard / seed 1: ensemble on {NAMES[1]}.png"
    assert_as_typed(segmentation_figure(pred, CLASSES, PALETTE, title=title + "\nsegmentation"), title, *CLASSES)
    assert_as_typed(uncertainty_figure(np.zeros((3, 4)), len(CLASSES), "pixel entropy", title), title)
    row = {"image": np.zeros((3, 4, 3)), "pred": pred, "entropy": np.zeros((3, 4)), "instance": np.zeros((3, 4))}
    assert_as_typed(panel_figure([row], CLASSES, PALETTE, title), title, *CLASSES)


def test_reliability_diagram_draws_class_names_as_typed():
    bins = 4
    result = {"ece": 0.1, "accuracy": 0.8, "classwise_ece": 0.05,
              "reliability": {"bin_edges": list(np.linspace(0, 1, bins + 1)), "accuracy": [0.2, None, 0.6, 0.9],
                              "confidence": [0.1, None, 0.6, 0.95], "count": [10, 0, 100, 1000]},
              "classwise_reliability": {"ece": [0.01, None, 0.1, 0.02]}}
    fig = reliability_figure(result, title=f"{NAMES[0]}: on acdc/val", classes=CLASSES)
    assert_as_typed(fig, f"{NAMES[0]}: on acdc/val", *CLASSES)
    (pixels,) = [ax for ax in fig.axes if ax.get_ylabel() == "pixels"]
    assert any(shown(t)[1] for t in pixels.get_yticklabels() if t.get_text())  # its log axis keeps 10^k


# --- the per-image figures of `iwu predict` at 96x96 ------------------------------------------------------

SMALL = 96
RUN = SimpleNamespace(experiment="acdc_ensemble", mode="instance_uncertainty", seed=12)
FILE = Path("GOPR0475_frame_000041_rgb_anon.png")  # as ACDC names its images


def boxes(fig, renderer):
    """The window extents of the figure's titles, and of what stands beside the image: legends, colour bars."""
    titles = [t for t in (*(ax.title for ax in fig.axes), *fig.texts) if t.get_text()]
    beside = [leg.get_window_extent(renderer) for leg in fig.legends] + [
        ax.get_tightbbox(renderer) for ax in fig.axes[1:]]  # fig.axes[0] is the image's
    return [t.get_window_extent(renderer) for t in titles], beside


@pytest.mark.parametrize("classes", [4, len(CITYSCAPES)])
def test_small_images_get_whole_titles_clear_of_the_legend(classes):
    rng = np.random.default_rng(0)
    pred = (np.arange(SMALL * SMALL).reshape(SMALL, SMALL) % classes).astype(np.uint8)
    title = prediction_title(RUN, FILE)
    figures = [segmentation_figure(pred, CITYSCAPES, CITYSCAPES_PALETTE, f"{title}\nsegmentation"),
               segmentation_figure(pred, CITYSCAPES, CITYSCAPES_PALETTE, f"{title}\nsegmentation over the image",
                                   image=rng.integers(0, 255, (SMALL, SMALL, 3), dtype=np.uint8)),
               *(uncertainty_figure(rng.random((SMALL, SMALL)), len(CITYSCAPES), what, f"{title}\n{what}")
                 for what in ("pixel entropy", "instance uncertainty"))]
    for fig in figures:
        renderer = draw(fig)
        frame = fig.bbox
        titles, beside = boxes(fig, renderer)
        assert len(titles) == 1 and beside
        for box in titles + beside:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, (
                box.extents, frame.extents)
        assert not any(titles[0].overlaps(other) for other in beside)
