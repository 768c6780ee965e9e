"""`iwu sweep`: expand the grid, skip what finished, launch the rest, say what became of each run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from iwu.config.schema import add_imports, save_config
from iwu.errors import UserError
from iwu.util.atomic_files import owned
from iwu.engine.run_dir import CHECKPOINTS, FINAL, LAST, check_run_dir
from iwu.sweep.grid import Point, expand, parse_modes, parse_seeds
from iwu.sweep.outcome import Outcome, SweepInterrupted, earlier_logs, plural, save_summary, summarize

LAUNCHERS = ("local", "slurm")


def _lock(folder: Path):
    """One sweep at a time per folder: two would train the same runs into the same directories."""
    return owned(folder / "lock", f"{folder}: another sweep over these runs is going on (process {{holder}}); "
                                  "wait for it or use another out=")


def _check_existing(points: list[Point]) -> None:
    """Runs already in the folders must be of this sweep's config, or their results would be mixed in."""
    problems = []
    for point in points:
        try:
            check_run_dir(point.config, point.run)
        except UserError as err:
            problems.append(str(err))
    if problems:
        more = f" (and {plural(len(problems) - 1, 'more run')})" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}; a sweep continues its own runs only")


def _state(point: Point) -> str:
    if (point.run / FINAL).exists():
        return "finished"
    return "resume" if (point.run / CHECKPOINTS / LAST).exists() else "new"


def _slurm_settings(points: list[Point], options: dict):
    settings = points[0].config.slurm
    return dataclasses.replace(settings, **{k: v for k, v in options.items() if v is not None})


def run_sweep(config_path, seeds="1", modes="standard,instance_uncertainty", overrides=(), launcher="local",
              parallel: int | None = None, imports=(), slurm_options=None, dry_run: bool = False,
              progress: bool = True, cluster: str = "slurm") -> int:
    """Exit status: 0 when every run finished, 1 when some failed (the summary names their logs).
    `parallel`: runs at once; by default 1 here (local), and on SLURM every job of the array (the
    scheduler shares the cluster out)."""
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher}: expected one of {', '.join(LAUNCHERS)}")
    if imports:  # fail here, once, rather than in every run
        from iwu.models import import_user_modules

        import_user_modules(imports)
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else list(seeds)
    root, points = expand(config_path, seeds, parse_modes(modes) if isinstance(modes, str) else modes, overrides)
    for p in points:  # as `iwu train --import` records them, so a run's config compares equal on resume
        add_imports(p.config, imports)
    settings = _slurm_settings(points, slurm_options or {})
    if launcher == "slurm":
        from iwu.sweep.slurm import check_time

        where = "--time" if (slurm_options or {}).get("time") else "slurm.time"
        if warning := check_time(settings, points[0].config.val_every, where):
            print(warning)
    _check_existing(points)
    states = {p.name: _state(p) for p in points}
    todo = [p for p in points if states[p.name] != "finished"]
    resuming = sum(states[p.name] == "resume" for p in todo)
    if parallel is None:
        parallel = len(points) if launcher == "slurm" else 1
    print(f"iwu sweep: {plural(len(points), 'run')} under {root}: {len(points) - len(todo)} finished already, "
          f"{resuming} to resume, {len(todo) - resuming} to start ({launcher}, {parallel} at a time)")
    if dry_run:
        for p in todo:
            print(f"  {states[p.name]:>6}  {p.run}")
        return 0
    folder = root / "sweep"
    logs = earlier_logs(folder / "summary.json")
    skipped = [Outcome(p, "skipped", logs.get(p.name)) for p in points if states[p.name] == "finished"]
    order = {p.name: i for i, p in enumerate(points)}
    with _lock(folder):
        try:
            outcomes = _launch(todo, folder, launcher, parallel, imports, settings, progress, cluster) if todo else []
        except SweepInterrupted as stop:
            _finish(root, folder, skipped + stop.outcomes, order)
            raise KeyboardInterrupt from None
    return _finish(root, folder, skipped + outcomes, order)


def _launch(todo, folder, launcher, parallel, imports, settings, progress, cluster) -> list[Outcome]:
    files = {p.name: save_config(p.config, folder / "configs" / f"{p.name}.yaml") for p in todo}
    if launcher == "local":
        from iwu.sweep.local import run_local

        return run_local(todo, files, folder / "logs", parallel, imports, progress=progress)
    from iwu.sweep.slurm import run_slurm

    return run_slurm(todo, files, folder, settings, parallel, imports, cluster=cluster, progress=progress,
                     poll=10.0 if cluster == "slurm" else 0.5)


def _finish(root: Path, folder: Path, outcomes: list[Outcome], order: dict[str, int]) -> int:
    outcomes = sorted(outcomes, key=lambda o: order[o.point.name])  # the grid's order, not the finishing one
    print(summarize(root, outcomes))
    save_summary(folder / "summary.json", outcomes)
    return 1 if any(o.state == "failed" for o in outcomes) else 0
