"""`iwu import`: checkpoints of the published code as iwu run directories.

The published code (luislcc/instance_uncertainty, on VainF/DeepLabV3Plus-Pytorch)
saves one file per network, `best_<model>_<dataset>_os<16|8>_seed<k>[_<tag>].pth`
(or `latest_...`): a dict whose `model_state` holds the weights. An ensemble is
the files of its members, which share dataset, output stride, seed and tag (the
method's tag is `uncertainty_instance_ensembling`). Files that share those four
become one run directory, `<out>/<mode>/seed<k>/` (`--each`: one run per file,
`<out>/<mode>/<model>/seed<k>/`), holding the config, `checkpoints/best_ensemble.ckpt`
and a `final.json` marked `imported`, which `iwu evaluate`, `predict`, `masks` and
`report` read like those of a run iwu trained. The weights load into iwu's members
unchanged: they compute the published networks (tests/test_mobilenet_fidelity.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iwu.engine.checkpoint_io import DIGEST, load_plain, weights_digest
from iwu.config.schema import MAX_SEED, MemberConfig, RunConfig, save_config
from iwu.data import kinds
from iwu.data.config import DataConfig
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write, atomic_write_json
from iwu.models import MODELS_REVISION
from iwu.engine.run_dir import BEST, CONFIG, FINAL

# the published code's datasets are iwu's kinds of fixed classes, under the same names
DATASETS = tuple(kind.name for kind in kinds.TABLE if kind.fixed_classes)
FILE_NAME = re.compile(rf"(?:best|latest)_(?P<model>[a-z0-9]+_[a-z0-9_]+?)_(?P<dataset>{'|'.join(DATASETS)})"
                       r"_os(?P<os>8|16)_seed(?P<seed>\d+)(?:_(?P<tag>[^.]+))?\.pth$")
PATTERN = "best_<model>_<dataset>_os<16|8>_seed<k>[_<tag>].pth"
METHOD_TAGS = ("uncertainty_instance_ensembling", "uncertainty_instance_new")
PAPER_LR = {"deeplabv3plus_mobilenet": 1e-3, "deeplabv3plus_resnet50": 1e-4, "deeplabv3plus_resnet101": 1e-4}
RENAMED = {"backbone.low_level_features.": "backbone.low_level.", "backbone.high_level_features.": "backbone.out."}
def _known_classes() -> dict[str, tuple[str, ...]]:
    """The classes of the published code's datasets, which iwu reads too, by its dataset names."""
    return {name: kinds.BY_NAME[name].load("CLASSES") for name in DATASETS}


@dataclass
class Published:
    """One file's weights, as iwu names them, and what its name and contents say about it."""

    path: Path
    model: str
    dataset: str
    output_stride: int
    seed: int
    tag: str
    state: dict = field(repr=False)
    num_classes: int
    steps: int | None
    best_score: float | None


def _load(path: Path) -> dict:
    """The file as a dict, read without running code (numpy scalars, the published `best_score`, allowed)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    data = load_plain(path)
    if not isinstance(data, dict) or not isinstance(data.get("model_state"), dict):
        raise UserError(f"{path}: no `model_state` inside; is it a checkpoint of the published code?")
    return data


def _architecture(state: dict) -> str | None:
    """The member the published weights belong to, by their names: MobileNetV2 or ResNet-50/101 DeepLabV3+."""
    if "classifier.project.0.weight" not in state:  # no low-level projection: not DeepLabV3+
        return None
    if any(k.startswith("backbone.low_level_features.") for k in state):
        return "deeplabv3plus_mobilenet"
    blocks = {k.split(".")[2] for k in state if k.startswith("backbone.layer3.")}
    return {6: "deeplabv3plus_resnet50", 23: "deeplabv3plus_resnet101"}.get(len(blocks))


def _iwu_names(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for old, new in RENAMED.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def name_fields(path: Path, *, dataset=None, output_stride=None, seed=None) -> dict:
    """model, dataset, output_stride, seed and tag from a file's name; the options replace them."""
    named = FILE_NAME.search(path.name)
    if named is None and dataset is None:
        raise UserError(f"{path}: the name is not {PATTERN}; give --dataset (and --seed, --output-stride)")
    f = named.groupdict() if named else {"model": None, "dataset": None, "os": 16, "seed": 0, "tag": None}
    if seed is None and int(f["seed"]) > MAX_SEED:
        raise UserError(f"{path}: seed {f['seed']} in its name is outside 0..{MAX_SEED}; give --seed")
    return {"model": f["model"], "dataset": dataset or f["dataset"], "output_stride": int(output_stride or f["os"]),
            "seed": int(seed if seed is not None else f["seed"]), "tag": f["tag"] or ""}


