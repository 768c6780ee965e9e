"""Atomic writes: the file's mode and what importing the module does to the process."""

import os
import stat
import subprocess
import sys

import pytest

from iwu.util.atomic_files import atomic_write_bytes, remove_stale_temporaries


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_written_file_has_the_mode_the_umask_gives(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        written = atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(before)
    assert stat.S_IMODE(written.stat().st_mode) == mode
    assert written.read_bytes() == b"{}"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left beside it


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_bytes(target, b"old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("killed")

    from iwu.util.atomic_files import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert remove_stale_temporaries(tmp_path) == []


@pytest.mark.slow
def test_importing_iwu_changes_neither_umask_nor_warning_filters():
    # torch and Lightning add their own filters when imported; iwu adds none
    probe = ("import os, warnings, torch, lightning; os.umask(0o027); filters = list(warnings.filters); "
             "import iwu.util.atomic_files, iwu.config.schema, iwu.cli, iwu.engine.ensemble, iwu.engine.train; "
             "assert os.umask(0o027) == 0o027; assert warnings.filters == filters, warnings.filters[:3]")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
