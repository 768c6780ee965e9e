"""The LightningModule's numbers against the method's formulas, computed here independently."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from iwu.config.schema import MemberConfig, RunConfig
from iwu.engine.ensemble import EnsembleModule, member_names
from iwu.method.losses import class_weights_from_counts
from iwu.method.uncertainty import instance_uncertainty

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
CLASSES = [f"c{i}" for i in range(5)]


def _module(mode="instance_uncertainty", members=2, **kwargs):
    torch.manual_seed(0)
    config = RunConfig(mode=mode, members=[MemberConfig("deeplabv3plus_mobilenet", 1e-3)] * members)
    config.model.pretrained = False
    return EnsembleModule(config, CLASSES, **kwargs)


def _batch(seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, len(CLASSES), (2, size, size), generator=g)
    label[:, :5] = 255
    return {"image": torch.randn(2, 3, size, size, generator=g), "label": label, "name": ["a", "b"]}


def test_member_names_number_repeated_models():
    assert member_names(["a", "b", "a", "a"]) == ["a_0", "b", "a_1", "a_2"]
    assert member_names(["x"]) == ["x"]


def test_backbone_batchnorm_momentum_comes_from_the_config():
    torch.manual_seed(0)
    config = RunConfig(mode="standard", members=[MemberConfig("deeplabv3plus_mobilenet", 1e-3)])
    config.model.pretrained, config.model.bn_momentum = False, 0.05  # not the builder's own 0.01
    module = EnsembleModule(config, CLASSES)
    backbone = {m.momentum for m in module.members[0].backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    head = {m.momentum for m in module.members[0].classifier.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert backbone == {0.05} and head == {0.1}  # the paper sets it on the backbone only


def test_channels_last_switch_puts_weights_and_inputs_in_that_layout():
    module = _module("standard", members=1)
    module.config.trainer.channels_last = True
    module.configure_model()
    convs = [m.weight for m in module.members.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.dim() == 4
             and m.weight.shape[-1] > 1 and m.weight.shape[1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    seen = []
    module.members[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    module(_batch()["image"])
    assert seen[0].is_contiguous(memory_format=torch.channels_last)


def _by_hand(module, batch, weight_of):
    """Each member's loss from the formulas of docs/method.md, section 1, on a copy of the module's state."""
    state = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(1)  # the same dropout as the module's step below
    logits = [m(batch["image"]) for m in module.members]
    module.load_state_dict(state)  # the forward above moved the BatchNorm statistics; put them back
    probs = torch.stack([z.softmax(1) for z in logits]).mean(0)
    entropy = -(probs * torch.log(probs + 1e-10)).sum(1)
    u = torch.as_tensor(instance_uncertainty(probs.argmax(1).numpy(), entropy.detach().numpy()))
    loss = sum(weight_of(z, batch["label"], u) for z in logits)
    torch.manual_seed(1)
    return loss


def _weighted_ce(z, y, u):
    ce = F.cross_entropy(z, y, ignore_index=255, reduction="none")
    return (ce * (1 + u) ** 2).sum() / y.numel()  # ignored pixels count in the mean


@pytest.mark.parametrize(
    ("mode", "formula"),
    [
        ("instance_uncertainty", _weighted_ce),
        ("standard", lambda z, y, u: F.cross_entropy(z, y, ignore_index=255)),
        ("focal", lambda z, y, u: (((1 - torch.exp(-(ce := F.cross_entropy(z, y, ignore_index=255, reduction="none"))))
                                    ** 2 * ce).sum() / y.numel())),
    ],
)
def test_training_loss_is_the_sum_of_the_members_losses(mode, formula):
    module = _module(mode)
    batch = _batch()
    expected = _by_hand(module, batch, formula)
    assert module.training_step(batch, 0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_class_weighted_loss():
    counts = torch.tensor([1000.0, 100, 10, 1, 0])
    module = _module("class_weighted", class_weights=class_weights_from_counts(counts))
    batch = _batch()
    w = class_weights_from_counts(counts)
    expected = _by_hand(module, batch, lambda z, y, u: F.cross_entropy(z, y, weight=w, ignore_index=255))
    assert module.training_step(batch, 0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_offline_masks_weight_by_the_mask_each_item_carries():
    module = _module("offline_masks", members=1)  # the store is read by the data, not here
    batch = _batch()
    batch["mask"] = torch.stack([torch.linspace(0, 1, 32).repeat(32, 1), torch.linspace(1, 2, 32).repeat(32, 1).T])
    expected = _by_hand(module, batch, lambda z, y, u: _weighted_ce(z, y, batch["mask"]))
    assert module.training_step(batch, 0).item() == pytest.approx(expected.item(), rel=1e-5)
    del batch["mask"]
    with pytest.raises(ValueError, match="carries no `mask`"):
        module.training_step(batch, 0)


def test_a_non_finite_step_leaves_batchnorm_statistics_as_they_were():
    from iwu.engine.ensemble import NonFiniteLoss

    module = _module("standard", members=1)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    batch = _batch()
    batch["image"][0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteLoss, match="step 1, member deeplabv3plus_mobilenet: the loss is nan"):
        module.training_step(batch, 0)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_validation_scores_members_and_the_mean_of_softmaxes_from_one_pass():
    from iwu.method.metrics import confusion_matrix, iou_from_confusion

    module = _module("standard", members=2)
    batches = [_batch(seed) for seed in range(3)]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    items = [{"image": b["image"][i], "label": b["label"][i]} for b in batches for i in range(2)]
    trainer.validate(module, torch.utils.data.DataLoader(items, batch_size=2), verbose=False)
    module.eval()
    with torch.no_grad():
        outputs = [[m(b["image"]) for m in module.members] for b in batches]
    predictions = {
        "deeplabv3plus_mobilenet_0": [z[0].argmax(1) for z in outputs],
        "deeplabv3plus_mobilenet_1": [z[1].argmax(1) for z in outputs],
        "ensemble": [(z[0].softmax(1) + z[1].softmax(1)).argmax(1) for z in outputs],
    }
    for name, preds in predictions.items():
        matrix = sum(confusion_matrix(p, b["label"], len(CLASSES)) for p, b in zip(preds, batches))
        iou, miou = iou_from_confusion(matrix)
        got_iou, got_miou = module.latest["val"][name]
        assert got_iou == pytest.approx(iou.tolist()) and got_miou == pytest.approx(miou)
        assert trainer.callback_metrics[f"val/{name}/miou"].item() == pytest.approx(miou)


def test_the_logged_uncertainty_is_the_pixels_mean_and_each_images_most_uncertain_instance(monkeypatch):
    from iwu.method.uncertainty import uncertainty_of

    module = _module()
    logged = {}
    monkeypatch.setattr(module, "log", lambda key, value, **_: logged.__setitem__(key, float(value)))
    probs = torch.softmax(torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), dim=2)
    found = uncertainty_of(probs)
    module.log_uncertainty([found])
    # spread over its pixels, each instance's mean adds up to the pixels' mean: the same number twice
    assert found.instance.mean().item() == pytest.approx(found.pixel.mean().item(), rel=1e-5)
    assert logged["train/pixel_entropy"] == pytest.approx(found.pixel.mean().item())
    per_image = [found.instance[b].max().item() for b in range(2)]
    assert logged["train/most_uncertain_instance"] == pytest.approx(sum(per_image) / 2)
    assert logged["train/instances_per_image"] == pytest.approx(found.num_instances.float().mean().item())
