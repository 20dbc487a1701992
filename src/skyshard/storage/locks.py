"""File locks that order the writers of one catalog (POSIX ``flock``).

Three kinds, always taken in this order (never the reverse, so writers cannot deadlock)::

    transaction lock   CATALOG/.transactions/<id>/lock   one process works on a transaction
    table locks        CATALOG/.locks/table-<name>.lock  commits to a table (and its family)
    catalog lock       CATALOG/.locks/catalog.lock       publish, recovery, garbage collection

``flock`` locks belong to an open file, not to a process: two threads of one process
exclude each other too, and a killed process releases its locks at once. Lock files are
removed by their holder on release, so an idle catalog holds none; a waiter that wakes
up on a removed file notices it (the path no longer names the file it locked) and tries
again.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> with FileLock(d / LOCKS / "x.lock"):
...     try:
...         FileLock(d / LOCKS / "x.lock").acquire(blocking=False)
...     except Busy:
...         print("busy")
busy
>>> sorted(p.name for p in d.iterdir())   # the lock file and its folder are gone
[]
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

from skyshard.errors import ExternalError, UserError

LOCKS = ".locks"


class Busy(UserError):
    """Someone else holds the lock (only raised by non-blocking acquisitions)."""


class FileLock:
    """An exclusive ``flock`` on ``path``, created on demand and (unless ``remove=False``:
    the file then goes with its folder) removed on release."""

    def __init__(self, path: Path, *, remove: bool = True, make_parent: bool = True) -> None:
        self.path = path
        self.remove = remove
        self.make_parent = make_parent
        self.fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> FileLock:
        """Take the lock (waiting for it unless ``blocking=False``: then ``Busy``). With
        ``make_parent=False``, ``FileNotFoundError`` when the folder does not exist
        (any more): what it locked is gone."""
        while True:
            if self.make_parent:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the directory was removed meanwhile
                if not self.make_parent:
                    raise
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise Busy(f"{self.path} is locked by another process or thread") from None
                raise ExternalError(f"cannot lock {self.path}: {exc}") from exc
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return self
            os.close(fd)  # locked a file its holder removed: try again

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self.remove:
                self.path.unlink(missing_ok=True)
                if self.path.parent.name == LOCKS:
                    _remove_if_empty(self.path.parent)
        finally:
            os.close(self.fd)  # closing releases the lock
            self.fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` (without waiting)."""
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the probe's lock
    return False


def catalog_lock(root: Path) -> FileLock:
    """Held while ``skyshard.json`` is rewritten and while files of published or retired
    versions are added or removed."""
    return FileLock(root / LOCKS / "catalog.lock")


def table_locks(root: Path, tables: Iterable[str]) -> ExitStack:
    """Locks of ``tables`` (case-insensitive names), taken in name order; release by
    closing the returned stack (a context manager)."""
    stack = ExitStack()
    try:
        for name in sorted({t.lower() for t in tables}):
            stack.enter_context(FileLock(root / LOCKS / f"table-{_safe(name)}.lock"))
    except BaseException:
        stack.close()
        raise
    return stack


def clear_stale(root: Path) -> list[str]:
    """Remove the lock files killed processes left in ``CATALOG/.locks`` (each taken
    first, so a live holder keeps its lock); returns their names."""
    folder = root / LOCKS
    removed = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.lock")):
            try:
                FileLock(path, make_parent=False).acquire(blocking=False).release()
                removed.append(f"{LOCKS}/{path.name}")
            except (Busy, FileNotFoundError):
                continue
        _remove_if_empty(folder)
    return removed


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else f"%{ord(c):02x}" for c in name)


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
