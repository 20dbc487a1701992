"""Both front ends on one query service, in one asyncio loop.

``Server(config).run()`` serves until SIGINT/SIGTERM, then closes both front ends, cancels
pending queries and deletes stored results (the ``skyshard serve`` command);
``Server(config).start()`` serves from a background thread and returns once both ports
listen (tests, notebooks); ``stop()`` ends it. Port 0 picks a free port; ``mysql_port``
and ``http_port`` are the ones bound.

A server that opens the catalog itself opens it twice: once for interactive queries and
once, from a thread of lowered priority, for full scans (``queries``: the scan lane), so
that the scans' DuckDB worker threads run at that priority too. Director indexes are
loaded before the ports open, not by the first id lookup (seconds at 10^7 rows), and
the memory Arrow's pool kept from loading them is handed back to the system. The
director tables' files are then read into memory and kept there, mapped
(``storage.resident``, up to ``[limits] resident_share`` of the memory), so that id
lookups and cones do not wait on the disk when the system has dropped its cache; every
``RESIDENT_CHECK_S`` the server moves that hold to the newest published version.

With a ``[cluster]`` (``ClusterConfig``) both databases run on one Dask cluster: the
server starts a local one once (``workers``) or connects to ``scheduler``, and opens
both with ``scheduler=`` it (``Database`` then starts no cluster of its own). Scans
always run there; interactive queries run in this process when ``local_interactive``
(then the interactive database is an ordinary embedded one and the local cluster's
workers are started ``scan_nice`` lower, as the scan lane's threads would be).
Stopping the server closes both databases' Dask clients, then the local cluster, whose
nannies stop their worker processes. A cancelled or timed-out query's client gets its
error at once, as without a cluster; its Dask tasks are not interrupted: they run to
their end on the workers and their results are dropped (only the merge, in this
process, is interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import uvicorn
from mysql_mimic.errors import MysqlError

from skyshard.service import priority
from skyshard.service.config import ServiceConfig
from skyshard.service.errors import ConfigError
from skyshard.service.http import create_app
from skyshard.service.mysql import MysqlFrontend
from skyshard.service.queries import QueryService
from skyshard.storage import remote
from skyshard.storage.resident import ResidentFiles, director_files, memory_budget

log = logging.getLogger("skyshard.service")

#: how often the server checks for a new version whose files to keep in memory, seconds
RESIDENT_CHECK_S = 30.0


class _QuietMimic(logging.Filter):
    """mysql-mimic logs every error it sends at ERROR; the query service already logs
    each query's outcome, so those are dropped (its own failures are kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(record.msg, MysqlError)


