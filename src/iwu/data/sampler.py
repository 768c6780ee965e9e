"""The training order: a shuffle that is a pure function of (seed, epoch), so a run can resume mid-epoch.

Lightning restarts an epoch's data from its beginning when it resumes from a
mid-epoch checkpoint, unless the loader can say where it was; and after a
resume from a checkpoint taken at an epoch's last batch its epoch counter runs
one ahead. So the order here depends on neither: epoch `e` is `randperm(n)`
under a seed made of `seed` and `e`, where `e` counts passes from the step the
engine starts at (`start_at(step)`), which also skips the batches of the
current epoch already done. A resumed run sees exactly the batches of the
uninterrupted one.

It yields `ItemKey`s (index, epoch, seed), so the dataset draws an item's
augmentation from them alone, in whichever worker process reads it.

Under DDP each rank takes every `world`-th item of the same permutation (the
tail that does not divide evenly is dropped, as `drop_last` does), so the
sampler replaces Lightning's DistributedSampler and keeps the same property.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from iwu.data.augment import ItemKey


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[ItemKey]):
    def __init__(self, size: int, batch_size: int, seed: int = 0):
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start; its count is not trusted (see the module's docstring)."""

    def start_at(self, step: int) -> None:
        """The next pass is the part of epoch `step // batches_per_epoch` after `step % ...` batches."""
        self.epoch, done = divmod(step, len(self) // self.batch_size)
        self._skip = done * self.batch_size

    def order(self) -> list[int]:
        """This rank's full order for the current epoch."""
        rank, world = _rank_and_world()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.size, generator=generator)
        per_rank = self.size // world
        return perm[: per_rank * world][rank::world].tolist()

    def __iter__(self):
        order = self.order()[self._skip :]
        keys = [ItemKey(i, self.epoch, self.seed) for i in order]
        self._skip = 0
        self.epoch += 1
        return iter(keys)

    def __len__(self) -> int:
        # the whole epoch, also right after a resume: Lightning counts the epoch's batches from this
        return self.size // _rank_and_world()[1]


class ShardSampler(Sampler[int]):
    """Validation under DDP: rank r takes items r, r + world, ... of the set, in order.

    Nothing is padded or repeated (Lightning's DistributedSampler repeats items
    to even out the ranks), so the confusion matrices summed over the ranks
    count every image exactly once. Without DDP it is the whole set in order.
    """

    def __init__(self, size: int):
        self.size = size

    def __iter__(self):
        rank, world = _rank_and_world()
        return iter(range(rank, self.size, world))

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        return len(range(rank, self.size, world))


class StartData(L.Callback):
    """Points the training data at the step training starts from (0, or where a resumed run was)."""

    def __init__(self, datamodule):
        self.datamodule = datamodule

    def on_train_start(self, trainer: L.Trainer, module) -> None:
        self.datamodule.start_at(trainer.global_step)
