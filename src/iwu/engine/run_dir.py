"""A run directory's fixed names, and the check that a run may start or resume in one.

Light on purpose (no torch, no Lightning): the sweep and the report read run
directories without training anything.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from iwu.util.bounded import check_bounded
from iwu.errors import UserError

FINAL = "final.json"  # written last: its presence means the run finished
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST_ENSEMBLE = "best_ensemble.ckpt"  # every member's weights at the ensemble's best validation
LOCK = ".lock"  # held by the process training the run
BEST = Path(CHECKPOINTS) / BEST_ENSEMBLE  # what a run directory means to evaluate, predict, masks and export
LOGS = "logs"  # the loggers' folders: csv/ and tensorboard/ (iwu.engine.loggers)
METRICS = Path(LOGS) / "csv" / "metrics.csv"  # every logged value, one row per step
CURVES = "curves.png"
EVAL_GLOB = "eval_*.json"  # `iwu evaluate`'s results, one file per model and dataset (eval_file)


def run_dir(config) -> Path:
    """Where a run of `config` lives: its `out`, or runs/<experiment>/<mode>/seed<seed>."""
    if config.out:
        return Path(config.out)
    return Path("runs") / config.experiment / config.mode / f"seed{config.seed}"


def best_member_file(name: str) -> str:
    """A member's own best weights, beside the ensemble's in CHECKPOINTS."""
    return f"best_{name}.pt"


def eval_file(name: str) -> str:
    """`iwu evaluate`'s result of `name`: `<dataset>` for a run's best ensemble, `<dataset>@<checkpoint>` otherwise."""
    return f"eval_{name}.json"


def segments_file(name: str) -> str:
    """`iwu evaluate --segments`'s table of `name` (as in `eval_file`): one row per predicted segment."""
    return f"segments_{name}.csv"


def segments_classifier_file(name: str) -> str:
    """`iwu evaluate --segments`'s meta classifier of `name`, fitted on all its segments (JSON)."""
    return f"segments_classifier_{name}.json"


def segments_figure_file(name: str) -> str:
    """`iwu evaluate --segments`'s figure of `name`: segment IoU against uncertainty, the meta classifiers' ROC."""
    return f"segments_{name}.png"


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def as_loaded_today(raw):
    """A saved config (config.yaml, a checkpoint's) as today's iwu reads it: typed, with today's defaults
    for keys added since it was written (a member's `args`) and earlier keys in today's form (`data.hflip`),
    so that a run started by an earlier iwu still resumes; as written if it no longer loads."""
    from iwu.config.schema import config_from_dict

    try:
        return config_from_dict(raw).to_dict()
    except UserError:
        return raw


def check_run_dir(config, out: Path) -> None:
    """A new run needs a fresh folder; a resumed one the same config as before (`slurm.*` and `imports`,
    where a run and its code are rather than what it is, aside)."""
    saved = out / CONFIG
    if not config.resume:
        if (out / CHECKPOINTS / LAST).exists() or (out / FINAL).exists():
            raise UserError(f"{out}: holds a run already; add resume=true to continue it, or out=DIR for a new one")
        return
    if not saved.exists():
        return  # nothing to resume: start
    try:
        raw = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{saved}: cannot read the run's config ({err})") from None
    check_bounded(raw, str(saved))
    before = _flat(as_loaded_today(raw))
    now = _flat(config.to_dict())
    ignored = ("resume", "imports")
    changed = sorted(k for k in set(before) | set(now)
                     if k not in ignored and not k.startswith("slurm.") and before.get(k) != now.get(k))
    if changed:
        raise UserError(f"{out}: resume=true with another config than the run's ({', '.join(changed[:6])}); "
                        "resume with the same config, or start a new run with out=DIR")
