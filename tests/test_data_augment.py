"""Joint augmentation: image, label and stored mask stay aligned; draws depend on (seed, epoch, index) only."""

import numpy as np
import pytest
import torch

from iwu.data import Cityscapes, SegmentationDataModule, open_cached, write_synthetic
from iwu.data.augment import ItemKey, check_augment
from iwu.data.common import DataFileError, IMAGENET_MEAN, IMAGENET_STD, make_item
from iwu.config.schema import data_config
from iwu.errors import UserError
from iwu.data.mask_store import MaskWriter

PUBLISHED = ["hflip", {"random_scale": {"min": 0.5, "max": 2.0}}, {"random_crop": {"size": 40}}]
STEPS = {
    "hflip": ["hflip"],
    "vflip": [{"vflip": {"p": 1.0}}],
    "random_scale": [{"random_scale": {"min": 0.5, "max": 2.0}}, {"random_crop": {"size": 48}}],
    "random_crop": [{"random_crop": {"size": [20, 28]}}],
    "random_crop_padded": [{"random_crop": {"size": 64, "padding": 3}}],
    "color_jitter": [{"color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}}],
    "published": PUBLISHED,
}


def _blocks(seed=0, side=48, block=12, classes=12):
    """A label of `block`-pixel squares of random classes, and an image whose every channel is 20 * (class + 1)
    (so the padding's 0 differs from every class)."""
    g = np.random.default_rng(seed)
    label = np.kron(g.integers(0, classes, (side // block, side // block)), np.ones((block, block))).astype(np.uint8)
    image = np.repeat((20 * (label.astype(np.int64) + 1)).astype(np.uint8)[..., None], 3, axis=2)
    return image, label


def _uint8_image(item):
    """The item's image back in 0..255 (undoing the ImageNet normalisation)."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (item["image"] * std + mean) * 255


def _uniform_around(label: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels whose (2r+1)^2 neighbourhood holds one label value: there bilinear resizing keeps the value."""
    x = label.float()[None, None]
    pool = torch.nn.functional.max_pool2d
    high = pool(x, 2 * radius + 1, stride=1, padding=radius)
    low = -pool(-x, 2 * radius + 1, stride=1, padding=radius)
    return (high == low)[0, 0]


@pytest.mark.parametrize("name", sorted(STEPS))
def test_mask_label_and_image_stay_aligned_pixel_by_pixel(name):
    image, label = _blocks()
    augment = check_augment(STEPS[name])
    changed = 0
    original = torch.from_numpy(label).long(), torch.from_numpy(image).permute(2, 0, 1).float()
    for epoch in range(6):
        item = make_item(image, label, "x", augment=augment, key=ItemKey(0, epoch), mask=torch.from_numpy(label).float())
        y, u, x = item["label"], item["mask"], _uint8_image(item)
        padded = y == 255
        assert torch.equal(u[~padded], y[~padded].float())  # the mask went exactly where the label went
        assert (u[padded] == 0).all()
        if name != "color_jitter":
            inner = _uniform_around(y, 2)
            assert inner.float().mean() > 0.3
            expected = torch.where(padded, 0, 20 * (y + 1)).float()
            assert torch.allclose(x[:, inner], expected[inner].expand(3, -1), atol=0.5)
        else:  # the image only changes
            assert torch.equal(y, original[0])
        moved = not torch.allclose(x, original[1], atol=0.5) if name == "color_jitter" else not torch.equal(y, original[0])
        changed += moved
    assert changed >= 2  # the step did something


def test_exact_results_of_flips_crops_and_padding():
    image, label = _blocks()
    y = torch.from_numpy(label).long()
    item = make_item(image, label, "x", augment=check_augment([{"hflip": {"p": 1}}, {"vflip": {"p": 1}}]))
    assert torch.equal(item["label"], y.flip(-1).flip(-2))
    item = make_item(image, label, "x", augment=check_augment([{"random_crop": {"size": 64}}]))
    assert item["label"].shape == (64, 64) and (item["label"] == 255).sum() == 64 * 64 - 48 * 48
    assert torch.equal(item["label"][8:56, 8:56], y)  # padded evenly: nothing left to place at random
    crop = make_item(image, label, "x", augment=check_augment([{"random_crop": {"size": [20, 28]}}]), key=3)["label"]
    found = [(t, l) for t in range(29) for l in range(21) if torch.equal(y[t:t + 20, l:l + 28], crop)]
    assert found  # a window of the label itself
    plain = make_item(image, label, "x", augment=check_augment([{"hflip": {"p": 0}}]))
    assert torch.equal(plain["label"], y) and torch.equal(plain["image"], make_item(image, label, "x")["image"])


def test_draws_depend_on_seed_epoch_and_index_only():
    image, label = _blocks()
    augment = check_augment([*PUBLISHED, {"color_jitter": {"brightness": 0.3}}])

    def item(key):
        return make_item(image, label, "x", augment=augment, key=key)

    torch.manual_seed(0)
    first = item(ItemKey(3, 1, 7))
    torch.manual_seed(1)  # the global generator plays no part
    again = item(ItemKey(3, 1, 7))
    assert all(torch.equal(first[k], again[k]) for k in ("image", "label"))
    for other in (ItemKey(3, 2, 7), ItemKey(4, 1, 7), ItemKey(3, 1, 8)):
        assert not torch.equal(item(other)["image"], first["image"])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    base = tmp_path_factory.mktemp("aug")
    return write_synthetic(base / "cs", "cityscapes", n_train=6, n_val=2, size=64), base / "cache"


def _dm(scenes, **over):
    root, cache = scenes
    config = {"kind": "cityscapes", "root": str(root), "size": 32, "batch_size": 2, "cache_dir": str(cache),
              "augment": PUBLISHED[:2] + [{"random_crop": {"size": 24}}, {"color_jitter": {"brightness": 0.3}}],
              **over}
    dm = SegmentationDataModule(config, seed=5)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _epochs(dm, n=2):
    loader = dm.train_dataloader()
    return [b for _ in range(n) for b in loader]


def test_loader_workers_see_the_same_augmented_batches(scenes):
    """The PNG path with 0 and 2 workers and the cache path: the same images, epoch after epoch."""
    runs = [_epochs(_dm(scenes, cache=False, num_workers=w)) for w in (0, 2)] + [_epochs(_dm(scenes))]
    assert runs[0][0]["image"].shape == (2, 3, 24, 24)
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert a["name"] == b["name"] and torch.equal(a["label"], b["label"])
            assert torch.allclose(a["image"], b["image"], atol=1e-6)
    assert not torch.equal(runs[0][0]["image"], runs[0][3]["image"])  # epoch 1 is not epoch 0 again


def test_validation_never_augments(scenes):
    dm = _dm(scenes)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[-2:] == (32, 32)
    plain = Cityscapes(scenes[0], "val", size=32)[0]
    assert torch.equal(batch["image"][0], plain["image"])


def test_resumed_loader_serves_the_augmented_batches_of_an_uninterrupted_one(scenes):
    whole = _epochs(_dm(scenes), 2)
    resumed = _dm(scenes)
    resumed.start_at(4)  # epoch 1, after its first batch
    rest = list(resumed.train_dataloader())
    assert len(rest) == 2
    for a, b in zip(whole[4:], rest, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def _label_masks(dm, root):
    """A mask store whose every mask is 0.1 x the item's label (0 where ignored), at the training size."""
    with MaskWriter(root, num_classes=19) as writer:
        for i, name in enumerate(dm.train_set.names):
            y = dm.train_set.read(i)[1].astype(np.float64)
            writer.add(name, np.where(y == 255, 0, 0.1 * y))
    from iwu.data.mask_store import MaskStore

    return MaskStore(root)


@pytest.mark.parametrize("cache", [True, False])
def test_stored_masks_ride_with_their_items_through_augmentation(scenes, tmp_path, cache):
    dm = _dm(scenes, cache=cache, num_workers=1)
    dm.use_masks(_label_masks(dm, tmp_path / "masks"))
    for batch in _epochs(dm):
        y, u = batch["label"], batch["mask"]
        assert u.shape == y.shape == (2, 24, 24)
        known = y != 255
        assert torch.allclose(u[known], 0.1 * y[known].float(), atol=1e-4)


def test_a_missing_mask_is_one_line_from_a_worker(scenes, tmp_path):
    dm = _dm(scenes, cache=False, num_workers=1)
    with MaskWriter(tmp_path / "m", num_classes=19) as writer:
        writer.add("elsewhere", np.zeros((32, 32)))
    from iwu.data.mask_store import MaskStore

    dm.use_masks(MaskStore(tmp_path / "m"))
    with pytest.raises(DataFileError) as err:
        next(iter(dm.train_dataloader()))
    assert "no mask for item" in str(err.value) and "\n" not in str(err.value)


BAD = [
    ("hflip", "data.augment: expected null .* or a list of transforms"),
    (["hfilp"], r"data.augment\[0\]: unknown transform 'hfilp'; did you mean hflip\? known: hflip, vflip"),
    ([{"random_crop": {"sise": 24}}], r"\[0\].random_crop: unknown argument 'sise'; did you mean size\?"),
    ([{"random_crop": None}], r"\[0\].random_crop: `size` is required"),
    ([{"random_crop": 24}], r"\[0\].random_crop: expected a mapping of arguments"),
    ([{"random_crop": {"size": 0}}], r"`size` must be a whole number from 1 to 4096 or \[height, width\], not 0"),
    ([{"random_crop": {"size": 40, "padding": 2, "pad_if_needed": False}}],
     r"\[0\].random_crop: a 40x40 crop is larger than the padded image \(as small as 32\+2x2"),
    ([{"random_scale": {"min": 0.5}}, {"random_crop": {"size": 24, "pad_if_needed": False}}],
     r"\[1\].random_crop: a 24x24 crop is larger than the padded image \(as small as 16"),
    ([{"random_scale": {"min": 2, "max": 1}}, {"random_crop": {"size": 8}}], r"`max` must be a number >= 2"),
    (["random_scale"], r"\[0\].random_scale: changes the image size; add a random_crop after it"),
    ([{"hflip": {"p": 1.5}}], r"\[0\].hflip: `p` must be a number >= 0 and <= 1, not 1.5"),
    ([{"color_jitter": {"hue": 0.7}}], r"`hue` must be a number >= 0 and <= 0.5"),
    ([{"hflip": {}, "vflip": {}}], r"\[0\]: expected a transform name or a one-key mapping"),
]


@pytest.mark.parametrize("spec, message", BAD)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message) as err:
        check_augment(spec, key="data.augment", size=32)
    assert "\n" not in str(err.value)


def test_the_data_config_checks_augment_and_maps_the_old_flip(scenes):
    base = {"kind": "cityscapes", "root": "/x", "size": 32}
    assert data_config(base).augment is None  # the paper's: none
    assert data_config({**base, "hflip": True}).augment == ["hflip"]
    assert data_config(data_config({**base, "hflip": True}).__dict__ | {"val_extra": None}).augment == ["hflip"]
    with pytest.raises(UserError, match=r"data.augment\[0\]: unknown transform 'flip'"):
        data_config({**base, "augment": ["flip"]})
    with pytest.raises(UserError, match=r"data.augment\[0\].random_crop: a 64x64 crop is larger"):
        data_config({**base, "augment": [{"random_crop": {"size": 64, "pad_if_needed": False}}]})
    with pytest.raises(UserError, match="data.hflip: replaced by data.augment"):
        data_config({**base, "hflip": True, "augment": ["vflip"]})
    cached = open_cached(Cityscapes(scenes[0], "train", size=32, augment=PUBLISHED), scenes[1])
    assert cached.augment == check_augment(PUBLISHED)  # the cache keeps the dataset's augmentation


def test_ranks_under_ddp_share_the_epoch_and_split_its_items(monkeypatch):
    import iwu.data.sampler as sampler

    keys = []
    for rank in range(2):
        monkeypatch.setattr(sampler, "_rank_and_world", lambda rank=rank: (rank, 2))
        order = sampler.EpochSampler(8, batch_size=2, seed=3)
        order.start_at(4)  # 2 batches an epoch on each rank: epoch 2 from its start
        keys += list(order)
    assert {(k.epoch, k.seed) for k in keys} == {(2, 3)}
    assert sorted(k.index for k in keys) == list(range(8))


@pytest.mark.parametrize("step", [{"random_crop": {"size": 100000}}, {"random_crop": {"size": [64, 4097]}},
                                  {"random_crop": {"size": 64, "padding": 100000}}])
def test_crop_sizes_and_padding_are_bounded_like_image_sides(step):
    with pytest.raises(UserError, match="from [01] to 4096"):
        check_augment([step], size=64)
