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
a budget: mapped file pages count as memory in use, which proactive reclaim leaves alone
and the kernel's LRU keeps longest. It is a soft hold: under real memory pressure the
kernel may still reclaim them (nothing is locked, so nothing can be killed for it).
DuckDB reads the files as before and finds their pages in the cache.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with open(f"{d}/a.parquet", "wb") as f:
...     _ = f.write(b"x" * 10_000)
>>> kept = ResidentFiles(budget=1 << 20)
>>> kept.keep([f"{d}/a.parquet"])
Residency(files=1, bytes=10000, skipped_files=0, skipped_bytes=0)
>>> kept.close()
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from skyshard.catalog.model import CatalogMeta, TableKind
from skyshard.storage import layout

#: ``madvise`` advice that reads a whole mapping in one call (Linux 5.14 and later)
_MADV_POPULATE_READ = 22


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
        self._maps: dict[str, mmap.mmap] = {}
        self._lock = threading.Lock()

    def keep(self, paths: Iterable[str | os.PathLike]) -> Residency:
        """Hold exactly these files (those that fit, in the order given); release the ones
        held before and not named now (an older version's files)."""
        wanted = list(dict.fromkeys(str(p) for p in paths))
        named = set(wanted)
        with self._lock:
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
                if used + size > self.budget:
                    skipped_files += 1
                    skipped_bytes += size
                    continue
                try:
                    self._maps[path] = _mapped(path)
                except (OSError, ValueError):
                    continue  # unreadable or vanished meanwhile: queries report that, not us
                used += size
            return Residency(len(self._maps), used, skipped_files, skipped_bytes)

    def close(self) -> None:
        """Release every file; idempotent."""
        with self._lock:
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


def _mapped(path: str) -> mmap.mmap:
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        m.madvise(_MADV_POPULATE_READ)
    except (OSError, ValueError, AttributeError):  # an older kernel, not Linux
        _ = m[:: mmap.PAGESIZE]  # touch every page
    return m


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.1f} MB"