def _quiet_mimic() -> None:
    mimic = logging.getLogger("mysql_mimic")
    if mimic.level == logging.NOTSET:
        mimic.setLevel(logging.WARNING)  # not a line per connection
    connection = logging.getLogger("mysql_mimic.connection")
    if not any(isinstance(f, _QuietMimic) for f in connection.filters):
        connection.addFilter(_QuietMimic())


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ``Server`` stops both front ends."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Server:
    def __init__(self, config: ServiceConfig, db: Any = None) -> None:
        """Open the catalog (twice, see the module docstring) and, with a ``[cluster]``,
        the Dask cluster; a ``db`` given is used for both lanes as it is."""
        _quiet_mimic()
        pa.table({"x": [0]})  # pyarrow imports pandas on first use: at start, not in a query
        self.config = config
        self._owned: list[Any] = []
        self.resident: ResidentFiles | None = None
        self._stopping = threading.Event()
        self._follower: threading.Thread | None = None
        #: the local Dask cluster this server started (``[cluster] workers``), if any
        self.cluster: Any = None
        try:
            if db is None:
                db, scan_db = self._open()
            else:
                scan_db = None
            self.db = db
            self.database = config.database or self.db.meta.name
            preload_indexes(self.db)
            self.resident = keep_resident(self.db, config)
        except BaseException:
            self.close()
            raise
        pa.default_memory_pool().release_unused()  # what loading them held (~0.5 GB at 10^7)
        try:
            self.service = QueryService(self.db, config.limits,
                                        results_dir=config.results_dir, scan_db=scan_db)
            self.mysql = MysqlFrontend(self.service, config.credentials,
                                       database=self.database)
            self.app = create_app(self.service, config.credentials, database=self.database)
        except BaseException:
            self.close()
            raise
        if self.resident is not None:
            self._follower = threading.Thread(target=self._follow, name="skyshard-resident",
                                              daemon=True)
            self._follower.start()
        self.mysql_port: int | None = None
        self.http_port: int | None = None
        self._http: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def _open(self) -> tuple[Any, Any]:
        """The interactive and the scan database (and the local cluster, if asked)."""
        import skyshard

        cfg, cluster = self.config, self.config.cluster
        nice = cfg.limits.scan_nice

        def open_db(**options: Any) -> Any:
            db = skyshard.open(cfg.catalog, **options)
            self._owned.append(db)
            return db

        shared = cfg.limits.shared_scans
        if not cluster.enabled:
            return open_db(), priority.run_lowered(
                lambda: open_db(threads=cfg.limits.scan_threads or None, shared_scans=shared),
                nice)
        try:
            from skyshard.dispatch.dask_executor import LocalDaskCluster
        except ImportError as exc:
            raise ConfigError("[cluster] needs Dask: pip install 'dask[distributed]'") from exc
        target: Any = cluster.scheduler
        if cluster.workers is not None:
            def start() -> Any:
                return LocalDaskCluster(cluster.workers, placement=cluster.placement)

            started = time.perf_counter()
            # Running scans only, its workers yield to the interactive lane like scan threads.
            self.cluster = (priority.run_lowered(start, nice) if cluster.interactive_in_process
                            else start())
            target = self.cluster
            log.info("local Dask cluster of %d worker process(es) at %s, started in %.1f s",
                     cluster.workers, self.cluster.address, time.perf_counter() - started)
        on_cluster = {"scheduler": target, "placement": cluster.placement,
                      "replication": cluster.replication}
        scan_db = priority.run_lowered(lambda: open_db(**on_cluster, shared_scans=shared), nice)
        db = open_db() if cluster.interactive_in_process else open_db(**on_cluster)
        for each in {id(db): db, id(scan_db): scan_db}.values():
            if hasattr(each.executor, "timeout"):
                # A query past its time limit has its error already; if its Dask tasks
                # never answer, its lane thread stops waiting for them at the latest then.
                each.executor.timeout = cfg.limits.timeout_s
        return db, scan_db

    def _follow(self) -> None:
        """Every ``RESIDENT_CHECK_S``, keep the newest published version's director files
        in memory instead of the older ones'."""
        while not self._stopping.wait(RESIDENT_CHECK_S):
            resident = self.resident
            if resident is None or self._stopping.is_set():
                return
            try:
                resident.keep(director_files(self.db.meta, self.db.root))
            except Exception as exc:  # noqa: BLE001 - queries still work, from the disk
                log.warning("keeping the director tables in memory: %s", exc)

    def close(self) -> None:
        """Close the databases this server opened (their Dask clients), then stop the
        local cluster it started; idempotent (``run`` and ``stop`` call it)."""
        self._stopping.set()
        resident, self.resident = self.resident, None
        if resident is not None:
            resident.close()  # a check under way finds it closed and keeps nothing
        follower = self._follower
        if follower is not None and follower is not threading.current_thread():
            follower.join(RESIDENT_CHECK_S)  # before the databases it reads are closed
        owned, self._owned = self._owned, []
        for db in owned:
            try:
                db.close()
            except Exception as exc:  # noqa: BLE001 - closing the rest matters more
                log.warning("closing %s: %s", getattr(db, "root", db), exc)
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()
            log.info("local Dask cluster stopped")

    def run(self) -> None:
        """Serve in this thread until interrupted."""
        asyncio.run(self._serve())

    def start(self, timeout: float = 30.0) -> Server:
        """Serve from a background thread; return when both ports listen."""
        def target() -> None:
            try:
                asyncio.run(self._serve())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                self._failure = exc
                self._ready.set()

        self._thread = threading.Thread(target=target, name="skyshard-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            raise RuntimeError("the server did not start") from self._failure
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._http is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(setattr, self._http, "should_exit", True)
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: stopping", sig.name)
        if self._http is not None:
            self._http.should_exit = True

    async def _serve(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self.mysql_port = await self.mysql.start(cfg.host, cfg.mysql_port)
        sock = http_socket(cfg.host)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.http_port))
        self.http_port = sock.getsockname()[1]
        self._http = _Uvicorn(uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False))
        log.info("catalog %s (database %r, %d tables)", self.db.root, self.database,
                 len(self.db.tables))
        log.info("MySQL protocol on %s:%d", cfg.host, self.mysql_port)
        log.info("HTTP on http://%s:%d (API description at /openapi.json)",
                 cfg.host, self.http_port)
        log.info("%s", cfg.describe())
        log.info("%s", self._where())
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        serving = asyncio.create_task(self._http.serve(sockets=[sock]))
        try:
            while not self._http.started:
                if serving.done():
                    await serving  # raises why it could not start
                    raise RuntimeError("the HTTP server stopped while starting")
                await asyncio.sleep(0.01)
            self._ready.set()
            await serving
        finally:
            await self.mysql.close()
            self.service.close()
            sock.close()
            await asyncio.to_thread(self.close)  # Dask's close blocks: not on this loop
            log.info("stopped")

    def _where(self) -> str:
        """Where queries run, for the log."""
        cluster = self.config.cluster
        if not cluster.enabled:
            return cluster.describe()
        address = self.cluster.address if self.cluster is not None else cluster.scheduler
        return f"{cluster.describe()} (scheduler {address})"


