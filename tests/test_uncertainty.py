"""Pixel and instance uncertainty: exact values on hand-made cases, and agreement
of both labeling back-ends with an independent per-class reference."""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from iwu.method.uncertainty import (
    EPS,
    ensemble_uncertainty,
    instance_uncertainty,
    label_instances,
    mutual_information,
    pixel_entropy,
)

BACKENDS = ["cc3d", "torch"]


def label_one_class(mask: np.ndarray, connectivity: int):
    # scipy, not cc3d: an independent implementation (and cc3d 4.1.1 mislabels
    # boolean images at 8-connectivity).
    return ndi.label(mask, structure=np.ones((3, 3)) if connectivity == 8 else None)


def reference(pred: np.ndarray, values: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """Per image, per class: label the class's components alone, average each one."""
    out = np.zeros(values.shape, np.float64)
    for b in range(pred.shape[0]):
        for c in np.unique(pred[b]):
            labels, n = label_one_class(pred[b] == c, connectivity)
            for k in range(1, n + 1):
                mask = labels == k
                out[b][mask] = values[b][mask].astype(np.float64).mean()
    return out


def reference_counts(pred: np.ndarray, connectivity: int = 8) -> list[int]:
    return [sum(label_one_class(img == c, connectivity)[1] for c in np.unique(img)) for img in pred]


# --- pixel-level -----------------------------------------------------------------


def test_pixel_entropy_matches_the_formula_with_its_epsilon():
    probs = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]).T.reshape(1, 3, 1, 3)
    expected = [-sum(p * math.log(p + EPS) for p in col) for col in ([0.5, 0.25, 0.25], [1, 0, 0], [1 / 3] * 3)]
    assert pixel_entropy(probs).shape == (1, 1, 3)
    assert torch.allclose(pixel_entropy(probs)[0, 0].double(), torch.tensor(expected, dtype=torch.float64), atol=1e-7)


def test_pixel_entropy_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="B,C,H,W"):
        pixel_entropy(torch.rand(3, 4, 4))


def test_mutual_information_is_zero_for_agreeing_members_and_log2_for_opposite_certainties():
    agreeing = torch.softmax(torch.randn(1, 2, 4, 3, 3), dim=2).expand(3, -1, -1, -1, -1)
    assert torch.allclose(mutual_information(agreeing), torch.zeros(2, 3, 3), atol=1e-6)
    one_hot_a = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    one_hot_b = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    mi = mutual_information([one_hot_a, one_hot_b])  # a list of members works too
    assert mi.shape == (1, 1, 1)
    assert mi.item() == pytest.approx(math.log(2), abs=1e-6)


def test_mutual_information_is_total_minus_mean_member_entropy():
    members = torch.softmax(torch.randn(3, 2, 5, 4, 4), dim=2)
    total = pixel_entropy(members.mean(0))
    expected = total - torch.stack([pixel_entropy(m) for m in members]).mean(0)
    assert torch.allclose(mutual_information(members), expected.clamp_min(0), atol=1e-6)


# --- instances on hand-made cases --------------------------------------------------


