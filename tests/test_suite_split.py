"""`make test-fast` runs the suite without the tests marked slow; `make test` everything but the real-SLURM tests (`make test-slurm`)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


# One collection of the whole suite, each test with whether `-m slow` selects it.
_COLLECT = """
import sys, pytest
class Marks:
    def pytest_collection_finish(self, session):
        for item in session.items:
            print("collected", "slow" if item.get_closest_marker("slow") else "fast", item.nodeid)
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"], plugins=[Marks()]))
"""


def _collected() -> dict[str, set[str]]:
    done = subprocess.run([sys.executable, "-c", _COLLECT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    kinds = {"slow": set(), "fast": set()}
    for line in done.stdout.splitlines():
        if line.startswith("collected "):
            _, kind, nodeid = line.split(" ", 2)
            kinds[kind].add(nodeid)
    return kinds


@pytest.mark.slow  # collects the whole suite in another process
def test_the_slow_mark_takes_the_processes_and_leaves_the_quick_tests():
    kinds = _collected()
    slow, fast = kinds["slow"], kinds["fast"]
    assert slow and fast
    assert {t for t in slow | fast if t.startswith("tests/test_ddp.py")} <= slow  # processes, every one
    assert "tests/test_demo.py::test_demo_trains_both_modes_and_prints_the_table" in slow
    assert any(t.startswith("tests/test_config.py") for t in fast)  # quick unit tests stay in the loop


def test_make_has_both_targets():
    makefile = (ROOT / "Makefile").read_text()
    # make test: everything but the real-scheduler tests, which make test-slurm runs on a cluster it starts
    assert re.search(r'^test: install\n\t\$\(PY\) -m pytest -q -n auto --dist loadfile -m "not slurm"\n', makefile, re.M)
    assert re.search(r'^test-fast: install\n\t\$\(PY\) -m pytest -q -n auto --dist loadfile -m "not slow"\n', makefile, re.M)
    assert re.search(r"^test-slurm: install\n(\t.*\n)*\t.*-m slurm tests/test_slurm_cluster.py", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test") < ci.index("make test-slurm")
