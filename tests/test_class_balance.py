"""Against class imbalance: class_weighted's three weightings, and rare-class sampling (DAFormer's RCS)
with every mode: its distribution, its resumption mid-epoch, its DDP shards, its refusals."""

import json
import math

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from iwu.config.schema import load_config
from iwu.data import SegmentationDataModule
from iwu.data.cache import prepare_cache
from iwu.data.cityscapes import Cityscapes
from iwu.data.class_counts import load_class_counts, load_image_class_counts
from iwu.data.rare_class import default_min_pixels, rare_class_plan
from iwu.data.sampler import EpochSampler, RareClassSampler
from iwu.data.synthetic import write_synthetic
from iwu.engine.run_dir import check_run_dir
from iwu.engine.train import build_datamodule, build_module, train
from iwu.errors import UserError
from iwu.method.class_weights import effective_number_weights, median_frequency_weights
from iwu.method.losses import class_weights_from_counts
from tiny_runs import tiny_config
from crashing import Crash, CrashAt

COUNTS = [100, 0, 300, 600]  # class 1 absent from training


# --- the weightings ---------------------------------------------------------------------------


def _close(weights, expected):
    return torch.allclose(weights.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_inverse_weights_are_todays():
    # 1000 / n = 10, -, 10/3, 5/3: sum 15, scaled to sum 4 (mean 1 over the four classes)
    assert _close(class_weights_from_counts(COUNTS), [8 / 3, 0, 8 / 9, 4 / 9])


def test_effective_number_weights_by_hand():
    # beta 0.5, n = 1, 2, 3: (1 - b) / (1 - b^n) = 1, 2/3, 4/7; sum 47/21, scaled to sum 4
    assert _close(effective_number_weights([1, 0, 2, 3], beta=0.5), [84 / 47, 0, 56 / 47, 48 / 47])
    assert _close(effective_number_weights(COUNTS, beta=0.0), [4 / 3, 0, 4 / 3, 4 / 3])  # every class alike
    # towards beta 1 the effective number is the count itself: the inverse weights
    assert _close(effective_number_weights(COUNTS, beta=1 - 1e-12), [8 / 3, 0, 8 / 9, 4 / 9])
    # Cui et al.'s 0.9999 on Cityscapes-sized counts: no overflow, absent still 0
    big = effective_number_weights([10**9, 0, 10**4, 10], beta=0.9999)
    assert torch.isfinite(big).all() and big[1] == 0 and big[3] > big[2] > big[0]


def test_median_frequency_weights_by_hand():
    # image 0: 100 of class 0, 100 of class 2 (200 labeled); image 1: 200 of class 2, 600 of class 3 (800)
    per_image = [[100, 0, 100, 0], [0, 0, 200, 600]]
    # f = 100/200, -, 300/1000, 600/800 = 0.5, 0.3, 0.75; median 0.5; w = 1, 5/3, 2/3 (sum 10/3), scaled to 4
    weights = median_frequency_weights(per_image)
    assert _close(weights, [1.2, 0, 2.0, 0.8])
    # not the inverse weights of the same pixels (with f over all pixels they would be)
    assert not _close(class_weights_from_counts(np.sum(per_image, axis=0)), [1.2, 0, 2.0, 0.8])
    # f = 10/40, 90/100: 1/f = 4, 10/9 (sum 46/9), scaled to sum 2; the median (here of two) cancels
    assert _close(median_frequency_weights([[10, 30], [0, 60]]), [36 / 23, 10 / 23])


@pytest.mark.parametrize("weigh", [lambda c: effective_number_weights(c, 0.9), median_frequency_weights])
def test_weightings_refuse_what_inverse_refuses(weigh):
    bad = [[0, 0], [0, 0]] if weigh is median_frequency_weights else [0, 0]
    with pytest.raises(ValueError, match="all zero"):
        weigh(bad)
    with pytest.raises(ValueError, match="non-negative"):
        weigh([[1, -1]] if weigh is median_frequency_weights else [1, -1])


# --- the rare-class plan and sampler ------------------------------------------------------------

MIN = 20
# each image holds at least MIN pixels of one class at most, so the image drawn names the class drawn
OWNERS = [0] * 8 + [1] * 4 + [2] * 2 + [3] * 1 + [None] * 3  # the last three hold MIN of none


def _owned_counts() -> np.ndarray:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, MIN, size=(len(OWNERS), 5))  # under MIN everywhere: pixels, not eligible
    for image, owner in enumerate(OWNERS):
        if owner is not None:
            counts[image, owner] = rng.integers(MIN, 400)
    counts[:, 4] = rng.integers(0, MIN, size=len(OWNERS))  # class 4: pixels everywhere, eligible nowhere
    return counts


