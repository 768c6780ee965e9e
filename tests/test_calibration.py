"""Uncertainty quality over a split: every figure of the binned, constant-memory meter
against a direct computation on the raw pixels of a small random set fed batch by batch."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from iwu.method.calibration import UncertaintyMeter, auroc_from_histograms
from iwu.plots.reliability import reliability_figure, save_reliability_diagram

C = 5
EPS = 1e-10


def make_batches(seed=0, batches=3, shape=(2, C, 17, 19), members=3):
    """Members' softmaxes with confidence from near-uniform to near-certain; labels drawn from flattened
    probabilities (an overconfident model, so ECE > 0 and uncertainty does flag errors); ~10% 255."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    out = []
    for _ in range(batches):
        scale = torch.rand(b, 1, h, w, generator=g, dtype=torch.float64) * 5
        logits = torch.randn(members, b, c, h, w, generator=g, dtype=torch.float64) * scale
        logits = logits + torch.randn(1, b, c, h, w, generator=g, dtype=torch.float64) * scale  # members agree a bit
        member = logits.softmax(dim=2)
        probs = member.mean(dim=0)
        flat = probs.pow(0.6).permute(0, 2, 3, 1).reshape(-1, c)
        target = torch.multinomial(flat, 1, generator=g).view(b, h, w)
        target[torch.rand(b, h, w, generator=g) < 0.1] = 255
        out.append((probs, target, member))
    return out


def feed(batches, members=True, dtype=torch.float64, **kwargs):
    meter = UncertaintyMeter(C, **kwargs)
    for probs, target, member in batches:
        meter.update(probs.to(dtype), target, member.to(dtype) if members else None)
    return meter


def entropy(p, axis):
    return -(p * np.log(p + EPS)).sum(axis)


def pixels(batches):
    """Valid pixels of all batches: probabilities (N,C), labels (N,), members' probabilities (M,N,C)."""
    probs, labels, members = [], [], []
    for p, t, m in batches:
        valid = (t != 255).numpy()
        probs.append(p.permute(0, 2, 3, 1).numpy()[valid])
        labels.append(t.numpy()[valid])
        members.append(m.permute(0, 1, 3, 4, 2).numpy()[:, valid])
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(members, axis=1)


def in_bin(values, edges, k):
    """Left-open bins (e_k, e_k+1], the first one closed at 0."""
    upper = values <= edges[k + 1]
    return upper if k == 0 else upper & (values > edges[k])


def direct_reliability(probs, labels, bins=15):
    edges = np.linspace(0, 1, bins + 1)
    conf, right = probs.max(1), probs.argmax(1) == labels
    count, confidence, accuracy = np.zeros(bins), np.full(bins, np.nan), np.full(bins, np.nan)
    ece = 0.0
    for k in range(bins):
        m = in_bin(conf, edges, k)
        count[k] = m.sum()
        if m.any():
            confidence[k], accuracy[k] = conf[m].mean(), right[m].mean()
            ece += m.sum() / len(conf) * abs(accuracy[k] - confidence[k])
    return ece, count, confidence, accuracy


def direct_classwise(probs, labels, bins=15):
    edges = np.linspace(0, 1, bins + 1)
    eces = np.full(C, np.nan)
    for c in range(C):
        if not (labels == c).any():
            continue
        p, hit = probs[:, c], labels == c
        eces[c] = sum(m.sum() / len(p) * abs(hit[m].mean() - p[m].mean())
                      for m in (in_bin(p, edges, k) for k in range(bins)) if m.any())
    return eces


def direct_auroc(values, wrong):
    """Mann-Whitney: P(u of a misclassified pixel > u of a right one), ties a half."""
    stat = mannwhitneyu(values[wrong], values[~wrong], alternative="two-sided").statistic
    return stat / (wrong.sum() * (~wrong).sum())


