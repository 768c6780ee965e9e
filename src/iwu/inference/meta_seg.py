"""Meta classification and meta regression of predicted segments (docs/segments.md).

From a table of segments (`iwu.method.segments`: features, predicted class, IoU, the image each came
from), this module says how well the features tell wrong segments from right ones:

- *meta classification*: whether a segment is a false positive (IoU = 0), scored by AUROC; for each
  feature alone, and for a logistic regression over all of them;
- *meta regression*: the segment's IoU predicted by a linear regression over all features, scored by R².

The fits are cross-validated by image: `GroupKFold` with shuffled groups and a fixed seed puts all of an
image's segments in the same fold, so no image is in both a fit and its score. Scores are computed once
over the pooled out-of-fold predictions. Both fits see the features standardised (on the fit's part only)
and the predicted class one-hot. Segments without a target (NaN IoU: on ignored pixels only) are left out.

Single features are scored in a fixed orientation: a higher value means more likely wrong, so sizes
(larger segments are more often right) are negated and every other feature is taken as it is; an AUROC
under 0.5 says that feature points the other way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iwu.errors import UserError

HEADLINE = "instance_uncertainty"  # the method's own measure: the number the summary leads with
NEGATED = ("size", "size_in", "size_bd", "size_rel", "size_in_rel")  # larger: more likely right
FOLDS, SEED = 5, 0
MIN_SEGMENTS = 10


@dataclass
class MetaSeg:
    """`analyse`'s result: the summary written to the eval JSON, and what the figure draws."""

    summary: dict
    iou: np.ndarray  # (n,) the targets of the segments kept
    wrong: np.ndarray  # (n,) bool: IoU == 0
    headline: np.ndarray  # (n,) the headline feature, oriented
    logistic: np.ndarray  # (n,) the logistic regression's out-of-fold probability of IoU == 0


def oriented(name: str, values: np.ndarray) -> np.ndarray:
    """`values` of feature `name` as a score of being wrong (module docstring)."""
    return -values if name in NEGATED else values


def feature_auroc(features: dict, wrong: np.ndarray) -> dict:
    """{name: AUROC of the oriented feature as a score of `wrong`}."""
    from sklearn.metrics import roc_auc_score

    return {name: float(roc_auc_score(wrong, oriented(name, np.asarray(v, np.float64))))
            for name, v in features.items()}


def group_folds(groups: np.ndarray, folds: int = FOLDS, seed: int = SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, score) index pairs: `folds` (at most one per group) folds of whole groups, shuffled by `seed`."""
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    splitter = GroupKFold(n_splits=min(folds, n_groups), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def design_matrix(features: dict, cls: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, F + num_classes): the features as columns, then the predicted class one-hot."""
    columns = np.column_stack([np.asarray(v, np.float64) for v in features.values()])
    return np.hstack([columns, np.eye(num_classes)[np.asarray(cls, np.int64)]])


def _out_of_fold(make, x: np.ndarray, y: np.ndarray, splits, predict) -> np.ndarray:
    out = np.empty(len(y), np.float64)
    for fit, score in splits:
        model = make().fit(x[fit], y[fit])
        out[score] = predict(model, x[score])
    return out


def _logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _linear():
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LinearRegression())


def _check(n: int, n_images: int, wrong: np.ndarray, splits=None) -> None:
    if n < MIN_SEGMENTS:
        raise UserError(f"--segments: {n} segments with a ground truth; meta classification needs at least "
                        f"{MIN_SEGMENTS}: evaluate on more images")
    if n_images < 2:
        raise UserError("--segments: segments of a single image; the cross-validation by image needs at least 2: "
                        "evaluate on more images")
    if wrong.all() or not wrong.any():
        kind = "IoU 0" if wrong.all() else "IoU above 0"
        raise UserError(f"--segments: all {n} segments have {kind}; meta classification needs both kinds: "
                        "evaluate on more images")
    for fit, _ in splits or ():
        if wrong[fit].all() or not wrong[fit].any():
            raise UserError("--segments: a cross-validation fit holds segments of one kind only (all IoU 0 or "
                            "none); evaluate on more images")


