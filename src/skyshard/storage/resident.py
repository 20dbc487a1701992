"""Keep the files of a catalog's director tables resident in memory.

An id lookup or a small cone reads one or two row groups of a director table, at a place
no earlier query predicts: a few megabytes, read from the disk whenever the operating
system has dropped those pages from its cache. Page cache that no process maps is the
first memory the kernel takes back, and it may take it early: proactive reclaim (DAMON's,
or a virtual machine's balloon) pages out file pages nobody touched for a minute. Then a
served catalog that fits in memory many times over answers its lookups from the disk, in
hundreds of milliseconds instead of tens.

Qserv's workers lock the chunk tables a shared scan reads in memory (``memman``). A
skyshard server keeps its director tables' partition files *mapped* and read once, up to
a budget. Proactive reclaim that pages out only the file pages no process maps (the DAMON
scheme of the machine the benchmarks ran on) then leaves them alone. It is a soft hold:
under real memory pressure the kernel may still reclaim them (nothing is locked, so
nothing can be killed for it). DuckDB reads the files as before and finds their pages in
the cache. On Linux a mapping keeps no file descriptor open (``mmap(2)`` with
``MAP_POPULATE``, through ctypes); elsewhere Python's ``mmap`` keeps one per file, so
the number of files is capped below the process's limit.

>>> import os, tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     with open(os.path.join(d, "a.parquet"), "wb") as f:
...         _ = f.write(b"x" * 10_000)
...     kept = ResidentFiles(budget=1 << 20)
...     print(kept.keep([os.path.join(d, "a.parquet")]))
...     kept.close()
Residency(files=1, bytes=10000, skipped_files=0, skipped_bytes=0)
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from skyshard.catalog.model import CatalogMeta, TableKind
from skyshard.storage import layout

#: Files kept open for other work when mappings hold descriptors (not on Linux).
_SPARE_DESCRIPTORS = 1024


@dataclass(frozen=True)
class Residency:
    """What ``ResidentFiles.keep`` holds: files and bytes kept, and those left out
    because the budget was spent."""

    files: int
    bytes: int
    skipped_files: int = 0
    skipped_bytes: int = 0

    def describe(self) -> str:
        """One line for the log."""
        text = f"{self.files} file(s), {_gb(self.bytes)} kept in memory"
        if self.skipped_files:
            text += (f"; {self.skipped_files} file(s), {_gb(self.skipped_bytes)} left on disk "
                     "(over the budget)")
        return text


class ResidentFiles:
    """Files kept mapped and read into memory, at most ``budget`` bytes. Thread-safe."""

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"budget must be 0 or more bytes, not {budget}")
        self.budget = budget
        self.max_files = _max_files()
        self._maps: dict[str, _Mapping] = {}
        self._lock = threading.Lock()
        self._closed = False

    def keep(self, paths: Iterable[str | os.PathLike]) -> Residency:
        """Hold exactly these files (those that fit, in the order given); release the ones
        held before and not named now (an older version's files)."""
        wanted = list(dict.fromkeys(str(p) for p in paths))
        named = set(wanted)
        with self._lock:
            if self._closed:
                return Residency(0, 0)
            for path in [p for p in self._maps if p not in named]:
                self._maps.pop(path).close()
            used = sum(len(m) for m in self._maps.values())
            skipped_files = skipped_bytes = 0
            for path in wanted:
                if path in self._maps:
                    continue
                try:
                    size = os.path.getsize(path)
                except OSError:  # gone already (a version garbage-collected): nothing to hold
                    continue
                if size == 0:
                    continue
                if used + size > self.budget or len(self._maps) >= self.max_files:
                    skipped_files += 1
                    skipped_bytes += size
                    continue
                try:
                    self._maps[path] = _Mapping(path)
                except (OSError, ValueError):
                    continue  # unreadable or vanished meanwhile: queries report that, not us
                used += size
            return Residency(len(self._maps), used, skipped_files, skipped_bytes)

    def close(self) -> None:
        """Release every file, for good (``keep`` holds nothing after); idempotent."""
        with self._lock:
            self._closed = True
            for m in self._maps.values():
                m.close()
            self._maps.clear()


def director_files(meta: CatalogMeta, root: str | os.PathLike) -> list[str]:
    """The partition files of the catalog's director tables, table after table."""
    files: list[str] = []
    for t in meta.tables.values():
        if t.kind is not TableKind.DIRECTOR:
            continue
        base = Path(t.path) if Path(t.path).is_absolute() else Path(root) / t.path
        dataset = str(base / layout.DATASET)
        files += [layout.partition_path(dataset, p.order, p.pixel) for p in t.partitions]
    return files


def memory_budget(share: float) -> int:
    """``share`` of this machine's memory, or of the container's limit when lower."""
    if share <= 0:
        return 0
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _container_limit()
    if limit is not None:
        total = min(total, limit)
    return int(total * share)


def _container_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


class _Mapping:
    """One file mapped read-only and read into memory."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self.size = os.fstat(fd).st_size
            self._address: int | None = None
            self._map: mmap.mmap | None = None
            if _LIBC is not None:
                address = _LIBC.mmap(None, self.size, mmap.PROT_READ,
                                     mmap.MAP_SHARED | _MAP_POPULATE, fd, 0)
                if address in (None, _MAP_FAILED):
                    raise OSError(ctypes.get_errno(), f"cannot map {path}")
                self._address = address
            else:
                self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                _ = self._map[:: mmap.PAGESIZE]  # touch every page
        finally:
            os.close(fd)  # the mapping stays valid

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        """The mapped bytes (tests)."""
        if self._address is not None:
            return ctypes.string_at(self._address, self.size)
        assert self._map is not None
        return self._map[:]

    def close(self) -> None:
        if self._address is not None and _LIBC is not None:
            _LIBC.munmap(self._address, self.size)
            self._address = None
        if self._map is not None:
            self._map.close()
            self._map = None


def _libc() -> ctypes.CDLL | None:
    """The C library's ``mmap``/``munmap`` on Linux (where ``MAP_POPULATE`` exists)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
_MAP_POPULATE = 0x8000  # Linux: read the whole mapping in before mmap returns
_MAP_FAILED = ctypes.c_void_p(-1).value


def _max_files() -> int:
    """How many files may be kept: any number where mappings hold no descriptor, else the
    process's limit (raised to its maximum) less some to spare."""
    if _LIBC is not None:
        return sys.maxsize
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (ImportError, OSError, ValueError):
        return 0
    return max(0, soft - _SPARE_DESCRIPTORS) if soft != resource.RLIM_INFINITY else sys.maxsize


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.1f} MB"
