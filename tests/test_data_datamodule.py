"""The LightningDataModule: loaders from a config, cached or not, with a cross-domain validation set."""

import lightning as L
import numpy as np
import pytest
import torch

from iwu.data import SegmentationDataModule
from iwu.data.cache import CachedDataset
from iwu.data.synthetic import write_synthetic
from iwu.errors import UserError

SIZE = 32


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("dm")
    cs = write_synthetic(base / "cs", "cityscapes", n_train=5, n_val=3, size=64)
    acdc = write_synthetic(base / "acdc", "acdc", n_train=0, n_val=4, size=64)
    return cs, acdc, base / "cache"


def _config(roots, **over):
    cs, acdc, cache = roots
    cfg = {"kind": "cityscapes", "root": str(cs), "size": SIZE, "batch_size": 2, "val_batch_size": 1,
           "num_workers": 1, "cache": True, "cache_dir": str(cache)}
    return {**cfg, **over}


def test_loaders(roots):
    extra = {"kind": "acdc", "root": str(roots[1]), "conditions": "fog,night"}
    dm = SegmentationDataModule(_config(roots, val_extra=extra))
    dm.prepare_data()
    dm.setup("fit")
    assert isinstance(dm.train_set, CachedDataset) and dm.num_classes == 19
    train = dm.train_dataloader()
    assert train.num_workers == 0  # the cache reads fastest in the main process
    batches = list(train)
    assert len(batches) == 2  # 5 images, batch 2, drop_last
    assert batches[0]["image"].shape == (2, 3, SIZE, SIZE) and batches[0]["label"].dtype == torch.int64
    val, extra = dm.val_dataloader()
    assert [len(val), len(extra)] == [3, 2]
    assert dm.val_names == ["cityscapes/val", "acdc/val"]
    names = [b["name"][0] for b in val]
    assert names == sorted(names)  # validation keeps order


def _epoch_order(dm, epoch):
    loader = dm.train_dataloader()
    dm.start_at(epoch * dm.batches_per_epoch())
    return [n for b in loader for n in b["name"]]


def test_training_order_is_a_function_of_seed_and_epoch(roots):
    dm = SegmentationDataModule(_config(roots), seed=3)
    dm.setup("fit")
    orders = [_epoch_order(dm, e) for e in range(4)]
    assert len({tuple(o) for o in orders}) > 1  # epochs shuffle differently
    assert all(len(o) == 4 for o in orders)  # 5 images, batch 2, drop_last
    assert _epoch_order(dm, 2) == orders[2]  # and the same epoch comes back the same
    other = SegmentationDataModule(_config(roots), seed=4)
    other.setup("fit")
    assert [_epoch_order(other, e) for e in range(4)] != orders


def test_start_at_a_step_serves_the_rest_of_its_epoch_then_whole_epochs(roots):
    dm = SegmentationDataModule(_config(roots), seed=1)
    dm.setup("fit")
    assert dm.batches_per_epoch() == 2 and dm.batches_per_epoch(world_size=2) == 1
    epoch5, epoch6 = _epoch_order(dm, 5), _epoch_order(dm, 6)
    loader = dm.train_dataloader()
    dm.start_at(11)  # epoch 5, one batch done
    assert [n for b in loader for n in b["name"]] == epoch5[2:]
    assert [n for b in loader for n in b["name"]] == epoch6  # the next pass is the next epoch, whole
    assert len(loader) == 2


def test_unset_roots(roots):
    with pytest.raises(UserError, match=r"data.root: not set.*data.root=/data/cityscapes"):
        SegmentationDataModule(_config(roots, root=None))
    dm = SegmentationDataModule(_config(roots, val_extra={"kind": "acdc", "root": None}))
    dm.setup("validate")
    assert dm.val_names == ["cityscapes/val"]  # a cross-domain set without a root is left out


def test_synthetic_data_is_written_on_first_use(tmp_path):
    cfg = {"kind": "cityscapes", "root": str(tmp_path / "scenes"), "size": 32, "cache": False,
           "synthetic": {"n_train": 3, "n_val": 2, "width": 64}}
    dm = SegmentationDataModule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_sets[0])) == (3, 2)
    with pytest.raises(UserError, match=r"^data\.synthetic\.n_val: missing"):
        SegmentationDataModule({**cfg, "synthetic": {"n_train": 3}})


def test_cache_off_gives_the_same_batches(roots):
    on, off = SegmentationDataModule(_config(roots)), SegmentationDataModule(_config(roots, cache=False))
    on.setup("validate"), off.setup("validate")
    for a, b in zip(on.val_dataloader(), off.val_dataloader()):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) and a["name"] == b["name"]


def test_class_counts(roots):
    counts = SegmentationDataModule(_config(roots)).train_class_counts()
    assert counts.shape == (19,) and counts.dtype == np.int64 and counts.sum() > 0


