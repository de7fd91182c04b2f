"""Output files that are never half-written, and a lock on an output folder.

:func:`atomic_path` yields a temporary name beside the destination; the destination appears
(``os.replace``, atomic on one file system) only when the block finishes without an exception.
A killed process leaves at most a stale ``.NAME.tmp-PID`` file, never a truncated ``NAME``.

:class:`FolderLock` holds an exclusive ``flock`` on ``FOLDER/.simllm.lock`` for the life of a
command; a second holder gets an :class:`~simllm.errors.InputError` naming the first (its pid and
command line, written into the lock file). The kernel drops the lock when its holder dies, so a
SIGKILLed sweep never leaves the folder locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import sys
from pathlib import Path
from typing import Iterator

from .errors import InputError


def _writable_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError("expected a folder, found a file", file=folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder: {e.strerror or e}", file=folder) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError("folder is not writable", file=folder)
    try:  # os.access says yes to root everywhere; a file system may still refuse (/proc, read-only mounts)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise InputError(f"folder is not writable: {e.strerror or e}", file=folder) from None


def check_output_file(path: str | Path) -> Path:
    """Fail early (before any work) when ``path`` cannot be written as a file."""
    p = Path(path)
    if p.is_dir():
        raise InputError("expected a file name, found a folder", file=p)
    _writable_dir(p.parent if str(p.parent) else Path("."))
    return p


def check_output_dir(path: str | Path) -> Path:
    """Fail early (before any work) when ``path`` cannot be used as an output folder."""
    p = Path(path)
    _writable_dir(p)
    return p


def temp_name(path: str | Path) -> Path:
    """The hidden temporary name beside ``path`` that a file is written under before its rename."""
    dest = Path(path)
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` on success, remove it on failure."""
    dest = Path(path)
    tmp = temp_name(dest)
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class FolderLock:
    """Exclusive lock on an output folder (see the module docstring)."""

    NAME = ".simllm.lock"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        _writable_dir(self.folder)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise InputError(f"in use by {holder}; wait for it to finish or choose another --out",
                             file=self.folder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None
