"""`--launcher local`: the runs as `iwu train` processes on this machine, N at a time.

Each process gets its share of the CPU threads, and with several GPUs and
N > 1 one GPU each (slot i takes GPU i mod count), unless the environment
already says (OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES). Its output is appended
to its log in the sweep folder, so an earlier attempt's log is kept. Ctrl-C
stops the running processes (they resume from their last checkpoint when the
same command runs again).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from datetime import datetime
from pathlib import Path

from iwu.sweep.grid import Point
from iwu.sweep.outcome import Outcome, SweepInterrupted, last_words
from iwu.engine.run_dir import FINAL
from iwu.util.bars import Tally


def train_command(config_file: Path, imports=()) -> list[str]:
    command = [sys.executable, "-m", "iwu", "train", str(config_file), "--no-progress"]
    for module in imports:
        command += ["--import", module]
    return command


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _environment(slot: int, parallel: int, gpus: int) -> dict:
    env = dict(os.environ)
    if parallel > 1 and "OMP_NUM_THREADS" not in env:  # N runs must not each take every core
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    if parallel > 1 and gpus > 1 and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    return env


def _start(point: Point, config_file: Path, log: Path, slot: int, parallel: int, gpus: int, imports):
    log.parent.mkdir(parents=True, exist_ok=True)
    command = train_command(config_file, imports)
    handle = open(log, "a", encoding="utf-8")
    handle.write(f"\n=== iwu sweep, {datetime.now():%Y-%m-%d %H:%M:%S}: {' '.join(command)}\n")
    handle.flush()
    proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=_environment(slot, parallel, gpus))
    return proc, handle


def _outcome(point: Point, returncode: int, log: Path) -> Outcome:
    if returncode == 0 and (point.run / FINAL).exists():
        return Outcome(point, "finished", log)
    return Outcome(point, "failed", log, last_words(log) or f"exit status {returncode}")


def _stop(running: dict, grace: float = 30.0) -> None:
    for proc, _, _ in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc, _, _ in running.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_local(points: list[Point], config_files: dict[str, Path], log_dir: Path, parallel: int = 1,
              imports=(), progress: bool = True, poll: float = 0.2) -> list[Outcome]:
    """Run every point; one Outcome each, in the order the runs ended (KeyboardInterrupt after stopping them)."""
    gpus = _gpu_count() if parallel > 1 else 0
    queue, free = deque(points), list(range(parallel))
    running: dict[int, tuple] = {}  # slot -> (process, log handle, point)
    outcomes: list[Outcome] = []
    bar = Tally(len(points), "sweep", "run", progress)
    try:
        while queue or running:
            while queue and free:
                point, slot = queue.popleft(), free.pop(0)
                proc, handle = _start(point, config_files[point.name], log_dir / f"{point.name}.log", slot,
                                      parallel, gpus, imports)
                running[slot] = (proc, handle, point)
            time.sleep(poll)
            for slot, (proc, handle, point) in list(running.items()):
                if proc.poll() is None:
                    continue
                handle.close()
                outcomes.append(_outcome(point, proc.returncode, Path(handle.name)))
                del running[slot]
                free.append(slot)
                bar.ended(point.name, outcomes[-1].state)
    except KeyboardInterrupt:
        _stop(running)
        for proc, handle, point in running.values():
            handle.close()
            outcomes.append(Outcome(point, "interrupted", Path(handle.name)))
        outcomes += [Outcome(point, "interrupted") for point in queue]
        raise SweepInterrupted(outcomes) from None
    finally:
        bar.close()
    return outcomes