def _target(counts, temperature, min_pixels) -> dict[int, float]:
    """p_c = exp((1 - f_c) / T) / sum, f_c the pixel share among the classes some image holds enough of."""
    eligible = [c for c in range(counts.shape[1]) if (counts[:, c] >= min_pixels).any()]
    total = sum(counts[:, c].sum() for c in eligible)
    raw = {c: math.exp((1 - counts[:, c].sum() / total) / temperature) for c in eligible}
    return {c: v / sum(raw.values()) for c, v in raw.items()}


def _within(observed: int, draws: int, p: float, sds: float = 5) -> bool:
    """`observed` of `draws` is within `sds` binomial standard deviations of `draws * p`."""
    return abs(observed - draws * p) <= sds * math.sqrt(draws * p * (1 - p))


def test_the_plan_is_the_formula():
    counts = _owned_counts()
    plan = rare_class_plan(counts, temperature=0.1, min_pixels=MIN)
    target = _target(counts, 0.1, MIN)
    assert plan.classes.tolist() == sorted(target) == [0, 1, 2, 3]  # class 4 never drawn
    assert np.allclose(plan.probabilities, [target[c] for c in plan.classes], rtol=1e-12)
    assert [h.tolist() for h in plan.holders] == [[i for i, o in enumerate(OWNERS) if o == c] for c in range(4)]
    tiny = rare_class_plan(counts, temperature=1e-4, min_pixels=MIN)  # exp(10^4): a softmax, not an overflow
    assert np.isfinite(tiny.probabilities).all() and tiny.probabilities.sum() == pytest.approx(1)
    assert default_min_pixels(512) == 3000 and default_min_pixels(768) == 6750 and default_min_pixels(8) == 1


def test_sampled_classes_and_images_follow_the_target_distribution():
    counts, temperature = _owned_counts(), 0.1
    target = _target(counts, temperature, MIN)
    sampler = RareClassSampler(rare_class_plan(counts, temperature, MIN), batch_size=2, seed=5)
    drawn = np.array([key.index for _ in range(3000) for key in sampler])  # 3000 epochs of 18 draws
    draws = len(drawn)
    assert draws == 3000 * len(OWNERS)
    owners = np.array([-1 if o is None else o for o in OWNERS])
    assert (owners[drawn] >= 0).all()  # an image holding MIN of no class is never drawn
    for c, p in target.items():
        assert _within(int((owners[drawn] == c).sum()), draws, p), c  # the class's draws
        holders = np.flatnonzero(owners == c)
        for image in holders:  # and uniformly among its images
            assert _within(int((drawn == image).sum()), draws, p / len(holders)), image
    assert min(target.values()) * draws > 1000  # each class drawn often enough for 5 sds to be ~15% or less
    share = {c: counts[:, c].sum() for c in target}
    assert sorted(target, key=share.get) == sorted(target, key=target.get, reverse=True)  # rarer: drawn more


def test_an_image_drawn_for_a_class_holds_enough_of_it():
    """Images eligible for several classes: every draw is an image that holds MIN of some drawable class,
    and each image comes as often as the classes it holds say (sum over them of p_c / holders_c)."""
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 60, size=(40, 6))
    counts[:, 5] = 0  # absent
    plan = rare_class_plan(counts, temperature=0.05, min_pixels=40)
    eligible = counts >= 40
    expected = np.zeros(len(counts))
    for c, p, holders in zip(plan.classes, plan.probabilities, plan.holders):
        assert eligible[holders, c].all() and eligible[:, c].sum() == len(holders)
        expected[holders] += p / len(holders)
    drawn = plan.draw(200_000, torch.Generator().manual_seed(0)).numpy()
    assert np.isin(drawn, np.flatnonzero(expected > 0)).all()
    seen = np.bincount(drawn, minlength=len(counts))
    assert all(_within(int(seen[i]), len(drawn), expected[i]) for i in range(len(counts)))


