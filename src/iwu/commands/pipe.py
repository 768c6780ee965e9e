"""What a command does when the reader of its output goes away (`iwu ... | head`)."""

from __future__ import annotations

import os
import sys

PIPE_STATUS = 141  # a shell's status for a process ended by SIGPIPE (128 + 13)


def reader_gone() -> int:
    """Stop quietly, as Unix tools do: stdout goes to /dev/null, so exit's flush raises no second error.

    Returns the exit status to use."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return PIPE_STATUS
