"""`iwu demo` end to end on a few steps, and the command line's error contract."""

import json
import subprocess
import sys

from iwu.cli import main


def test_demo_trains_evaluates_and_draws(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3", "--size", "32"]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["results"]) == {"member0", "member1", "member2", "ensemble"}
    assert len(summary["results"]["ensemble"]["iou"]) == len(summary["classes"]) == 19
    assert [r["step"] for r in summary["history"]] == [1, 2, 3]
    assert all(r["instances_per_image"] >= 1 for r in summary["history"])
    assert (out / "uncertainty.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mIoU" in capsys.readouterr().out


def test_user_mistake_is_one_line_without_traceback(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "iwu", "demo", "--size", "20", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert "--size" in run.stderr and "Traceback" not in run.stderr
