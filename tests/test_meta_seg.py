"""Meta classification and regression of segments (iwu.inference.meta_seg): AUROC, folds by image, determinism."""

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score, roc_auc_score
from torchmetrics.functional.classification import binary_auroc

from iwu.errors import UserError
from iwu.inference.meta_seg import _linear, _logistic, analyse, design_matrix, feature_auroc, group_folds


def test_single_feature_auroc_by_hand_and_against_torchmetrics_with_sizes_negated():
    wrong = np.array([True, True, False, False])
    score = np.array([0.9, 0.4, 0.5, 0.1])  # pairs (wrong, right) ranked right: 3 of 4
    auroc = feature_auroc({"entropy": score, "size": np.array([1.0, 2, 3, 4])}, wrong)
    assert auroc["entropy"] == 0.75
    assert auroc["entropy"] == pytest.approx(float(binary_auroc(torch.tensor(score), torch.tensor(wrong).long())))
    assert auroc["size"] == 1.0  # small segments are the wrong ones: negated, a perfect score


def table(n_images=12, per_image=8, seed=0):
    rng = np.random.default_rng(seed)
    images = np.repeat(np.arange(n_images), per_image)
    n = len(images)
    iou = rng.uniform(0, 1, n)
    iou[rng.uniform(size=n) < 0.4] = 0
    features = {"instance_uncertainty": 1 - iou + rng.normal(0, 0.3, n), "size": rng.uniform(1, 100, n),
                "margin": rng.uniform(0, 1, n)}
    return features, iou, images, rng.integers(0, 3, n)


def test_folds_never_put_an_image_in_both_the_fit_and_its_score_and_score_every_segment_once():
    _, _, images, _ = table()
    splits = group_folds(images, 5, 0)
    assert len(splits) == 5
    scored = np.concatenate([s for _, s in splits])
    assert sorted(scored.tolist()) == list(range(len(images)))
    for fit, score in splits:
        assert not set(images[fit]) & set(images[score])
        assert set(images[fit]) | set(images[score]) == set(images)
    assert len(group_folds(images[:16], 5, 0)) == 2  # two images: two folds


def test_the_seed_fixes_the_folds_and_the_result():
    features, iou, images, cls = table()
    a = analyse(features, iou, images, cls, 3, seed=3)
    b = analyse(features, iou, images, cls, 3, seed=3)
    assert a.summary == b.summary and np.array_equal(a.logistic, b.logistic)
    folds = lambda seed: [tuple(sorted(set(images[s]))) for _, s in group_folds(images, 5, seed)]
    assert folds(3) == folds(3) and sorted(folds(3)) != sorted(folds(4))


def test_the_fits_are_scored_out_of_fold_over_all_features_and_the_class():
    features, iou, images, cls = table()
    iou[:3] = np.nan  # no target: left out
    result = analyse(features, iou, images, cls, 3, seed=1)
    s = result.summary
    keep = ~np.isnan(iou)
    wrong = iou[keep] == 0
    assert s["segments"] == 96 and s["with_target"] == 93 and s["images"] == 12 and s["folds"] == 5
    assert s["iou_zero_share"] == pytest.approx(wrong.mean())
    x = design_matrix({k: v[keep] for k, v in features.items()}, cls[keep], 3)
    assert x.shape == (93, 3 + 3) and (x[:, 3:].sum(1) == 1).all()
    logistic, linear = np.empty(93), np.empty(93)
    for fit, score in group_folds(images[keep], 5, 1):
        logistic[score] = _logistic().fit(x[fit], wrong[fit]).predict_proba(x[score])[:, 1]
        linear[score] = _linear().fit(x[fit], iou[keep][fit]).predict(x[score])
    assert s["logistic_auroc"] == roc_auc_score(wrong, logistic)
    assert s["linear_r2"] == r2_score(iou[keep], linear)
    assert s["headline"] == "instance_uncertainty"
    assert s["headline_auroc"] == s["feature_auroc"]["instance_uncertainty"] == roc_auc_score(
        wrong, features["instance_uncertainty"][keep])


def test_a_feature_that_decides_gives_perfect_scores():
    rng = np.random.default_rng(0)
    images = np.repeat(np.arange(6), 10)
    iou = np.where(rng.uniform(size=60) < 0.5, 0.0, rng.uniform(0.2, 1, 60))
    result = analyse({"instance_uncertainty": 1 - iou}, iou, images, np.zeros(60, int), 1)
    assert result.summary["logistic_auroc"] == 1.0 and result.summary["headline_auroc"] == 1.0
    assert result.summary["linear_r2"] == pytest.approx(1.0)


@pytest.mark.parametrize("case, message", [
    ("few", "5 segments with a ground truth; meta classification needs at least 10"),
    ("one image", "segments of a single image"),
    ("all wrong", "all 40 segments have IoU 0"),
    ("none wrong", "all 40 segments have IoU above 0"),
    ("fold", "a cross-validation fit holds segments of one kind only"),
])
def test_too_little_to_fit_is_one_line(case, message):
    images = np.repeat(np.arange(4), 10)
    iou = np.tile([0.0, 0.5], 20)
    if case == "few":
        images, iou = images[:5], iou[:5]
    elif case == "one image":
        images = np.zeros(40, int)
    elif case == "all wrong":
        iou = np.zeros(40)
    elif case == "none wrong":
        iou = np.full(40, 0.5)
    else:  # only image 0 has wrong segments: the fold that scores it fits on none
        iou = np.where(images == 0, 0.0, 0.5)
    with pytest.raises(UserError, match=message) as err:
        analyse({"instance_uncertainty": np.arange(len(iou), dtype=float)}, iou, images, np.zeros(len(iou), int), 1)
    assert "\n" not in str(err.value) and str(err.value).startswith("--segments:")
