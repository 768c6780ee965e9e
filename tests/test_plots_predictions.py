"""Prediction figures: the segmentation's legend names the classes it shows in their palette colours, the
heat maps' colour bar runs 0..log C whatever the values, and a panel puts an image's maps side by side."""

import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from iwu.plots import run_title
from iwu.plots.predictions import panel_figure, save_segmentation, segmentation_figure, uncertainty_figure

CLASSES = ("road", "car", "sky", "tree")
PALETTE = ((128, 64, 128), (0, 0, 142), (70, 130, 180), (107, 142, 35))
PRED = np.array([[0, 0, 0, 2], [0, 0, 2, 2], [1, 0, 255, 2]], np.uint8)  # road 6, sky 4, car 1; no tree


def legend(fig):
    (found,) = fig.legends
    return [(t.get_text(), tuple(p.get_facecolor()[:3])) for t, p in zip(found.get_texts(), found.get_patches())]


def colour(c):
    return tuple(v / 255 for v in PALETTE[c])


def colour_bar(ax):
    """The limits and label of the colour bar of `ax`'s image."""
    bar = ax.images[0].colorbar
    if bar.orientation == "vertical":
        return bar.ax.get_ylim(), bar.ax.get_ylabel()
    return bar.ax.get_xlim(), bar.ax.get_xlabel()


def test_segmentation_legend_names_the_classes_shown_most_frequent_first():
    fig = segmentation_figure(PRED, CLASSES, PALETTE, title="exp / standard / seed 1: ensemble on a.png")
    assert legend(fig) == [("road", colour(0)), ("sky", colour(2)), ("car", colour(1))]  # the ignored id: none
    (ax,) = fig.axes
    assert ax.get_title() == "exp / standard / seed 1: ensemble on a.png"
    shown = ax.images[0].get_array()
    assert tuple(shown[2, 0]) == PALETTE[1] and tuple(shown[2, 2]) == (0, 0, 0)


def test_overlay_blends_the_image_with_the_segmentation():
    image = np.full((3, 4, 3), 200, np.uint8)
    shown = segmentation_figure(PRED, CLASSES, PALETTE, image=image).axes[0].images[0].get_array()
    assert tuple(shown[0, 0]) == tuple(int(0.5 * 200 + 0.5 * v) for v in PALETTE[0])


def test_uncertainty_colour_bar_runs_from_0_to_log_c_whatever_the_values():
    values = np.full((3, 4), 0.25, np.float32)
    fig = uncertainty_figure(values, len(CLASSES), "instance uncertainty", title="t")
    heat_ax = fig.axes[0]
    (low, high), label = colour_bar(heat_ax)
    assert (low, high) == pytest.approx((0.0, math.log(4)))
    assert heat_ax.images[0].get_clim() == pytest.approx((0.0, math.log(4)))
    assert label == "instance uncertainty, nats, 0 to log 4 = 1.39"


def test_panel_shows_each_images_maps_side_by_side_with_one_legend_and_scale():
    rng = np.random.default_rng(0)
    rows = [{"image": rng.random((3, 4, 3)), "label": np.full((3, 4), 3, np.uint8), "pred": PRED,
             "entropy": rng.random((3, 4)), "instance": rng.random((3, 4))} for _ in range(2)]
    fig = panel_figure(rows, CLASSES, PALETTE, title="exp / instance_uncertainty / seed 0: ensemble on val")
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps[:5]] == ["image", "labels", "prediction", "pixel entropy",
                                                    "instance uncertainty"]
    assert len(maps) == 10  # two rows of five
    assert np.array_equal(maps[8].images[0].get_array(), rows[1]["entropy"])
    assert [name for name, _ in legend(fig)] == ["tree", "road", "sky", "car"]  # labels and predictions counted
    heat = [maps[i] for i in (3, 4, 8, 9)]  # one scale for every heat map, the colour bar's
    assert all(ax.images[0].get_clim() == pytest.approx((0.0, math.log(4))) for ax in heat)
    (low, high), label = colour_bar(maps[9])
    assert (low, high) == pytest.approx((0.0, math.log(4))) and "log 4" in label
    assert fig.get_suptitle() == "exp / instance_uncertainty / seed 0: ensemble on val"
    without_labels = panel_figure([{k: v for k, v in rows[0].items() if k != "label"}], CLASSES, PALETTE)
    assert [ax.get_title() for ax in without_labels.axes if ax.images] == [
        "image", "prediction", "pixel entropy", "instance uncertainty"]


def test_a_segmentation_is_written_as_a_png_near_the_images_own_size(tmp_path):
    pred = np.zeros((600, 900), np.uint8)
    path = save_segmentation(tmp_path / "out" / "x_seg.png", pred, CLASSES, PALETTE, "t")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] >= 900 and img.size[1] >= 600
    assert [p.name for p in path.parent.iterdir()] == ["x_seg.png"]


