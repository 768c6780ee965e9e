"""The run's loggers: CSV always (what `curves.png` and users read), TensorBoard beside it;
and Lightning's own messages, kept out of the run's output.

Lightning's CSV logger deletes `metrics.csv` when it opens a folder that has one,
so a resumed run would lose the curves of its first part. Here a resumed run
keeps the rows of the steps before the checkpoint it resumes from (later rows
were lost with the process and are logged again) and appends after them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from iwu.util.atomic_files import atomic_write_bytes
from iwu.engine.run_dir import LOGS, METRICS


def _rows_before(path: Path, step: int) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) <= step]
        return list(reader.fieldnames or []), rows


class ResumedCSVLogger(CSVLogger):
    """A CSVLogger that continues `metrics.csv` after training step `resume_step` (0: a fresh file): the rows
    of steps 1..resume_step and of the validation after it are kept."""

    def __init__(self, *args, resume_step: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / METRICS.name
        keys, rows = _rows_before(path, self.resume_step) if self.resume_step else ([], [])
        with warnings.catch_warnings():  # it warns that it deletes the file; the rows are kept above
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            writer = CSVLogger.experiment.fget(self)
        if rows:
            text = io.StringIO(newline="")
            out = csv.DictWriter(text, fieldnames=keys)
            out.writeheader()
            out.writerows(rows)
            atomic_write_bytes(path, text.getvalue().encode())
            writer.metrics_keys = keys
        return writer


def run_loggers(out: Path, resume_step: int = 0, hparams: dict | None = None) -> list:
    """`out/logs/csv/metrics.csv` and `out/logs/tensorboard/` (`tensorboard --logdir out/logs`), each given
    `hparams` (the resolved config: TensorBoard's HPARAMS tab, and hparams.yaml beside the logs)."""
    loggers = [ResumedCSVLogger(out, name=LOGS, version=METRICS.parent.name, resume_step=resume_step),
               TensorBoardLogger(out, name=LOGS, version="tensorboard", default_hp_metric=False)]
    if hparams:
        for logger in loggers:
            logger.log_hyperparams(hparams)
    return loggers


# Warnings that are no news for an iwu run, as (message regex, category).
_NEEDLESS_WARNINGS = [
    # Lightning's own use of a deprecated torch class: nothing a user can act on.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # A checkpoint saved mid-epoch: iwu's sampler and checkpoints resume it exactly (iwu.engine.progress says so).
    (r"You're resuming from a checkpoint that ended before the epoch ended", Warning),
    # An epoch shorter than log_every_n_steps: iwu's steps run on across epochs, and are logged all the same.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", Warning),
]
_CPU_CHOSEN = (r"GPU available but not used", Warning)
# Where SLURM's client is installed (every login node), Lightning hints at srun on every run it starts
# outside a job: chatter like its info messages, so it shows again with trainer.verbose=true.
_SRUN_HINT = (r"The `srun` command is available on your system but is not used", Warning)


@contextlib.contextmanager
def quiet_lightning(verbose: bool = False, cpu_chosen: bool = False):
    """Lightning's chatter off inside: its info messages (devices found, tips, checkpoint restored, fit
    stopped) and its srun hint unless `verbose`; always the warnings above, and the unused GPU's where the
    config chose the CPU (`cpu_chosen`). Lightning's warnings about the user's own settings still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings():
            chatter = [*([_CPU_CHOSEN] if cpu_chosen else []), *([] if verbose else [_SRUN_HINT])]
            for message, category in [*_NEEDLESS_WARNINGS, *chatter]:
                warnings.filterwarnings("ignore", message=message, category=category)
            if not verbose:
                for logger in loggers:
                    logger.setLevel(logging.WARNING)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
