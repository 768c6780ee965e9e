"""Kvasir-SEG and Pascal VOC in their release layouts, the fakes `iwu synth` writes of them, and the
ACDC fixes (conditions named in errors, synthetic splits with every condition)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from iwu.cli import main
from iwu.data import (
    CONDITIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC,
    DataFileError,
    Kvasir,
    build_dataset,
    check_dataset,
    open_cached,
    parse_data_spec,
    write_synthetic,
)
from iwu.data.cache import MANIFEST, CachedDataset
from iwu.data.kvasir import MEAN as KVASIR_MEAN
from iwu.data.kvasir import STD as KVASIR_STD
from iwu.data.voc import PALETTE as VOC_PALETTE
from iwu.errors import UserError

SIZE = 24


def _normalised(image: Image.Image, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _jpeg(array: np.ndarray, path, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=quality)


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _kvasir(root, names, mask=None):
    """images/*.jpg and masks/*.png (lossless, so each grey value is exactly as written)."""
    (root / "masks").mkdir(parents=True, exist_ok=True)
    values = np.zeros((SIZE, SIZE), np.uint8) if mask is None else mask
    for i, name in enumerate(names):
        _jpeg(_photo(i), root / "images" / f"{name}.jpg")
        Image.fromarray(values).save(root / "masks" / f"{name}.png")
    return root


# --- Kvasir-SEG --------------------------------------------------------------------------------


def test_kvasir_masks_threshold_at_127_and_use_kvasirs_statistics(tmp_path):
    grey = np.tile(np.array([0, 40, 127, 128, 200, 255], np.uint8), (SIZE, SIZE // 6))
    root = _kvasir(tmp_path / "kv", ["a", "b"], grey)
    (root / "train.txt").write_text("a\n")
    (root / "val.txt").write_text("b\n")
    ds = Kvasir(root, "train", size=SIZE)
    assert (ds.classes, ds.num_classes) == (("background", "polyp"), 2)
    item = ds[0]
    expected = np.tile(np.array([0, 0, 0, 1, 1, 1]), (SIZE, SIZE // 6))
    assert torch.equal(item["label"], torch.from_numpy(expected))
    # images normalised with Kvasir-SEG's own mean and std, not ImageNet's
    assert (ds.mean, ds.std) == (KVASIR_MEAN, KVASIR_STD)
    source = Image.open(root / "images" / "a.jpg")
    assert torch.allclose(item["image"], _normalised(source, KVASIR_MEAN, KVASIR_STD), atol=1e-5)


def test_kvasir_release_masks_are_rgb_jpegs_with_grey_outlines(tmp_path):
    root = tmp_path / "kv"
    polyp = np.zeros((SIZE, SIZE), bool)
    polyp[6:18, 4:16] = True
    _jpeg(_photo(0), root / "images" / "p.jpg")
    _jpeg(np.repeat(polyp[..., None] * np.uint8(255), 3, axis=2), root / "masks" / "p.jpg", quality=75)
    stored = np.asarray(Image.open(root / "masks" / "p.jpg").convert("L"))
    assert not np.isin(stored, (0, 255)).all()  # the JPEG left grey values: the case thresholding is for
    label = Kvasir(root, "train", size=SIZE, val_fraction=0.5)  # one image: all of it is train
    got = label[0]["label"].numpy()
    assert set(np.unique(got)) == {0, 1}
    inside, outside = ndimage.binary_erosion(polyp, iterations=2), ~ndimage.binary_dilation(polyp, iterations=2)
    assert (got[inside] == 1).all() and (got[outside] == 0).all()


def test_kvasir_split_files_give_the_split(tmp_path):
    root = _kvasir(tmp_path / "kv", ["a", "b", "c", "d"])
    (root / "train.txt").write_text("c\na\n\n")
    (root / "val.txt").write_text("d\n")
    assert Kvasir(root, "train", size=SIZE).names == ["c", "a"]
    assert Kvasir(root, "val", size=SIZE).names == ["d"]
    (root / "val.txt").unlink()
    with pytest.raises(DataFileError, match=r"val\.txt: missing"):
        Kvasir(root, "val", size=SIZE)


def test_kvasir_without_split_files_splits_by_name(tmp_path):
    names = [f"img{i:02d}" for i in range(10)]
    root = _kvasir(tmp_path / "kv", names)
    source = {"kind": "kvasir", "root": str(root)}
    train, val = (build_dataset(source, split, SIZE).names for split in ("train", "val"))
    assert (len(train), len(val)) == (8, 2)  # the default val_fraction 0.2
    assert sorted(train + val) == names
    # by name alone: the same names elsewhere, listed in any order, split the same way
    other = _kvasir(tmp_path / "other", names[::-1])
    assert build_dataset({"kind": "kvasir", "root": str(other)}, "val", SIZE).names == val
    half = {**source, "val_fraction": 0.5}
    assert len(build_dataset(half, "val", SIZE)) == 5 and len(build_dataset(half, "train", SIZE)) == 5
    assert build_dataset(source, "train", SIZE).identity()["val_fraction"] == 0.2
    for bad in (0, 1.5, "a"):
        with pytest.raises(UserError, match="val_fraction"):
            build_dataset({**source, "val_fraction": bad}, "train", SIZE)
    with pytest.raises(DataFileError, match=r"test\.txt: missing"):
        build_dataset(source, "test", SIZE)


def test_kvasir_bad_inputs_are_one_line(tmp_path):
    root = _kvasir(tmp_path / "kv", ["a", "b", "c"])
    (root / "masks" / "b.png").unlink()
    with pytest.raises(DataFileError) as err:
        Kvasir(root, "train", size=SIZE)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{root / 'images' / 'b.jpg'}: image without a label")
    (root / "train.txt").write_text("a\nzz\n")
    (root / "val.txt").write_text("c\n")
    counts, problems = check_dataset({"kind": "kvasir", "root": str(root)}, ["train", "val"])
    assert counts == {"train": 1, "val": 1}
    assert f"{root / 'train.txt'}: names zz, which has no image in {root / 'images'}" in problems
    assert all("\n" not in p for p in problems) and len(problems) == 2


def test_kvasir_cache_keeps_the_statistics(tmp_path):
    root = _kvasir(tmp_path / "kv", ["a", "b", "c"], np.full((SIZE, SIZE), 255, np.uint8))
    ds = Kvasir(root, "train", size=SIZE, val_fraction=0.4)
    cached = open_cached(ds, tmp_path / "cache")
    assert (cached.mean, cached.std) == (KVASIR_MEAN, KVASIR_STD)
    assert torch.equal(cached[0]["image"], ds[0]["image"]) and torch.equal(cached[0]["label"], ds[0]["label"])
    # a store written before the statistics were recorded held ImageNet-normalised data
    manifest = json.loads((cached.directory / MANIFEST).read_text())
    del manifest["mean"], manifest["std"]
    (cached.directory / MANIFEST).write_text(json.dumps(manifest))
    assert (CachedDataset(cached.directory).mean, CachedDataset(cached.directory).std) == (IMAGENET_MEAN, IMAGENET_STD)


# --- Pascal VOC --------------------------------------------------------------------------------


def _palette_png(values: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values, mode="P")
    image.putpalette(np.array(VOC_PALETTE, np.uint8).ravel().tolist())
    image.save(path)


def _voc(voc, lists: dict[str, list[str]]):
    """VOC2012 with JPEGImages, SegmentationClass (palette PNGs) and the lists."""
    values = np.zeros((SIZE, SIZE), np.uint8)
    values[:, 8:16], values[:, 16:] = 15, 20
    values[:, 7:9] = 255  # a border band
    for names in lists.values():
        for i, name in enumerate(names):
            _jpeg(_photo(i), voc / "JPEGImages" / f"{name}.jpg")
            _palette_png(values, voc / "SegmentationClass" / f"{name}.png")
    for split, names in lists.items():
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return values


def test_voc_palette_labels_keep_their_ids_and_borders_stay_ignore(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    values = _voc(voc, {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]})
    for root in (voc, tmp_path):  # the VOC2012 folder, or the one holding VOCdevkit
        ds = VOC(root, "train", size=SIZE)
        assert ds.num_classes == 21 and ds.classes[15] == "person" and ds.palette[15] == (192, 128, 128)
        assert ds.names == ["2007_000001", "2007_000002"]
        item = ds[0]
        assert torch.equal(item["label"], torch.from_numpy(values.astype(np.int64)))
        assert (item["label"] == 255).sum() == 2 * SIZE
        source = Image.open(voc / "JPEGImages" / "2007_000001.jpg")
        assert torch.allclose(item["image"], _normalised(source, IMAGENET_MEAN, IMAGENET_STD), atol=1e-5)
    assert VOC(tmp_path, "val", size=SIZE).names == ["2007_000003"]


def test_voc_uses_the_augmented_set_for_training_when_present(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    _voc(voc, {"train": ["a"], "val": ["b"]})
    _jpeg(_photo(5), voc / "JPEGImages" / "extra.jpg")
    (voc / "SegmentationClassAug").mkdir()
    for name, cls in (("a", 3), ("extra", 7)):  # plain grey PNGs, as the augmented labels come
        Image.fromarray(np.full((SIZE, SIZE), cls, np.uint8)).save(voc / "SegmentationClassAug" / f"{name}.png")
    assert VOC(tmp_path, "train", size=SIZE).names == ["a"]  # no list yet: the official set
    (tmp_path / "train_aug.txt").write_text("a\nextra\n")  # beside VOCdevkit, as the published code keeps it
    train = VOC(tmp_path, "train", size=SIZE)
    assert train.names == ["a", "extra"] and train[1]["label"].unique().tolist() == [7]
    assert VOC(voc, "train", size=SIZE).names == ["a", "extra"]
    val = VOC(tmp_path, "val", size=SIZE)
    assert val.names == ["b"] and 255 in val[0]["label"].unique().tolist()


def test_voc_bad_inputs_are_one_line(tmp_path):
    voc = tmp_path / "VOC2012"
    _voc(voc, {"train": ["a", "b"], "val": ["c"]})
    (voc / "JPEGImages" / "b.jpg").unlink()
    list_file = voc / "ImageSets" / "Segmentation" / "train.txt"
    with pytest.raises(DataFileError) as err:
        VOC(voc, "train", size=SIZE)
    assert str(err.value) == f"{list_file}: names b, but {voc / 'JPEGImages' / 'b.jpg'} is missing"
    with pytest.raises(DataFileError, match=r"test\.txt: missing split list"):
        VOC(voc, "test", size=SIZE)
    bad = np.full((SIZE, SIZE), 21, np.uint8)
    _palette_png(bad, voc / "SegmentationClass" / "c.png")
    with pytest.raises(DataFileError, match="label values 21 are not known ids; expected VOC class ids"):
        VOC(voc, "val", size=SIZE)[0]


# --- through the command line, and the fakes `iwu synth` writes ---------------------------------


@pytest.mark.parametrize("layout", ["kvasir", "voc"])
def test_synth_fakes_load_check_and_cache(tmp_path, capsys, monkeypatch, layout):
    monkeypatch.setenv("IWU_CACHE", str(tmp_path / "cache"))
    out = tmp_path / layout
    assert main(["synth", "--out", str(out), "--layout", layout, "--n-train", "3", "--n-val", "2", "--size", "48",
                 "--height", "32"]) == 0
    assert main(["prepare", "--data", f"{layout}:{out}", "--check", "--workers", "0"]) == 0
    assert f"ok: {layout}:{out} has 3 pairs in train, 2 pairs in val" in capsys.readouterr().out
    assert main(["prepare", "--data", f"{layout}:{out}", "--size", "16", "--workers", "0"]) == 0
    assert f"{layout} train: 3 images at 16x16 cached" in capsys.readouterr().out
    train = build_dataset(parse_data_spec(f"{layout}:{out}"), "train", 16)
    labels = torch.stack([item["label"] for item in train])
    if layout == "kvasir":
        mask = Image.open(next((out / "masks").iterdir()))
        assert (mask.format, mask.mode) == ("JPEG", "RGB")  # as the release stores them
        assert not np.isin(np.asarray(mask), (0, 255)).all()
        assert set(labels.unique().tolist()) == {0, 1}
    else:
        label = Image.open(next((out / "VOCdevkit" / "VOC2012" / "SegmentationClass").iterdir()))
        assert (label.format, label.mode) == ("PNG", "P") and 255 in np.asarray(label)
        assert 255 in labels and 0 in labels and ((labels > 0) & (labels < 21)).any()


def test_synth_replaces_its_own_fake(tmp_path):
    out = write_synthetic(tmp_path / "kv", "kvasir", n_train=2, n_val=1, size=32)
    write_synthetic(out, "kvasir", n_train=3, n_val=1, size=32)
    assert len(list((out / "images").iterdir())) == 4 and (out / "train.txt").read_text().count("\n") == 3


# --- ACDC ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_train, n_val", [(8, 2), (3, 4)])
def test_synth_acdc_refuses_splits_without_every_condition(tmp_path, capsys, n_train, n_val):
    argv = ["synth", "--out", str(tmp_path / "a"), "--layout", "acdc", "--n-train", str(n_train),
            "--n-val", str(n_val), "--size", "32"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    flag = "--n-val 2" if n_val == 2 else "--n-train 3"
    assert err.count("\n") == 0 and flag in err and "fog, night, rain, snow" in err
    assert not (tmp_path / "a").exists()


def test_synth_acdc_splits_load_over_every_condition(tmp_path):
    root = write_synthetic(tmp_path / "a", "acdc", n_train=4, n_val=5, size=32)
    for split in ("train", "val"):
        names = build_dataset({"kind": "acdc", "root": str(root)}, split, 16).names
        assert {n.split("/")[0] for n in names} == set(CONDITIONS)


def test_acdc_conditions_are_named_when_unknown(tmp_path):
    root = tmp_path / "acdc"
    root.mkdir()
    with pytest.raises(UserError) as err:
        parse_data_spec(f"acdc:{root}:fog,dusk")
    assert str(err.value) == "ACDC conditions: unknown condition 'dusk' (conditions: fog, night, rain, snow)"
    with pytest.raises(UserError, match=r"^ACDC conditions: unknown condition 'Fog'; did you mean fog\? \(conditions: fog, night"):
        parse_data_spec(f"acdc:{root}:Fog")
    assert parse_data_spec(f"acdc:{root}:snow,fog") == {"kind": "acdc", "root": str(root), "conditions": ["fog", "snow"]}
    odd = tmp_path / "a:b"  # a colon in an existing folder's name is part of the path
    odd.mkdir()
    assert parse_data_spec(f"acdc:{odd}") == {"kind": "acdc", "root": str(odd)}


def test_image_tensor_statistics_are_per_dataset():
    from iwu.data.common import image_tensor

    image = np.full((2, 2, 3), 255, np.uint8)
    assert torch.allclose(image_tensor(image)[:, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    got = image_tensor(image, KVASIR_MEAN, KVASIR_STD)[:, 0, 0]
    assert torch.allclose(got, (1 - torch.tensor(KVASIR_MEAN)) / torch.tensor(KVASIR_STD))


def test_kinds_list_the_new_datasets():
    with pytest.raises(UserError, match="kvasir:ROOT, voc:ROOT"):
        parse_data_spec("kitti:/x")
    assert parse_data_spec("kvasir:/d/k") == {"kind": "kvasir", "root": "/d/k"}
    assert parse_data_spec("voc:/d/v") == {"kind": "voc", "root": "/d/v"}


@pytest.mark.parametrize("kind, mean, std", [("kvasir", KVASIR_MEAN, KVASIR_STD), ("voc", IMAGENET_MEAN, IMAGENET_STD)])
def test_predict_normalises_as_the_run_was_trained(monkeypatch, kind, mean, std):
    import iwu.inference.prediction as predict

    seen = []

    def probabilities(module, x):  # members x batch x classes x H x W
        seen.append(x)
        return torch.full((1, 1, 2, *x.shape[-2:]), 0.5)

    monkeypatch.setattr(predict, "member_probabilities", probabilities)
    loaded = SimpleNamespace(module=None, device=torch.device("cpu"), config=SimpleNamespace(data=SimpleNamespace(kind=kind)))
    image = Image.fromarray(_photo(1))
    predict.predict_image(loaded, image, SIZE)
    assert torch.allclose(seen[0][0], _normalised(image, mean, std), atol=1e-5)


def test_images_are_drawn_back_with_their_datasets_statistics():
    from iwu.data.common import image_tensor
    from iwu.plots.colours import denormalize

    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4
    shown = denormalize(image_tensor(image, KVASIR_MEAN, KVASIR_STD), KVASIR_MEAN, KVASIR_STD)
    assert np.allclose(shown, image / 255, atol=1e-5)
    assert not np.allclose(denormalize(image_tensor(image, KVASIR_MEAN, KVASIR_STD)), image / 255, atol=1e-2)


def test_a_runs_commands_read_any_dataset_as_the_run_was_trained(tmp_path):
    """evaluate and masks: the run's statistics whatever the dataset's, and its own kind split as it was."""
    from types import SimpleNamespace

    from iwu.data.config import DataConfig
    from iwu.inference.loading import dataset_for

    kvasir = write_synthetic(tmp_path / "kv", "kvasir", n_train=6, n_val=2, size=32)
    for listed in ("train.txt", "val.txt"):  # the split by name, then
        (kvasir / listed).unlink()
    voc = write_synthetic(tmp_path / "voc", "voc", n_train=2, n_val=2, size=32)
    loaded = SimpleNamespace(config=SimpleNamespace(data=DataConfig(kind="kvasir", size=24, val_fraction=0.5)))
    own = dataset_for(loaded, {"kind": "kvasir", "root": str(kvasir)}, "val")
    assert len(own) == 4 and own.size == 24  # half of 8 by the run's fraction, not the default 0.2
    assert (own.mean, own.std) == (KVASIR_MEAN, KVASIR_STD)
    other = dataset_for(loaded, {"kind": "voc", "root": str(voc)}, "val", size=16)
    assert (other.mean, other.std, other.size) == (KVASIR_MEAN, KVASIR_STD, 16)
    assert type(other).mean != KVASIR_MEAN  # VOC's own would be ImageNet's


def test_a_second_validation_set_is_normalised_as_the_main_one(tmp_path, monkeypatch):
    from iwu.data import SegmentationDataModule

    monkeypatch.setenv("IWU_CACHE", str(tmp_path / "cache"))
    kvasir = write_synthetic(tmp_path / "kv", "kvasir", n_train=4, n_val=2, size=32)
    voc = write_synthetic(tmp_path / "voc", "voc", n_train=2, n_val=2, size=32)
    dm = SegmentationDataModule({"kind": "kvasir", "root": str(kvasir), "size": 24, "num_workers": 0,
                                 "val_extra": {"kind": "voc", "root": str(voc)}})
    with pytest.raises(UserError, match="other classes"):  # the classes differ; the statistics are set first
        dm.setup("validate")
    assert [(d.mean, d.std) for d in dm.val_sets] == [(KVASIR_MEAN, KVASIR_STD)] * 2


def test_an_image_in_both_split_files_is_a_problem_listed_once(tmp_path):
    from iwu.data.kvasir import list_kvasir

    root = write_synthetic(tmp_path / "kv", "kvasir", n_train=3, n_val=1, size=32)
    train = (root / "train.txt").read_text().split()
    (root / "train.txt").write_text("\n".join([*train, train[0]]) + "\n")  # listed twice
    (root / "val.txt").write_text(train[1] + "\n")  # and one of them in val too
    samples, problems = list_kvasir(root, "train")
    assert [s.name for s in samples] == train
    assert problems == [f"{root / 'train.txt'}: names {train[1]}, which val.txt names too; an image belongs to one split"]


def test_every_kind_has_its_statistics():
    from iwu.data.sources import image_statistics

    assert image_statistics("kvasir") == (KVASIR_MEAN, KVASIR_STD)
    assert image_statistics("folder") == image_statistics(None) == image_statistics("cityscapes")


def test_split_files_that_are_not_utf8_are_a_listed_problem(tmp_path, capsys):
    from iwu.cli import main
    from iwu.data.synthetic import write_synthetic
    from iwu.data.voc import split_source

    kvasir = write_synthetic(tmp_path / "kvasir", "kvasir", n_train=3, n_val=2, size=32)
    (kvasir / "train.txt").write_bytes(b"\xff\xfe\x00bad")
    voc = write_synthetic(tmp_path / "voc", "voc", n_train=3, n_val=2, size=32)
    split_source(voc, "train")[0].write_bytes(b"\xff\xfe\x00bad")
    for spec, text in ((f"kvasir:{kvasir}", "train.txt: not UTF-8 text"), (f"voc:{voc}", "train.txt: not UTF-8 text")):
        assert main(["prepare", "--data", spec, "--check"]) == 1  # problems found, listed on stdout
        assert text in capsys.readouterr().out
        assert main(["prepare", "--data", spec]) == 2
        assert text in capsys.readouterr().err


def test_two_kvasir_images_of_one_name_in_two_formats_are_a_listed_problem(tmp_path):
    from iwu.data.kvasir import list_kvasir
    from iwu.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "kvasir", "kvasir", n_train=3, n_val=2, size=32)
    (root / "train.txt").unlink(), (root / "val.txt").unlink()
    first = sorted((root / "images").iterdir())[0]
    (root / "images" / f"{first.stem}.png").write_bytes(first.read_bytes())
    _, problems = list_kvasir(root, "train")
    assert problems == [f"{root / 'images' / first.stem}.png: {first.name} has the same name; keep one of them"]