def test_run_title_names_experiment_mode_and_seed():
    class Config:
        experiment, mode, seed = "acdc_ensemble", "instance_uncertainty", 2

    assert run_title(Config()) == "acdc_ensemble / instance_uncertainty / seed 2"
    assert run_title(Config(), "ensemble on acdc/val") == ("acdc_ensemble / instance_uncertainty / seed 2: "
                                                           "ensemble on acdc/val")


# --- what `iwu predict` gives the figures: the title of an image, the run's dataset's palette ---------------


RUN = SimpleNamespace(experiment="cracks", mode="instance_uncertainty", seed=0)


def test_a_file_name_that_is_not_utf8_is_drawn_with_its_bytes_replaced(tmp_path):
    from iwu.inference.prediction import prediction_title, save_maps

    path = Path(os.fsdecode(b"scan_\xff.png"))  # as Python keeps a name of bytes that are not UTF-8
    title = prediction_title(RUN, path)
    assert title == "cracks / instance_uncertainty / seed 0: ensemble on scan_\ufffd.png"
    maps = {"pred": PRED, "entropy": np.zeros((3, 4), np.float32), "instance": np.zeros((3, 4), np.float32)}
    save_maps(tmp_path, "scan", Image.new("RGB", (4, 3)), maps, CLASSES, PALETTE, title)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"scan_{k}.png" for k in ("entropy", "instance", "overlay",
                                                                                      "seg")]


def folder_dataset(root, classes_yaml: str):
    root.mkdir(parents=True)
    (root / "classes.yaml").write_text(classes_yaml)
    return SimpleNamespace(kind="folder", root=str(root), classes=None)


def test_the_palette_is_the_runs_datasets(tmp_path):
    from iwu.data.cityscapes import CLASSES as CITYSCAPES, PALETTE as CITYSCAPES_PALETTE
    from iwu.data.folder import default_palette
    from iwu.data.kvasir import CLASSES as KVASIR, PALETTE as KVASIR_PALETTE
    from iwu.inference.prediction import palette_for, run_palette

    def palette(data, classes):
        return run_palette(data, classes).tolist()

    cracks = folder_dataset(tmp_path / "cracks", "classes: [background, crack]\npalette: [[1, 2, 3], [250, 0, 9]]\n")
    assert palette(cracks, ("background", "crack")) == [[1, 2, 3], [250, 0, 9]]
    plain = folder_dataset(tmp_path / "plain", "classes: [background, crack]\n")  # the folder's own default
    assert palette(plain, ["background", "crack"]) == [list(c) for c in default_palette(2)]
    given = SimpleNamespace(kind="folder", root=str(tmp_path / "plain"), classes=["a", "b", "c"])  # data.classes
    assert palette(given, ["a", "b", "c"]) == [list(c) for c in default_palette(3)]
    assert palette(SimpleNamespace(kind="kvasir", root=None), KVASIR) == [list(c) for c in KVASIR_PALETTE]
    assert palette(SimpleNamespace(kind="acdc", root="/nowhere"), CITYSCAPES) == [list(c) for c in CITYSCAPES_PALETTE]
    # without the dataset here (a run copied elsewhere), or with classes that are no longer the model's
    moved = SimpleNamespace(kind="folder", root=str(tmp_path / "gone"), classes=None)
    assert palette(moved, ["background", "crack"]) == palette_for(["background", "crack"]).tolist()
    assert palette(cracks, ["background", "crack", "rust"]) == palette_for(["background", "crack", "rust"]).tolist()


def test_predict_draws_in_the_runs_palette_and_names_the_image(tmp_path, monkeypatch):
    import iwu.inference.prediction as prediction

    data = folder_dataset(tmp_path / "cracks", "classes: [background, crack]\npalette: [[1, 2, 3], [250, 0, 9]]\n")
    config = SimpleNamespace(**vars(RUN), data=SimpleNamespace(**vars(data), size=8),
                             loss=SimpleNamespace(connectivity=8))
    loaded = SimpleNamespace(config=config, module=SimpleNamespace(classes=("background", "crack")), device="cpu")
    monkeypatch.setattr(prediction, "load_models", lambda target, device: loaded)
    monkeypatch.setattr(prediction, "predict_image", lambda loaded, image, size, connectivity, classifier: {"pred": None})
    drawn = []
    monkeypatch.setattr(prediction, "save_maps", lambda out, stem, image, maps, classes, palette, title, panel:
                        drawn.append((palette.tolist(), title)))
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / os.fsdecode(b"\xff.png"))
    assert prediction.run_predict("run", [photos], tmp_path / "maps") == 0
    assert drawn == [([[1, 2, 3], [250, 0, 9]], "cracks / instance_uncertainty / seed 0: ensemble on \ufffd.png")]
