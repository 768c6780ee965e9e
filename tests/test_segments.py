"""Segment features and IoU targets (iwu.method.segments) on hand-drawn label maps, every value computed by hand."""

import math

import numpy as np
import pytest
import torch

from iwu.method.segments import boundary_mask, feature_names, segment_table
from iwu.method.uncertainty import instance_uncertainty, pixel_entropy

I = 255  # an ignored label


def confident(pred, num_classes: int, p: float = 0.9, members: int = 1) -> torch.Tensor:
    """Member probabilities (M,1,C,H,W) that predict `pred` (H,W) with probability p everywhere."""
    pred = torch.as_tensor(pred)
    rest = (1 - p) / (num_classes - 1)
    probs = torch.full((num_classes, *pred.shape), rest, dtype=torch.float64)
    probs.scatter_(0, pred[None], p)
    return probs[None, None].expand(members, -1, -1, -1, -1).clone()


def table(pred, target=None, num_classes=3, **kw):
    probs = confident(pred, num_classes)
    return segment_table(probs, None if target is None else torch.as_tensor(target)[None], **kw)


def entropy(p):
    return -sum(v * math.log(v + 1e-10) for v in p)


def test_every_feature_of_touching_segments_by_hand():
    pred = torch.tensor([[0, 0, 0, 1, 1],
                         [0, 0, 0, 1, 1],
                         [0, 0, 0, 2, 2],
                         [0, 0, 0, 2, 2]])
    target = torch.tensor([[0, 0, 0, 1, 1],
                           [0, 0, 1, 1, 1],
                           [0, 0, 0, 2, 2],
                           [I, I, 0, 2, 2]])
    # class 0's block: inner pixels (1,1) and (2,1) only (the others touch the image's edge or column 3)
    inner_p, edge_p, other_p = (0.8, 0.1, 0.1), (0.6, 0.3, 0.1), (0.2, 0.7, 0.1)
    spread = (0.1, -0.05, -0.05)  # member 0 = p + spread, member 1 = p - spread: the mean is p
    mean = torch.zeros(3, 4, 5, dtype=torch.float64)
    for y in range(4):
        for x in range(5):
            c = int(pred[y, x])
            p = inner_p if (y, x) in ((1, 1), (2, 1)) else edge_p if c == 0 else other_p if c == 1 else (0.1, 0.2, 0.7)
            mean[:, y, x] = torch.tensor(p)
    d = torch.zeros_like(mean)
    d[:, pred == 0] = torch.tensor(spread, dtype=torch.float64)[:, None]
    members = torch.stack([mean + d, mean - d])[:, None]
    seg = segment_table(members, target[None])

    assert seg.image.tolist() == [0, 0, 0] and seg.segment.tolist() == [0, 1, 2]
    assert seg.cls.tolist() == [0, 1, 2]  # raster order of first pixels: (0,0), (0,3), (2,3)
    f = {k: v.tolist() for k, v in seg.features.items()}
    assert list(f) == list(feature_names(3))
    assert f["size"] == [12, 4, 4] and f["size_in"] == [2, 0, 0] and f["size_bd"] == [10, 4, 4]
    assert f["size_rel"] == [1.2, 1, 1] and f["size_in_rel"] == [0.2, 0, 0]

    log_c = math.log(3)
    h_in, h_bd = entropy(inner_p), entropy(edge_p)
    assert f["entropy"][0] == pytest.approx((2 * h_in + 10 * h_bd) / 12 / log_c)
    assert f["entropy_in"][0] == pytest.approx(h_in / log_c)
    assert f["entropy_bd"][0] == pytest.approx(h_bd / log_c)
    assert f["entropy_rel"][0] == pytest.approx((2 * h_in + 10 * h_bd) / 10 / log_c)
    assert f["entropy_in_rel"][0] == pytest.approx(2 * h_in / 10 / log_c)
    assert f["entropy_in"][1] == 0 and f["entropy_bd"][1] == pytest.approx(entropy(other_p) / log_c)
    # margin 1 - p1 + p2: 0.3 inside, 0.7 on the boundary
    assert f["margin"][0] == pytest.approx((2 * 0.3 + 10 * 0.7) / 12)
    assert f["margin_in"][0] == pytest.approx(0.3) and f["margin_bd"][0] == pytest.approx(0.7)
    assert f["margin_rel"][0] == pytest.approx(7.6 / 10) and f["margin_in_rel"][0] == pytest.approx(0.6 / 10)
    assert f["margin"][1] == pytest.approx(0.5) and f["margin_in"][1] == 0 and f["margin_rel"][2] == pytest.approx(0.5)
    # the instance uncertainty: the method's (unnormalised) mean entropy over the segment
    assert f["instance_uncertainty"][0] == pytest.approx((2 * h_in + 10 * h_bd) / 12)
    # mutual information: H(mean) - mean of the members' H; 0 where the members agree
    mi = lambda p: entropy(p) - (entropy([a + s for a, s in zip(p, spread)]) + entropy([a - s for a, s in zip(p, spread)])) / 2
    assert f["mutual_information"][0] == pytest.approx((2 * mi(inner_p) + 10 * mi(edge_p)) / 12)
    assert f["mutual_information"][1] == pytest.approx(0, abs=1e-12)
    assert [f[f"prob_{c}"][0] for c in range(3)] == pytest.approx([(1.6 + 6) / 12, (0.2 + 3) / 12, 0.1])
    assert [f[f"prob_{c}"][2] for c in range(3)] == pytest.approx([0.1, 0.2, 0.7])
    # IoU: class 0 loses its 2 ignored pixels (10 left), 9 of them are 0 in the truth, whose 0s are one
    # component of 9; class 1's component has 5 pixels, 4 of them predicted; class 2 is exact
    assert seg.iou.tolist() == pytest.approx([9 / 10, 4 / 5, 1.0])


