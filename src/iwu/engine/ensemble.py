"""The LightningModule: M members trained jointly in a mode of iwu.method.modes, validated in one pass.

A training step runs every member on the batch, turns the members' logits into
per-pixel weights as the mode says (the ensemble's instance uncertainty, stored
masks, or none), and returns the sum of the members' losses: one Adam with a
group per (member, part) then steps each member exactly as its own Adam would
(iwu.engine.optim). Validation runs each member once per batch and scores every member
and the ensemble (mean of softmaxes) from those same logits.
"""

from __future__ import annotations

from collections import Counter

import lightning as L
import torch
from torch import nn

from iwu.config.schema import RunConfig
from iwu.constants import ENSEMBLE
from iwu.errors import UserError
from iwu.method.metrics import confusion_matrices, iou_from_confusion
from iwu.method.modes import MODES, ModeContext, RunFacts, check_needs
from iwu.models import MODELS_REVISION, build_model, set_bn_momentum
from iwu.models.parts import backbone_of, check_logits, logits_and_aux
from iwu.engine.optim import build_optimizer

AUX_WEIGHT = 0.4


class NonFiniteLoss(UserError):
    """A member's loss became NaN or infinite; the run stops (its message names step and member)."""

    def __init__(self, step: int, member: str, value: float):
        super().__init__(f"step {step}, member {member}: the loss is {value}; the run stopped")
        self.step, self.member = step, member


def member_names(names: list[str]) -> list[str]:
    """Registry names, numbered where the same model appears more than once (`..._mobilenet_0`)."""
    counts = Counter(names)
    seen: Counter = Counter()
    out = []
    for name in names:
        out.append(f"{name}_{seen[name]}" if counts[name] > 1 else name)
        seen[name] += 1
    return out