def preload_indexes(db: Any) -> None:
    """Load the director index of every table that has one (planning an id lookup loads
    it), so that no client's first id lookup pays for it."""
    for name, info in db.tables.items():
        key = getattr(info, "key", None)
        if not getattr(info, "index_path", None) or not key:
            continue
        started = time.perf_counter()
        try:
            db.plan(f"SELECT `{key}` FROM `{name}` WHERE `{key}` = 0")
        except Exception as exc:  # noqa: BLE001 - the first lookup will load it instead
            log.warning("index of %s not preloaded: %s", name, exc)
            continue
        log.info("index of %s loaded in %.1f s", name, time.perf_counter() - started)


def keep_resident(db: Any, config: ServiceConfig) -> ResidentFiles | None:
    """Keep the director tables' files in memory (``storage.resident``), within
    ``resident_share`` of the memory; None when off, remote, or read elsewhere (replicas
    on Dask workers)."""
    share = config.limits.resident_share
    root = getattr(db, "root", None)
    if share <= 0 or root is None or remote.is_url(str(root)):
        return None
    if not config.cluster.interactive_in_process:
        return None
    started = time.perf_counter()
    files = ResidentFiles(memory_budget(share))
    kept = files.keep(director_files(db.meta, root))
    log.info("director tables: %s in %.1f s (budget %s: resident_share %g)", kept.describe(),
             time.perf_counter() - started, f"{files.budget / 1e9:.1f} GB", share)
    return files


def http_socket(host: str) -> socket.socket:
    """The HTTP listening socket. Made with protocol IPPROTO_TCP, not the default 0: asyncio
    turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say TCP, and with it on,
    a response written in two parts (head, body) waits for the client's delayed ACK,
    ~40 ms, on every request of a kept-alive connection after the first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
