"""`iwu evaluate`, `iwu predict` and `iwu masks` on a tiny trained run, and agreement with the official evaluator."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from iwu.cli import main
from iwu.config.schema import load_config
from iwu.data import Cityscapes
from iwu.data.synthetic import write_synthetic
from iwu.data.mask_store import MaskStore
from iwu.engine.train import train

from drawn import drawn_figures

SIZE = 48


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-member run trained for a few steps on square scenes, so evaluation at SIZE resizes nothing."""
    folder = tmp_path_factory.mktemp("eval")
    root = write_synthetic(folder / "scenes", "cityscapes", n_train=4, n_val=3, size=SIZE, height=SIZE)
    config = {
        "experiment": "tiny", "mode": "instance_uncertainty", "val_every": 2,
        "members": [{"name": "deeplabv3plus_mobilenet", "lr": 1e-3}] * 2,
        "model": {"pretrained": False, "bn_momentum": 0.1},
        "data": {"kind": "cityscapes", "root": str(root), "size": SIZE, "cache_dir": str(folder / "cache")},
        "trainer": {"max_steps": 4, "accelerator": "cpu"},
    }
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config))
    out = folder / "run"
    train(load_config(folder / "tiny.yaml", [f"out={out}"]), progress=False)
    return out, root


def _official_class_ious(predictions, root):
    """Per-class IoU of cityscapesscripts' pixel-level evaluation of the prediction PNGs."""
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as official

    gts = sorted((root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    preds = [predictions / gt.parent.name / gt.name.replace("_gtFine_labelIds.png", ".png") for gt in gts]
    args = official.args
    saved = {k: getattr(args, k) for k in ("evalInstLevelScore", "JSONOutput", "quiet")}
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True  # no instance files here
    try:
        return official.evaluateImgLists([str(p) for p in preds], [str(g) for g in gts], args)["classScores"]
    finally:
        for k, v in saved.items():
            setattr(args, k, v)


def test_evaluate_agrees_with_the_official_evaluator_and_with_training(run, tmp_path, monkeypatch):
    import iwu.plots.reliability

    drawn = drawn_figures(monkeypatch, iwu.plots.reliability)
    out, root = run
    predictions = tmp_path / "pred"
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}", "--save-predictions", str(predictions)]) == 0
    record = json.loads((out / "eval_cityscapes.json").read_text())
    assert list(record["results"]) == ["deeplabv3plus_mobilenet_0", "deeplabv3plus_mobilenet_1", "ensemble"]
    ours = record["results"]["ensemble"]
    official = _official_class_ious(predictions, root)
    val = Cityscapes(root, "val", size=SIZE)
    present = set(np.unique(np.concatenate([val[i]["label"].numpy().ravel() for i in range(len(val))]))) - {255}
    assert present, "the validation scenes have labeled classes"
    for c, name in enumerate(record["classes"]):
        if c in present:
            assert ours["iou"][c] == pytest.approx(official[name], abs=1e-12)
        else:  # absent from the truth: iwu reports null; the official script says 0 if predicted, NaN if not
            assert ours["iou"][c] is None and (official[name] == 0 or math.isnan(official[name]))
    # the ensemble's best checkpoint scores on the validation split what training recorded at its best step
    final = json.loads((out / "final.json").read_text())["results"]["ensemble"]
    assert ours["miou"] == pytest.approx(final["miou"], abs=1e-12)
    assert 0 <= ours["pixel_accuracy"] <= 1
    unc = record["uncertainty"]
    assert 0 <= unc["ece"] <= 1 and 0 <= unc["entropy"]["auroc"] <= 1 and "mutual_information" in unc
    assert (out / "reliability_cityscapes.png").is_file()
    (figure,) = [fig for path, fig in drawn.items() if path.name == "reliability_cityscapes.png"]
    assert figure.get_suptitle() == "tiny / instance_uncertainty / seed 0: ensemble on cityscapes/val"
    assert [b.get_height() for b in figure.axes[1].containers[0]] == unc["reliability"]["count"]


def test_a_member_checkpoint_is_scored_as_itself_beside_the_ensemble(run, tmp_path, capsys):
    from iwu.report import collect

    out, root = run
    member = out / "checkpoints" / "best_deeplabv3plus_mobilenet_1.pt"
    assert main(["evaluate", str(member), "--data", f"cityscapes:{root}", "--split", "train"]) == 0
    record = json.loads((out / "eval_cityscapes_train@best_deeplabv3plus_mobilenet_1.json").read_text())
    assert list(record["results"]) == ["deeplabv3plus_mobilenet_1"]  # no "ensemble" of one posing as the run's
    assert record["evaluated"] == "deeplabv3plus_mobilenet_1" and record["checkpoint"] == member.name
    assert "mutual_information" not in record["uncertainty"]  # one member has no epistemic part
    assert (out / "reliability_cityscapes_train@best_deeplabv3plus_mobilenet_1.png").is_file()
    # the ensemble's evaluation of the same set is a file of its own, and the report keeps them apart
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}", "--split", "train"]) == 0
    ensemble = json.loads((out / "eval_cityscapes_train.json").read_text())["results"]
    scored = {(r.model, r.eval): r for r in collect(out, member="all")}
    assert scored["ensemble", "cityscapes/train"].miou == pytest.approx(ensemble["ensemble"]["miou"])
    own = scored["deeplabv3plus_mobilenet_1", "cityscapes/train"]  # its own best, not the ensemble's step
    assert own.miou == pytest.approx(record["results"]["deeplabv3plus_mobilenet_1"]["miou"])
    assert own.source.name == "eval_cityscapes_train@best_deeplabv3plus_mobilenet_1.json"
    # another state of the run (its last checkpoint) is named as such, never as the run's ensemble
    assert main(["evaluate", str(out / "checkpoints" / "last.ckpt"), "--data", f"cityscapes:{root}",
                 "--split", "train"]) == 0
    models = {r.model for r in collect(out, member="all") if r.eval == "cityscapes/train"}
    assert {"ensemble@last", "deeplabv3plus_mobilenet_0@last"} <= models
    assert collect(out)[0].model == "ensemble"
    capsys.readouterr()


