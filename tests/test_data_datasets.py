"""Cityscapes, ACDC and folder datasets read the layouts `iwu synth` writes (and users' folders)."""

import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from iwu.data import (
    ACDC,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Cityscapes,
    SegmentationFolder,
    build_dataset,
    parse_data_spec,
)
from iwu.data.synthetic.scenes import train_ids
from iwu.data.synthetic import scene_arrays, write_synthetic
from iwu.errors import UserError

SIZE = 32


@pytest.fixture(scope="module")
def cs_root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("cs") / "cs", "cityscapes", n_train=4, n_val=2, size=64,
                           write_train_ids=True)


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("acdc") / "acdc", "acdc", n_train=8, n_val=4, size=64)


def _denormalise(image: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return np.rint(((image * std + mean) * 255).permute(1, 2, 0).numpy()).astype(np.uint8)


def test_cityscapes_item(cs_root):
    ds = Cityscapes(cs_root, "train", size=SIZE)
    assert len(ds) == 4 and ds.num_classes == 19
    item = ds[0]
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert item["label"].shape == (SIZE, SIZE) and item["label"].dtype == torch.int64
    assert set(item["label"].unique().tolist()) <= set(range(19)) | {255}
    assert item["name"] == "pixelstadt/pixelstadt_000000_000019"  # relative to the split, no suffix
    # bilinear (PIL) for the image, nearest for the label
    src = Image.open(ds.samples[0].image).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    assert np.array_equal(_denormalise(item["image"]), np.asarray(src))


def test_label_ids_are_mapped_like_train_ids(cs_root, tmp_path):
    ids_only = tmp_path / "ids_only"
    shutil.copytree(cs_root, ids_only)
    for p in ids_only.rglob("*_gtFine_labelTrainIds.png"):
        p.unlink()
    with_train = Cityscapes(cs_root, "train", size=SIZE)
    from_ids = Cityscapes(ids_only, "train", size=SIZE)
    assert with_train.samples[0].label.name.endswith("_labelTrainIds.png")
    assert from_ids.samples[0].label.name.endswith("_labelIds.png")
    for a, b in zip(with_train, from_ids):
        assert torch.equal(a["label"], b["label"]) and a["name"] == b["name"]


def test_acdc_conditions(acdc_root):
    full = ACDC(acdc_root, "train", size=SIZE)
    assert len(full) == 8
    some = ACDC(acdc_root, "train", size=SIZE, conditions=("night", "fog"))
    assert some.conditions == ("fog", "night") and len(some) == 4
    assert all(n.split("/")[0] in ("fog", "night") for n in some.names)
    assert some[0]["image"].shape == (3, SIZE, SIZE)
    with pytest.raises(UserError, match="haze"):
        ACDC(acdc_root, "train", conditions="fog,haze")


def test_augmentation_flips_image_and_label_together(cs_root):
    from iwu.data.augment import ItemKey

    plain = Cityscapes(cs_root, "train", size=SIZE)[1]
    seen = set()
    aug = Cityscapes(cs_root, "train", size=SIZE, augment=True)  # the old switch: hflip
    for epoch in range(12):
        item = aug[ItemKey(1, epoch)]
        flipped = torch.equal(item["image"], plain["image"].flip(-1))
        assert flipped or torch.equal(item["image"], plain["image"])
        assert torch.equal(item["label"], plain["label"].flip(-1) if flipped else plain["label"])
        seen.add(flipped)
    assert seen == {True, False}


def _write_folder(root, n=3, ignore=250, suffix=".jpg"):
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            image, scene = scene_arrays(1, split, i, 32, 48)
            label = np.where(train_ids(scene) == 255, ignore, train_ids(scene) % 3).astype(np.uint8)
            label[:8, :8] = ignore  # every label has some ignored pixels
            Image.fromarray(image).save(root / "images" / split / f"img{i}{suffix}")
            Image.fromarray(label).save(root / "labels" / split / f"img{i}.png")
    spec = {"classes": ["a", "b", "c"], "ignore_index": ignore, "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}
    (root / "classes.yaml").write_text(yaml.safe_dump(spec))


def test_folder_dataset(tmp_path):
    _write_folder(tmp_path)
    ds = SegmentationFolder(tmp_path, "train", size=SIZE)
    assert ds.classes == ("a", "b", "c") and ds.palette[1] == (255, 0, 0) and len(ds) == 3
    labels = torch.stack([it["label"] for it in ds])
    assert set(labels.unique().tolist()) <= {0, 1, 2, 255}  # ignore index 250 becomes 255
    assert (labels == 255).any()
    assert ds[0]["name"] == "img0"
    with pytest.raises(UserError, match="label values 250"):
        SegmentationFolder(tmp_path, "train", size=SIZE, classes=["a", "b", "c"])[0]  # 250 unknown then


def test_specs_and_config():
    assert parse_data_spec("cityscapes:/d/cs") == {"kind": "cityscapes", "root": "/d/cs"}
    assert parse_data_spec("acdc:/d/a:night,fog") == {"kind": "acdc", "root": "/d/a", "conditions": ["fog", "night"]}
    assert parse_data_spec("acdc:/d/a") == {"kind": "acdc", "root": "/d/a"}
    assert parse_data_spec("folder:/d/x:y") == {"kind": "folder", "root": "/d/x:y"}
    for bad in ("cityscapes", "kitti:/d", "folder:"):
        with pytest.raises(UserError, match="--data"):
            parse_data_spec(bad)
    with pytest.raises(UserError, match="kind"):
        build_dataset({"kind": "kitti", "root": "/x"}, "train", 32)