def analyse(features: dict, iou: np.ndarray, images: np.ndarray, cls: np.ndarray, num_classes: int, *,
            folds: int = FOLDS, seed: int = SEED, headline: str = HEADLINE) -> MetaSeg:
    """Meta classification and regression of the segments (module docstring); deterministic for a seed.

    `features`: {name: (n,)}; `iou`: (n,), NaN where a segment has no target; `images`: (n,) the image each
    segment comes from (its group in the cross-validation); `cls`: (n,) its predicted class.
    Raises a one-line `UserError` for too few segments or images, or targets of one kind only.
    """
    iou = np.asarray(iou, np.float64)
    keep = ~np.isnan(iou)
    features = {k: np.asarray(v, np.float64)[keep] for k, v in features.items()}
    iou, images, cls = iou[keep], np.asarray(images)[keep], np.asarray(cls)[keep]
    wrong = iou == 0
    n_images = len(np.unique(images))
    _check(len(iou), n_images, wrong)
    splits = group_folds(images, folds, seed)
    _check(len(iou), n_images, wrong, splits)

    from sklearn.metrics import r2_score, roc_auc_score

    x = design_matrix(features, cls, num_classes)
    logistic = _out_of_fold(_logistic, x, wrong, splits, lambda m, s: m.predict_proba(s)[:, 1])
    linear = _out_of_fold(_linear, x, iou, splits, lambda m, s: m.predict(s))
    single = feature_auroc(features, wrong)
    summary = {
        "segments": int(keep.size), "with_target": int(len(iou)), "images": int(n_images),
        "iou_zero_share": float(wrong.mean()), "mean_iou": float(iou.mean()),
        "headline": headline, "headline_auroc": single[headline],
        "logistic_auroc": float(roc_auc_score(wrong, logistic)), "linear_r2": float(r2_score(iou, linear)),
        "feature_auroc": single, "folds": len(splits), "seed": seed,
        "orientation": "higher means more likely IoU 0; sizes negated",
    }
    return MetaSeg(summary, iou, wrong, oriented(headline, features[headline]), logistic)


def roc_curves(result: MetaSeg) -> dict:
    """{label: (false positive rates, true positive rates, AUROC)} of the headline feature alone and of the
    logistic regression, for `iwu.plots.segments`."""
    from sklearn.metrics import roc_curve

    s = result.summary
    curves = {}
    for label, score, auroc in ((f"{s['headline']} alone", result.headline, s["headline_auroc"]),
                                ("logistic regression, all features", result.logistic, s["logistic_auroc"])):
        fpr, tpr, _ = roc_curve(result.wrong, score)
        curves[label] = (fpr, tpr, auroc)
    return curves


def fit_classifier(features: dict, iou: np.ndarray, cls: np.ndarray, num_classes: int) -> dict:
    """The logistic regression of `analyse` fitted once on every segment with a target, as plain numbers
    (JSON): the feature names, the standardisation (mean, scale) and the coefficients over the design
    matrix, so that `flag_probability` applies it without scikit-learn. Call it after `analyse` accepted
    the same segments."""
    iou = np.asarray(iou, np.float64)
    keep = ~np.isnan(iou)
    x = design_matrix({k: np.asarray(v, np.float64)[keep] for k, v in features.items()}, np.asarray(cls)[keep],
                      num_classes)
    model = _logistic().fit(x, iou[keep] == 0)
    scaler, logistic = model[0], model[-1]
    return {"features": list(features), "num_classes": num_classes, "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(), "coef": logistic.coef_[0].tolist(),
            "intercept": float(logistic.intercept_[0])}


def flag_probability(classifier: dict, features: dict, cls) -> np.ndarray:
    """(n,) the probability that each segment has IoU 0, by a `fit_classifier` result."""
    x = design_matrix({k: np.asarray(features[k], np.float64) for k in classifier["features"]},
                      np.asarray(cls), classifier["num_classes"])
    z = (x - np.asarray(classifier["mean"])) / np.asarray(classifier["scale"]) @ np.asarray(classifier["coef"])
    return 1.0 / (1.0 + np.exp(-(z + classifier["intercept"])))


def read_classifier(path, features) -> dict:
    """A `fit_classifier` result saved as JSON at `path`, for segments with the feature columns `features`;
    a one-line UserError if it is unreadable or of other features (another class set)."""
    import json
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        width = len(data["features"]) + data["num_classes"]
        ok = (list(data["features"]) == list(features)
              and all(len(data[k]) == width for k in ("mean", "scale", "coef"))
              and isinstance(data["intercept"], (int, float)))
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a segment classifier written by iwu evaluate --segments") from None
    if not ok:
        raise UserError(f"{path}: a segment classifier of other features (another class set); run iwu evaluate "
                        "--segments on this run again")
    return data


def flag_segments(classifier: dict, member_probs, *, connectivity: int = 8, backend: str = "auto"):
    """The segments of one image's ensemble prediction (member probabilities (M,1,C,H,W)) and their
    probability of IoU 0 by `classifier`: ((H,W) int64 numpy, each pixel's segment; (N,) probabilities),
    for `iwu.plots.segments.outline_flagged`."""
    from iwu.method.segments import segment_ids, segment_table

    table = segment_table(member_probs, connectivity=connectivity, backend=backend)
    ids, _ = segment_ids(member_probs.mean(dim=0).argmax(dim=1), connectivity=connectivity, backend=backend)
    features = {k: v.cpu().numpy() for k, v in table.features.items()}
    return ids[0].cpu().numpy(), flag_probability(classifier, features, table.cls.cpu().numpy())