def test_rare_class_epochs_are_functions_of_seed_and_epoch_and_resume_mid_epoch():
    plan = rare_class_plan(_owned_counts(), 0.1, MIN)
    whole = RareClassSampler(plan, batch_size=2, seed=3)
    epochs = [list(whole) for _ in range(3)]
    assert len({tuple(e) for e in epochs}) == 3 and all(len(e) == len(OWNERS) for e in epochs)
    resumed = RareClassSampler(plan, batch_size=2, seed=3)
    resumed.start_at(len(OWNERS) // 2 + 2)  # 9 batches an epoch: epoch 1 after two of its batches
    assert list(resumed) == epochs[1][4:]
    assert list(resumed) == epochs[2]  # then the next epoch, whole
    other = RareClassSampler(plan, batch_size=2, seed=4)
    assert list(other) != epochs[0]


def test_an_image_drawn_twice_is_augmented_apart():
    """Each draw has a seed of its own: two draws of an image in one epoch are different keys."""
    sampler = RareClassSampler(rare_class_plan(_owned_counts(), 0.1, MIN), batch_size=2, seed=0)
    keys = list(sampler)
    assert len({k.index for k in keys}) < len(keys)  # some image came twice
    assert len(set(keys)) == len(keys) and {k.epoch for k in keys} == {0}


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_under_ddp_take_disjoint_draws_of_the_same_epoch(monkeypatch, world):
    import iwu.data.sampler as sampler

    plan = rare_class_plan(_owned_counts(), 0.1, MIN)
    one = RareClassSampler(plan, batch_size=1, seed=7)
    one.start_at(2 * len(OWNERS))  # epoch 2
    alone = list(one)
    shards = []
    for rank in range(world):
        monkeypatch.setattr(sampler, "_rank_and_world", lambda rank=rank: (rank, world))
        mine = RareClassSampler(plan, batch_size=1, seed=7)
        mine.start_at(2 * (len(OWNERS) // world))  # epoch 2 from its start, on every rank
        shards.append(list(mine))
        assert len(shards[-1]) == len(mine) == len(OWNERS) // world
    kept = len(OWNERS) // world * world  # the tail that does not divide evenly is dropped
    assert [shards[i % world][i // world] for i in range(kept)] == alone[:kept]
    assert len({k for shard in shards for k in shard}) == kept  # no draw on two ranks


# --- the data module and the cache --------------------------------------------------------------


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("rcs")
    return write_synthetic(base / "cs", "cityscapes", n_train=7, n_val=2, size=64), base / "cache"


def _dm(roots, seed=0, **over):
    cfg = {"kind": "cityscapes", "root": str(roots[0]), "size": 32, "batch_size": 2, "num_workers": 0,
           "cache_dir": str(roots[1]), "sampler": "rare_class", **over}
    dm = SegmentationDataModule(cfg, seed=seed)
    dm.setup("fit")
    return dm


def test_the_cache_stores_each_images_class_counts(roots):
    dataset = Cityscapes(roots[0], "train", size=32)
    store = prepare_cache(dataset, roots[1])
    per_image = load_image_class_counts(store)
    expected = [np.bincount(item["label"].flatten().numpy(), minlength=256)[:19] for item in dataset]
    assert per_image.shape == (7, 19) and np.array_equal(per_image, np.stack(expected))
    assert np.array_equal(per_image.sum(axis=0), load_class_counts(store))
    record = json.loads((store / "class_counts.json").read_text())
    assert len(record["per_image"]) == 7  # one row per image, in the store's order


def test_the_data_module_draws_rare_classes_from_the_training_split(roots):
    dm = _dm(roots)
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, RareClassSampler) and len(loader) == 3  # 7 draws, batch 2, drop_last
    per_image = dm.train_image_class_counts()
    min_pixels = default_min_pixels(32)
    holds = (per_image >= min_pixels).any(axis=1)
    names = dm.train_set.names
    for batch in [b for _ in range(5) for b in loader]:
        assert all(holds[names.index(n)] for n in batch["name"])
    shuffled = SegmentationDataModule({**_dm(roots).config.__dict__, "sampler": "shuffle"})
    shuffled.setup("fit")
    assert type(shuffled.train_dataloader().sampler) is EpochSampler  # the default: today's shuffle


def _batches(dm, start, n):
    dm.start_at(start)
    loader = dm.train_dataloader()
    return [b for _, b in zip(range(n), (b for _ in range(3) for b in loader))]


def test_resumed_loader_and_loader_workers_serve_the_same_drawn_batches(roots):
    augment = ["hflip", {"random_crop": {"size": 24}}]
    whole = _batches(_dm(roots, seed=2, augment=augment), 0, 7)
    resumed = _batches(_dm(roots, seed=2, augment=augment), 4, 3)  # epoch 1 after its first batch
    workers = _batches(_dm(roots, seed=2, augment=augment, cache_workers=2), 0, 7)
    for a, b in zip(whole[4:], resumed, strict=True):
        assert a["name"] == b["name"] and torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    for a, b in zip(whole, workers, strict=True):
        assert a["name"] == b["name"] and torch.equal(a["image"], b["image"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.sampler=random"], r"^data\.sampler: expected one of shuffle, rare_class, got 'random'$"),
        (["data.rcs_temperature=0"], r"^data\.rcs_temperature: expected a number > 0, got 0\.0$"),
        (["data.rcs_temperature=-1"], r"^data\.rcs_temperature: expected a number > 0, got -1\.0$"),
        (["data.rcs_min_pixels=0"], r"^data\.rcs_min_pixels: expected null or an integer >= 1, got 0$"),
        (["data.rcs_min_pixels=1.5"], r"^data\.rcs_min_pixels: expected an integer or null, got 1\.5$"),
        (["data.sampler=rare_class", "data.cache=false"],
         r"^data\.sampler: rare_class draws by each image's class counts, which the cache holds; "
         r"set data\.cache=true$"),
    ],
)
def test_bad_values_are_one_line_at_load(tmp_path, overrides, message):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(UserError, match=message):
        load_config(empty, overrides)


def test_a_split_no_image_of_which_holds_enough_of_a_class_is_refused_before_training(roots):
    with pytest.raises(UserError, match=r"^data\.rcs_min_pixels: in the train split, no image holds 2000 "
                                        r"pixels of one class \(the most: \d+\); set it lower$"):
        _dm(roots, rcs_min_pixels=2000)  # 32x32 images: 1024 pixels


def test_a_run_saved_before_the_sampler_keys_resumes(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    c = load_config(empty, ["data.kind=cityscapes", "data.root=/d", f"out={tmp_path}", "resume=true"])
    saved = c.to_dict()
    saved["data"] = {k: v for k, v in saved["data"].items() if not k.startswith(("sampler", "rcs_"))}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_run_dir(c, tmp_path)  # the same run: no error
    with pytest.raises(UserError, match=r"another config than the run's \(data\.sampler\)"):
        check_run_dir(load_config(empty, ["data.kind=cityscapes", "data.root=/d", f"out={tmp_path}",
                                          "resume=true", "data.sampler=rare_class"]), tmp_path)


# --- in training ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("train"))


def _config(base, out, *overrides):
    return load_config(base, [f"out={out}", *overrides])


@pytest.mark.parametrize("kind", ["inverse", "median_frequency", "effective_number"])
def test_class_weighted_takes_the_weighting_the_config_names(base, tmp_path, kind):
    config = _config(base, tmp_path, "mode=class_weighted", f"loss.class_weights={kind}", "loss.cb_beta=0.999")
    dm = build_datamodule(config)
    weights = build_module(config, dm).class_weights
    counts = dm.train_class_counts()
    expected = {"inverse": lambda: class_weights_from_counts(counts),
                "median_frequency": lambda: median_frequency_weights(dm.train_image_class_counts()),
                "effective_number": lambda: effective_number_weights(counts, 0.999)}[kind]()
    assert torch.equal(weights, expected)
    assert weights.mean().item() == pytest.approx(1) and (weights[torch.as_tensor(counts) == 0] == 0).all()


class _RecordBatches(L.Callback):
    def __init__(self):
        self.batches = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches[trainer.global_step] = {k: v.clone() if isinstance(v, torch.Tensor) else list(v)
                                             for k, v in batch.items()}


@pytest.mark.slow
def test_a_resumed_run_with_rare_class_sampling_sees_the_draws_of_an_uninterrupted_one(base, tmp_path):
    args = ("mode=class_weighted", "loss.class_weights=effective_number", "trainer.max_steps=5", "val_every=3",
            "data.sampler=rare_class", "data.augment=[hflip, {random_crop: {size: 24}}]")
    assert isinstance(build_datamodule(_config(base, tmp_path, *args)).train_dataloader().sampler, RareClassSampler)
    seen = _RecordBatches()
    whole = train(_config(base, tmp_path / "whole", *args), callbacks=[seen], progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        train(_config(base, out, *args), callbacks=[CrashAt(4)], progress=False)  # mid-epoch (3 batches each)
    again = _RecordBatches()
    resumed = train(_config(base, out, *args, "resume=true"), callbacks=[again], progress=False)
    assert sorted(again.batches) == [3, 4]
    for step, batch in again.batches.items():
        assert batch["name"] == seen.batches[step]["name"]
        assert all(torch.equal(batch[k], seen.batches[step][k]) for k in ("image", "label"))
    assert resumed == {**whole, "experiment": resumed["experiment"]}
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