def test_evaluate_errors_are_one_line(run, tmp_path, capsys):
    out, root = run
    assert main(["evaluate", str(tmp_path / "nothing"), "--data", f"cityscapes:{root}"]) == 2
    assert "no such run directory or checkpoint" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}", "--device", "gpu7"]) == 2
    assert "--device gpu7: not a device name" in capsys.readouterr().err
    folder = tmp_path / "folder"
    for split in ("val",):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "images" / split / "a.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "labels" / split / "a.png")
    (folder / "classes.yaml").write_text("classes: [background, crack]\n")
    assert main(["evaluate", str(out), "--data", f"folder:{folder}"]) == 2
    assert "classes the model was trained on" in capsys.readouterr().err


def test_predict_writes_four_maps_per_image_and_skips_unreadable_ones(run, tmp_path, capsys):
    out, root = run
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    wide = tmp_path / "wide.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 70, 3), dtype=np.uint8)).save(wide)
    images = root / "leftImg8bit" / "val"
    assert main(["predict", str(out), str(images), str(bad), str(wide), "--out", str(tmp_path / "p")]) == 1
    assert f"skipped {bad}" in capsys.readouterr().err
    written = sorted(p.relative_to(tmp_path / "p").as_posix() for p in (tmp_path / "p").rglob("*.png"))
    assert len(written) == 4 * (3 + 1)
    for kind in ("seg", "entropy", "instance", "overlay"):
        with Image.open(tmp_path / "p" / f"wide_{kind}.png") as image:
            assert image.format == "PNG" and image.size[0] > image.size[1]
    stems = {w.rsplit("_", 1)[0] for w in written}
    assert "renderheim/renderheim_000000_000019_leftImg8bit" in stems  # folders keep their layout