def read_published(path, **options) -> Published:
    """One published checkpoint; the `options` of `name_fields` replace what its name says."""
    path = Path(path)
    fields = name_fields(path, **options)
    data = _load(path)
    state = data["model_state"]
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel itself
        state = {k[len("module."):]: v for k, v in state.items()}
    model = _architecture(state)
    if model is None:
        raise UserError(f"{path}: not a DeepLabV3+ on MobileNetV2, ResNet-50 or ResNet-101, the published "
                        "members iwu builds")
    if fields["model"] not in (None, model):
        raise UserError(f"{path}: named {fields['model']} but holds the weights of {model}")
    best = data.get("best_score")
    return Published(
        path=path, model=model, dataset=fields["dataset"], output_stride=fields["output_stride"],
        seed=fields["seed"], tag=fields["tag"], state=_iwu_names(state),
        num_classes=int(state["classifier.classifier.3.weight"].shape[0]),
        steps=int(data["cur_itrs"]) if _finite(data.get("cur_itrs")) else None,
        best_score=float(best) if _finite(best) else None,
    )


def _finite(value) -> bool:
    """A number worth recording (a damaged or hand-edited file may hold NaN or infinity)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _classes(group: list[Published], classes) -> list[str]:
    first = group[0]
    counts = {p.num_classes for p in group}
    if len(counts) > 1:
        raise UserError(f"{first.path}: its ensemble's files have {sorted(counts)} classes; one count for all")
    if classes:
        if len(classes) != first.num_classes:
            raise UserError(f"--classes names {len(classes)} classes; {first.path} has {first.num_classes}")
        return list(classes)
    known = _known_classes().get(first.dataset, ())
    if first.num_classes == len(known):
        return list(known)
    if first.dataset not in DATASETS:  # a dataset iwu has no class list of: the user names them
        raise UserError(f"--dataset {first.dataset}: not one whose classes iwu knows ({', '.join(DATASETS)}); "
                        "name its classes with --classes a,b,c in train-id order")
    raise UserError(f"{first.path}: {first.num_classes} classes of {first.dataset}; name them with "
                    "--classes a,b,c in train-id order")


def _mode(tag: str) -> str:
    return "instance_uncertainty" if tag in METHOD_TAGS else "standard"


def _run_config(group: list[Published], mode: str, experiment: str, size: int, out: Path) -> RunConfig:
    first = group[0]
    config = RunConfig(experiment=experiment, seed=first.seed, mode=mode, out=str(out),
                       members=[MemberConfig(p.model, PAPER_LR[p.model]) for p in group])
    config.model.output_stride = first.output_stride
    config.model.pretrained = False
    # the kind, so that predict and evaluate normalise as it was trained (Kvasir-SEG with its own statistics)
    config.data = DataConfig(kind=first.dataset if first.dataset in _known_classes() else None, size=size)
    return config


def _checked_state(config: RunConfig, classes: list[str], group: list[Published]) -> dict:
    """The ensemble's state dict, loaded once into the members it will be read into."""
    from iwu.engine.ensemble import EnsembleModule

    module = EnsembleModule(config, classes)
    state = {}
    for k, (member, p) in enumerate(zip(module.members, group)):
        expected = member.state_dict()
        weights = dict(p.state)
        for key in expected:  # torch before 0.4.1 saved no BatchNorm counters
            if key.endswith("num_batches_tracked") and key not in weights:
                weights[key] = torch.zeros((), dtype=torch.long)
        try:
            member.load_state_dict(weights)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:200]
            raise UserError(f"{p.path}: its weights do not fit {p.model} at output stride "
                            f"{p.output_stride} ({detail})") from None
        state.update({f"members.{k}.{key}": value for key, value in weights.items()})
    return state