def test_a_nested_segment_and_the_ring_around_it():
    pred = torch.zeros(7, 7, dtype=torch.long)
    pred[3, 3] = 1
    target = torch.zeros(7, 7, dtype=torch.long)
    target[2:5, 2:5] = 1
    seg = table(pred, target, num_classes=2)
    assert seg.cls.tolist() == [0, 1]
    f = seg.features
    # ring: 48 pixels; boundary = the outer ring (24) and the 8 around the hole
    assert f["size"].tolist() == [48, 1] and f["size_bd"].tolist() == [32, 1] and f["size_in"].tolist() == [16, 0]
    assert seg.iou.tolist() == pytest.approx([40 / 48, 1 / 9])


def test_one_object_split_into_two_segments_and_a_false_positive_between():
    pred = torch.tensor([[2, 2, 2, 2, 2, 2],
                         [1, 1, 0, 0, 1, 1],
                         [2, 2, 2, 2, 2, 2]])
    target = torch.tensor([[2, 2, 2, 2, 2, 2],
                           [1, 1, 1, 1, 1, 1],
                           [2, 2, 2, 2, 2, 2]])
    seg = table(pred, target)
    assert seg.cls.tolist() == [2, 1, 0, 1, 2]
    assert seg.iou.tolist() == pytest.approx([1, 2 / 6, 0, 2 / 6, 1])
    assert seg.features["size_in"].tolist() == [0] * 5


def test_two_objects_merged_into_one_segment():
    pred = torch.tensor([[0, 0, 0, 0, 0, 0, 0],
                         [0, 1, 1, 1, 1, 1, 0],
                         [0, 0, 0, 0, 0, 0, 0]])
    target = torch.tensor([[0, 0, 0, 0, 0, 0, 0],
                           [0, 1, 1, 0, 1, 1, 0],
                           [0, 0, 0, 0, 0, 0, 0]])
    seg = table(pred, target)
    assert seg.cls.tolist() == [0, 1]
    # the segment of 5 holds both components (2 + 2); the background of 16 meets the truth's one of 17
    assert seg.iou.tolist() == pytest.approx([16 / 17, 4 / 5])


def test_a_segment_on_ignored_pixels_only_has_no_target():
    pred = torch.tensor([[0, 0, 0, 0],
                         [0, 1, 1, 0],
                         [0, 1, 1, 0],
                         [0, 0, 0, 0]])
    target = torch.tensor([[0, 0, 0, 0],
                           [0, I, I, 0],
                           [0, I, I, I],
                           [0, 0, 0, 0]])
    seg = table(pred, target, num_classes=2)
    assert seg.cls.tolist() == [0, 1]
    assert seg.iou[0].item() == pytest.approx(11 / 11)  # its ignored pixel (2,3) is out of k: 11 of 11
    assert math.isnan(seg.iou[1].item())
    assert not torch.isnan(torch.stack(list(seg.features.values()))).any()  # the features are still there