def test_config_errors(roots):
    """A mapping goes through the config's own builder: the messages `iwu train` gives for the same keys."""
    with pytest.raises(UserError, match=r"^data\.batchsize: unknown key; did you mean data\.batch_size\?$"):
        SegmentationDataModule(_config(roots, batchsize=4))
    with pytest.raises(UserError, match=r"^data\.batch_size: expected an integer >= 1, got 0$"):
        SegmentationDataModule(_config(roots, batch_size=0))
    with pytest.raises(UserError, match=r"^data\.hflip: expected true or false, got 'yes'"):
        SegmentationDataModule(_config(roots, hflip="yes"))
    with pytest.raises(UserError, match="fewer than batch_size 8"):
        SegmentationDataModule(_config(roots, batch_size=8, cache=False)).setup("fit")
    with pytest.raises(UserError, match=r"^data\.val_extra\.path: unknown key; known keys: kind, root, conditions"):
        SegmentationDataModule(_config(roots, val_extra={"kind": "acdc", "path": "x"}))
    with pytest.raises(UserError, match=r"^data\.kind: not set; choose one of cityscapes, acdc, kvasir, voc, folder"):
        SegmentationDataModule(_config(roots, kind=None))


def test_the_run_configs_data_section_and_a_mapping_serve_the_same(roots, tmp_path):
    from iwu.config.schema import load_config

    cs, _, cache = roots
    (tmp_path / "c.yaml").write_text(f"data: {{kind: cityscapes, root: {cs}, size: {SIZE}, cache_dir: {cache}, "
                                     "num_workers: 1}\n")
    typed = load_config(tmp_path / "c.yaml").data
    a, b = SegmentationDataModule(typed), SegmentationDataModule(_config(roots))
    assert a.config == b.config
    a.setup("validate"), b.setup("validate")
    assert a.val_sets[0].names == b.val_sets[0].names


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 19, 1)
        self.val_seen = [0, 0]

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.conv(batch["image"]), batch["label"], ignore_index=255)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.val_seen[dataloader_idx] += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_runs_on_it(roots):
    dm = SegmentationDataModule(_config(roots, val_extra={"kind": "acdc", "root": str(roots[1])}))
    model = _Tiny()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert model.val_seen == [3, 4]


def test_setting_up_again_reuses_the_datasets(roots, monkeypatch):
    import iwu.data.datamodule as datamodule

    dm = SegmentationDataModule(_config(roots))
    dm.prepare_data()
    dm.setup("fit")
    built = dm.train_set, dm.val_sets[0]
    calls = []
    monkeypatch.setattr(datamodule, "prepare_cache", lambda *a, **k: calls.append(a))
    dm.prepare_data()
    dm.setup("fit")  # what Lightning does after train() prepared the module
    assert (dm.train_set, dm.val_sets[0]) == built and calls == []
    dm.setup("validate")
    assert dm.val_sets[0] is not built[1] and dm.train_set is built[0]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_validation_shards_count_every_image_once_under_ddp(roots, monkeypatch, world):
    import iwu.data.sampler as sampler

    dm = SegmentationDataModule(_config(roots))
    dm.setup("validate")
    served = []
    for rank in range(world):
        monkeypatch.setattr(sampler, "_rank_and_world", lambda rank=rank: (rank, world))
        loader = dm.val_dataloader()
        names = [n for b in loader for n in b["name"]]
        assert len(loader) == len(names)  # uneven shards: no padding, no repeats
        served += names
    assert sorted(served) == sorted(dm.val_sets[0].names)



def test_preparing_waits_for_another_process_writing_the_same_data(tmp_path):
    """Runs of a sweep (or DDP ranks) write the synthetic scenes and build a store once, under a lock:
    two writers would each replace the other's files, and a reader would find its store gone."""
    import threading
    import time

    from iwu.data.cache import MANIFEST, cache_dir
    from iwu.data.sources import build_dataset
    from iwu.util.atomic_files import locked

    config = {"kind": "cityscapes", "root": str(tmp_path / "scenes"), "size": SIZE, "cache_dir": str(tmp_path / "c"),
              "synthetic": {"n_train": 4, "n_val": 2, "width": 64}, "num_workers": 0}
    dm = SegmentationDataModule(config)
    with locked(tmp_path / ".scenes.lock"):  # as another process writing the scenes would hold it
        worker = threading.Thread(target=dm.prepare_data)
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not (tmp_path / "scenes").exists()
    worker.join(timeout=60)
    store = cache_dir(build_dataset(config, "train", SIZE), tmp_path / "c")
    assert (store / MANIFEST).is_file()

    (store / MANIFEST).unlink()  # a stale store: the next preparation rebuilds it, once the lock is free
    again = SegmentationDataModule(config)
    with locked(store / ".lock"):
        worker = threading.Thread(target=again.prepare_data)
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not (store / MANIFEST).exists()
    worker.join(timeout=60)
    assert (store / MANIFEST).is_file()
