"""Synthetic street scenes: deterministic, in the real layouts, imbalanced, learnable, with weather."""

import hashlib
import json
from pathlib import Path

import cc3d
import numpy as np
import pytest
from PIL import Image

from iwu.data.cityscapes import LABEL_IDS
from iwu.data.synthetic.scenes import CAR, PERSON, POLE, train_ids
from iwu.data.synthetic import MARKER, scene_arrays, write_synthetic
from iwu.errors import UserError


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", ["cityscapes", "acdc", "kvasir", "voc"])
def test_same_seed_same_bytes(tmp_path, layout):
    a = write_synthetic(tmp_path / "a", layout, n_train=4, n_val=4, size=64, seed=3)
    b = write_synthetic(tmp_path / "b", layout, n_train=4, n_val=4, size=64, seed=3)
    c = write_synthetic(tmp_path / "c", layout, n_train=4, n_val=4, size=64, seed=4)
    assert _hashes(a) == _hashes(b)
    assert _hashes(a) != _hashes(c)


def test_cityscapes_layout_and_label_ids(tmp_path):
    root = write_synthetic(tmp_path / "cs", "cityscapes", n_train=3, n_val=1, size=64, write_train_ids=True)
    images = sorted(root.glob("leftImg8bit/train/*/*_leftImg8bit.png"))
    assert len(images) == 3 and len(list(root.glob("leftImg8bit/val/*/*_leftImg8bit.png"))) == 1
    for img in images:
        stem = img.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / "train" / img.parent.name
        ids = np.asarray(Image.open(gt / f"{stem}_gtFine_labelIds.png"))
        trains = np.asarray(Image.open(gt / f"{stem}_gtFine_labelTrainIds.png"))
        assert Image.open(img).size == (64, 32) and ids.shape == (32, 64)
        assert LABEL_IDS.known[ids].all()
        assert np.array_equal(LABEL_IDS.lut[ids], trains)  # labelIds are real ids, mapped like Cityscapes


def test_acdc_layout_spreads_conditions(tmp_path):
    root = write_synthetic(tmp_path / "acdc", "acdc", n_train=8, n_val=4, size=64)
    for cond in ("fog", "night", "rain", "snow"):
        rgb = sorted(root.glob(f"rgb_anon/{cond}/train/*/*_rgb_anon.png"))
        gt = sorted(root.glob(f"gt/{cond}/train/*/*_gt_labelTrainIds.png"))
        assert len(rgb) == 2 and len(gt) == 2
        assert len(list(root.glob(f"rgb_anon/{cond}/val/*/*_rgb_anon.png"))) == 1


def test_class_imbalance_and_instances():
    counts = np.zeros(256, dtype=np.int64)
    instances = {POLE: [], CAR: [], PERSON: []}
    for i in range(40):
        _, scene = scene_arrays(0, "train", i, 128, 256)
        label = train_ids(scene)
        counts += np.bincount(label.ravel(), minlength=256)
        for cls in instances:
            mask = (label == cls).view(np.uint8)  # uint8: cc3d 4.1.1 mislabels bool images at 8-connectivity
            instances[cls].append(cc3d.connected_components(mask, connectivity=8, return_N=True)[1])
    per_class = counts[:19]
    assert (per_class > 0).all(), "every class appears"
    assert per_class.max() / per_class.min() >= 100
    for cls, n in instances.items():
        assert np.mean(n) >= 2.5, f"class {cls}: several instances per image"


def test_conditions_shift_appearance():
    clear, _ = scene_arrays(0, "val", 1, 128, 256)
    looks = {c: scene_arrays(0, "val", 1, 128, 256, c)[0].astype(float) for c in ("fog", "night", "rain", "snow")}
    clear = clear.astype(float)
    assert looks["fog"].std() < 0.7 * clear.std()  # haze takes contrast away
    assert looks["night"].mean() < 0.5 * clear.mean()  # dark ...
    assert looks["night"].max() > 200  # ... with light sources
    assert np.abs(looks["rain"] - clear).mean() > 10
    white = lambda im: (im.min(axis=2) > 230).mean()  # noqa: E731
    assert white(looks["snow"]) > white(clear) + 0.01  # bright speckle


def test_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not empty"):
        write_synthetic(foreign, n_train=1, n_val=0, size=32)
    own = write_synthetic(tmp_path / "own", n_train=4, n_val=0, size=32)
    assert (own / MARKER).is_file()
    write_synthetic(own, n_train=2, n_val=0, size=32)
    assert len(list(own.glob("leftImg8bit/train/*/*.png"))) == 2  # no stale frames left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "own"]  # no temporaries left


def test_never_deletes_what_it_did_not_write_and_asks_before_replacing_another_set(tmp_path):
    own = write_synthetic(tmp_path / "own", "cityscapes", n_train=2, n_val=0, size=32, seed=0)
    (own / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds notes.txt, which is not part of the synthetic dataset"):
        write_synthetic(own, "cityscapes", n_train=2, n_val=0, size=32, seed=0)
    assert (own / "notes.txt").read_text() == "mine"
    (own / "notes.txt").unlink()
    for layout, seed in (("acdc", 0), ("cityscapes", 1)):
        with pytest.raises(UserError, match="holds a synthetic cityscapes set of seed 0; add --force"):
            write_synthetic(own, layout, n_train=4, n_val=0, size=32, seed=seed)
    assert (own / "leftImg8bit").is_dir()  # untouched
    write_synthetic(own, "acdc", n_train=4, n_val=0, size=32, seed=1, force=True)
    assert json.loads((own / MARKER).read_text())["layout"] == "acdc" and not (own / "leftImg8bit").exists()
