"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
from contextlib import ExitStack, contextmanager
from pathlib import Path

from iwu.errors import UserError



def atomic_write(path, write) -> Path:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over ``path``.

    A process killed at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if disk_full(err):
            kept = "the file there before is intact" if path.exists() else "nothing was written"
            raise UserError(f"{path}: no space left on its disk to write it ({kept}); free some space "
                            "and run again (a run: resume=true)") from None
        raise
    return path


def _new_temporary(path: Path) -> tuple[int, str]:
    """A new file beside `path`, named for `remove_stale_temporaries`. Unlike mkstemp's (0600) its mode
    is the user's umask applied by the kernel: a run's files are shared like any other."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def disk_full(err: BaseException) -> bool:
    """Whether `err` comes from a full disk or quota, also when wrapped (torch.save raises a RuntimeError
    whose context is the OSError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove what `atomic_write` leaves in `folder` when its process is killed mid-write (a temporary
    up to the size of a whole checkpoint); only for a folder no other process is writing to."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


@contextmanager
def locked(path, wait: bool = True):
    """Hold an exclusive lock on the file `path` (created if missing) across processes.

    With `wait=False` a lock held elsewhere raises BlockingIOError at once. The
    lock goes with the process, so a killed holder never leaves it stuck.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def owned(path, busy: str):
    """Hold the lock file `path` for as long as the block runs, this process's id written in it.

    If another process holds it, a UserError at once: `busy` with ``{holder}`` replaced by that
    process's id (a killed holder frees the lock, so a crash never leaves it stuck).
    """
    with ExitStack() as stack:
        try:  # only taking the lock is answered here, not errors of the work it guards
            handle = stack.enter_context(locked(path, wait=False))
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "?"
            raise UserError(busy.format(holder=holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
