"""Optimizer groups and the poly schedule, checked against the paper's formula."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iwu.errors import UserError
from iwu.engine.optim import build_optimizer, param_groups, poly_lr

SETTINGS = dict(weight_decay=1e-4, backbone_lr_scale=0.1, poly_power=0.9, min_lr=1e-6)


class Tiny(nn.Module):
    """A two-part segmentation model, small enough for fast tests."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.classifier = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.classifier(self.backbone(x))


def paper_lr(base: float, it: int, max_it: int) -> float:
    # docs/method.md, section 1, written out independently of iwu.engine.optim
    return max(base * (1 - min(it, max_it) / max_it) ** 0.9, 1e-6)


def test_poly_lr_values():
    assert poly_lr(1e-3, 0, 100) == 1e-3
    assert poly_lr(1e-3, 50, 100) == pytest.approx(1e-3 * 0.5**0.9, rel=1e-12)
    assert poly_lr(1e-3, 100, 100) == 1e-6
    assert poly_lr(1e-3, 500, 100) == 1e-6  # clamped, never negative or complex
    assert poly_lr(1e-4, 99, 100) == pytest.approx(1e-4 * 0.01**0.9, rel=1e-12)  # floor not yet binding
    assert poly_lr(1e-5, 99, 100) == 1e-6  # 1e-5 * 0.01**0.9 ~ 1.6e-7 < floor


def test_every_group_follows_the_formula_at_chosen_iterations():
    max_steps = 100
    optimizer, scheduler = build_optimizer([Tiny(0), Tiny(1)], [1e-4, 1e-3], max_steps=max_steps, **SETTINGS)
    names = [g["name"] for g in optimizer.param_groups]
    assert names == ["member0/backbone", "member0/head", "member1/backbone", "member1/head"]
    bases = [g["base_lr"] for g in optimizer.param_groups]
    assert bases == pytest.approx([1e-5, 1e-4, 1e-4, 1e-3], rel=1e-12)  # backbones at 0.1x

    checkpoints = {0, 1, 50, max_steps - 1, max_steps, max_steps + 20}
    for it in range(max(checkpoints) + 1):
        if it in checkpoints:
            for group, base in zip(optimizer.param_groups, bases):
                assert group["lr"] == pytest.approx(paper_lr(base, it, max_steps), rel=1e-12, abs=0), (it, group["name"])
        if it == max_steps - 1:  # the absolute floor binds for the small backbone rate, not the largest head
            assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6, rel=1e-12)
            assert optimizer.param_groups[3]["lr"] > 1e-5
        optimizer.step()  # no gradients: changes nothing, but keeps the step order torch expects
        scheduler.step()


def test_groups_partition_the_parameters():
    members = [Tiny(0), Tiny(1), Tiny(2)]
    groups = param_groups(members, [1e-4, 1e-4, 1e-3])
    grouped = [id(p) for g in groups for p in g["params"]]
    every = [id(p) for m in members for p in m.parameters()]
    assert len(grouped) == len(set(grouped)) == len(every)
    assert set(grouped) == set(every)
    for g, m in zip(groups[0::2], members):
        assert {id(p) for p in g["params"]} == {id(p) for p in m.backbone.parameters()}


def test_a_model_without_a_backbone_trains_as_one_group():
    plain = nn.Conv2d(3, 3, 1)
    groups = param_groups([Tiny(), plain], [1e-4, 1e-3])
    assert [g["name"] for g in groups] == ["member0/backbone", "member0/head", "member1/all"]
    assert groups[-1]["lr"] == 1e-3 and {id(p) for p in groups[-1]["params"]} == {id(p) for p in plain.parameters()}


def test_parameters_outside_the_backbone_train_with_the_head():
    model = Tiny()
    model.extra = nn.Linear(2, 2)  # e.g. torchvision's aux_classifier
    backbone, head = param_groups([model], [1e-4])
    assert {id(p) for p in head["params"]} == {id(p) for p in [*model.classifier.parameters(),
                                                                 *model.extra.parameters()]}
    assert head["lr"] == 1e-4 and backbone["lr"] == pytest.approx(1e-5)


class OwnGroups(Tiny):
    def __init__(self, leave_out=False):
        super().__init__()
        self.leave_out = leave_out

    def param_groups(self, lr):
        groups = [{"params": self.backbone[0].parameters(), "lr": lr / 100, "name": "stem"},
                  {"params": [*self.backbone[1].parameters(), *self.classifier.parameters()], "lr": lr}]
        return groups[1:] if self.leave_out else groups


def test_a_model_may_choose_its_groups_but_not_leave_parameters_out():
    stem, rest = param_groups([OwnGroups()], [1e-3])
    assert (stem["name"], stem["lr"], rest["name"], rest["lr"]) == ("member0/stem", 1e-5, "member0/group1", 1e-3)
    with pytest.raises(UserError, match=r"member 0 \(OwnGroups\): param_groups leaves out backbone\.0\.weight"):
        param_groups([OwnGroups(leave_out=True)], [1e-3])


@pytest.mark.parametrize("name, args, backbone", [
    ("smp:Unet", {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]}, "encoder"),
    ("torchvision:lraspp_mobilenet_v3_large", {}, "backbone"),
    ("torchvision:fcn_resnet50", {"aux_loss": True}, "backbone"),
])
def test_every_family_splits_into_its_backbone_and_the_rest(name, args, backbone):
    from iwu.models import build_model

    model = build_model(name, 4, pretrained=False, args=args)
    groups = param_groups([model], [1e-3])
    assert [g["name"] for g in groups] == ["member0/backbone", "member0/head"]
    inside = {id(p) for p in getattr(model, backbone).parameters()}
    assert {id(p) for p in groups[0]["params"]} == inside and groups[0]["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.parameters()} - inside
    assert groups[1]["lr"] == 1e-3 and groups[1]["params"]


def test_a_member_given_twice_is_a_user_error():
    model = Tiny()
    with pytest.raises(UserError, match="member 1 .*shares parameters"):
        param_groups([model, model], [1e-4, 1e-4])


def test_one_adam_on_the_summed_loss_equals_one_adam_per_member():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    y[0, :2] = 255
    joint = [Tiny(0), Tiny(1)]
    alone = copy.deepcopy(joint)
    lrs = [1e-2, 1e-1]  # large, so the steps move the weights visibly

    optimizer, scheduler = build_optimizer(joint, lrs, max_steps=5, **SETTINGS)
    own = [build_optimizer([m], [lr], max_steps=5, **SETTINGS) for m, lr in zip(alone, lrs)]
    for _ in range(3):
        optimizer.zero_grad()
        sum(F.cross_entropy(m(x), y, ignore_index=255) for m in joint).backward()
        optimizer.step()
        scheduler.step()
        for m, (opt, sched) in zip(alone, own):
            opt.zero_grad()
            F.cross_entropy(m(x), y, ignore_index=255).backward()
            opt.step()
            sched.step()

    start = Tiny(0).state_dict()
    assert not torch.allclose(joint[0].classifier.weight, start["classifier.weight"])  # it did train
    for a, b in zip(joint, alone):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
