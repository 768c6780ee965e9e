"""The class-imbalance baselines OHEM, Lovasz-softmax (alone and with CE) and recall loss: each loss against
a hand computation, ignored pixels (255) left out, gradients finite; each mode through EnsembleModule, and
(slow) trained end to end and resumed exactly."""

import math

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import LovaszLoss

from iwu.config.schema import LossConfig, MemberConfig, RunConfig, load_config
from iwu.engine.ensemble import EnsembleModule
from iwu.engine.train import train
from iwu.method.losses import lovasz_softmax_loss, ohem_cross_entropy, recall_cross_entropy, recall_weights
from iwu.method.modes import MODES, ModeContext, RunFacts, check_needs
from iwu.errors import UserError
from crashing import Crash, CrashAt
from tiny_runs import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
NEW = ("ohem", "lovasz", "ce_lovasz", "recall")


def _two_class_logits(p, shape):
    """(1,2,H,W) logits whose softmax gives class 0 the probability `p` (a flat list, row by row)."""
    p = torch.tensor(p, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()]).reshape(1, 2, *shape).float().requires_grad_()


# --- OHEM ---------------------------------------------------------------------------------------------

# six pixels, all labeled class 0, so each pixel's true-class probability is its entry; the fifth is ignored
P = [0.9, 0.6, 0.2, 0.8, 0.05, 0.3]
TARGET = torch.tensor([[[0, 0, 0], [0, 255, 0]]])


def _kept_pixels(loss, logits):
    loss.backward()
    return sorted(i for i, g in enumerate(logits.grad[0, 0].flatten().tolist()) if g != 0)


@pytest.mark.parametrize("min_kept, kept", [
    (1, [1, 2, 5]),  # the pixels below 0.7 (0.6, 0.2, 0.3): more than min_kept already
    (3, [1, 2, 5]),  # exactly min_kept below the threshold
    (4, [1, 2, 3, 5]),  # one short: the next hardest, 0.8, joins
    (5, [0, 1, 2, 3, 5]),  # every labeled pixel
    (50, [0, 1, 2, 3, 5]),  # more than there are: every labeled pixel, the easiest too
])
def test_ohem_keeps_the_pixels_below_the_threshold_and_at_least_min_kept_of_the_hardest(min_kept, kept):
    logits = _two_class_logits(P, (2, 3))
    loss = ohem_cross_entropy(logits, TARGET, threshold=0.7, min_kept=min_kept)
    assert loss.item() == pytest.approx(sum(-math.log(P[i]) for i in kept) / len(kept), rel=1e-5)
    assert _kept_pixels(loss, logits) == kept  # the ignored pixel (p 0.05, the hardest) never
    assert torch.isfinite(logits.grad).all()


def test_ohem_threshold_moves_what_is_kept():
    logits = _two_class_logits(P, (2, 3))
    loss = ohem_cross_entropy(logits, TARGET, threshold=0.85, min_kept=1)  # 0.8 is below it now
    assert loss.item() == pytest.approx(-(math.log(0.6) + math.log(0.2) + math.log(0.8) + math.log(0.3)) / 4, rel=1e-5)
    assert _kept_pixels(loss, logits) == [1, 2, 3, 5]


