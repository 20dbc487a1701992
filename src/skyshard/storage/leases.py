"""Reader leases: which table versions open databases are reading, so that garbage
collection never removes files under a running query.

A ``Database`` writes one small JSON file per process and catalog::

    CATALOG/.skyshard-readers/<host>-<pid>-<token>.json
        {"host": "...", "pid": 123, "versions": [["Object", 2], ["Source", 3]]}

and touches it every ``HEARTBEAT_S`` seconds while it is open. ``collect_garbage`` keeps a
retired version while a live lease names it. A lease is live when its file was touched in
the last ``STALE_S`` seconds and, when it was written on this host, its process still
exists (a killed reader's lease is ignored at once; one from another host after
``STALE_S``).

A catalog on a read-only file system cannot hold leases: the reader then works without
one (``Lease.pinned`` says so), as before leases existed, and the one-hour grace period
of garbage collection is its only protection.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> lease = Lease(root)
>>> lease.pin({("Object", 2)})
True
>>> sorted(live_versions(root))
[('Object', 2)]
>>> lease.release()
>>> live_versions(root)
set()
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

READERS_DIR = ".skyshard-readers"
HEARTBEAT_S = 60.0
STALE_S = 300.0

Version = tuple[str, int]


class Lease:
    """This process's lease on some table versions of the catalog at ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.host = socket.gethostname()
        self.path = (Path(root) / READERS_DIR
                     / f"{_safe(self.host)}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json")
        self.pinned = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def pin(self, versions: Iterable[Version]) -> bool:
        """Record ``versions`` as read by this process (replacing what was recorded);
        False when the catalog cannot hold a lease (read-only)."""
        body = {"host": self.host, "pid": os.getpid(),
                "versions": sorted([t, int(v)] for t, v in versions)}
        with self._lock:
            try:
                self.path.parent.mkdir(exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(body))
                os.replace(tmp, self.path)
            except OSError:
                self.pinned = False
                return False
            self.pinned = True
            if self._beat is None:
                self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                              name="skyshard-lease")
                self._beat.start()
        return True

    def release(self) -> None:
        """Drop the lease (idempotent)."""
        self._stop.set()
        with self._lock:
            self.path.unlink(missing_ok=True)
            self.pinned = False

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                try:
                    os.utime(self.path)
                except OSError:
                    pass  # released, or the catalog went away: nothing to keep alive


def live_versions(root: str | os.PathLike, *, now: float | None = None) -> set[Version]:
    """The table versions named by live leases of the catalog at ``root``."""
    now = time.time() if now is None else now
    folder = Path(root) / READERS_DIR
    if not folder.is_dir():
        return set()
    host = socket.gethostname()
    out: set[Version] = set()
    for path in folder.glob("*.json"):
        try:
            age = now - path.stat().st_mtime
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed meanwhile, or half-written by a killed process
        if age > STALE_S or (body.get("host") == host and not _alive(int(body.get("pid", 0)))):
            continue
        out.update((str(t), int(v)) for t, v in body.get("versions", ()))
    return out


def remove_dead(root: str | os.PathLike, *, now: float | None = None) -> list[str]:
    """Delete the lease files of dead readers (stale, or of a gone process on this host)."""
    now = time.time() if now is None else now
    folder = Path(root) / READERS_DIR
    if not folder.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for path in folder.iterdir():
        try:
            stale = now - path.stat().st_mtime > STALE_S
            if not stale and path.suffix == ".json":
                body = json.loads(path.read_text())
                stale = body.get("host") == host and not _alive(int(body.get("pid", 0)))
        except (OSError, ValueError):
            stale = True
        if stale:
            path.unlink(missing_ok=True)
            removed.append(f"{READERS_DIR}/{path.name}")
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name) or "host"


__all__ = ["HEARTBEAT_S", "READERS_DIR", "STALE_S", "Lease", "live_versions", "remove_dead"]