def test_predict_figures_name_the_run_and_show_legend_and_scale(run, tmp_path, monkeypatch):
    import iwu.plots.predictions as figures
    from iwu.data.cityscapes import CLASSES

    out, _ = run
    drawn = drawn_figures(monkeypatch, figures)
    wide = tmp_path / "in" / "wide.jpg"
    wide.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 70, 3), dtype=np.uint8)).save(wide)
    assert main(["predict", str(out), str(wide), "--out", str(tmp_path / "p")]) == 0
    drawn = {path.name: fig for path, fig in drawn.items()}
    assert sorted(drawn) == ["wide_entropy.png", "wide_instance.png", "wide_overlay.png", "wide_seg.png"]
    seg = drawn["wide_seg.png"]
    assert seg.axes[0].get_title() == "tiny / instance_uncertainty / seed 0: ensemble on wide.jpg\nsegmentation"
    pred = seg.axes[0].images[0].get_array()
    assert pred.shape[:2] == (30, 70)  # back at the image's own size
    (legend,) = seg.legends
    names = [t.get_text() for t in legend.get_texts()]
    assert names and set(names) <= set(CLASSES)
    for kind in ("entropy", "instance"):
        heat = drawn[f"wide_{kind}.png"].axes[0].images[0]
        assert heat.get_clim() == pytest.approx((0.0, math.log(19)))
        assert heat.colorbar.ax.get_ylim() == pytest.approx((0.0, math.log(19)))
    panels = drawn_figures(monkeypatch, figures)
    assert main(["predict", str(out), str(wide), "--out", str(tmp_path / "q"), "--panel"]) == 0
    assert [p.name for p in (tmp_path / "q").iterdir()] == ["wide_panel.png"]
    (panel,) = panels.values()
    assert [ax.get_title() for ax in panel.axes if ax.images] == ["image", "prediction", "pixel entropy",
                                                                  "instance uncertainty"]
    assert panel.get_suptitle() == "tiny / instance_uncertainty / seed 0: ensemble on wide.jpg"