def test_ohem_default_min_kept_is_a_tenth_of_the_batchs_pixels():
    # 2 x 10 x 10 = 200 pixels, all easy (p from 0.75 to 0.99, all distinct): the 20 hardest are kept
    p = torch.linspace(0.75, 0.99, 200)[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    p = p.double().reshape(2, 10, 10)
    logits = torch.stack([p.log(), (1 - p).log()], dim=1).float().requires_grad_()  # (B,C,H,W)
    target = torch.zeros(2, 10, 10, dtype=torch.long)
    true_p = logits.detach().softmax(1)[:, 0].flatten()
    loss = ohem_cross_entropy(logits, target)
    loss.backward()
    kept = logits.grad[:, 0].flatten() != 0
    assert int(kept.sum()) == 20
    assert set(kept.nonzero().flatten().tolist()) == set(true_p.argsort()[:20].tolist())
    assert loss.item() == pytest.approx((-true_p.sort().values[:20].log()).mean().item(), rel=1e-5)


def test_ohem_matches_mmsegs_rule_where_no_probabilities_tie():
    # mmseg: threshold = max(sorted[min_kept], thresh) (0-based), keep p < threshold, mean CE over those
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 8, 8, generator=g) * 3
    target = torch.randint(0, 5, (2, 8, 8), generator=g)
    target[0, :2] = 255
    for thresh, min_kept in [(0.7, 10), (0.7, 40), (0.3, 60), (0.9, 5)]:
        ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[target != 255]
        p = (-ce).exp()
        threshold = max(p.sort().values[min_kept].item(), thresh)
        expected = ce[p < threshold].mean()
        got = ohem_cross_entropy(logits, target, threshold=thresh, min_kept=min_kept)
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ohem_keeps_a_whole_tie_and_an_unlabeled_batch_gives_zero():
    logits = _two_class_logits([0.8] * 4, (2, 2))  # every pixel easy, all tied: mmseg would keep none (NaN)
    loss = ohem_cross_entropy(logits, torch.zeros(1, 2, 2, dtype=torch.long), min_kept=2)
    assert loss.item() == pytest.approx(-math.log(0.8), rel=1e-5)
    assert _kept_pixels(loss, logits) == [0, 1, 2, 3]
    empty = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = ohem_cross_entropy(empty, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0 and empty.grad.abs().sum() == 0
    for bad in [{"threshold": 0}, {"threshold": 1.5}, {"min_kept": 0}]:
        with pytest.raises(ValueError, match="OHEM"):
            ohem_cross_entropy(empty, torch.zeros(1, 2, 2, dtype=torch.long), **bad)


# --- Lovasz-softmax -----------------------------------------------------------------------------------


def test_lovasz_against_the_lovasz_extension_by_hand():
    # one row of 4 pixels, 3 classes; labels 0, 0, 1 and an ignored pixel; class 2 absent (not averaged)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])
    logits = probs.T.reshape(1, 3, 1, 4).log().requires_grad_()
    target = torch.tensor([[[0, 0, 1, 255]]])
    # class c: errors |fg - p_c| sorted descending; the loss is sum_i e_i (D(M_i) - D(M_i-1)), M_i the i
    # largest errors' pixels, D(M) = 1 - |F \ M| / |F u M| the Jaccard loss of foreground F mispredicted as M.
    # class 0: F = {0, 1}, errors 0.2, 0.6, 0.3 -> pixels 1, 2, 0; D = 1/2, 2/3, 1
    class0 = 0.6 * (1 / 2) + 0.3 * (2 / 3 - 1 / 2) + 0.2 * (1 - 2 / 3)
    # class 1: F = {2}, errors 0.1, 0.5, 0.4 -> pixels 1, 2, 0; D = 1/2, 1, 1
    class1 = 0.5 * (1 / 2) + 0.4 * (1 - 1 / 2) + 0.1 * 0
    loss = lovasz_softmax_loss(logits, target)
    assert loss.item() == pytest.approx((class0 + class1) / 2, rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, :, 0, 3].abs().sum() == 0  # ignored: no part


def test_lovasz_is_smps_over_the_batch_not_per_image():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 6, 6), generator=g)
    target[1, :3] = 255
    ours = lovasz_softmax_loss(logits, target)
    smp = LovaszLoss("multiclass", ignore_index=255)(logits, target)  # smp's default: per_image=False
    assert ours.item() == pytest.approx(smp.item(), rel=1e-6)
    per_image = LovaszLoss("multiclass", per_image=True, ignore_index=255)(logits, target)
    assert ours.item() != pytest.approx(per_image.item(), rel=1e-3)
    ours.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1, :, :3].abs().sum() == 0
    empty = torch.zeros(1, 3, 2, 2, requires_grad=True)  # smp gives an empty tensor here; we give 0
    loss = lovasz_softmax_loss(empty, torch.full((1, 2, 2), 255))
    assert loss.shape == () and loss.item() == 0
    loss.backward()


