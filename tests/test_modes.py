"""Training modes as one registry: the paper's defaults unchanged, the new modes against their formulas,
MC dropout, a user's own mode, bad input, and modes on a context built by hand (no Lightning) with the
one check of what they need."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from iwu.cli import main
from iwu.config.schema import LossConfig, MemberConfig, RunConfig, load_config
from iwu.engine.ensemble import EnsembleModule
from iwu.errors import UserError
from iwu.method.losses import dice_loss, uncertainty_weighted_cross_entropy
from iwu.method.modes import MODES, NEEDS, Mode, ModeContext, RunFacts, check_needs
from iwu.report.groups import _order
from iwu.engine.train import train
from iwu.method.uncertainty import label_instances, pixel_entropy, uncertainty_of
from crashing import Crash, CrashAt

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
FIXTURE = Path(__file__).parent / "fixtures" / "modes_before_registry"
HELPERS = Path(__file__).parent / "helpers"
CLASSES = [f"c{i}" for i in range(5)]


def _fixture_module():
    spec = importlib.util.spec_from_file_location("modes_fixture", FIXTURE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["instance_uncertainty", "focal"])
def test_a_config_naming_no_new_option_trains_exactly_as_before(tmp_path, mode):
    before = json.loads((FIXTURE / "weights.json").read_text())[mode]
    now = _fixture_module().weights_after_three_steps(tmp_path, mode)
    assert now.keys() == before.keys()
    for key, sums in now.items():
        assert sums == pytest.approx(before[key], rel=1e-9, abs=1e-12), key


def test_pixel_and_instance_weights_differ_exactly_where_instances_have_several_pixels():
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(2, 1, 4, 6, 7, generator=g).softmax(dim=2)  # two members
    found = uncertainty_of(probs)
    labels, _ = label_instances(probs.mean(0).argmax(1))
    single = torch.bincount(labels.flatten())[labels] == 1  # pixels alone in their instance
    assert single.any() and not single.all()
    assert torch.equal(found.pixel[single], found.instance[single])
    assert (found.pixel[~single] != found.instance[~single]).all()  # random entropies: never all equal
    logits, target = torch.randn(1, 4, 6, 7, generator=g), torch.randint(0, 4, (1, 6, 7), generator=g)
    by_pixel = uncertainty_weighted_cross_entropy(logits, target, found.pixel, exponent=2)
    by_instance = uncertainty_weighted_cross_entropy(logits, target, found.instance, exponent=2)
    assert by_pixel != by_instance


@pytest.mark.parametrize("normalize", ["all", "valid"])
@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.5])
def test_weighted_cross_entropy_with_any_exponent(normalize, exponent):
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)  # every CE is log 2
    target = torch.tensor([[[0, 1], [1, 255]]])
    u = torch.tensor([[[0.5, 0.0], [1.0, 7.0]]])
    loss = uncertainty_weighted_cross_entropy(logits, target, u, exponent=exponent, normalize=normalize)
    terms = [1.5 ** exponent, 1.0, 2.0 ** exponent]
    assert loss.item() == pytest.approx(math.log(2) * sum(terms) / (4 if normalize == "all" else 3), rel=1e-6)
    loss.backward()  # d CE / d z_y = p_y - 1 = -1/2 at equal logits, weighted; the ignored pixel gets none
    denominator = 4 if normalize == "all" else 3
    assert logits.grad[0, 0, 0, 0].item() == pytest.approx(-0.5 * terms[0] / denominator, rel=1e-6)
    assert logits.grad[0, :, 1, 1].abs().sum().item() == 0
    with pytest.raises(ValueError, match="exponent"):
        uncertainty_weighted_cross_entropy(logits, target, u, exponent=-1)


def test_dice_against_its_formula_with_ignored_pixels_and_absent_classes():
    logits = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]],
                          requires_grad=True)  # 3 classes, class 2 absent from the labels
    target = torch.tensor([[[0, 1], [1, 255]]])
    p = logits.detach().softmax(1)[0]
    valid = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    y = [torch.tensor([[1.0, 0], [0, 0]]), torch.tensor([[0.0, 1], [1, 0]])]
    dice = [(2 * (p[c] * y[c] * valid).sum() + 1e-6) / ((p[c] * valid).sum() + y[c].sum() + 1e-6) for c in (0, 1)]
    loss = dice_loss(logits, target)
    assert loss.item() == pytest.approx(1 - (dice[0] + dice[1]).item() / 2, rel=1e-6)
    loss.backward()
    assert logits.grad[0, :, 1, 1].abs().sum().item() == 0  # the ignored pixel takes no part
    assert dice_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 255)).item() == 0  # nothing labeled: 0, not NaN


def _module(mode="standard", members=("deeplabv3plus_mobilenet",), classes=CLASSES, **loss):
    torch.manual_seed(0)
    config = RunConfig(mode=mode, members=[MemberConfig(name, 1e-3) for name in members])
    config.model.pretrained = False
    for key, value in loss.items():
        setattr(config.loss, key, value)
    return EnsembleModule(config, classes)


def _batch(size=32):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, len(CLASSES), (2, size, size), generator=g)
    label[:, :4] = 255
    return {"image": torch.randn(2, 3, size, size, generator=g), "label": label, "name": ["a", "b"]}


def test_ce_dice_mixes_as_the_published_hybrid():
    module = _module("ce_dice", dice_weight=0.3)
    batch = _batch()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    module.load_state_dict(state)
    torch.manual_seed(1)
    z = module.members[0](batch["image"])
    expected = 0.7 * F.cross_entropy(z, batch["label"], ignore_index=255) + 0.3 * dice_loss(z, batch["label"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["mutual_information", "predicted_std"])
def test_the_uncertainty_kinds(kind):
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(3, 2, 4, 5, 5, generator=g).softmax(dim=2)
    found = uncertainty_of(probs, kind)
    mean = probs.mean(0)
    if kind == "mutual_information":
        expected = pixel_entropy(mean) - torch.stack([pixel_entropy(p) for p in probs]).mean(0)
    else:
        chosen = torch.stack([p.gather(1, mean.argmax(1, keepdim=True)).squeeze(1) for p in probs])
        expected = chosen.std(dim=0)
    torch.testing.assert_close(found.pixel, expected.clamp_min(0))


def test_mc_dropout_uncertainty_has_no_gradient_keeps_batchnorm_and_repeats_for_a_seed():
    module = _module("pixel_uncertainty", members=("deeplabv3plus_mobilenet", "deeplabv3plus_mobilenet"),
                     source="mc_dropout", mc_samples=3)
    batch = _batch()
    buffers = [b.clone() for b in module.members.buffers()]
    torch.manual_seed(7)
    first = MODES["pixel_uncertainty"].weights(module.mode_context(), batch, [])
    assert all(torch.equal(a, b) for a, b in zip(buffers, module.members.buffers()))  # statistics untouched
    assert isinstance(first, list) and len(first) == 2 and not any(u.requires_grad for u in first)
    assert not torch.equal(first[0], first[1])  # each member from its own passes
    torch.manual_seed(7)
    again = MODES["pixel_uncertainty"].weights(module.mode_context(), batch, [])
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert module.training_step(batch, 0).isfinite()


def test_a_users_mode_from_its_own_module_trains_and_reports_in_its_place(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HELPERS))
    config = {"experiment": "own", "members": [{"name": "deeplabv3plus_mobilenet", "lr": 1e-3}],
              "model": {"pretrained": False}, "val_every": 2,
              "data": {"kind": "cityscapes", "root": str(tmp_path / "scenes"), "size": 32,
                       "cache_dir": str(tmp_path / "cache"), "synthetic": {"n_train": 4, "n_val": 1, "width": 64}},
              "trainer": {"max_steps": 2, "accelerator": "cpu"}}
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "own.yaml"), "mode=sqrt_uncertainty", f"out={tmp_path / 'run'}",
                 "--import", "user_modes", "--no-progress"]) == 0
    assert json.loads((tmp_path / "run" / "final.json").read_text())["mode"] == "sqrt_uncertainty"
    order = sorted(["instance_uncertainty", "sqrt_uncertainty", "standard", "pixel_uncertainty", "dice"],
                   key=lambda m: _order("mode", m))
    assert order == ["standard", "dice", "pixel_uncertainty", "instance_uncertainty", "sqrt_uncertainty"]


@pytest.mark.parametrize("overrides", [
    ["mode=pixel_uncertainty"], ["mode=dice"], ["mode=ce_dice"],
    ["mode=instance_uncertainty", "loss.source=mc_dropout", "loss.mc_samples=2", "loss.uncertainty=predicted_std"],
])
def test_every_new_mode_trains_end_to_end(tmp_path, overrides):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "experiment": "tiny", "members": [{"name": "deeplabv3plus_mobilenet", "lr": 1e-3}],
        "model": {"pretrained": False}, "val_every": 2,
        "data": {"kind": "cityscapes", "root": str(tmp_path / "scenes"), "size": 32,
                 "cache_dir": str(tmp_path / "cache"), "synthetic": {"n_train": 4, "n_val": 1, "width": 64}},
        "trainer": {"max_steps": 2, "accelerator": "cpu"}}))
    final = train(load_config(config, [f"out={tmp_path / 'run'}", *overrides]), progress=False)
    assert 0 <= final["results"]["ensemble"]["miou"] <= 1


def test_bad_options_are_one_line_errors_before_training():
    for overrides, needle in [(["loss.exponent=-1"], "loss.exponent: expected a number >= 0"),
                              (["loss.mc_samples=1"], "loss.mc_samples: expected an integer >= 2"),
                              (["loss.dice_weight=2"], "loss.dice_weight: expected a number in [0, 1]"),
                              (["mode=pixel_uncertanty"], "did you mean pixel_uncertainty")]:
        with pytest.raises(UserError) as info:
            load_config(Path(__file__).parent.parent / "configs" / "demo.yaml", overrides)
        assert needle in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="loss.source=mc_dropout: member smp:Unet has no dropout"):
        _module("instance_uncertainty", members=("smp:Unet",), source="mc_dropout")
    with pytest.raises(UserError, match="mode=dice: needs at least two classes"):
        _module("dice", classes=["only"])


def test_the_ablation_sweeps_plan_every_combination(capsys):
    root = Path(__file__).parent.parent / "configs" / "ablations"
    for config, extra, runs in [("cityscapes.yaml", ["data.root=/data/cs"], 2 * 2 * 2 * 2),
                                ("synthetic.yaml", [], 2 * 2 * 2 * 2)]:
        assert main(["sweep", str(root / config), "--seeds", "2", "--modes", "pixel_uncertainty,instance_uncertainty",
                     "loss.source=ensemble,mc_dropout", "loss.exponent=1,2", *extra, "--dry-run"]) == 0
        assert f"iwu sweep: {runs} runs under" in capsys.readouterr().out
    config = load_config(root / "cityscapes.yaml", ["data.root=/data/cs"])
    assert [m.args for m in config.members] == [{"dropout": 0.1}, {"dropout": 0.1}, {}]


@pytest.mark.slow
def test_mc_dropout_and_dice_runs_resume_exactly(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "experiment": "tiny", "members": [{"name": "deeplabv3plus_mobilenet", "lr": 1e-3}] * 2,
        "model": {"pretrained": False}, "val_every": 2,
        "data": {"kind": "cityscapes", "root": str(tmp_path / "scenes"), "size": 32,
                 "cache_dir": str(tmp_path / "cache"), "synthetic": {"n_train": 6, "n_val": 1, "width": 64}},
        "trainer": {"max_steps": 5, "accelerator": "cpu"}}))
    for overrides in (["mode=pixel_uncertainty", "loss.source=mc_dropout", "loss.mc_samples=2"], ["mode=ce_dice"]):
        name = overrides[0].split("=")[1]
        whole = train(load_config(config, [f"out={tmp_path / name / 'whole'}", *overrides]), progress=False)
        out = tmp_path / name / "resumed"
        with pytest.raises(Crash):
            train(load_config(config, [f"out={out}", *overrides]), callbacks=[CrashAt(3)], progress=False)
        resumed = train(load_config(config, [f"out={out}", *overrides, "resume=true"]), progress=False)
        assert resumed == whole, name


def test_pixel_uncertainty_trains_on_the_ensembles_pixel_entropy_with_exponent_1():
    module = _module("pixel_uncertainty", members=("deeplabv3plus_mobilenet", "deeplabv3plus_mobilenet"))
    batch = _batch()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(1)  # the same dropout in both forwards
    loss = module.training_step(batch, 0)
    module.load_state_dict(state)
    torch.manual_seed(1)
    logits = [m(batch["image"]) for m in module.members]
    h = pixel_entropy(torch.stack([z.softmax(1) for z in logits]).mean(0)).detach()
    ce = [F.cross_entropy(z, batch["label"], ignore_index=255, reduction="none") for z in logits]
    expected = sum((c * (1 + h)).sum() / c.numel() for c in ce)  # no instance averaging; ignored pixels count
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# --- a mode on its own: a context by hand, no LightningModule ---------------------------------------


def _context(mode, **loss):
    return ModeContext(mode, LossConfig(**loss))


def test_a_weighted_modes_loss_on_a_hand_built_context():
    logits = torch.zeros(1, 2, 2, 2)  # every CE is log 2
    target = torch.tensor([[[0, 1], [1, 255]]])
    u = torch.tensor([[[0.5, 0.0], [1.0, 7.0]]])
    log2 = math.log(2)
    # instance_uncertainty: the paper's (1 + U)^2, the mean over all pixels (the ignored one adds 0)
    loss = MODES["instance_uncertainty"].loss(_context("instance_uncertainty"), logits, target, u)
    assert loss.item() == pytest.approx(log2 * (1.5 ** 2 + 1 + 2 ** 2) / 4, rel=1e-6)
    # pixel_uncertainty: U-CE's exponent 1, over the labeled pixels; loss.exponent overrides a mode's own
    loss = MODES["pixel_uncertainty"].loss(_context("pixel_uncertainty", normalize="valid"), logits, target, u)
    assert loss.item() == pytest.approx(log2 * (1.5 + 1 + 2) / 3, rel=1e-6)
    loss = MODES["pixel_uncertainty"].loss(_context("pixel_uncertainty", exponent=0.0), logits, target, u)
    assert loss.item() == pytest.approx(log2 * 3 / 4, rel=1e-6)


def test_class_weighted_and_ce_dice_losses_on_a_hand_built_context():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1,2,1,2): pixel 0 says class 0, pixel 1 class 1
    target = torch.tensor([[[0, 1]]])
    ce = [-math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(math.exp(1) / (math.exp(1) + 1))]
    ctx = ModeContext("class_weighted", LossConfig(), class_weights=torch.tensor([1.0, 3.0]))
    assert MODES["class_weighted"].loss(ctx, logits, target, None).item() == pytest.approx(
        (1 * ce[0] + 3 * ce[1]) / 4, rel=1e-6)
    p = [math.exp(2) / (math.exp(2) + 1), math.exp(1) / (math.exp(1) + 1)]  # each pixel's own class
    # per class c: (2 p_c + s) / (sum of its probabilities + 1 + s), s = 1e-6 negligible here
    dice = [2 * p[0] / (p[0] + (1 - p[1]) + 1), 2 * p[1] / ((1 - p[0]) + p[1] + 1)]
    expected = 0.75 * sum(ce) / 2 + 0.25 * (1 - sum(dice) / 2)
    loss = MODES["ce_dice"].loss(_context("ce_dice", dice_weight=0.25), logits, target, None)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _entropy(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_uncertainty_weights_on_a_hand_built_context_and_what_they_log():
    # two members, one image of 1 x 3 pixels, two classes; the mean says class 0, 0, 1: two instances
    p0 = [torch.tensor([0.9, 0.7, 0.2]), torch.tensor([0.9, 0.5, 0.4])]  # each member's P(class 0)
    logits = [torch.stack([p, 1 - p]).log().reshape(1, 2, 1, 3) for p in p0]
    h = [_entropy(0.9), _entropy(0.6), _entropy(0.3)]
    logged = []
    for mode, expected in [("pixel_uncertainty", h), ("instance_uncertainty", [(h[0] + h[1]) / 2] * 2 + [h[2]])]:
        ctx = ModeContext(mode, LossConfig(), log_uncertainty=logged.append)
        u = MODES[mode].weights(ctx, {"label": torch.zeros(1, 1, 3, dtype=torch.long)}, logits)
        assert u.shape == (1, 1, 3) and u.flatten().tolist() == pytest.approx(expected, rel=1e-5)
    assert len(logged) == 2 and all(len(found) == 1 for found in logged)  # the ensemble's: one
    assert logged[1][0].num_instances.tolist() == [2]
    assert MODES["standard"].weights is None


def test_mc_dropout_weights_sample_the_contexts_own_members():
    torch.manual_seed(0)
    members = (torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Dropout2d(0.5)),
               torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Dropout2d(0.5)))
    ctx = ModeContext("pixel_uncertainty", LossConfig(source="mc_dropout", mc_samples=3), members=members)
    batch = {"image": torch.randn(1, 3, 4, 4)}
    torch.manual_seed(5)
    maps = MODES["pixel_uncertainty"].weights(ctx, batch, [])
    torch.manual_seed(5)
    for member, u in zip(members, maps):  # the members' passes in order, three each
        probs = torch.stack([member(batch["image"]).softmax(dim=1) for _ in range(3)])
        torch.testing.assert_close(u, pixel_entropy(probs.mean(0)))
    assert len(maps) == 2 and not torch.equal(maps[0], maps[1])


def test_every_need_is_one_entry_and_a_missing_one_is_refused_by_the_one_check(monkeypatch):
    assert list(NEEDS) == ["class_weights", "masks", "dropout", "two_classes"]
    assert {need.when for need in NEEDS.values()} == {"built", "training"}
    classes = ["a", "b", "c"]
    # the training data's needs: refused before training, not when a trained run is built to load
    with pytest.raises(ValueError, match="^class_weighted mode needs class_weights, one per class$"):
        check_needs("class_weighted", "training", RunFacts(LossConfig(), classes))
    with pytest.raises(ValueError, match="one per class"):
        check_needs("class_weighted", "training", RunFacts(LossConfig(), classes, class_weights=torch.ones(2)))
    check_needs("class_weighted", "training", RunFacts(LossConfig(), classes, class_weights=torch.ones(3)))
    check_needs("class_weighted", "built", RunFacts(LossConfig(), classes))
    with pytest.raises(UserError, match="^loss.masks_dir: offline_masks mode needs the folder written by `iwu masks"):
        check_needs("offline_masks", "training", RunFacts(LossConfig(), classes))
    check_needs("offline_masks", "training", RunFacts(LossConfig(masks_dir="masks"), classes))
    check_needs("offline_masks", "built", RunFacts(LossConfig(), classes))
    # the members' and classes' needs
    plain, dropping = torch.nn.Conv2d(3, 2, 1), torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Dropout(0.1))
    sampled = LossConfig(source="mc_dropout")
    with pytest.raises(UserError, match="^loss.source=mc_dropout: member b has no dropout to sample"):
        check_needs("instance_uncertainty", "built", RunFacts(sampled, classes, {"a": dropping, "b": plain}))
    check_needs("instance_uncertainty", "built", RunFacts(sampled, classes, {"a": dropping}))
    check_needs("instance_uncertainty", "built", RunFacts(LossConfig(), classes, {"b": plain}))  # the ensemble's
    check_needs("dice", "built", RunFacts(sampled, classes, {"b": plain}))  # weights of its own: no sampling
    monkeypatch.setitem(MODES, "sampling", Mode("sampling", MODES["standard"].loss, None, ("dropout",), 1.0, None))
    with pytest.raises(UserError, match="^mode=sampling: member b has no dropout to sample"):
        check_needs("sampling", "built", RunFacts(LossConfig(), classes, {"b": plain}))
    with pytest.raises(UserError, match="^mode=dice: needs at least two classes; this dataset has 1$"):
        check_needs("dice", "built", RunFacts(LossConfig(), ["only"]))
    check_needs("dice", "training", RunFacts(LossConfig(), ["only"]))


def test_class_weighted_without_weights_says_what_it_needs():
    import torch

    from iwu.config.schema import LossConfig
    from iwu.method.modes import MODES, ModeContext

    ctx = ModeContext("class_weighted", LossConfig())
    with pytest.raises(ValueError, match="class_weighted mode needs class_weights, one per class"):
        MODES["class_weighted"].loss(ctx, torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), None)
