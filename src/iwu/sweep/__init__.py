"""Sweeps: many runs of one config (seeds x modes x override values), locally or on SLURM.

    iwu sweep CONFIG --seeds 30 --modes standard,instance_uncertainty [key=value|key=a,b ...]
              [--launcher local|slurm] [--parallel N] [out=DIR]

Every point is an `iwu train` run in the layout `iwu report` reads; points whose
`final.json` exists are skipped, the others resume from their last checkpoint,
so an interrupted sweep is finished by the same command. The sweep's own files
are in `<root>/sweep/`: the resolved config of each run, the logs, the job ids
and `summary.json`. `iwu demo` (`demo.py`) is the smallest sweep: two modes, a few seeds, then the
table, the report and the uncertainty figure.
"""

from iwu.sweep.grid import Point, expand, parse_modes, parse_seeds, split_values
from iwu.sweep.run import run_sweep

__all__ = ["Point", "expand", "parse_modes", "parse_seeds", "run_sweep", "split_values"]
