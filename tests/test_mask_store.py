"""The offline mask store: 16-bit round trips within half a step, nearest resizing,
one-line errors for missing items and stores, and names that stay inside the folder."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from iwu.errors import UserError
from iwu.data.mask_store import MaskStore, MaskWriter, mask_scale


def piecewise_constant(rng, shape=(24, 32), pieces=5, top=math.log(19)) -> np.ndarray:
    """Random rectangles of constant uncertainty, as instances would give."""
    u = np.full(shape, rng.uniform(0, top), np.float32)
    for _ in range(pieces):
        y0, x0 = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
        y1, x1 = rng.integers(y0 + 1, shape[0] + 1), rng.integers(x0 + 1, shape[1] + 1)
        u[y0:y1, x0:x1] = rng.uniform(0, top)
    return u


def leftovers(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_round_trip_with_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    masks = {
        "aachen/aachen_000000_000019": piecewise_constant(rng),
        "aachen/aachen_000001_000019": piecewise_constant(rng),
        "bochum/deep/b_7": piecewise_constant(rng, shape=(10, 6)),
        "plain": piecewise_constant(rng, shape=(24, 32)),
    }
    with MaskWriter(tmp_path / "m", num_classes=19) as writer:
        for i, (name, u) in enumerate(masks.items()):
            writer.add(name, torch.from_numpy(u) if i % 2 else u)  # tensors and arrays alike
    assert (tmp_path / "m" / "aachen" / "aachen_000000_000019.png").is_file()
    assert (tmp_path / "m" / "bochum" / "deep" / "b_7.png").is_file()

    store = MaskStore(tmp_path / "m")
    assert len(store) == 4 and store.num_classes == 19
    assert store.scale == pytest.approx(math.log(19) / 65535)
    assert all(name in store for name in masks)
    assert "aachen/other" not in store and "../m/plain" not in store

    names = ["plain", "aachen/aachen_000001_000019", "aachen/aachen_000000_000019"]
    batch = store.load(names, (24, 32))
    assert batch.shape == (3, 24, 32) and batch.dtype == torch.float32
    for got, name in zip(batch, names):
        assert np.abs(got.numpy().astype(np.float64) - masks[name]).max() <= store.scale / 2 + 1e-7
        # piecewise constant stays piecewise constant: equal inputs give equal outputs
        assert len(np.unique(got.numpy())) == len(np.unique(masks[name]))
    one = store.load(["bochum/deep/b_7"], (10, 6), device="cpu")
    assert one.shape == (1, 10, 6) and one.device.type == "cpu"
    assert store.load([], (5, 5)).shape == (0, 5, 5)


@pytest.mark.parametrize("num_classes", [2, 19, 150])
def test_quantisation_error_is_half_a_step(tmp_path, num_classes):
    top = math.log(num_classes)
    # float32, as the ensemble gives U: the 1e-7 covers the float32 rounding of the loaded value
    u = np.random.default_rng(num_classes).uniform(0, top, (256, 256)).astype(np.float32)
    u[0, :4] = [0.0, top, top / 2, mask_scale(num_classes) * 0.5]  # the ends and a tie
    with MaskWriter(tmp_path, num_classes) as writer:
        writer.add("x", u)
    store = MaskStore(tmp_path)
    got = store.load(["x"], (256, 256))[0].numpy().astype(np.float64)
    assert np.abs(got - u).max() <= store.scale / 2 + 1e-7
    assert got[0, 0] == 0.0
    assert got[0, 1] == pytest.approx(top, abs=1e-6)


def test_values_above_log_c_are_clipped(tmp_path):
    u = np.array([[-0.5, 0.0], [math.log(4), 10.0]])
    with MaskWriter(tmp_path, num_classes=4) as writer:
        writer.add("clip", u)
    got = MaskStore(tmp_path).load(["clip"], (2, 2))[0]
    assert got[0, 0] == 0.0 and got[0, 1] == 0.0
    assert got[1, 0] == pytest.approx(math.log(4), abs=1e-6)
    assert got[1, 1] == got[1, 0]  # clipped to log C, the largest 16-bit value


def test_resize_is_nearest(tmp_path):
    scale = mask_scale(19)
    q = np.array([[0, 1000], [30000, 65535]])
    with MaskWriter(tmp_path, num_classes=19) as writer:
        writer.add("small", q * scale)
    store = MaskStore(tmp_path)
    big = store.load(["small"], (4, 4))[0].numpy()
    expected = np.repeat(np.repeat((q * scale).astype(np.float32), 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(big, expected)
    # other ratios sample at pixel centres, exactly as PIL's NEAREST resizes the labels
    odd = store.load(["small"], (3, 5))[0].numpy()
    np.testing.assert_array_equal(odd, (q[[0, 1, 1]][:, [0, 0, 1, 1, 1]] * scale).astype(np.float32))
    rng = np.random.default_rng(1)
    with MaskWriter(tmp_path, num_classes=19) as writer:
        writer.add("random", rng.integers(0, 65536, (13, 17)) * scale)
    stored = np.asarray(Image.open(tmp_path / "random.png"))
    for h, w in [(1, 1), (5, 3), (26, 34), (40, 9), (13, 17)]:
        pil = np.asarray(Image.fromarray(stored).resize((w, h), Image.NEAREST)).astype(np.float64) * scale
        np.testing.assert_array_equal(store.load(["random"], (h, w))[0].numpy(), pil.astype(np.float32))


def test_missing_item_is_one_line_naming_it(tmp_path):
    with MaskWriter(tmp_path, num_classes=19) as writer:
        writer.add("a", np.zeros((4, 4)))
    store = MaskStore(tmp_path)
    with pytest.raises(UserError) as err:
        store.load(["a", "city/missing_one"], (4, 4))
    message = str(err.value)
    assert "\n" not in message
    assert "'city/missing_one'" in message and str(tmp_path) in message and "iwu masks" in message


def test_missing_store_says_how_to_make_one(tmp_path):
    for root in (tmp_path / "nowhere", tmp_path):  # no folder; a folder without masks.json
        with pytest.raises(UserError) as err:
            MaskStore(root)
        message = str(err.value)
        assert "\n" not in message and str(root) in message
        assert "iwu masks RUN_DIR --data KIND:ROOT --out DIR" in message
    (tmp_path / "masks.json").write_text("{not json")
    with pytest.raises(UserError, match="iwu masks RUN_DIR"):
        MaskStore(tmp_path)
    (tmp_path / "masks.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(UserError, match="iwu masks RUN_DIR"):
        MaskStore(tmp_path)


def test_interrupted_writer_leaves_no_index(tmp_path):
    with pytest.raises(RuntimeError):
        with MaskWriter(tmp_path, num_classes=19) as writer:
            writer.add("a", np.zeros((4, 4)))
            raise RuntimeError("crash")
    assert not (tmp_path / "masks.json").exists()
    with pytest.raises(UserError):
        MaskStore(tmp_path)


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/abs", "/tmp/abs", "C:/win", "..", ""])
def test_bad_names_are_rejected(tmp_path, name):
    writer = MaskWriter(tmp_path / "m", num_classes=19)
    with pytest.raises(ValueError) as err:
        writer.add(name, np.zeros((2, 2)))
    assert isinstance(err.value, UserError) and repr(name) in str(err.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / "m" / "x.png").exists()
    store_root = tmp_path / "m"
    writer.close()
    with pytest.raises(ValueError):
        MaskStore(store_root).load([name], (2, 2))


def test_num_classes_mismatch(tmp_path):
    with MaskWriter(tmp_path, num_classes=19) as writer:
        writer.add("a", np.zeros((2, 2)))
    with pytest.raises(UserError, match="19 classes"):
        MaskWriter(tmp_path, num_classes=7)
    with MaskWriter(tmp_path, num_classes=19) as writer:  # the same count adds to the store
        writer.add("b", np.zeros((2, 2)))
        writer.add("a", np.ones((2, 2)))  # replaced, not counted twice
    store = MaskStore(tmp_path)
    assert len(store) == 2 and "a" in store and "b" in store
    assert store.load(["a"], (2, 2)).min() == pytest.approx(1.0, abs=store.scale)
    with pytest.raises(UserError):
        MaskWriter(tmp_path / "one", num_classes=1)


def test_context_manager_writes_index(tmp_path):
    writer = MaskWriter(tmp_path, num_classes=19)
    writer.add("a", np.zeros((2, 2)))
    assert not (tmp_path / "masks.json").exists()  # only on close
    with writer:
        writer.add("sub/b", np.zeros((3, 3)))
    meta = json.loads((tmp_path / "masks.json").read_text())
    assert meta == {"format": 1, "num_classes": 19, "scale": math.log(19) / 65535, "count": 2}
    writer.close()  # idempotent
    with pytest.raises(ValueError):
        writer.add("c", np.zeros((2, 2)))


def test_writes_are_atomic(tmp_path, monkeypatch):
    import iwu.data.mask_store as ms

    written = []
    real = ms.atomic_write_bytes
    monkeypatch.setattr(ms, "atomic_write_bytes", lambda path, data: written.append(path) or real(path, data))
    with MaskWriter(tmp_path, num_classes=19) as writer:
        for i in range(5):
            writer.add(f"d{i % 2}/item{i}", np.full((8, 8), i * 0.1))
    assert sorted(p.name for p in written) == [f"item{i}.png" for i in range(5)]
    assert leftovers(tmp_path) == []
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "d0/item0.png", "d0/item2.png", "d0/item4.png", "d1/item1.png", "d1/item3.png", "masks.json",
    ]


def test_bad_shapes_and_values(tmp_path):
    writer = MaskWriter(tmp_path, num_classes=19)
    with pytest.raises(ValueError, match="shape"):
        writer.add("a", np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        writer.add("a", np.array([[0.0, np.nan]]))


def test_piecewise_constant_masks_compress(tmp_path):
    u = np.zeros((256, 512), np.float32)
    u[:100, :200], u[100:, 300:] = 0.7, 1.9
    with MaskWriter(tmp_path, num_classes=19) as writer:
        writer.add("big", u)
    assert (tmp_path / "big.png").stat().st_size < u.size * 2 / 50