def _write_run(out: Path, config: RunConfig, classes: list[str], group: list[Published]) -> None:
    from iwu.engine.ensemble import member_names

    state = _checked_state(config, classes, group)
    names = member_names([p.model for p in group])
    imported = {"files": [str(p.path.resolve()) for p in group],
                "steps": {n: p.steps for n, p in zip(names, group)},
                "best_miou": {n: p.best_score for n, p in zip(names, group)}}
    about = {"config": config.to_dict(), "classes": classes, "members": names,
             "models_revision": MODELS_REVISION, "imported": imported}
    save_config(config, out / CONFIG)
    checkpoint = {"state_dict": state, "iwu": about, DIGEST: weights_digest(state)}
    atomic_write(out / BEST, lambda f: torch.save(checkpoint, f))
    steps = [p.steps for p in group if p.steps is not None]
    final = {"experiment": config.experiment, "dataset": group[0].dataset, "mode": config.mode,
             "seed": config.seed, "classes": classes, "steps": max(steps) if steps else None,
             "results": {}, "imported": imported}  # scores come from `iwu evaluate`
    atomic_write_json(out / FINAL, final)  # last: the run is whole


def _imported_from(target: Path, paths: list[Path]) -> bool:
    """Whether `target` is a whole run imported from exactly these files."""
    try:
        about = json.loads((target / FINAL).read_text())
        return about["imported"]["files"] == [str(p.resolve()) for p in paths]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_aside(target: Path, write) -> None:
    """`write(folder)` into a hidden sibling of `target`, renamed to `target` once whole: a kill or a full disk
    leaves no half run where a run belongs, and the same command, run again, starts that run afresh."""
    aside = target.with_name(f".{target.name}.importing")
    shutil.rmtree(aside, ignore_errors=True)  # what an interrupted run of this command left
    aside.mkdir(parents=True)
    try:
        write(aside)
        os.replace(aside, target)  # onto nothing, or onto an empty folder
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _plan(paths: list[Path], each: bool, mode, options: dict) -> dict[Path, list[Path]]:
    """Run folder (relative to --out) -> its files, from the names alone, before any weights are read."""
    groups: dict[tuple, list[Path]] = {}
    for path in paths:
        f = name_fields(path, **options)
        key = (f["dataset"], f["output_stride"], f["seed"], f["tag"]) + ((path,) if each else ())
        groups.setdefault(key, []).append(path)
    plan: dict[Path, list[Path]] = {}
    for (_, _, seed, tag, *_), group in groups.items():
        folder = Path(mode or _mode(tag))
        if each:
            folder /= name_fields(group[0], **options)["model"] or group[0].stem
        folder /= f"seed{seed}"
        if folder in plan:
            raise UserError(f"{group[0]} and {plan[folder][0]} would both become {folder} under --out; "
                            "import them apart, or one run per file (--each)")
        plan[folder] = group
    return plan


def _check_members(group: list[Published]) -> None:
    seen: dict[str, Path] = {}
    for p in group:
        if p.model in seen:
            raise UserError(f"{p.path} and {seen[p.model]}: two {p.model} in one ensemble; "
                            "import them as separate runs (--each)")
        seen[p.model] = p.path


def import_published(files, out, *, each: bool = False, mode=None, dataset=None, output_stride=None, seed=None,
                     classes=None, experiment: str = "published", size: int = 768) -> list[Path]:
    """Turn published checkpoints into run directories under `out`; returns them in order.

    Every name and target folder is checked before any weights are read; each run is written aside and
    renamed into place whole before the next is read, so the same command, run again after an interruption,
    skips the runs it finished and imports the others.
    """
    from iwu.method.modes import MODES

    if mode is not None and mode not in MODES:
        raise UserError(f"--mode {mode}: not a mode; choose from {', '.join(sorted(MODES))}")
    paths = [Path(f) for f in files]
    if not paths:
        raise UserError("no checkpoint files given")
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    options = {"dataset": dataset, "output_stride": output_stride, "seed": seed}
    plan = {Path(out) / folder: group for folder, group in _plan(paths, each, mode, options).items()}
    done = {target for target, group_paths in plan.items() if _imported_from(target, group_paths)}
    for target in set(plan) - done:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{target}: holds a run or other files already; import to another --out")
    for target, group_paths in plan.items():
        if target in done:  # an earlier run of the same command got this far
            print(f"{target}: imported already from the same files")
            continue
        group = [read_published(p, **options) for p in group_paths]
        _check_members(group)
        run_mode = mode or _mode(group[0].tag)
        config = _run_config(group, run_mode, experiment, size, target)
        _write_aside(target, lambda folder: _write_run(folder, config, _classes(group, classes), group))
        print(f"{target}: {' + '.join(p.model for p in group)} ({group[0].dataset}, OS{group[0].output_stride}, "
              f"seed {group[0].seed}, {run_mode})")
    return list(plan)
