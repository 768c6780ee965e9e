"""`make test-fast` runs the suite without the tests marked slow; `make test` everything but the real-SLURM tests (`make test-slurm`)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _collected(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line for line in done.stdout.splitlines() if "::" in line}


@pytest.mark.slow  # collects the suite three times
def test_the_fast_suite_is_the_whole_one_without_the_slow_tests():
    every, slow, fast = _collected(), _collected("-m", "slow"), _collected("-m", "not slow")
    assert slow and fast and slow | fast == every and not slow & fast
    assert {t for t in every if t.startswith("tests/test_ddp.py")} <= slow  # processes, every one
    assert "tests/test_demo.py::test_demo_trains_both_modes_and_prints_the_table" in slow
    assert any(t.startswith("tests/test_config.py") for t in fast)  # quick unit tests stay in the loop


def test_make_has_both_targets():
    makefile = (ROOT / "Makefile").read_text()
    # make test: everything but the real-scheduler tests, which make test-slurm runs on a cluster it starts
    assert re.search(r'^test: install\n\t\$\(PY\) -m pytest -q -m "not slurm"\n', makefile, re.M)
    assert re.search(r'^test-fast: install\n\t\$\(PY\) -m pytest -q -m "not slow"\n', makefile, re.M)
    assert re.search(r"^test-slurm: install\n(\t.*\n)*\t.*-m slurm tests/test_slurm_cluster.py", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test") < ci.index("make test-slurm")