def direct_patches(batches, kind, patch=4):
    """Mean valid-pixel uncertainty and accuracy of every patch with a valid pixel, by explicit loops."""
    means, accurate = [], []
    for probs, target, member in batches:
        p = probs.numpy()
        unc = entropy(p, 1) if kind == "entropy" else entropy(p, 1) - entropy(member.numpy(), 2).mean(0)
        right = p.argmax(1) == target.numpy()
        valid = target.numpy() != 255
        for b in range(p.shape[0]):
            for i in range(p.shape[2] // patch):
                for j in range(p.shape[3] // patch):
                    window = np.s_[b, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch]
                    v = valid[window]
                    if v.any():
                        means.append(unc[window][v].mean())
                        accurate.append(right[window][v].mean() >= 0.5)
    return np.array(means), np.array(accurate)


def direct_pavpu(means, accurate, threshold):
    uncertain = means > threshold
    n_ac, n_iu = (accurate & ~uncertain).sum(), (~accurate & uncertain).sum()
    return (n_ac + n_iu) / len(means)


@pytest.fixture(scope="module")
def batches():
    return make_batches()


@pytest.fixture(scope="module")
def result(batches):
    return feed(batches).compute()


def test_ece_and_reliability_bins_equal_a_direct_computation(batches, result):
    probs, labels, _ = pixels(batches)
    ece, count, confidence, accuracy = direct_reliability(probs, labels)
    assert result["pixels"] == len(labels)
    assert result["accuracy"] == pytest.approx((probs.argmax(1) == labels).mean(), abs=1e-12)
    assert result["ece"] == pytest.approx(ece, abs=1e-9)
    rel = result["reliability"]
    assert rel["bin_edges"] == np.linspace(0, 1, 16).tolist()
    assert rel["count"] == count.astype(int).tolist()
    empty = count == 0
    assert [v is None for v in rel["confidence"]] == empty.tolist() == [v is None for v in rel["accuracy"]]
    got_conf = np.array([np.nan if v is None else v for v in rel["confidence"]])
    got_acc = np.array([np.nan if v is None else v for v in rel["accuracy"]])
    np.testing.assert_allclose(got_conf[~empty], confidence[~empty], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got_acc[~empty], accuracy[~empty], rtol=0, atol=1e-9)
    assert 0.02 < ece < 0.5 and (count > 0).sum() >= 10  # the set exercises most bins


def test_float32_input_agrees_to_single_precision(batches, result):
    single = feed(batches, dtype=torch.float32).compute()
    probs, labels, _ = pixels(batches)
    ece, count, _, _ = direct_reliability(probs, labels)
    assert single["ece"] == pytest.approx(ece, abs=1e-6)
    assert single["classwise_ece"] == pytest.approx(result["classwise_ece"], abs=1e-6)
    assert np.abs(np.array(single["reliability"]["count"]) - count).sum() <= 2  # a value on an edge may move
    for kind in ("entropy", "mutual_information"):
        assert single[kind]["mean"] == pytest.approx(result[kind]["mean"], abs=1e-6)
        assert single[kind]["auroc"] == pytest.approx(result[kind]["auroc"], abs=1e-4)


def test_classwise_ece_equals_a_direct_computation(batches, result):
    probs, labels, _ = pixels(batches)
    eces = direct_classwise(probs, labels)
    cw = result["classwise_reliability"]
    assert result["classwise_ece"] == pytest.approx(np.nanmean(eces), abs=1e-9)
    np.testing.assert_allclose(np.array(cw["ece"], np.float64), eces, rtol=0, atol=1e-9)
    assert cw["support"] == [int((labels == c).sum()) for c in range(C)]
    assert all(sum(row) == len(labels) for row in cw["count"])  # every pixel in one bin of every class


def test_classwise_ece_averages_the_classes_present_only(batches):
    absent = [(p, torch.where(t == 3, 255, t), m) for p, t, m in batches]
    res = feed(absent).compute()
    probs, labels, _ = pixels(absent)
    eces = direct_classwise(probs, labels)
    assert np.isnan(eces[3]) and res["classwise_reliability"]["ece"][3] is None
    assert res["classwise_reliability"]["support"][3] == 0
    assert res["classwise_ece"] == pytest.approx(np.nanmean(eces), abs=1e-9)


@pytest.mark.parametrize("kind", ["entropy", "mutual_information"])
def test_auroc_equals_mann_whitney_within_the_binning(batches, result, kind):
    probs, labels, members = pixels(batches)
    values = entropy(probs, 1) if kind == "entropy" else entropy(probs, 1) - entropy(members, 2).mean(0)
    wrong = probs.argmax(1) != labels
    exact = direct_auroc(values, wrong)
    # binning can only change pairs that share a bin, each by a half
    edges = np.linspace(0, math.log(C), 1001)
    pos, _ = np.histogram(values[wrong], edges)
    neg, _ = np.histogram(values[~wrong], edges)
    tolerance = 0.5 * (pos * neg).sum() / (wrong.sum() * (~wrong).sum())
    assert abs(result[kind]["auroc"] - exact) <= tolerance + 1e-12
    assert tolerance < 2e-3 and 0.4 < exact < 0.95
    assert kind == "mutual_information" or exact > 0.6  # entropy does flag this model's errors
    assert result[kind]["mean"] == pytest.approx(values.mean(), abs=1e-12)


def test_auroc_is_exact_with_uncertainties_at_bin_centres():
    """Two classes, p solved so that every pixel's entropy is a bin centre: binned ties are real ties."""
    rng = np.random.default_rng(3)
    edges = np.linspace(0, math.log(2), 1001)
    chosen = rng.choice(np.arange(1, 999), size=40, replace=False)
    centres = (edges[chosen] + edges[chosen + 1]) / 2
    low, high = np.full(40, 1e-9), np.full(40, 0.5)
    for _ in range(80):  # bisection: the entropy of (p, 1-p) rises on (0, 1/2]
        mid = (low + high) / 2
        below = entropy(np.stack([mid, 1 - mid]), 0) < centres
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    p = (low + high) / 2
    meter = UncertaintyMeter(2)
    raw, wrong = [], []
    for _ in range(3):
        pick = rng.integers(0, 40, size=(2, 9, 11))
        probs = torch.from_numpy(np.stack([p[pick], 1 - p[pick]], axis=1))  # class 1 always predicted
        target = torch.from_numpy(rng.integers(0, 2, size=(2, 9, 11)))
        target[torch.from_numpy(rng.random((2, 9, 11)) < 0.1)] = 255
        meter.update(probs, target)
        valid = target.numpy() != 255
        raw.append(entropy(probs.numpy(), 1)[valid])
        wrong.append(target.numpy()[valid] != 1)
        assert np.all(np.searchsorted(edges, raw[-1]) - 1 == chosen[pick][valid])  # each at its bin's centre
    raw, wrong = np.concatenate(raw), np.concatenate(wrong)
    assert meter.compute()["entropy"]["auroc"] == pytest.approx(direct_auroc(raw, wrong), abs=1e-12)


def test_auroc_from_histograms_handles_the_extremes():
    assert auroc_from_histograms([0, 0, 3], [2, 1, 0]) == 1.0
    assert auroc_from_histograms([3, 0, 0], [0, 1, 2]) == 0.0
    assert auroc_from_histograms([1, 1], [1, 1]) == 0.5
    assert math.isnan(auroc_from_histograms([0, 0], [1, 1]))


@pytest.mark.parametrize("kind", ["entropy", "mutual_information"])
def test_pavpu_equals_a_direct_patch_computation(batches, kind):
    meter = feed(batches)
    means, accurate = direct_patches(batches, kind)
    assert meter.compute()[kind]["patches"] == len(means) == 6 * 16  # 17x19 cropped to 16x16: 4x4 patches
    assert 0.2 < accurate.mean() < 0.9
    edges = meter.unc_edges
    bin_of = np.searchsorted(edges, means, side="left") - 1  # left-open bins
    # on a bin edge near the median patch: exact whatever the patches
    k = int(bin_of[np.argsort(means)[len(means) // 2]])
    assert meter.pavpu(kind, edges[k]) == pytest.approx(direct_pavpu(means, accurate, edges[k]), abs=1e-12)
    # inside an empty bin: exact too
    empty = [j for j in range(k, 1000) if j not in set(bin_of.tolist())][0]
    t = (edges[empty] + edges[empty + 1]) / 2
    assert meter.pavpu(kind, t) == pytest.approx(direct_pavpu(means, accurate, t), abs=1e-12)
    # the curve holds the value at every edge
    thresholds, values = meter.pavpu_curve(kind)
    assert thresholds == edges.tolist() and len(values) == 1001
    for j in (1, k, k + 7, 500, 1000):
        assert values[j] == pytest.approx(direct_pavpu(means, accurate, edges[j]), abs=1e-12)
    assert values[1000] == pytest.approx(accurate.mean(), abs=1e-12)  # nothing uncertain


@pytest.mark.parametrize("kind", ["entropy", "mutual_information"])
def test_default_pavpu_threshold_is_the_mean_patch_uncertainty(batches, result, kind):
    means, accurate = direct_patches(batches, kind)
    entry = result[kind]
    assert entry["pavpu_threshold"] == pytest.approx(means.mean(), abs=1e-12)
    same_bin = np.floor(means / (math.log(C) / 1000)) == math.floor(entry["pavpu_threshold"] / (math.log(C) / 1000))
    assert abs(entry["pavpu"] - direct_pavpu(means, accurate, means.mean())) <= same_bin.mean() + 1e-12


def test_a_fixed_uncertainty_threshold_is_used(batches):
    means, accurate = direct_patches(batches, "entropy")
    edge = UncertaintyMeter(C).unc_edges[300]
    res = feed(batches, uncertainty_threshold=edge).compute()
    assert res["entropy"]["pavpu_threshold"] == edge == res["mutual_information"]["pavpu_threshold"]
    assert res["entropy"]["pavpu"] == pytest.approx(direct_pavpu(means, accurate, edge), abs=1e-12)
    per_kind = feed(batches, uncertainty_threshold={"mutual_information": 0.1}).compute()
    assert per_kind["mutual_information"]["pavpu_threshold"] == 0.1
    assert per_kind["entropy"]["pavpu_threshold"] == pytest.approx(means.mean(), abs=1e-12)


def test_mutual_information_is_entropy_of_mean_minus_mean_entropy(batches, result):
    probs, _, members = pixels(batches)
    mi = entropy(members.mean(0), 1) - entropy(members, 2).mean(0)
    assert mi.min() >= -1e-6
    assert result["mutual_information"]["mean"] == pytest.approx(mi.mean(), abs=1e-12)
    assert 0 < result["mutual_information"]["mean"] < result["entropy"]["mean"]


def test_without_members_there_is_no_mutual_information(batches, result):
    res = feed(batches, members=False).compute()
    assert "mutual_information" not in res
    assert res["entropy"] == result["entropy"] and res["ece"] == result["ece"]


def test_members_for_some_batches_only_are_refused(batches):
    meter = UncertaintyMeter(C)
    probs, target, member = batches[0]
    meter.update(probs, target, member)
    with pytest.raises(ValueError, match="some batches"):
        meter.update(probs, target)
    half = UncertaintyMeter(C)
    half.update(probs, target)
    merged = feed(batches[1:])
    merged.merge_state(half)
    with pytest.raises(ValueError, match="some batches"):
        merged.compute()


def test_bad_inputs_are_refused(batches):
    probs, target, member = batches[0]
    meter = UncertaintyMeter(C)
    with pytest.raises(ValueError, match="probs must be"):
        meter.update(probs[:, :3], target)
    with pytest.raises(ValueError, match="does not match"):
        meter.update(probs, target[:, :5])
    with pytest.raises(ValueError, match="member_probs"):
        meter.update(probs, target, member[:, :1])
    with pytest.raises(ValueError, match="outside"):
        meter.update(probs, torch.where(target == 2, 7, target))
    assert meter.compute()["pixels"] == 0


def states(meter):
    return [getattr(meter, name) for name in meter.state_names]


def assert_same_result(res, result):
    assert res["pixels"] == result["pixels"]
    assert res["reliability"]["count"] == result["reliability"]["count"]
    for key in ("ece", "classwise_ece"):
        assert res[key] == pytest.approx(result[key], abs=1e-12)
    for kind in ("entropy", "mutual_information"):
        for key, value in result[kind].items():
            assert res[kind][key] == pytest.approx(value, abs=1e-12)


def test_merged_halves_equal_the_whole(batches, result):
    first, second = feed(batches[:2]), feed(batches[2:])
    whole = feed(batches)
    merged = feed(batches[:2])
    merged.merge_state(second)
    for got, want in zip(states(merged), states(whole)):
        assert got.dtype == want.dtype and got.dtype in (torch.int64, torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)
    as_dict = feed(batches[:2])
    as_dict.merge_state(second.metric_state)
    for res in (merged.compute(), as_dict.compute()):
        assert_same_result(res, result)
    with pytest.raises(ValueError, match="settings"):
        first.merge_state(UncertaintyMeter(C, bins=10))


def test_reset_empties_the_meter_and_forgets_the_members(batches):
    meter = feed(batches)
    meter.reset()
    assert all(not t.any() for t in states(meter))
    probs, target, _ = batches[0]
    meter.update(probs, target)  # without members now: allowed after a reset
    assert meter.compute()["pixels"] == feed(batches[:1], members=False).compute()["pixels"]


def _ddp_half(rank, world, store, batches, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        meter = feed(batches[rank::world])
        res = meter.compute()  # torchmetrics sums every state over the processes
        if rank == 0:
            torch.save(res, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_states_are_summed_over_ddp_processes(batches, result, tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path / "result.pt"
    mp.spawn(_ddp_half, args=(2, tmp_path / "store", batches, out), nprocs=2)
    assert_same_result(torch.load(out, weights_only=False), result)


def state_bytes(meter):
    tensors = list(meter.buffers()) + states(meter)
    return sum(t.numel() * t.element_size() for t in tensors), len(states(meter))


def test_state_size_does_not_grow_with_updates(batches):
    meter = UncertaintyMeter(C)
    meter.update(*batches[0])
    size = state_bytes(meter)
    for _ in range(4):
        for batch in batches:
            meter.update(*batch)
    assert state_bytes(meter) == size
    assert size[0] < 200_000
    assert meter.compute()["pixels"] == feed(batches[:1]).compute()["pixels"] + 4 * feed(batches).compute()["pixels"]


def test_reliability_diagram_is_a_png_written_atomically(result, tmp_path):
    path = tmp_path / "figures" / "reliability.png"
    written = save_reliability_diagram(result, path, title="ensemble on test", classes=list("abcde"))
    assert written == path
    assert [p.name for p in path.parent.iterdir()] == ["reliability.png"]  # no temporary left
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
        assert img.format == "PNG"
    assert width > height > 300
    with pytest.raises(ValueError, match="class names"):
        save_reliability_diagram(result, tmp_path / "x.png", classes=["a"])


def test_reliability_figure_shows_the_bins_and_the_classwise_ece(result):
    fig = reliability_figure(result, title="ensemble on test", classes=list("abcde"))
    rel_ax, count_ax, class_ax = fig.axes
    accuracy = [v for v in result["reliability"]["accuracy"] if v is not None]
    bars = rel_ax.containers[0]  # the accuracy bars; the gap bars follow
    assert [b.get_height() for b in bars] == pytest.approx(accuracy)
    # each bar spans its confidence bin; the gap bars run from the accuracy to the mean confidence
    edges = result["reliability"]["bin_edges"]
    filled = [i for i, v in enumerate(result["reliability"]["accuracy"]) if v is not None]
    assert [b.get_x() for b in bars] == pytest.approx([edges[i] for i in filled])
    assert [b.get_x() + b.get_width() for b in bars] == pytest.approx([edges[i + 1] for i in filled])
    confidence = [result["reliability"]["confidence"][i] for i in filled]
    gaps = rel_ax.containers[1]
    assert [g.get_y() for g in gaps] == pytest.approx([min(a, c) for a, c in zip(accuracy, confidence)])
    assert [g.get_y() + g.get_height() for g in gaps] == pytest.approx([max(a, c) for a, c in zip(accuracy, confidence)])
    assert [b.get_height() for b in count_ax.containers[0]] == result["reliability"]["count"]
    assert [b.get_width() for b in class_ax.containers[0]] == pytest.approx(
        result["classwise_reliability"]["ece"])
    assert [t.get_text() for t in class_ax.get_yticklabels()] == list("abcde")
    assert fig.get_suptitle() == "ensemble on test"
    assert f"ECE {result['ece']:.4f}" in rel_ax.get_title()


def test_ece_agrees_with_torchmetrics(batches, result):
    from torchmetrics.classification import MulticlassCalibrationError

    reference = MulticlassCalibrationError(num_classes=C, n_bins=15, norm="l1", ignore_index=255)
    for probs, target, _ in batches:
        reference.update(probs, target)
    assert result["ece"] == pytest.approx(float(reference.compute()), abs=1e-6)


def test_reliability_diagram_of_an_empty_meter(tmp_path):
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics says so; the result is defined
        res = UncertaintyMeter(3).compute()
    assert res["pixels"] == 0 and math.isnan(res["ece"]) and math.isnan(res["entropy"]["auroc"])
    fig = reliability_figure(res)
    rel_ax, count_ax, class_ax = fig.axes
    assert len(rel_ax.containers[0]) == 0 and [b.get_height() for b in count_ax.containers[0]] == [0] * 15
    assert [t.get_text() for t in class_ax.texts] == [" absent"] * 3
    assert rel_ax.get_title() == "reliability: ECE n/a, accuracy n/a"
    assert save_reliability_diagram(res, tmp_path / "empty.png").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_state_stays_on_the_device_and_agrees(batches, result):
    meter = UncertaintyMeter(C)
    for probs, target, member in batches:
        meter.update(probs.cuda(), target.cuda(), member.cuda())
    assert all(t.device.type == "cuda" for t in states(meter))
    res = meter.compute()
    assert res["reliability"]["count"] == result["reliability"]["count"]
    for key in ("ece", "classwise_ece", "accuracy"):
        assert res[key] == pytest.approx(result[key], abs=1e-9)
    for kind in ("entropy", "mutual_information"):
        for key, value in result[kind].items():
            assert res[kind][key] == pytest.approx(value, abs=1e-9)