class EnsembleModule(L.LightningModule):
    """Members, mode and optimisation of a `RunConfig`.

    `class_weights` (C,) is needed by `class_weighted`; `offline_masks` takes its
    masks from the batch (`SegmentationDataModule.use_masks`); `val_names` labels
    the validation loaders in order (the first chooses the best checkpoints).
    """

    def __init__(self, config: RunConfig, classes, *, class_weights=None, val_names=("val",)):
        super().__init__()
        self.config = config
        self.classes = tuple(classes)
        self.mode = config.mode
        self.names = member_names([m.name for m in config.members])
        self.members = nn.ModuleList(
            build_model(m.name, len(self.classes), output_stride=config.model.output_stride,
                        pretrained=config.model.pretrained, args=m.args)
            for m in config.members
        )
        for member in self.members:
            # the paper sets it on the backbone only; a member without one has it everywhere
            set_bn_momentum(backbone_of(member) or member, config.model.bn_momentum)
        weights = torch.as_tensor(class_weights if class_weights is not None else [], dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_names = list(val_names)
        self._forwards = list(self.members)  # compiled in `configure_model` when asked
        self._snapshot: list[torch.Tensor] | None = None
        self._confusion: torch.Tensor | None = None
        self.latest: dict[str, dict[str, tuple[list[float | None], float]]] = {}  # loader -> model -> (iou, miou)
        self.validated_step = -1
        # what the mode asks of the members and classes, before any training (the training data's needs
        # are iwu.engine.train's to check: a trained run loads without them)
        check_needs(self.mode, "built", RunFacts(config.loss, self.classes, dict(zip(self.names, self.members))))

    # --- set-up -----------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.config.trainer.channels_last:
            self.members.to(memory_format=torch.channels_last)
        if self.config.trainer.compile:
            self._forwards = [torch.compile(m) for m in self.members]

    def configure_optimizers(self):
        optimizer, schedule = build_optimizer(
            list(self.members), [m.lr for m in self.config.members],
            weight_decay=self.config.optim.weight_decay, backbone_lr_scale=self.config.optim.backbone_lr_scale,
            poly_power=self.config.optim.poly_power, min_lr=self.config.optim.min_lr,
            max_steps=self.trainer.estimated_stepping_batches,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # plain types only, so `torch.load(weights_only=True)` reads it back
        checkpoint["iwu"] = {"config": self.config.to_dict(), "classes": list(self.classes), "members": self.names,
                             "models_revision": MODELS_REVISION}
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # dropout draws from the global generator: a resumed run continues its stream exactly
        rng = checkpoint.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    # --- training ---------------------------------------------------------------------

    def outputs(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Every member's (logits, auxiliary logits or None), checked to be (B, C, H, W) at the input size."""
        if self.config.trainer.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out = []
        for name, f in zip(self.names, self._forwards):
            logits, aux = logits_and_aux(f(images))
            check_logits(name, logits, images, len(self.classes))
            out.append((logits, aux))
        return out

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [logits for logits, _ in self.outputs(images)]

    def log_uncertainty(self, found: list) -> None:
        """Pixel uncertainty, the most uncertain instance and instances per image of a weight source.

        The instance uncertainty's mean over pixels is the pixel uncertainty's (each instance spreads its
        own mean over its pixels), so its signal is logged as each image's most uncertain instance."""
        stats = {"most_uncertain_instance": [u.instance.flatten(1).amax(1).mean() for u in found],
                 "pixel_entropy": [u.pixel.mean() for u in found],
                 "instances_per_image": [u.num_instances.float().mean() for u in found]}
        for key, values in stats.items():
            self.log(f"train/{key}", torch.stack(values).mean().to(self.device))

    def mode_context(self) -> ModeContext:
        """All the mode's loss and weights see of this module, built each step: the class weights follow
        the module to its device."""
        return ModeContext(self.mode, self.config.loss,
                           class_weights=self.class_weights if self.class_weights.numel() else None,
                           members=tuple(self.members), log_uncertainty=self.log_uncertainty)

    def _snapshot_buffers(self) -> None:
        # The forward pass updates BatchNorm statistics before the loss is known; keeping a copy
        # (under 1 MB for the paper's members) lets a non-finite step leave the model as it was.
        buffers = list(self.members.buffers())
        if self._snapshot is None or len(self._snapshot) != len(buffers):
            self._snapshot = [b.detach().clone() for b in buffers]
        else:
            torch._foreach_copy_(self._snapshot, buffers)
        self._snapshot_of = buffers

    def _restore_buffers(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._snapshot_of, self._snapshot)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._snapshot_buffers()
        outputs = self.outputs(batch["image"])
        mode, target, ctx = MODES[self.mode], batch["label"], self.mode_context()
        u = mode.weights(ctx, batch, [z for z, _ in outputs]) if mode.weights is not None else None
        weights = u if isinstance(u, list) else [u] * len(outputs)  # one map per member, or one for all
        # an auxiliary head (torchvision's aux_loss) learns the same target, weighted 0.4 as torchvision trains it
        losses = torch.stack([mode.loss(ctx, z, target, w)
                              + (AUX_WEIGHT * mode.loss(ctx, aux, target, w) if aux is not None else 0)
                              for (z, aux), w in zip(outputs, weights)])
        checked = losses.detach()
        if self._trainer is not None and self.trainer.world_size > 1:
            # summed over the ranks, a loss is non-finite if it is on any rank: all ranks stop at
            # the same step, instead of the others waiting for this one at the gradients' all-reduce
            checked = self.trainer.strategy.reduce(checked.clone(), reduce_op="sum")
        finite = torch.isfinite(checked)
        if not bool(finite.all()):  # one host sync per step; a NaN must not reach the weights
            self._restore_buffers()
            bad = int((~finite).nonzero()[0])
            raise NonFiniteLoss(self.global_step + 1, self.names[bad], float(checked[bad]))
        for name, loss in zip(self.names, losses.detach()):
            self.log(f"train/{name}/loss", loss)
        self.log("train/loss", losses.detach().mean(), prog_bar=True)
        if self._trainer is not None:  # the rate this step applies, per member and part (lr/member0/head)
            for group in self.trainer.optimizers[0].param_groups:
                self.log(f"lr/{group['name']}", float(group["lr"]))
        # the logs' step is the step's number, counted from 1 as final.json and the console count; Lightning
        # would write the steps done before it (0 for the first), and a validation after step 25 at 24
        self.log("step", float(self.global_step + 1))
        return losses.sum()

    # --- validation -------------------------------------------------------------------

    @property
    def model_names(self) -> list[str]:
        return [*self.names, ENSEMBLE]

    def on_validation_epoch_start(self) -> None:
        c = len(self.classes)
        self._confusion = torch.zeros(len(self.val_names), len(self.model_names), c, c, dtype=torch.long,
                                      device=self.device)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch["image"])
        probs = torch.stack([z.float().softmax(dim=1) for z in logits])
        preds = torch.cat([probs.argmax(dim=2), probs.mean(dim=0).argmax(dim=1).unsqueeze(0)])
        self._confusion[dataloader_idx] += confusion_matrices(preds, batch["label"], len(self.classes))

    def on_validation_epoch_end(self) -> None:
        confusion = self._confusion
        if self._trainer is not None and self.trainer.world_size > 1:  # every rank saw its share of the images
            confusion = self.trainer.strategy.reduce(confusion, reduce_op="sum")
        self.latest = {}
        for i, loader in enumerate(self.val_names):
            prefix = "val" if i == 0 else f"val_{loader.split('/')[0]}"
            scores = {}
            for k, name in enumerate(self.model_names):
                iou, miou = iou_from_confusion(confusion[i, k])
                scores[name] = ([None if v != v else float(v) for v in iou.tolist()], miou)
                # every rank holds the global score already (the confusion matrices were summed), so
                # sync_dist's mean returns it; it also spares Lightning's warning about unsynced epoch logs
                self.log(f"{prefix}/{name}/miou", miou, prog_bar=(i == 0 and name == ENSEMBLE), sync_dist=True)
            self._log_class_ious(prefix, scores[ENSEMBLE][0])
            self.latest[loader] = scores
        # after global_step steps, as final.json's best_step says
        self.log("step", float(self.global_step), sync_dist=True)
        self.validated_step = self.global_step

    def _log_class_ious(self, prefix: str, ious: list) -> None:
        """The ensemble's IoU of every class scored at this validation (`<prefix>/ensemble/iou/<class>`):
        how a rare class's score moves with training, which the final table alone cannot show."""
        for name, iou in zip(self.classes, ious):
            if iou is not None:  # a class absent from the set and never predicted has no IoU
                self.log(f"{prefix}/{ENSEMBLE}/iou/{name}", iou, sync_dist=True)
