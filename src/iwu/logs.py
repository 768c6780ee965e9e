"""The run's loggers: CSV always (what `curves.png` and users read), TensorBoard beside it.

Lightning's CSV logger deletes `metrics.csv` when it opens a folder that has one,
so a resumed run would lose the curves of its first part. Here a resumed run
keeps the rows of the steps before the checkpoint it resumes from (later rows
were lost with the process and are logged again) and appends after them.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from iwu.files import atomic_write_bytes


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
        path = Path(self.log_dir) / "metrics.csv"
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
    loggers = [ResumedCSVLogger(out, name="logs", version="csv", resume_step=resume_step),
               TensorBoardLogger(out, name="logs", version="tensorboard", default_hp_metric=False)]
    if hparams:
        for logger in loggers:
            logger.log_hyperparams(hparams)
    return loggers