def test_masks_killed_half_way_are_finished_by_the_same_command(run, tmp_path, capsys):
    from iwu.data.mask_store import MaskWriter

    out, root = run
    masks = tmp_path / "masks"
    with pytest.raises(KeyboardInterrupt):  # as a kill leaves it: some masks, no masks.json
        with MaskWriter(masks, num_classes=19) as writer:
            writer.add("half/done", np.zeros((4, 4)))
            raise KeyboardInterrupt
    assert not (masks / "masks.json").exists()
    assert main(["masks", str(out), "--data", f"cityscapes:{root}", "--out", str(masks)]) == 0
    assert len(MaskStore(masks)) == 4 + 1 and not (masks / ".masks.partial.json").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.png").write_bytes(b"a user's file")  # not a store of ours: still refused
    assert main(["masks", str(out), "--data", f"cityscapes:{root}", "--out", str(tmp_path / "mine")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_masks_store_the_ensembles_instance_uncertainty_for_offline_training(run, tmp_path):
    from iwu.inference.loading import load_models
    from iwu.method.uncertainty import ensemble_uncertainty

    out, root = run
    masks = tmp_path / "masks"
    assert main(["masks", str(out), "--data", f"cityscapes:{root}", "--out", str(masks)]) == 0
    store = MaskStore(masks)
    train_set = Cityscapes(root, "train", size=SIZE)
    assert len(store) == len(train_set) == 4
    loaded = load_models(out, "cpu")
    item = train_set[2]
    with torch.no_grad():
        expected = ensemble_uncertainty(loaded.module(item["image"][None])).instance[0]
    got = store.load([item["name"]], (SIZE, SIZE))[0]
    assert torch.allclose(got, expected, atol=store.scale / 2 + 1e-6)


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_never_land_among_the_inputs(run, tmp_path, capsys):
    out, root = run
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(photos / "photo.png")
    (photos / "photo_seg.png").write_bytes(b"the user's own file")
    before, data_before = _snapshot(photos), _snapshot(root)
    for target, where in ((photos, "is"), (photos / "sub", "lies inside"), (tmp_path, "holds")):
        assert main(["predict", str(out), str(photos), "--out", str(target)]) == 2
        assert f"--out {target}: {where} the input folder {photos}" in capsys.readouterr().err
    labels = root / "gtFine" / "val"
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}", "--save-predictions", str(labels)]) == 2
    assert f"--save-predictions {labels}: lies inside the input folder {root}" in capsys.readouterr().err
    assert main(["masks", str(out), "--data", f"cityscapes:{root}", "--out", str(root / "leftImg8bit" / "train")]) == 2
    assert f"lies inside the input folder {root}" in capsys.readouterr().err
    assert _snapshot(photos) == before and _snapshot(root) == data_before
    assert not (photos / "sub").exists()


def test_existing_outputs_are_replaced_only_with_overwrite(run, tmp_path, capsys):
    out, root = run
    images, maps = root / "leftImg8bit" / "val", tmp_path / "maps"
    assert main(["predict", str(out), str(images), "--out", str(maps)]) == 0
    first = _snapshot(maps)
    some = next(iter(first))
    some.write_bytes(b"edited since")
    assert main(["predict", str(out), str(images), "--out", str(maps)]) == 2
    assert f"exists already (and {len(first) - 1} more of the outputs); add --overwrite" in capsys.readouterr().err
    assert some.read_bytes() == b"edited since"
    assert main(["predict", str(out), str(images), "--out", str(maps), "--overwrite"]) == 0
    assert _snapshot(maps) == first
    preds = tmp_path / "preds"
    args = ["evaluate", str(out), "--data", f"cityscapes:{root}", "--save-predictions", str(preds)]
    assert main(args) == 0
    assert main(args) == 2 and "add --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    masks = ["masks", str(out), "--data", f"cityscapes:{root}", "--out", str(notes)]
    assert main(masks) == 2 and f"{notes / 'todo.txt'} exists already" in capsys.readouterr().err
    assert main(masks + ["--overwrite"]) == 0 and (notes / "todo.txt").read_text() == "mine"
    assert main(masks) == 0  # a mask store now: masks are added to it


def test_predict_keeps_images_of_the_same_name_apart(run, tmp_path, capsys):
    out, _ = run
    for folder, value in (("a", 0), ("b", 255)):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(tmp_path / folder / "x.png")
    a, b = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    assert main(["predict", str(out), str(a), str(b), str(a), "--out", str(tmp_path / "o")]) == 0
    assert "wrote 2 prediction(s)" in capsys.readouterr().out
    written = sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*_overlay.png"))
    assert written == ["a/x_overlay.png", "b/x_overlay.png"]
    (tmp_path / "a" / "x.jpg").write_bytes(a.read_bytes())
    assert main(["predict", str(out), str(a), str(tmp_path / "a" / "x.jpg"), "--out", str(tmp_path / "q")]) == 2
    assert "would write the same" in capsys.readouterr().err


class _Crafted:
    def __reduce__(self):  # what a malicious checkpoint carries: code run on unpickling
        import os

        return (os.system, ("echo crafted > /dev/null",))


def _damaged_copies(run, tmp_path):
    """(file, words of the one-line answer) for checkpoints broken in every way a shared file can be."""
    source = run / "checkpoints" / "best_ensemble.ckpt"
    good = torch.load(source, weights_only=True)
    cases = []

    flipped = {**good, "state_dict": {k: v.clone() for k, v in good["state_dict"].items()}}
    name = next(k for k, v in flipped["state_dict"].items() if v.is_floating_point())
    flipped["state_dict"][name].view(-1)[0] += 1.0  # a changed number under the old digest
    cases.append(("flipped.ckpt", lambda p: torch.save(flipped, p), "weights differ from the digest"))
    cases.append(("crafted.ckpt", lambda p: torch.save({"x": _Crafted()}, p), "refused: it holds code"))
    cases.append(("truncated.ckpt", lambda p: p.write_bytes(source.read_bytes()[:5000]), "cannot read the checkpoint"))
    cases.append(("empty.ckpt", lambda p: p.write_bytes(b""), "cannot read the checkpoint"))
    cases.append(("notes.ckpt", lambda p: p.write_text("not a checkpoint"), "cannot read the checkpoint"))
    fewer = {**good, "iwu": {**good["iwu"], "classes": good["iwu"]["classes"][:5]}}
    cases.append(("fewer_classes.ckpt", lambda p: torch.save(fewer, p), "do not fit the 5 classes"))
    files = []
    for file, write, words in cases:
        path = tmp_path / file
        write(path)
        files.append((path, words))
    return files


def test_damaged_or_crafted_checkpoints_are_one_line_everywhere(run, tmp_path, capsys):
    out, root = run
    for path, words in _damaged_copies(out, tmp_path):
        for args in (["evaluate", str(path), "--data", f"cityscapes:{root}"],
                     ["predict", str(path), str(root / "leftImg8bit" / "val"), "--out", str(tmp_path / "p")],
                     ["masks", str(path), "--data", f"cityscapes:{root}", "--out", str(tmp_path / "m")]):
            assert main(args) == 2, (path.name, args[0])
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and str(path) in err[0] and words in err[0], (path.name, args[0], err)
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}"]) == 0  # the digest of a sound file agrees


