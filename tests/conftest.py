"""The suite runs in pytest-xdist workers (`make test`: `-n auto`); each worker takes its share of the cores.

PyTorch's intra-op pool takes every core by default, so two workers on two cores would each run two
threads and spend the difference switching. Each worker, and every process a test starts from it (the CLI,
a sweep, DDP), gets `cores // workers` threads; a plain `pytest` run is left as it is.
"""

import os

import torch


def _threads_per_worker() -> int | None:
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return None
    return max(1, (os.cpu_count() or 1) // int(workers))


def pytest_configure(config):
    threads = _threads_per_worker()
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:  # a count the user set stands
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
