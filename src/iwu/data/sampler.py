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

`RareClassSampler` (`data.sampler: rare_class`) draws each epoch's items
instead of shuffling them, as many as the set has images, with the same
epochs, resumption and sharding.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from iwu.data.augment import ItemKey
from iwu.data.rare_class import RareClassPlan


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
        perm = torch.randperm(self.size, generator=self._generator())
        per_rank = self.size // world
        return perm[: per_rank * world][rank::world].tolist()

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def keys(self) -> list[ItemKey]:
        """This rank's keys for the current epoch."""
        return [ItemKey(i, self.epoch, self.seed) for i in self.order()]

    def __iter__(self):
        keys = self.keys()[self._skip :]
        self._skip = 0
        self.epoch += 1
        return iter(keys)

    def __len__(self) -> int:
        # the whole epoch, also right after a resume: Lightning counts the epoch's batches from this
        return self.size // _rank_and_world()[1]


class RareClassSampler(EpochSampler):
    """Rare-class sampling (DAFormer's RCS): each of an epoch's draws is a class by `plan`'s probabilities,
    then an image holding enough of it, so an image may come several times in an epoch and another not.

    An epoch is as many draws as the set has images, all a function of (seed, epoch) and rank r taking
    draws r, r + world, ..., as the shuffle's items. Each draw carries a seed of its own for the item's
    augmentation, so an image drawn twice is not augmented twice alike.
    """

    def __init__(self, plan: RareClassPlan, batch_size: int, seed: int = 0):
        super().__init__(plan.size, batch_size, seed)
        self.plan = plan

    def keys(self) -> list[ItemKey]:
        rank, world = _rank_and_world()
        generator = self._generator()
        images = self.plan.draw(self.size, generator).tolist()
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator).tolist()
        mine = range(rank, self.size // world * world, world)
        return [ItemKey(images[i], self.epoch, seeds[i]) for i in mine]


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
