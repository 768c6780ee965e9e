"""The memory-mapped cache: equal items, counts, keys, rebuilds when sources change, no leftovers."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from iwu.data import (
    ACDC,
    CachedDataset,
    Cityscapes,
    cache_dir,
    load_class_counts,
    open_cached,
    prepare_cache,
)
from iwu.data.cache import MANIFEST, default_cache_root
from iwu.data.synthetic import write_synthetic

SIZE = 48


@pytest.fixture()
def cs_root(tmp_path):
    return write_synthetic(tmp_path / "cs", "cityscapes", n_train=5, n_val=1, size=96, seed=1)


def test_cached_items_equal_decoded_items(cs_root, tmp_path):
    direct = Cityscapes(cs_root, "train", size=SIZE)
    cached = open_cached(direct, tmp_path / "cache")
    assert isinstance(cached, CachedDataset) and len(cached) == len(direct)
    assert cached.classes == direct.classes and cached.names == direct.names
    for a, b in zip(direct, cached):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) and a["name"] == b["name"]


def test_class_counts_match_the_labels(cs_root, tmp_path):
    direct = Cityscapes(cs_root, "train", size=SIZE)
    directory = prepare_cache(direct, tmp_path / "cache")
    labels = torch.stack([it["label"] for it in direct])
    expected = torch.bincount(labels.flatten(), minlength=256)[:19].numpy()
    assert np.array_equal(load_class_counts(directory), expected)
    record = json.loads((directory / "class_counts.json").read_text())
    assert record["ignored"] == int((labels == 255).sum()) and record["split"] == "train"


def test_fresh_cache_is_reused_and_changed_sources_rebuild(cs_root, tmp_path):
    ds = Cityscapes(cs_root, "train", size=SIZE)
    directory = prepare_cache(ds, tmp_path / "cache")
    manifest = json.loads((directory / MANIFEST).read_text())
    stamp = (directory / MANIFEST).stat().st_mtime_ns
    assert prepare_cache(Cityscapes(cs_root, "train", size=SIZE), tmp_path / "cache") == directory
    assert (directory / MANIFEST).stat().st_mtime_ns == stamp  # not rebuilt

    # change one label: everything becomes road
    label_path = ds.samples[0].label
    Image.fromarray(np.full((48, 96), 7, np.uint8)).save(label_path)
    os.utime(label_path, ns=(stamp + 10**9, stamp + 10**9))
    changed = Cityscapes(cs_root, "train", size=SIZE)
    assert open_cached(changed, tmp_path / "cache")[0]["label"].eq(0).all()
    new = json.loads((directory / MANIFEST).read_text())
    assert new["fingerprint"] != manifest["fingerprint"]
    files = sorted(p.name for p in directory.iterdir())
    assert files == sorted([".lock", "class_counts.json", MANIFEST, new["images"], new["labels"]])  # old store and temps gone


def test_keys_separate_size_split_and_conditions(tmp_path):
    cs = write_synthetic(tmp_path / "cs", "cityscapes", n_train=2, n_val=1, size=64)
    acdc = write_synthetic(tmp_path / "acdc", "acdc", n_train=4, n_val=0, size=64)
    dirs = {
        cache_dir(Cityscapes(cs, "train", 32), tmp_path),
        cache_dir(Cityscapes(cs, "train", 16), tmp_path),
        cache_dir(Cityscapes(cs, "val", 32), tmp_path),
        cache_dir(ACDC(acdc, "train", 32), tmp_path),
        cache_dir(ACDC(acdc, "train", 32, conditions=("fog",)), tmp_path),
    }
    assert len(dirs) == 5
    assert cache_dir(ACDC(acdc, "train", 32, conditions="snow,fog"), tmp_path) == cache_dir(
        ACDC(acdc, "train", 32, conditions=["fog", "snow"]), tmp_path)


def test_default_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("IWU_CACHE", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c"
    monkeypatch.delenv("IWU_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "iwu"


def test_cached_dataset_pickles_without_its_arrays(cs_root, tmp_path):
    cached = open_cached(Cityscapes(cs_root, "train", size=SIZE), tmp_path / "cache")
    cached[0]  # maps the files
    assert len(pickle.dumps(cached)) < 20_000  # workers map the files themselves
    loader = torch.utils.data.DataLoader(cached, batch_size=2, num_workers=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and len(batch["name"]) == 2


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from iwu.util.atomic_files import atomic_write_bytes

    path = atomic_write_bytes(tmp_path / "shared.json", b"{}")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_dangling_link_in_the_dataset_is_named_as_such_not_as_a_full_disk(tmp_path, capsys):
    import os

    from iwu.cli import main
    from iwu.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "cs", "cityscapes", n_train=2, n_val=1, size=32, height=32)
    label = sorted((root / "gtFine" / "train").rglob("*_labelIds.png"))[0]
    label.unlink()
    os.symlink(tmp_path / "gone.png", label)
    assert main(["prepare", "--data", f"cityscapes:{root}", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert f"{label}: No such file or directory; a file the dataset lists cannot be opened (a broken link?)" in err
    assert "free space" not in err