def test_an_output_path_that_is_a_file_is_one_line_for_every_command(run, tmp_path, capsys):
    out, root = run
    taken = tmp_path / "taken.txt"
    taken.write_text("a file, not a folder")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"members": [{"name": "deeplabv3plus_mobilenet", "lr": 1e-3}],
                                      "model": {"pretrained": False},
                                      "data": {"kind": "cityscapes", "root": str(root), "size": SIZE}}))
    images = str(root / "leftImg8bit" / "val")
    for args in (["train", str(config), f"out={taken}"],
                 ["evaluate", str(out), "--data", f"cityscapes:{root}", "--save-predictions", str(taken)],
                 ["predict", str(out), images, "--out", str(taken)],
                 ["masks", str(out), "--data", f"cityscapes:{root}", "--out", str(taken)],
                 ["report", str(out), "--out", str(taken)],
                 ["synth", "--out", str(taken)]):
        assert main(args) == 2, args[0]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(taken) in err[0], (args[0], err)
    assert taken.read_text() == "a file, not a folder"


def test_native_scores_at_the_labels_own_size_as_the_official_evaluator_does(run, tmp_path):
    out, root = run
    args = ["evaluate", str(out), "--data", f"cityscapes:{root}"]
    assert main(args + ["--native"]) == 0  # labels already at SIZE: the same numbers as at the training size
    assert main(args) == 0
    same = json.loads((out / "eval_cityscapes-native.json").read_text())
    assert same["size"] == "native"
    assert same["results"] == json.loads((out / "eval_cityscapes.json").read_text())["results"]
    # wide scenes (2:1, as Cityscapes' 2048x1024): the model sees SIZE x SIZE, scores at 2*SIZE x SIZE
    wide = write_synthetic(tmp_path / "wide", "cityscapes", n_train=0, n_val=2, size=2 * SIZE, height=SIZE, seed=5)
    predictions = tmp_path / "pred"
    assert main(["evaluate", str(out), "--data", f"cityscapes:{wide}", "--native", "--save-predictions",
                 str(predictions)]) == 0
    assert {Image.open(p).size for p in predictions.rglob("*.png")} == {(2 * SIZE, SIZE)}
    record = json.loads((out / "eval_cityscapes-native.json").read_text())
    official = _official_class_ious(predictions, wide)
    for c, name in enumerate(record["classes"]):
        ours = record["results"]["ensemble"]["iou"][c]
        if ours is not None:
            assert ours == pytest.approx(official[name], abs=1e-12)


def test_a_native_label_past_the_side_bound_is_refused_from_its_header(run, tmp_path, capsys):
    out, _ = run
    wide = write_synthetic(tmp_path / "wide", "cityscapes", n_train=0, n_val=1, size=2 * SIZE, height=SIZE, seed=5)
    label = next((wide / "gtFine" / "val").rglob("*_labelIds.png"))
    Image.new("L", (4097, 2)).save(label)
    assert main(["evaluate", str(out), "--data", f"cityscapes:{wide}", "--native"]) == 2
    assert f"{label}: 4097x2; --native scores labels of at most 4096 pixels a side" in capsys.readouterr().err


def test_an_evaluation_at_another_size_is_its_own_file_and_says_one_line_in_a_log(run, capsys):
    out, root = run
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}"]) == 0
    at_size = json.loads((out / "eval_cityscapes.json").read_text())
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}", "--size", str(SIZE // 2)]) == 0
    assert json.loads((out / "eval_cityscapes.json").read_text()) == at_size  # kept, not replaced
    smaller = json.loads((out / f"eval_cityscapes-{SIZE // 2}px.json").read_text())
    assert smaller["size"] == SIZE // 2 and smaller["dataset"] == f"cityscapes-{SIZE // 2}px"
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}", "--size", str(SIZE)]) == 0  # the run's own
    assert not (out / f"eval_cityscapes-{SIZE}px.json").exists()
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("evaluate cityscapes val: ") == 3  # stderr is no terminal here: a line each