# --- recall loss --------------------------------------------------------------------------------------


def _recall_example():
    # 2 x 3 pixels, 3 classes: labels 0 0 0 / 1 1 255; predictions (argmax) 0 1 0 / 0 1 2
    labels = torch.tensor([[[0, 0, 0], [1, 1, 255]]])
    predicted = torch.tensor([[0, 1, 0], [0, 1, 2]])
    g = torch.Generator().manual_seed(1)
    logits = torch.rand(1, 3, 2, 3, generator=g)
    logits += 2 * F.one_hot(predicted, 3).permute(2, 0, 1)  # the predicted class wins by a margin
    return logits.requires_grad_(), labels


def test_recall_weights_are_one_minus_each_classs_batch_recall():
    logits, labels = _recall_example()
    # class 0: 2 of its 3 pixels predicted 0 (recall 2/3); class 1: 1 of 2 (1/2); class 2 has no labeled
    # pixel (only the ignored one is predicted 2): no weight
    assert recall_weights(logits, labels).tolist() == pytest.approx([1 / 3, 1 / 2, 0.0])
    assert not recall_weights(logits, labels).requires_grad


@pytest.mark.parametrize("normalize, pixels", [("all", 6), ("valid", 5)])
def test_recall_loss_against_its_formula(normalize, pixels):
    logits, labels = _recall_example()
    ce = -logits.detach().log_softmax(1)[0]  # (C,H,W): -log p of every class
    terms = [1 / 3 * ce[0, 0, j] for j in range(3)] + [1 / 2 * ce[1, 1, j] for j in range(2)]
    loss = recall_cross_entropy(logits, labels, normalize=normalize)
    assert loss.item() == pytest.approx(sum(terms).item() / pixels, rel=1e-5)
    loss.backward()
    # the weights carry no gradient: the gradient is that of the CE terms with constant weights
    w = torch.tensor([1 / 3, 1 / 2, 0.0])
    reference = logits.detach().clone().requires_grad_()
    per_pixel = F.cross_entropy(reference, labels, ignore_index=255, reduction="none")
    (per_pixel * w[labels.clamp(max=2)]).sum().div(pixels).backward()
    torch.testing.assert_close(logits.grad, reference.grad)
    assert logits.grad[0, :, 1, 2].abs().sum() == 0  # the ignored pixel


def test_recall_loss_is_zero_when_every_pixel_is_right_and_on_an_unlabeled_batch():
    logits = torch.tensor([[[[3.0, 0.0]], [[0.0, 3.0]]]], requires_grad=True)
    assert recall_cross_entropy(logits, torch.tensor([[[0, 1]]])).item() == 0  # recall 1 everywhere
    loss = recall_cross_entropy(logits, torch.full((1, 1, 2), 255))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


# --- the modes ----------------------------------------------------------------------------------------


def test_the_modes_are_registered_in_their_place_with_their_loss_names():
    assert {m: (MODES[m].order, MODES[m].loss_name, MODES[m].needs) for m in NEW} == {
        "ohem": (50, "OHEM cross-entropy", ()),
        "lovasz": (52, "Lovasz-softmax loss", ("two_classes",)),
        "ce_lovasz": (54, "cross-entropy + Lovasz-softmax", ("two_classes",)),
        "recall": (56, "recall-weighted cross-entropy", ()),
    }
    assert MODES["ce_dice"].order < min(MODES[m].order for m in NEW) < max(MODES[m].order for m in NEW) \
        < MODES["pixel_uncertainty"].order
    assert all(MODES[m].weights is None for m in NEW)
    for mode in ("lovasz", "ce_lovasz"):
        with pytest.raises(UserError, match=f"^mode={mode}: needs at least two classes"):
            check_needs(mode, "built", RunFacts(LossConfig(), ["only"]))


