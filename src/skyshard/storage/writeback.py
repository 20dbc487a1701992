"""Sending finished files to the disk early.

A table version is flushed (``fsync``) before it is published. Left alone, the system
keeps freshly written files in memory until gigabytes are waiting, so that flush would
write a whole table while the ingest waits. ``start`` asks it to begin writing a file as
soon as the file is complete, in the background, while the ingest goes on with the
next; the flush before publishing then finds little left to write. Only a hint: on
systems without ``sync_file_range`` (Linux) it does nothing.

>>> import pathlib, tempfile
>>> f = pathlib.Path(tempfile.mkdtemp()) / "part.parquet"; _ = f.write_bytes(b"x")
>>> start(f) in (True, False)
True
"""

from __future__ import annotations

import ctypes
import functools
import os

SYNC_FILE_RANGE_WRITE = 2  # start writing the dirty pages; do not wait


@functools.cache
def _sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def start(path: str | os.PathLike[str]) -> bool:
    """Start writing ``path``'s data to the disk in the background; whether the system
    took the hint."""
    fn = _sync_file_range()
    if fn is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return fn(fd, 0, 0, SYNC_FILE_RANGE_WRITE) == 0
    finally:
        os.close(fd)
