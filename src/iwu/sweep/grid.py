"""The points of a sweep: seeds x modes x the values of every listed override.

An override whose value lists several values at its top level (`key=a,b`, as
in Hydra's multirun) is an axis of the grid; brackets keep a list whole
(`data.conditions=[fog,night]` is one value). Each point is one `iwu train`
run, written under the sweep's root as

    <root>/[<axis>=<value>,.../]<mode>/seed<k>/

with the axes also in the run's experiment name, so `iwu report <root>`
gives every axis value its own column.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from iwu.config.schema import MAX_SEED, RunConfig, load_config
from iwu.errors import UserError

MAX_RUNS = 10_000  # runs (and seeds) of one sweep: the paper ran 30 seeds



@dataclass(frozen=True)
class Point:
    name: str  # the run's path under the root, e.g. "lr=0.01/standard/seed3"
    config: RunConfig  # resolved, with out= the run directory and resume=true

    @property
    def run(self) -> Path:
        return Path(self.config.out)


def parse_seeds(text: str) -> list[int]:
    """`30` is seeds 0..29; `10-19` and `0,4,7` are those seeds (to share a sweep out between machines)."""
    try:
        if "," in text:
            seeds = [int(part) for part in text.split(",")]
        elif "-" in text.strip("-"):
            first, last = (int(part) for part in text.split("-"))
            seeds = _bounded(text, range(first, last + 1))
        else:
            seeds = _bounded(text, range(int(text)))
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text}: expected a count (30), a range (10-19) or a list (0,4,7) of seeds >= 0")
    _bounded(text, seeds)
    if max(seeds) > MAX_SEED:
        raise UserError(f"--seeds {text}: seeds go up to {MAX_SEED}")
    return seeds


def _bounded(text: str, seeds) -> list[int]:
    """The seeds as a list, refused before it is built when there are more than MAX_RUNS (a typo of a few
    digits would otherwise fill the memory, or plan millions of runs)."""
    if len(seeds) > MAX_RUNS:
        raise UserError(f"--seeds {text}: {len(seeds):,} seeds; a sweep takes at most {MAX_RUNS:,}")
    return list(seeds)


def parse_modes(text: str) -> list[str]:
    from iwu.method.modes import MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes or len(set(modes)) != len(modes):
        raise UserError(f"--modes {text}: expected distinct modes from {', '.join(MODES)}")
    return modes


def split_values(value: str) -> list[str]:
    """`a,b` -> [a, b]; commas inside [...], {...} or quotes belong to one value."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(value):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(value[start:i])
            start = i + 1
    values.append(value[start:])
    return values


def _axes(overrides) -> tuple[list[str], list[tuple[str, list[str]]], str | None]:
    """(fixed overrides, axes as (key, values), out=) from the command line's key=value pairs."""
    fixed, axes, out = [], [], None
    for text in overrides:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"override {text!r}: expected key=value, or key=a,b for an axis of the sweep")
        if key in ("seed", "mode"):
            raise UserError(f"{key}=: the sweep sets it; use --{key}s")
        if key in ("resume", "experiment"):
            raise UserError(f"{key}=: the sweep sets it for each run (experiment: in the config file)")
        if key == "out":
            out = value
            continue
        values = split_values(value)
        if len(values) == 1:
            fixed.append(text)
        elif any(v.strip() == "" for v in values) or len(set(values)) != len(values):
            raise UserError(f"{key}={value}: an axis needs distinct, non-empty values")
        else:
            axes.append((key, values))
    return fixed, axes, out


def _check_size(seeds: int, modes: int, axes) -> None:
    """Refuse a grid of more than MAX_RUNS runs from its axes' lengths, before any run is built (six axes of
    ten values are two million configs to load and check)."""
    runs = seeds * modes
    for _, values in axes:
        runs *= len(values)
    if runs > MAX_RUNS:
        shape = " x ".join([f"{seeds} seeds", f"{modes} modes", *(f"{len(v)} {k}" for k, v in axes)])
        raise UserError(f"the sweep is {runs:,} runs ({shape}); a sweep takes at most {MAX_RUNS:,}")


def _combinations(axes) -> list[list[tuple[str, str]]]:
    combos: list[list[tuple[str, str]]] = [[]]
    for key, values in axes:
        combos = [[*combo, (key, v)] for combo in combos for v in values]
    return combos


def _label(combo) -> str:
    # a folder name: no separators from the values (paths as values stay readable)
    return ",".join(f"{k}={v}" for k, v in combo).replace("/", "_").replace("\\", "_")


def expand(config_path, seeds, modes, overrides=()) -> tuple[Path, list[Point]]:
    """The sweep's root and its points, every config loaded and checked here, before anything runs."""
    fixed, axes, out = _axes(overrides)
    _check_size(len(seeds), len(modes), axes)
    points = []
    root = None
    for combo in _combinations(axes):
        where = [*fixed, *(f"{k}={v}" for k, v in combo)]
        for mode in modes:
            for seed in seeds:
                config = load_config(config_path, [*where, f"mode={mode}", f"seed={seed}"])
                root = root or (Path(out) if out is not None else Path("runs") / config.experiment)
                name = "/".join(part for part in (_label(combo), mode, f"seed{seed}") if part)
                experiment = f"{config.experiment} {_label(combo)}" if combo else config.experiment
                config = dataclasses.replace(config, experiment=experiment, out=str(root / name), resume=True)
                points.append(Point(name, config))
    return root, points
