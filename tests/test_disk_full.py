"""A full disk is one line and loses nothing: files written atomically, the cache's memmaps, checkpoints."""

import errno
import io
import os

import pytest
import torch

from iwu.data import Cityscapes
from iwu.data.cache import prepare_cache
from iwu.data.synthetic import write_synthetic
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write, disk_full


class FullDisk(io.RawIOBase):
    """A file that takes a few bytes, then answers as a full disk does."""

    def __init__(self, room: int = 100):
        self.room = room

    def writable(self):
        return True

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)


def test_a_full_disk_while_writing_keeps_the_old_file_and_says_so(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"the previous checkpoint")

    def fill(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError, match=r"last.ckpt: no space left on its disk to write it \(the file there "
                                        r"before is intact\)"):
        atomic_write(path, fill)
    assert path.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left
    with pytest.raises(UserError, match=r"new.pt: no space left .* \(nothing was written\)"):
        atomic_write(tmp_path / "new.pt", lambda f: torch.save({"w": torch.zeros(1000)}, FullDisk()))


def test_disk_full_sees_through_torch_and_other_errors_pass(tmp_path):
    with pytest.raises(RuntimeError) as err:
        torch.save({"w": torch.zeros(1000)}, FullDisk())  # torch wraps the OSError in a RuntimeError
    assert disk_full(err.value)
    assert not disk_full(RuntimeError("something else")) and not disk_full(OSError(errno.EACCES, "denied"))

    def broken(f):
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):  # other errors are not disguised
        atomic_write(tmp_path / "x", broken)


def test_the_cache_reserves_its_space_before_decoding(tmp_path, monkeypatch):
    root = write_synthetic(tmp_path / "cs", "cityscapes", n_train=2, n_val=0, size=32)
    dataset = Cityscapes(root, "train", size=16)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(UserError, match="No space left on device; free space or choose another cache folder"):
        prepare_cache(dataset, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.suffix in (".tmp", ".npy")]
    monkeypatch.undo()
    assert (prepare_cache(dataset, tmp_path / "cache") / "manifest.json").is_file()
