"""What a training run says while it runs.

One start line (what, where, how many steps), then on a terminal a live bar,
elsewhere (SLURM logs, files, `--no-progress`) a plain line every few steps;
and a line at each validation with the ensemble's mIoU. About twenty step
lines a run, however long it is, so a log stays a few kilobytes.
"""

from __future__ import annotations

import math
import time
from itertools import groupby
from pathlib import Path

import lightning as L
from tqdm import tqdm

from iwu.config.schema import RunConfig
from iwu.engine.ensemble import ENSEMBLE
from iwu.util.bars import watched

LINES_PER_RUN = 20
LOSS, MIOU = "train/loss", f"val/{ENSEMBLE}/miou"


def line_every(total: int, lines: int = LINES_PER_RUN) -> int:
    """Steps between two plain lines for a run of `total` steps: about `lines` of them."""
    return max(1, math.ceil(total / lines))


def members_summary(config: RunConfig) -> str:
    """`3 x deeplabv3plus_mobilenet (lr 0.001)`: alike members, next to each other, counted once."""
    parts = []
    for (name, lr), alike in groupby((m.name, m.lr) for m in config.members):
        count = len(list(alike))
        parts.append(f"{count} x {name} (lr {lr:g})" if count > 1 else f"{name} (lr {lr:g})")
    return ", ".join(parts)


def start_line(config: RunConfig, out: Path, total: int) -> str:
    return (f"iwu train: {config.experiment} / {config.mode} / seed {config.seed} -> {out}: {total} steps, "
            f"validating every {config.val_every}; members {members_summary(config)}")


def resume_line(step: int, checkpoint) -> str:
    # Lightning would warn that a checkpoint saved mid-epoch cannot resume reliably; iwu's sampler
    # and checkpoints restore the data order and every state, so the warning is silenced and this said.
    return (f"iwu train: resuming at step {step} from {checkpoint}; iwu resumes exactly: the run ends as it "
            "would have without the stop")


class RunProgress(L.Callback):
    """The start line, then a live bar (`live`) or a line every `every` steps, and a line per validation.

    Lines go to stdout, flushed, so a log file shows them as they happen; the bar to stderr (tqdm's place).
    Only the process of global rank 0 speaks.
    """

    def __init__(self, config: RunConfig, out: Path, live: bool, every: int | None = None):
        self.config, self.out, self.live, self.every = config, out, live, every
        self.bar: tqdm | None = None
        self.first = self.total = 0
        self.started = 0.0

    def on_train_start(self, trainer: L.Trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        self.first, self.total, self.started = trainer.global_step, trainer.max_steps, time.monotonic()
        self.every = self.every or line_every(self.total)
        print(start_line(self.config, self.out, self.total), flush=True)
        if self.first:
            print(resume_line(self.first, trainer.ckpt_path), flush=True)
        if self.live:
            self.bar = tqdm(total=self.total, initial=self.first, desc="train", unit="step", dynamic_ncols=True)

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        step, metrics = trainer.global_step, trainer.progress_bar_metrics
        if self.bar is not None:
            self.bar.set_postfix({"loss": f"{metrics.get(LOSS, math.nan):.4g}",
                                  **({"mIoU": f"{metrics[MIOU]:.4f}"} if MIOU in metrics else {})}, refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % self.every == 0 or step == self.total:
            miou = f"{metrics[MIOU]:.4f}" if MIOU in metrics else "--"
            print(f"  step {step}/{self.total}: loss {metrics.get(LOSS, math.nan):.4f}, last mIoU {miou}, "
                  f"{self._times(step)}", flush=True)

    def on_validation_end(self, trainer: L.Trainer, module) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or MIOU not in trainer.progress_bar_metrics:
            return
        line = f"  step {trainer.global_step}/{self.total}: validation mIoU {trainer.progress_bar_metrics[MIOU]:.4f}"
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        if self.bar is not None:
            self.bar.close()

    def _times(self, step: int) -> str:
        elapsed = time.monotonic() - self.started
        left = elapsed / (step - self.first) * (self.total - step) if step > self.first else math.nan
        return f"{tqdm.format_interval(elapsed)} elapsed, {tqdm.format_interval(left) if left == left else '?'} left"


def closing_line(final: dict, final_file: Path) -> str | None:
    """`iwu train`'s last line: the ensemble's best mIoU and where the results are; None on the processes
    of a multi-process run other than global rank 0 (the run is one, and so is its line)."""
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return None
    best = final["results"].get(ENSEMBLE, {})
    return (f"iwu train: best ensemble mIoU {best.get('miou', math.nan):.4f} at step {best.get('best_step')}; "
            f"{final_file}")


def live_bar(progress: bool) -> bool:
    """A live bar only where someone watches it: asked for, and stderr a terminal (not a file or a pipe)."""
    return progress and watched()
