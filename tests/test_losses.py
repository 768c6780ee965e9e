"""Losses: exact values on cases worked out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from iwu.method.losses import (
    class_weighted_cross_entropy,
    class_weights_from_counts,
    focal_loss,
    uncertainty_weighted_cross_entropy,
)


def tiny_case():
    # Two classes, four pixels; equal logits make every CE exactly log 2.
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[0, 1], [1, 255]]])
    uncertainty = torch.tensor([[[0.5, 0.0], [1.0, 7.0]]])
    return logits, target, uncertainty


def test_weighted_ce_counts_ignored_pixels_in_the_denominator():
    logits, target, u = tiny_case()
    expected = math.log(2) * (1.5**2 + 1.0**2 + 2.0**2 + 0.0) / 4
    assert uncertainty_weighted_cross_entropy(logits, target, u).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_valid_normalisation_divides_by_labeled_pixels():
    logits, target, u = tiny_case()
    expected = math.log(2) * (1.5**2 + 1.0**2 + 2.0**2) / 3
    out = uncertainty_weighted_cross_entropy(logits, target, u, normalize="valid")
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_with_zero_uncertainty_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g)
    target = torch.randint(0, 5, (2, 6, 7), generator=g)
    target[0, 0, :3] = 255
    zero = torch.zeros(2, 6, 7)
    valid = uncertainty_weighted_cross_entropy(logits, target, zero, normalize="valid")
    assert valid.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-6)
    everything = uncertainty_weighted_cross_entropy(logits, target, zero)
    assert everything.item() == pytest.approx(valid.item() * (2 * 42 - 3) / (2 * 42), rel=1e-6)


def test_no_gradient_flows_into_the_uncertainty():
    logits, target, u = tiny_case()
    logits.requires_grad_(True)
    u.requires_grad_(True)
    uncertainty_weighted_cross_entropy(logits, target, u).backward()
    assert u.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # d/dz of CE with equal logits is (p - onehot) = +-0.5, scaled by the weight / N.
    assert logits.grad[0, 0, 0, 0].item() == pytest.approx((0.5 - 1) * 1.5**2 / 4, rel=1e-6)
    assert logits.grad[0, 0, 1, 1].item() == 0.0  # ignored pixel


def test_all_ignored_batch_gives_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2)
    target = torch.full((1, 2, 2), 255)
    for normalize in ("all", "valid"):
        out = uncertainty_weighted_cross_entropy(logits, target, torch.rand(1, 2, 2), normalize=normalize)
        assert out.item() == 0.0


def test_shape_and_option_errors():
    logits, target, u = tiny_case()
    with pytest.raises(ValueError, match="normalize"):
        uncertainty_weighted_cross_entropy(logits, target, u, normalize="pixels")
    with pytest.raises(ValueError, match="uncertainty"):
        uncertainty_weighted_cross_entropy(logits, target, u[:, :1])
    with pytest.raises(ValueError, match="target"):
        uncertainty_weighted_cross_entropy(logits, target[0], u)


def test_class_weights_are_inverse_proportions_with_mean_one():
    counts = [600, 300, 100]
    weights = class_weights_from_counts(counts)
    # 1/p = 10/6, 10/3, 10 -> ratio 1 : 2 : 6, scaled to mean 1.
    assert weights.tolist() == pytest.approx([3 / 9, 6 / 9, 18 / 9])
    assert weights.mean().item() == pytest.approx(1.0)


def test_class_without_pixels_gets_weight_zero():
    weights = class_weights_from_counts([10, 0, 30])
    assert weights[1].item() == 0.0
    assert torch.isfinite(weights).all()
    assert weights.mean().item() == pytest.approx(1.0)
    assert (weights[0] / weights[2]).item() == pytest.approx(3.0)


@pytest.mark.parametrize("counts,match", [([0, 0], "all zero"), ([1, -2], "non-negative"), ([], "non-empty")])
def test_bad_class_counts(counts, match):
    with pytest.raises(ValueError, match=match):
        class_weights_from_counts(counts)


def test_class_weighted_ce_is_the_weighted_mean():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1,2,1,2)
    target = torch.tensor([[[0, 1]]])
    weights = torch.tensor([1.0, 3.0])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(math.exp(1) / (math.exp(1) + 1))
    expected = (1.0 * ce0 + 3.0 * ce1) / 4.0
    assert class_weighted_cross_entropy(logits, target, weights).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="class weights"):
        class_weighted_cross_entropy(logits, target, torch.ones(3))


def test_focal_loss_values():
    logits = torch.tensor([[[[2.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]]])  # (1,2,1,3)
    target = torch.tensor([[[0, 1, 255]]])
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = math.exp(1) / (math.exp(1) + 1)
    terms = [(1 - p0) ** 2 * -math.log(p0), (1 - p1) ** 2 * -math.log(p1)]
    assert focal_loss(logits, target, gamma=2).item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    assert focal_loss(logits, target, gamma=2, normalize="valid").item() == pytest.approx(sum(terms) / 2, rel=1e-6)
    plain = F.cross_entropy(logits, target, ignore_index=255, reduction="sum").item() / 3
    assert focal_loss(logits, target, gamma=0).item() == pytest.approx(plain, rel=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(logits, target, gamma=-1)
