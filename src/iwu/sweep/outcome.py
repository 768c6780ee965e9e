"""What became of each point of a sweep, and the summary printed (and kept in sweep/summary.json) at the end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from iwu.util.atomic_files import atomic_write_json
from iwu.sweep.grid import Point

STATES = ("finished", "failed", "interrupted", "skipped")


@dataclass
class Outcome:
    point: Point
    state: str  # one of STATES; skipped: finished by an earlier sweep or run
    log: Path | None = None
    detail: str = ""  # for a failure: the log's last words


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, with what had become of each point by then."""

    def __init__(self, outcomes: list[Outcome]):
        super().__init__()
        self.outcomes = outcomes


def last_words(log: Path | None, limit: int = 240) -> str:
    """The error line of a failed run's log (`iwu train: error: ...`), else its last line."""
    if log is None or not log.is_file():
        return ""
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 16384))
        lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line or line.startswith(("Error", "error:"))]
    return (errors or lines or [""])[-1][:limit]


def last_step(run: Path) -> int | None:
    """The last training step the run logged (its `metrics.csv`, read as the curves read it), None before any."""
    from iwu.engine.run_dir import METRICS
    from iwu.errors import UserError
    from iwu.plots.curves import read_metrics

    try:
        series = read_metrics(run / METRICS)
    except UserError:  # no metrics file yet, or an unreadable one: no step to report
        return None
    return max((step for pairs in series.values() for step, _ in pairs), default=None)


def summarize(root: Path, outcomes: list[Outcome]) -> str:
    counts = {state: sum(o.state == state for o in outcomes) for state in STATES}
    lines = [f"iwu sweep: {plural(len(outcomes), 'run')} under {root}: "
             + ", ".join(f"{n} {state}" for state, n in counts.items() if n or state != "interrupted")
             + (" (finished before)" if counts["skipped"] else "")]
    for o in outcomes:
        if o.state in ("failed", "interrupted"):
            lines.append(f"  {o.state}: {o.point.run}  log: {o.log}")
            if o.detail:
                lines.append(f"      {o.detail}")
    if counts["failed"] or counts["interrupted"]:
        lines.append("  the same command again runs what did not finish, from its last checkpoint")
    if counts["finished"] + counts["skipped"]:
        lines.append(f"  tables: iwu report {root}")
    return "\n".join(lines)


def earlier_logs(path: Path) -> dict[str, Path]:
    """Point name -> its log, from the summary an earlier sweep left (so a skipped run keeps its log)."""
    try:
        runs = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
        return {r["name"]: Path(r["log"]) for r in runs if r.get("log")}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return {}


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def save_summary(path: Path, outcomes: list[Outcome]) -> Path:
    return atomic_write_json(path, {"runs": [
        {"name": o.point.name, "run": str(o.point.run), "state": o.state, "log": str(o.log) if o.log else None,
         "detail": o.detail} for o in outcomes]})