def run(pred, values, backend, connectivity=8):
    pred_t = torch.tensor(pred)
    values_t = torch.tensor(values, dtype=torch.float32)
    if pred_t.ndim == 2:
        pred_t, values_t = pred_t[None], values_t[None]
    return instance_uncertainty(pred_t, values_t, connectivity=connectivity, backend=backend).numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_diagonal_touch_is_one_instance_with_8_and_two_with_4(backend):
    pred = [[1, 0], [0, 1]]
    values = [[1.0, 0.0], [0.0, 3.0]]
    eight = run(pred, values, backend, 8)[0]
    four = run(pred, values, backend, 4)[0]
    np.testing.assert_allclose(eight, [[2.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(four, [[1.0, 0.0], [0.0, 3.0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_blobs_of_one_class_get_their_own_means(backend):
    pred = [
        [2, 2, 0, 0, 0],
        [2, 2, 0, 2, 2],
        [0, 0, 0, 2, 2],
    ]
    values = [
        [1.0, 1.0, 0.5, 0.5, 0.5],
        [1.0, 1.0, 0.5, 3.0, 5.0],
        [0.5, 0.5, 0.5, 3.0, 5.0],
    ]
    out = run(pred, values, backend)[0]
    np.testing.assert_allclose(out[0, 0], 1.0)
    np.testing.assert_allclose(out[1, 3], 4.0)
    np.testing.assert_allclose(out[2, 4], 4.0)
    np.testing.assert_allclose(out[0, 2], 0.5)  # the class-0 instance


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_zero_forms_instances_like_any_class(backend):
    # A wall of class 1 splits class 0 into two instances.
    pred = [[0, 1, 0], [0, 1, 0], [0, 1, 0]]
    values = [[1.0, 9.0, 4.0], [2.0, 9.0, 4.0], [3.0, 9.0, 7.0]]
    out = run(pred, values, backend)[0]
    np.testing.assert_allclose(out[:, 0], [2.0, 2.0, 2.0])
    np.testing.assert_allclose(out[:, 2], [5.0, 5.0, 5.0])
    np.testing.assert_allclose(out[:, 1], [9.0, 9.0, 9.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_pixel_instance_keeps_its_own_value(backend):
    pred = [[0, 0, 0], [0, 5, 0], [0, 0, 0]]
    values = [[1.0, 1.0, 1.0], [1.0, 0.123, 1.0], [1.0, 1.0, 1.0]]
    out = run(pred, values, backend)[0]
    assert out[1, 1] == pytest.approx(0.123, abs=1e-7)
    np.testing.assert_allclose(out[0], [1.0, 1.0, 1.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_images_of_a_batch_do_not_influence_each_other(backend):
    # Class 1 on the last row of image 0 and the first row of image 1, class 2
    # in the opposite corners: stacked images must not join them.
    pred = np.zeros((3, 3, 3), np.int64)
    pred[0, 2, :] = 1
    pred[1, 0, :] = 1
    pred[1, 2, :] = 2
    pred[2, 0, :] = 2
    values = np.stack([np.full((3, 3), v, np.float32) for v in (1.0, 2.0, 3.0)])
    values[1, 2, :] = 7.0
    out = run(pred, values, backend)
    for b in range(3):
        alone = run(pred[b], values[b], backend)[0]
        np.testing.assert_allclose(out[b], alone)
    np.testing.assert_allclose(out[0, 2], 1.0)
    np.testing.assert_allclose(out[1, 0], 2.0)
    np.testing.assert_allclose(out[1, 2], 7.0)
    np.testing.assert_allclose(out[2, 0], 3.0)


# --- agreement with the reference and between back-ends ------------------------------


def random_batch(seed: int, batch=3, height=23, width=31, classes=4, blocky=True):
    g = torch.Generator().manual_seed(seed)
    if blocky:  # blocks of 2x3 make larger regions than per-pixel noise
        coarse = torch.randint(0, classes, (batch, (height + 1) // 2, (width + 2) // 3), generator=g)
        pred = coarse.repeat_interleave(2, 1).repeat_interleave(3, 2)[:, :height, :width]
    else:
        pred = torch.randint(0, classes, (batch, height, width), generator=g)
    return pred.contiguous(), torch.rand(batch, height, width, generator=g)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed,blocky,classes", [(0, True, 3), (1, False, 2), (2, False, 19), (3, True, 19)])
def test_matches_the_per_class_reference(backend, connectivity, seed, blocky, classes):
    pred, values = random_batch(seed, blocky=blocky, classes=classes)
    expected = reference(pred.numpy(), values.numpy(), connectivity)
    out, counts = instance_uncertainty(
        pred, values, connectivity=connectivity, backend=backend, return_num_instances=True
    )
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)
    assert counts.tolist() == reference_counts(pred.numpy(), connectivity)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_backends_agree_on_larger_predictions(connectivity):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 19, 12, 12, generator=g)
    pred = torch.nn.functional.interpolate(logits, size=(160, 192), mode="bicubic").argmax(1)
    values = torch.rand(pred.shape, generator=g) * math.log(19)
    a = instance_uncertainty(pred, values, connectivity=connectivity, backend="cc3d")
    b = instance_uncertainty(pred, values, connectivity=connectivity, backend="torch")
    assert torch.allclose(a, b, rtol=0, atol=1e-6)
    la, na = label_instances(pred, connectivity=connectivity, backend="cc3d")
    lb, nb = label_instances(pred, connectivity=connectivity, backend="torch")
    assert na.tolist() == nb.tolist() == reference_counts(pred.numpy(), connectivity)


def test_torch_backend_converges_on_a_serpentine():
    # One 1-pixel-wide path folded through the whole image: the longest chain
    # a label has to travel.
    size = 64
    pred = np.zeros((size, size), np.int64)
    pred[::2, :] = 1
    for row in range(1, size, 2):
        pred[row, -1 if row % 4 == 1 else 0] = 1
    values = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a = instance_uncertainty(pred, values, backend="cc3d")
    b = instance_uncertainty(pred, values, backend="torch")
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.unique(a[pred == 1]).size == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_huge_instance_is_averaged_in_double_precision(backend):
    values = torch.rand(1, 512, 512, generator=torch.Generator().manual_seed(3)) * 3
    pred = torch.zeros(1, 512, 512, dtype=torch.int64)
    out = instance_uncertainty(pred, values, backend=backend)
    assert abs(out[0, 0, 0].item() - values.double().mean().item()) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_class_ids_beyond_one_byte(backend):
    pred, values = random_batch(4, classes=300, blocky=False)
    expected = reference(pred.numpy(), values.numpy())
    np.testing.assert_allclose(instance_uncertainty(pred, values, backend=backend).numpy(), expected, atol=1e-6)


def test_numpy_in_numpy_out_and_single_images():
    pred, values = random_batch(5)
    out = instance_uncertainty(pred.numpy().astype(np.int32), values.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(pred.numpy(), values.numpy()), atol=1e-6)
    single, counts = instance_uncertainty(pred[1].numpy(), values[1].numpy(), return_num_instances=True)
    np.testing.assert_allclose(single, out[1])
    assert counts.tolist() == reference_counts(pred[1:2].numpy())


def test_result_carries_no_gradient():
    pred, values = random_batch(6)
    values.requires_grad_(True)
    assert not instance_uncertainty(pred, values).requires_grad
    assert not instance_uncertainty(pred, values, backend="torch").requires_grad


def test_auto_uses_cc3d_on_cpu(monkeypatch):
    import iwu.method.uncertainty as module

    def fail(*args, **kwargs):
        raise AssertionError("the torch back-end ran on a CPU tensor")

    monkeypatch.setattr(module, "_label_torch", fail)
    pred, values = random_batch(8)
    instance_uncertainty(pred, values)  # would raise if auto chose torch


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(connectivity=6), ValueError, "connectivity"),
        (dict(backend="gpu"), ValueError, "backend"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    pred, values = random_batch(9)
    with pytest.raises(error, match=match):
        instance_uncertainty(pred, values, **kwargs)


def test_bad_inputs():
    pred, values = random_batch(10)
    with pytest.raises(ValueError, match="same shape"):
        instance_uncertainty(pred, values[:, :-1])
    with pytest.raises(TypeError, match="integer"):
        instance_uncertainty(pred.float(), values)
    with pytest.raises(ValueError, match="negative"):
        instance_uncertainty(pred - 1, values)


def test_ensemble_uncertainty_chains_the_steps():
    g = torch.Generator().manual_seed(11)
    logits = [torch.randn(2, 5, 16, 16, generator=g) for _ in range(3)]
    out = ensemble_uncertainty(logits)
    probs = torch.stack([z.softmax(1) for z in logits]).mean(0)
    assert torch.allclose(out.probs, probs)
    assert torch.equal(out.pred, probs.argmax(1))
    assert torch.allclose(out.pixel, pixel_entropy(probs))
    assert torch.allclose(out.instance, instance_uncertainty(out.pred, out.pixel))
    assert out.num_instances.tolist() == reference_counts(out.pred.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device_and_agree():
    pred, values = random_batch(12, classes=19)
    out = instance_uncertainty(pred.cuda(), values.cuda())
    assert out.device.type == "cuda"
    np.testing.assert_allclose(out.cpu().numpy(), reference(pred.numpy(), values.numpy()), atol=1e-6)