def test_the_modes_read_their_options_from_the_context():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, 5, generator=g)
    target = torch.randint(0, 4, (2, 5, 5), generator=g)
    target[0, 0] = 255

    def run(mode, **options):
        return MODES[mode].loss(ModeContext(mode, LossConfig(**options)), logits, target, None).item()

    assert run("ohem", ohem_threshold=0.4, ohem_min_kept=7) == pytest.approx(
        ohem_cross_entropy(logits, target, threshold=0.4, min_kept=7).item())
    assert run("ohem") == pytest.approx(ohem_cross_entropy(logits, target, threshold=0.7, min_kept=None).item())
    ce = F.cross_entropy(logits, target, ignore_index=255).item()
    lovasz = lovasz_softmax_loss(logits, target).item()
    assert run("lovasz") == pytest.approx(lovasz)
    assert run("ce_lovasz") == pytest.approx(0.5 * ce + 0.5 * lovasz, rel=1e-6)
    assert run("ce_lovasz", lovasz_weight=0.2) == pytest.approx(0.8 * ce + 0.2 * lovasz, rel=1e-6)
    valid = recall_cross_entropy(logits, target, normalize="valid").item()
    assert run("recall", normalize="valid") == pytest.approx(valid)
    assert run("recall") == pytest.approx(recall_cross_entropy(logits, target, normalize="all").item())


def _module(mode, **loss):
    torch.manual_seed(0)
    config = RunConfig(mode=mode, members=[MemberConfig("deeplabv3plus_mobilenet", 1e-3)])
    config.model.pretrained = False
    for key, value in loss.items():
        setattr(config.loss, key, value)
    return EnsembleModule(config, [f"c{i}" for i in range(5)])


EXPECTED = {  # each mode's loss of a member's logits z, written with the functions tested above
    "ohem": lambda z, y: ohem_cross_entropy(z, y, threshold=0.6, min_kept=50),
    "lovasz": lambda z, y: lovasz_softmax_loss(z, y),
    "ce_lovasz": lambda z, y: 0.7 * F.cross_entropy(z, y, ignore_index=255) + 0.3 * lovasz_softmax_loss(z, y),
    "recall": lambda z, y: recall_cross_entropy(z, y),
}


@pytest.mark.parametrize("mode", NEW)
def test_a_training_step_of_each_mode_through_the_ensemble_module(mode):
    module = _module(mode, ohem_threshold=0.6, ohem_min_kept=50, lovasz_weight=0.3)
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (2, 32, 32), generator=g)
    label[:, :4] = 255
    batch = {"image": torch.randn(2, 3, 32, 32, generator=g), "label": label, "name": ["a", "b"]}
    state = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    module.load_state_dict(state)
    torch.manual_seed(1)  # the same dropout in both forwards
    z = module.members[0](batch["image"])
    assert loss.item() == pytest.approx(EXPECTED[mode](z, label).item(), rel=1e-5)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny runs' config: two MobileNetV2 members, 6 synthetic training scenes at 32x32, one cache."""
    return tiny_config(tmp_path_factory.mktemp("baselines"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", NEW)
def test_each_mode_trains_end_to_end_and_resumes_exactly(base, tmp_path, mode):
    args = (f"mode={mode}", "trainer.max_steps=5", "val_every=3")
    whole = train(load_config(base, [f"out={tmp_path / 'whole'}", *args]), progress=False)
    assert whole["mode"] == mode and whole["steps"] == 5
    assert 0 <= whole["results"]["ensemble"]["miou"] <= 1
    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        train(load_config(base, [f"out={out}", *args]), callbacks=[CrashAt(4)], progress=False)
    resumed = train(load_config(base, [f"out={out}", *args, "resume=true"]), progress=False)
    assert resumed == {**whole, "experiment": resumed["experiment"]}
    a = torch.load(tmp_path / "whole" / "checkpoints" / "best_ensemble.ckpt", weights_only=True)["state_dict"]
    b = torch.load(out / "checkpoints" / "best_ensemble.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