def test_a_segment_of_another_class_than_the_truth_has_iou_zero_and_no_labels_no_iou():
    seg = table(torch.ones(3, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))
    assert seg.iou.tolist() == [0.0]
    assert math.isnan(table(torch.ones(3, 3, dtype=torch.long)).iou.item())


def _reference_boundary(labels: np.ndarray) -> np.ndarray:
    h, w = labels.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if not (0 <= yy < h and 0 <= xx < w) or labels[yy, xx] != labels[y, x]:
                        out[y, x] = True
    return out


def test_boundary_and_sizes_agree_with_a_pixel_loop_on_a_random_map_in_a_batch_and_both_backends():
    gen = torch.Generator().manual_seed(0)
    pred = (torch.rand(2, 1, 4, 5, generator=gen) * 3).long()
    pred = torch.nn.functional.interpolate(pred.float(), size=(12, 15), mode="nearest").long()[:, 0]
    pred[1, 5, 5] = 2
    target = (torch.rand(2, 12, 15, generator=gen) * 4).long().clamp_max(3)
    target[target == 3] = I
    probs = torch.rand(2, 2, 3, 12, 15, generator=gen, dtype=torch.float64).softmax(dim=2)
    pred = probs.mean(0).argmax(1)
    seg = segment_table(probs, target)
    other = segment_table(probs, target, backend="torch")
    for a, b in zip(seg, other):
        if isinstance(a, dict):
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.allclose(a, b, equal_nan=True)
    from iwu.method.uncertainty import label_instances

    labels, counts = label_instances(pred)
    assert seg.image.tolist() == sum(([i] * int(n) for i, n in enumerate(counts)), [])
    bd = boundary_mask(labels)
    for i in range(2):
        assert np.array_equal(bd[i].numpy(), _reference_boundary(labels[i].numpy()))
        ids = sorted(set(labels[i].flatten().tolist()))  # raster order of first pixels
        firsts = sorted(ids, key=lambda v: int(np.flatnonzero(labels[i].numpy().ravel() == v)[0]))
        assert ids == firsts
        rows = (seg.image == i).nonzero().flatten()
        assert seg.segment[rows].tolist() == list(range(len(ids)))
        for row, v in zip(rows.tolist(), ids):
            mask = labels[i] == v
            assert seg.features["size"][row] == mask.sum()
            assert seg.features["size_bd"][row] == (mask & bd[i]).sum()
            assert seg.cls[row] == pred[i][mask][0]
            # IoU by its definition, on sets
            c = int(pred[i][mask][0])
            k = mask & (target[i] != I)
            gt_labels, _ = label_instances(target[i])
            touched = set(gt_labels[k & (target[i] == c)].tolist())
            g = torch.isin(gt_labels, torch.tensor(sorted(touched), dtype=gt_labels.dtype)) if touched else k & False
            expected = (k & g).sum() / (k | g).sum() if k.any() else float("nan")
            assert seg.iou[row].item() == pytest.approx(float(expected), nan_ok=True)


def test_the_instance_uncertainty_feature_is_what_the_method_gives_each_pixel():
    gen = torch.Generator().manual_seed(1)
    probs = torch.rand(2, 1, 4, 16, 16, generator=gen).softmax(dim=2)
    seg = segment_table(probs)
    mean = probs.mean(0)
    pred = mean.argmax(1)
    per_pixel = instance_uncertainty(pred, pixel_entropy(mean))
    from iwu.method.uncertainty import label_instances

    labels, _ = label_instances(pred)
    for row, v in enumerate(sorted(set(labels.flatten().tolist()))):
        assert seg.features["instance_uncertainty"][row].item() == pytest.approx(per_pixel[labels == v][0].item(),
                                                                                  rel=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="M,B,C,H,W"):
        segment_table(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="two classes"):
        segment_table(torch.ones(1, 1, 1, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        segment_table(confident(torch.zeros(4, 4, dtype=torch.long), 2), torch.zeros(1, 3, 4, dtype=torch.long))
