"""A worker plugin for the network-namespace tests: every skyshard task leaves a mark
saying in which network namespace and on which worker address it ran, and waits while a
hold file exists (so that a test can act while tasks are running).

Imported by the ``dask worker`` processes (their ``PYTHONPATH`` names this directory).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

HOLD = "hold"
HOLD_LIMIT_S = 30.0


@dataclass(frozen=True)
class Mark:
    """One task start: the namespace inode, the worker's address, when (ns)."""

    inode: int
    worker: str
    at: int

    @classmethod
    def parse(cls, path: Path) -> Mark:
        _, inode, worker, at = path.name.split("~")
        return cls(int(inode), worker.replace("!", "/"), int(at))


def marks(folder: Path) -> list[Mark]:
    """The task starts noted in ``folder``, oldest first."""
    return sorted((Mark.parse(p) for p in folder.glob("task~*")), key=lambda m: m.at)


class TaskMarks(WorkerPlugin):
    """Wraps ``run_batch`` on every worker (restarted ones too); ``teardown`` unwraps."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._original = None

    def setup(self, worker) -> None:
        import skyshard.dispatch.dask_executor as mod

        original = self._original = mod.run_batch
        folder, address = Path(self.folder), worker.address.replace("/", "!")
        inode = os.stat("/proc/self/ns/net").st_ino

        def marked(*args, **kwargs):
            (folder / f"task~{inode}~{address}~{time.time_ns()}").touch()
            deadline = time.monotonic() + HOLD_LIMIT_S
            while (folder / HOLD).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return original(*args, **kwargs)

        mod.run_batch = marked

    def teardown(self, worker) -> None:
        if self._original is not None:
            import skyshard.dispatch.dask_executor as mod

            mod.run_batch = self._original


def client_hosts(dask_scheduler) -> list[str]:
    """On the scheduler: the addresses its clients' connections come from."""
    return sorted(comm.comm.peer_address for comm in dask_scheduler.client_comms.values()
                  if getattr(comm, "comm", None) is not None)
