"""What a run keeps on disk: the best model of every member and of the ensemble, and a last checkpoint.

After each validation on the main set:
- a member whose mIoU improved saves only its own weights (`best_<member>.pt`),
  since a full checkpoint of the paper's three members with Adam state is
  about 1.2 GB and evaluating one member needs none of it;
- the ensemble, when it improved, saves every member's weights (`best_ensemble.ckpt`);
- `last.ckpt` (weights, Adam, schedule, loops, RNG) is replaced, for resuming.
Every file is written to a temporary name and renamed, so a run killed at any
moment leaves the previous files whole.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from iwu.engine.ensemble import ENSEMBLE, NonFiniteLoss
from iwu.engine.checkpoint_io import DIGEST, read_checkpoint, verify_weights, weights_digest
from iwu.util.atomic_files import atomic_write
from iwu.models import MODELS_REVISION
from iwu.engine.run_dir import BEST_ENSEMBLE, LAST, best_member_file

BEFORE_NONFINITE = "before_nonfinite.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through a temporary file and a rename, with the weights' digest;
    its reader checks the digest and answers an unreadable file in one line."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        checkpoint = {**checkpoint, DIGEST: weights_digest(checkpoint["state_dict"])}
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        checkpoint = read_checkpoint(Path(path))
        verify_weights(checkpoint, path)
        return checkpoint


def _improved(new: float, best: dict | None) -> bool:
    return best is None or (new == new and (best["miou"] != best["miou"] or new > best["miou"]))


class RunCheckpoints(L.Callback):
    """Keeps the best scores (and where they were reached) and the files above, in `folder`."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.best: dict[str, dict] = {}  # model -> {"best_step", "miou", "iou"} on the main validation set
        self.extra: dict[str, dict[str, dict]] = {}  # other set -> model -> its scores at that best step

    def on_validation_end(self, trainer: L.Trainer, module) -> None:
        if trainer.sanity_checking or not module.latest:
            return
        step = trainer.global_step
        main, *others = module.val_names
        for k, name in enumerate(module.model_names):
            iou, miou = module.latest[main][name]
            if not _improved(miou, self.best.get(name)):
                continue
            self.best[name] = {"best_step": step, "miou": miou, "iou": iou}
            for other in others:
                o_iou, o_miou = module.latest[other][name]
                self.extra.setdefault(other, {})[name] = {"step": step, "miou": o_miou, "iou": o_iou}
            if name == ENSEMBLE:
                trainer.save_checkpoint(self.folder / BEST_ENSEMBLE, weights_only=True)
            elif trainer.is_global_zero:
                self._save_member(module, k, step, miou)
        if trainer.state.fn == "fit":  # a validation after training (trainer.validate) has no loop to resume
            trainer.save_checkpoint(self.folder / LAST, weights_only=False)

    def _save_member(self, module, k: int, step: int, miou: float) -> None:
        config = module.config.to_dict()
        about = {"config": config, "member": config["members"][k], "name": module.names[k],
                 "classes": list(module.classes), "step": step, "miou": miou, "models_revision": MODELS_REVISION}
        weights = module.members[k].state_dict()
        state = {"state_dict": weights, "iwu": about, DIGEST: weights_digest(weights)}
        atomic_write(self.folder / best_member_file(module.names[k]), lambda f: torch.save(state, f))

    def on_exception(self, trainer: L.Trainer, module, exception: BaseException) -> None:
        if isinstance(exception, NonFiniteLoss):
            # the step that failed never reached the weights: these are the last good ones. Under DDP
            # every rank raised at the same step (the check is all-reduced), so all reach the barrier.
            trainer.save_checkpoint(self.folder / BEFORE_NONFINITE, weights_only=True)

    def state_dict(self) -> dict:
        return {"best": self.best, "extra": self.extra}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.extra = state["best"], state["extra"]
