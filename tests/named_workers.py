"""``dask worker`` processes with fixed names, each keeping its replicas below ``base``
(``DASK_SKYSHARD__REPLICAS__DIRECTORY``): what a StatefulSet's pods or a site's worker
hosts are to the replica commands."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distributed import Client, LocalCluster

from skyshard.dispatch import replicas


class NamedWorkers:
    """Start, stop and kill named workers of ``client``'s scheduler (no nanny: a stopped
    worker stays stopped); ``threads`` each."""

    def __init__(self, client: Client, base: Path, *, threads: int = 1) -> None:
        self.client, self.base, self.threads = client, base, threads
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, DASK_SKYSHARD__REPLICAS__DIRECTORY=str(base),
                        PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def start(self, *names: str) -> None:
        address = self.client.scheduler.address
        for name in names:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", name,
                 "--nthreads", str(self.threads), "--no-nanny", "--no-dashboard"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda live: set(names) <= live)

    def stop_one(self, name: str) -> None:
        """As a worker shut down in order (SIGTERM) does."""
        self.procs.pop(name).send_signal(signal.SIGTERM)
        self._wait(lambda live: name not in live)

    def remove(self, name: str) -> None:
        """As a scale-down does: the pod goes, and its volume (retention: Delete)."""
        self.stop_one(name)
        shutil.rmtree(self.base / name, ignore_errors=True)

    def kill(self, *names: str) -> None:
        for name in names:
            self.procs.pop(name).send_signal(signal.SIGKILL)
        self._wait(lambda live: not set(names) & live)

    def dead(self, names) -> list[str]:
        """Which of ``names`` are not running."""
        return [n for n in names if n not in self.procs or self.procs[n].poll() is not None]

    def live(self) -> set[str]:
        return set(replicas.named_workers(self.client))

    def _wait(self, done, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.live()):
            if time.monotonic() > deadline:
                raise AssertionError(f"workers did not come or go: {self.live()}")
            time.sleep(0.02)

    def stop(self) -> None:
        for p in self.procs.values():
            p.kill()
            p.wait()


@contextmanager
def empty_cluster(catalog: Path, tmp: Path, *, threads: int = 1) -> Iterator[dict]:
    """A copy of ``catalog`` in ``tmp``, a scheduler with no worker yet, and the
    ``NamedWorkers`` to start (their copies below ``tmp/workers``); all stopped at the
    end. Yields ``root``, ``client``, ``workers``, ``address``."""
    root = tmp / "catalog"
    shutil.copytree(catalog, root)
    scheduler = LocalCluster(n_workers=0, dashboard_address=":0")
    client = Client(scheduler, set_as_default=False)
    workers = NamedWorkers(client, tmp / "workers", threads=threads)
    try:
        yield {"root": root, "client": client, "workers": workers,
               "address": scheduler.scheduler_address}
    finally:
        client.close()
        workers.stop()
        scheduler.close()
