"""The scale-out executor: a query's partitions run on the worker processes of a Dask
cluster, their partial results are merged here.

    ex = DaskExecutor("catalog", workers=2)                 # a LocalCluster of 2 processes
    ex = DaskExecutor("catalog", scheduler="tcp://host:8786")  # an existing cluster
    ex = DaskExecutor("catalog", scheduler="tcp://host:8786", placement="replicas")

Only this module and ``replicas`` (copying files between workers) import
``dask.distributed``.

How a query runs
----------------
- **One task per worker per query.** Dask costs ~3 ms per task and ~15 ms per
  submit-and-wait, so partitions are never one task each. The plan's partitions (sorted
  by ``_healpix_29``, i.e. spatially contiguous) are cut into as many contiguous groups as
  there are workers, balanced by row count; each group is one task running ONE parallel
  statement over all its partitions (fragments are just partition subsets, so the
  statement over a group is valid) on that worker's DuckDB. With ``fragment_partitions=N``
  a group runs as several statements of at most N partitions each, in one task.
- **Placement is stable.** Group ``i`` goes to worker ``(offset + i) mod n`` of the
  sorted worker addresses, ``offset`` a hash of the query's first partition: a full scan
  sends the same partitions to the same workers every time (warm page cache and Parquet
  footer cache), small queries spread over the workers by sky position. The restriction
  is loose: when that worker is gone, any worker runs the task.
- **Merge at the end.** The partials come back as Arrow tables; once all have arrived
  (``as_completed``, which also surfaces the first failure early), they are concatenated
  in group order and ``plan.merge_sql()`` runs over them, registered as ``partials``, on
  this process's engine. A query whose partitions fit one group (one worker, or a cone
  in one partition) skips the merge: its worker runs ``plan.single_sql()``.
- **Shared scans** (``shared_scans=True``). A full scan of a big table
  (``scans.rides``) sends each worker the same group of partitions every time, as a
  ``ScanRequest`` (``run_scan``): on the worker it rides the convoy of those
  partitions (``dispatch.scans``, one ``SharedScans`` per worker engine), so full scans
  running at once on the cluster read each unit once between them. A worker runs
  several tasks at once for that (``LocalDaskCluster``'s ``slots``; ``dask worker
  --nthreads`` for a cluster of one's own): with one task at a time, concurrent scans
  would queue and never meet. In shared-nothing mode the same holds for the groups the
  placement gives each worker, read from its copy (``run_replica_scan``).
- **Queries that cannot be split** (``plan.split is None``: sub-queries, window
  functions, joins across partitionings; ``plan.split_refusal`` says which) run
  ``plan.single_sql()`` as one task on one worker. The storage is shared, so that worker
  reads every partition the query needs and the answer is exactly the embedded one;
  such queries simply do not scale out.
- **One engine per worker process.** A worker keeps one locked-down ``Engine`` per
  catalog (created on first use, cached in ``_ENGINES`` keyed by the allowed directories
  and settings); a task costs a DuckDB cursor, never a new database. A worker plugin
  creates it as each worker starts (restarted workers too), off the query's path.

Failures
--------
A worker that dies mid-query loses its task; the scheduler runs it again on another
worker, a survivor or the dead one's replacement (up to
``distributed.scheduler.allowed-failures`` deaths per task, default 3), and an exception
raised by a task is retried ``retries`` times. Partial results are only merged once every
group has answered, so the answer after a failure is the answer without it. When a
group still cannot be computed (too many deaths, a persistent error, the scheduler
lost), the query fails with ``ExternalError`` naming that group's partitions
(``error.partitions``; None for a single statement): never a silent partial result.
Errors of the query itself (``SkyshardError`` raised by the worker's engine: SQL errors
at execution, row limits) are returned as values, not retried, and re-raised here with
their type and message.

Data placement
--------------
**Shared storage** (``placement="shared"``, the default): every worker reads the catalog
at the same path (a local disk for a ``LocalCluster``; a shared file system such as NFS,
Lustre or CephFS for a real cluster) or at the same URL (object storage such as S3:
``storage.remote``; each worker's engine opens the store with the executor's
``storage_options``, sent in the ``EngineSpec``). Nothing is copied to workers. Everything above
describes this mode.

**Shared-nothing** (``placement="replicas"``): each worker holds a subset of the
partitions on its own disk, each partition on ``replication`` workers (Qserv's replicas;
default 2), plus the files every statement may need (replicated tables, orphans). What
a unit is, and the placement record (``replicas.json`` in the catalog root, holders by
worker *name*): ``placement``; copying, checking and repairing through Dask tasks, and
where a worker keeps its copies (``skyshard.replicas.directory`` / its name):
``replicas``. Opening the executor places the catalog (copies only what is missing).

- **Tasks go where the data is.** The partitions of a split query are covered by their
  live holders, heaviest first onto the least loaded (rows), one task per worker over
  the partitions it was given (``fragment_partitions`` still cuts it into statements);
  a query that fits on one worker, or cannot be split, runs the single statement on a
  worker holding every file it reads (a query that cannot be split and reads more than
  any one worker holds is refused: ``UnsupportedQueryError``). Tasks are pinned to
  their worker (strict ``workers=``, no ``allow_other_workers``).
- **Paths.** The plan renders file paths under the coordinator's catalog root; the task
  checks that the worker's copy has every file the statements name (``MissingFiles``
  otherwise), rewrites the root prefix to its own copy's directory and runs them on an
  engine that may read only that directory: workers never read the coordinator's root.
- **Failures.** The executor watches its tasks: a task whose worker leaves the cluster
  (polled every 0.1 s while tasks run), whose copy lacks files, or that keeps failing
  after ``retries``, is planned again over the *other* holders of its partitions, that
  worker excluded for the rest of the query (so is a task whose worker died after it
  finished but before its result was fetched: ``replicas.fetch`` does not wait for a
  recomputation that its pinning forbids); partials are merged only once every
  partition has answered, so the answer is the one without the failure. A partition
  with no live holder left is an ``ExternalError`` listing it (``error.partitions``),
  never a partial answer. A worker that comes back under its name with its directory
  holds again what it held and is used by the next query (placement names, not
  addresses). ``replicas.json`` is read again when it changes (after a repair).
- **Upkeep.** ``skyshard replicas check`` reports per partition the holders, verified
  copies (size + SHA-256) and missing or corrupt ones; ``skyshard replicas repair``
  restores the replication factor from intact copies on other workers.

A version published after placement (an ingest) is placed by the first query that
needs it (``replicas.place``: only the new files are copied; the coordinator writes
``replicas.json``, so its catalog root must be writable, else the query fails asking
for ``skyshard replicas place``). The older version's files stay on the workers until
``skyshard replicas place`` or ``repair`` removes them, once the catalog's garbage
collection has removed them from the catalog root (a query never waits for that). Not
built yet: concurrent place/repair/rebalance runs on one catalog. Spreading copies onto workers
that joined, and draining workers before they leave: ``replicas.rebalance``/``drain``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask
import duckdb
import pyarrow as pa
from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from skyshard.catalog.model import Partition, TableInfo
from skyshard.dispatch import replicas
from skyshard.dispatch.executor import named
from skyshard.dispatch.placement import (
    DEFAULT_REPLICATION,
    PLACEMENT_FILE,
    SHARED,
    Placement,
    cover,
    missing_error,
    rebase,
    single_holders,
    stable_pick,
    statement_files,
    unit_key,
    unit_partition,
)
from skyshard.dispatch.scans import (
    DEFAULT_MIN_ROWS,
    ScanRequest,
    SharedScans,
    orphan_sql,
    rides,
    scan_request,
)
from skyshard.engine.duck import Engine
from skyshard.errors import (
    ExternalError,
    QueryCancelled,
    QueryLimitError,
    SkyshardError,
    SqlError,
    UnsupportedQueryError,
    UserError,
)
from skyshard.sql.plan import QueryPlan
from skyshard.sql.split import PARTIALS
from skyshard.storage import remote

log = logging.getLogger("skyshard.dispatch")

# --- the worker side ---------------------------------------------------------------------


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to open the catalog's engine (hashable: the cache key)."""

    data_dirs: tuple[str, ...]
    threads: int | None = None
    memory_limit: str | None = None
    #: options of the file system of URL data dirs, as JSON text (``remote.options_text``)
    storage_options: str = field(default="", repr=False)


_ENGINES: dict[EngineSpec, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def worker_engine(spec: EngineSpec) -> Engine:
    """This process's engine for ``spec``, created on first use."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(spec)
        if engine is None:
            engine = Engine(spec.data_dirs, threads=spec.threads, memory_limit=spec.memory_limit,
                            storage_options=json.loads(spec.storage_options or "{}"))
            _ENGINES[spec] = engine
        return engine


@dataclass(frozen=True)
class QueryFailed:
    """A ``SkyshardError`` raised by the query on a worker, returned as a value so that
    Dask does not retry it."""

    error: SkyshardError


#: This worker's running statements by query tag, and the tags interrupted lately
#: (a task that starts after its query was interrupted does not run).
_RUNNING: dict[str, list[Any]] = {}
_INTERRUPTED: dict[str, float] = {}
_RUNNING_LOCK = threading.Lock()
_INTERRUPTED_KEPT_S = 600.0


class _TaggedEngine:
    """A worker's engine whose cursors are listed under a query's tag while they are
    open, so that ``interrupt_query`` finds them; refuses new cursors once that query
    was interrupted. The ``cursor``/``query`` interface of ``Engine``; a context
    manager that unlists the cursors left open."""

    def __init__(self, engine: Engine, tag: str | None) -> None:
        self._engine, self._tag = engine, tag or ""
        self._mine: list[Any] = []

    def check(self) -> None:
        """``QueryCancelled`` if the query was interrupted."""
        with _RUNNING_LOCK:
            if self._tag and self._tag in _INTERRUPTED:
                raise QueryCancelled("the query was interrupted")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._engine.cursor()
        with _RUNNING_LOCK:
            if self._tag and self._tag in _INTERRUPTED:
                cur.close()
                raise QueryCancelled("the query was interrupted")
            _RUNNING.setdefault(self._tag, []).append(cur)
        self._mine.append(cur)
        return cur

    def query(self, sql: str, **kwargs: Any) -> pa.Table:
        cur = self.cursor()
        try:
            return self._engine.query(sql, cursor=cur, **kwargs)
        finally:
            self._unlist([cur])

    def _unlist(self, cursors: list[Any]) -> None:
        with _RUNNING_LOCK:
            running = _RUNNING.get(self._tag, [])
            for cur in cursors:
                if cur in running:
                    running.remove(cur)
                if cur in self._mine:
                    self._mine.remove(cur)
            if not running:
                _RUNNING.pop(self._tag, None)

    def __enter__(self) -> _TaggedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self._unlist(list(self._mine))


def run_batch(spec: EngineSpec, statements: tuple[str, ...],
              max_rows: int | None = None, tag: str | None = None) -> pa.Table | QueryFailed:
    """The task: run ``statements`` in order on this worker's engine, one table out.
    ``tag`` names the query, so that ``interrupt_query`` can stop its statements."""
    try:
        with _TaggedEngine(worker_engine(spec), tag) as engine:
            tables = [engine.query(s, max_rows=max_rows) for s in statements]
    except duckdb.InterruptException:
        return QueryFailed(QueryCancelled("the query was interrupted"))
    except SkyshardError as exc:
        return QueryFailed(exc)
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


#: Each worker's shared scans, one per engine and settings (``worker_scans``).
_SCANS: dict[tuple[EngineSpec, tuple[tuple[str, float], ...]], SharedScans] = {}


def worker_scans(spec: EngineSpec, options: tuple[tuple[str, float], ...] = ()) -> SharedScans:
    """This process's shared scans over the engine of ``spec`` (``SharedScans`` keyword
    arguments ``options``), created on first use."""
    engine = worker_engine(spec)
    with _ENGINES_LOCK:
        scans = _SCANS.get((spec, options))
        if scans is None:
            scans = _SCANS[(spec, options)] = SharedScans(engine, **dict(options))
        return scans


def worker_scan_stats() -> dict[str, int]:
    """The counters of this process's shared scans (``SharedScans.stats``), summed."""
    with _ENGINES_LOCK:
        scans = list(_SCANS.values())
    total: dict[str, int] = {}
    for one in scans:
        for k, v in one.stats.items():
            total[k] = total.get(k, 0) + v
    return total


def run_scan(spec: EngineSpec, request: ScanRequest, orphans: str | None,
             options: tuple[tuple[str, float], ...] = (),
             tag: str | None = None) -> pa.Table | QueryFailed:
    """The task of a full scan with shared scans on: the query's partials over the
    partitions of ``request``, read in this worker's convoy of them with the other full
    scans of those partitions running here (``dispatch.scans``), and over the orphans
    (the ``orphans`` statement) when this group has them."""
    try:
        with _TaggedEngine(worker_engine(spec), tag) as engine:
            engine.check()  # an interrupted query's task that starts late
            scans = worker_scans(spec, options)
            tables = [engine.query(orphans)] if orphans else []
            tables += scans.partials(request, engine)
    except duckdb.InterruptException:
        return QueryFailed(QueryCancelled("the query was interrupted"))
    except SkyshardError as exc:
        return QueryFailed(exc)
    return pa.concat_tables(tables, promote_options="permissive")


def interrupt_query(tag: str) -> int:
    """Run on every worker (``Client.run``): interrupt the statements of query ``tag``
    running here, and refuse its tasks that start later. How many were running."""
    now = time.monotonic()
    with _RUNNING_LOCK:
        for old, when in list(_INTERRUPTED.items()):
            if now - when > _INTERRUPTED_KEPT_S:
                del _INTERRUPTED[old]
        _INTERRUPTED[tag] = now
        cursors = list(_RUNNING.get(tag, ()))
    for cur in cursors:
        try:
            cur.interrupt()
        except duckdb.Error:
            pass  # that statement has just ended
    return len(cursors)


async def _interrupt_query_here(tag: str) -> int:
    """``interrupt_query`` for ``Client.run(..., wait=False)``, which takes coroutines."""
    return interrupt_query(tag)


class _RemoteQuery:
    """A query's tasks on the cluster, as the query service sees them: ``interrupt()``
    (from any thread) cancels the tasks not started and interrupts the running ones."""

    def __init__(self, client: Client, tag: str) -> None:
        self.client, self.tag = client, tag
        self.interrupted = False
        self.futures: list = []

    def interrupt(self) -> None:
        self.interrupted = True
        try:
            self.client.cancel(list(self.futures))
            self.client.run(_interrupt_query_here, self.tag, wait=False)
        except Exception:  # noqa: BLE001 - the cluster may be gone; the query ends anyway
            pass

    def check(self) -> None:
        if self.interrupted:
            raise QueryCancelled("the query was interrupted")


class EngineWarmer(WorkerPlugin):
    """Opens the engine on every worker as it starts, restarted ones included, so that a
    replacement worker's first task does not pay for imports and a new DuckDB."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec

    def setup(self, worker) -> None:
        worker_engine(self.spec)


@dataclass(frozen=True)
class ReplicaSpec:
    """What a worker needs to run statements on its own copy of a catalog: the catalog's
    placement id and the root the statements name (each worker maps it to its copy)."""

    catalog_id: str
    source_root: str
    threads: int | None = None
    memory_limit: str | None = None

    def engine_spec(self, home: Path) -> EngineSpec:
        return EngineSpec((str(home),), self.threads, self.memory_limit)


@dataclass(frozen=True)
class MissingFiles:
    """A worker lacks files a task needs (its copy was lost): run it elsewhere."""

    worker: str
    files: tuple[str, ...]


def run_replica_batch(spec: ReplicaSpec, statements: tuple[str, ...], files: tuple[str, ...],
                      max_rows: int | None = None,
                      tag: str | None = None) -> pa.Table | QueryFailed | MissingFiles:
    """The task in shared-nothing mode: check that this worker's copy has ``files``, then
    run ``statements`` on it, the catalog root rewritten to the copy's directory (the
    engine may read only that directory)."""
    home = _copy_with(spec, files)
    if isinstance(home, MissingFiles):
        return home
    local = tuple(rebase(s, spec.source_root, home) for s in statements)
    return run_batch(spec.engine_spec(home), local, max_rows, tag)


def _copy_with(spec: ReplicaSpec, files: tuple[str, ...]) -> Path | MissingFiles:
    """This worker's copy of the catalog, if it has every one of ``files``."""
    from distributed import get_worker

    worker = get_worker()
    home = replicas.catalog_home(spec.catalog_id, worker)
    missing = tuple(f for f in files if not os.path.isfile(os.path.join(home, f)))
    return MissingFiles(str(worker.name), missing) if missing else home


def run_replica_scan(spec: ReplicaSpec, request: ScanRequest, orphans: str | None,
                     files: tuple[str, ...], options: tuple[tuple[str, float], ...] = (),
                     tag: str | None = None) -> pa.Table | QueryFailed | MissingFiles:
    """``run_scan`` in shared-nothing mode: check that this worker's copy has ``files``,
    then ride its shared scans of the copy (the request's files and the orphans
    statement rewritten to the copy's directory)."""
    home = _copy_with(spec, files)
    if isinstance(home, MissingFiles):
        return home
    parts = tuple(replace(p, file=os.path.join(home, os.path.relpath(p.file, spec.source_root)))
                  for p in request.parts)
    local = replace(request, parts=parts)
    return run_scan(spec.engine_spec(home), local,
                    rebase(orphans, spec.source_root, home) if orphans else None, options, tag)


class ReplicaEngineWarmer(WorkerPlugin):
    """``EngineWarmer`` for shared-nothing mode: each worker's engine reads its own copy."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec

    def setup(self, worker) -> None:
        home = replicas.catalog_home(self.spec.catalog_id, worker)
        home.mkdir(parents=True, exist_ok=True)
        worker_engine(self.spec.engine_spec(home))


# --- planning the tasks (no Dask) ----------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One task: statements for one worker (``None``: any worker) over some partitions
    (``None``: whatever the single statement reads)."""

    worker: str | None
    partitions: tuple[tuple[int, int], ...] | None
    statements: tuple[str, ...]


def balanced_groups(parts: Sequence[Partition], k: int) -> list[list[Partition]]:
    """``parts`` cut, in order, into at most ``k`` non-empty runs of about equal rows.

    >>> ps = [Partition(0, i, rows=r) for i, r in enumerate([5, 5, 10, 1, 1, 8])]
    >>> [[p.pixel for p in g] for g in balanced_groups(ps, 2)]
    [[0, 1, 2], [3, 4, 5]]
    """
    if k <= 1 or len(parts) <= 1:
        return [list(parts)] if parts else []
    weights = [max(p.rows, 1) for p in parts]
    total = sum(weights)
    groups: list[list[Partition]] = []
    current: list[Partition] = []
    acc = 0
    for i, (p, w) in enumerate(zip(parts, weights)):
        still = k - len(groups) - 1  # groups to open after the current one
        left = len(parts) - i
        boundary = total * (len(groups) + 1) / k
        if current and still > 0 and (acc + w / 2 > boundary or left == still):
            groups.append(current)
            current = []
        current.append(p)
        acc += w
    groups.append(current)
    return groups


def plan_batches(plan: QueryPlan, workers: Sequence[str], *,
                 fragment_partitions: int | None = None) -> tuple[list[Batch], bool]:
    """The tasks of ``plan`` on ``workers`` (sorted addresses) and whether their results
    need the merge statement (else there is one task running the single statement)."""
    parts = plan.partitions
    spread = fragment_partitions is not None or (len(workers) > 1 and len(parts or ()) > 1)
    if parts is None or not spread or plan.split is None:
        first = parts[0] if parts else None
        return [Batch(_worker_for(first, 0, workers), None, (plan.single_sql(),))], False
    groups = balanced_groups(parts, max(1, len(workers))) or [[]]
    size = max(1, fragment_partitions) if fragment_partitions is not None else None
    batches = []
    for i, group in enumerate(groups):
        pairs = [(p.order, p.pixel) for p in group]
        chunks = [pairs[j:j + size] for j in range(0, len(pairs), size)] if size else [pairs]
        statements = tuple(plan.parallel_sql(c, orphans=(i == 0 and j == 0))
                           for j, c in enumerate(chunks or [[]]))
        batches.append(Batch(_worker_for(parts[0] if parts else None, i, workers),
                             tuple(pairs), statements))
    return batches, True


@dataclass(frozen=True)
class ScanBatch(Batch):
    """A ``Batch`` of a full scan riding the workers' shared scans: ``request`` covers
    the batch's partitions; ``orphans``, the statement over the table's orphans, is in
    one batch (``run_scan``)."""

    request: ScanRequest | None = None
    orphans: str | None = None


def scan_batches(plan: QueryPlan, info: TableInfo, workers: Sequence[str]) -> list[ScanBatch]:
    """The tasks of ``plan``, a full scan of ``info`` (``scans.rides``) with shared scans
    on: the same groups on the same workers as ``plan_batches`` (so that concurrent scans
    of the table send each worker the same partitions, and meet in its convoy of them)."""
    parts = plan.partitions or []
    out = []
    for i, group in enumerate(balanced_groups(parts, max(1, len(workers)))):
        pairs = tuple((p.order, p.pixel) for p in group)
        orphans = orphan_sql(plan, info) if i == 0 else None
        out.append(ScanBatch(_worker_for(parts[0], i, workers), pairs, (),
                             scan_request(plan, info, pairs), orphans))
    return out


def _worker_for(first: Partition | None, i: int, workers: Sequence[str]) -> str | None:
    if not workers:
        return None
    offset = zlib.crc32(f"{first.order}/{first.pixel}".encode()) if first else 0
    return workers[(offset + i) % len(workers)]


@dataclass(frozen=True)
class ReplicaBatch(Batch):
    """A ``Batch`` in shared-nothing mode: ``worker`` is a worker name, ``files`` what its
    statements read (relative to the catalog root), ``orphans`` whether they include the
    child orphans (exactly one batch of a split query does). A full scan riding the
    workers' shared scans has a ``request`` (and the ``orphan_sql`` statement, when it
    reads the orphans) instead of statements (``run_replica_scan``)."""

    files: tuple[str, ...] = ()
    orphans: bool = False
    request: ScanRequest | None = None
    orphan_sql: str | None = None


def replica_batches(plan: QueryPlan, placement: Placement, usable: Sequence[str], *,
                    fragment_partitions: int | None = None,
                    scan: TableInfo | None = None) -> tuple[list[ReplicaBatch], bool]:
    """The tasks of ``plan`` on the ``usable`` workers (names) of a placement, and
    whether they need the merge statement. ``scan``: the table whose shared scans the
    split tasks ride (``scans.rides``).

    A split query over several partitions runs on the workers that ``cover`` chooses
    (each partition on one of its holders, balanced by rows), one task each; one that
    fits on one worker, or cannot be split, runs the single statement on a worker
    holding everything it reads. Missing partitions: the ``missing_error``; a query that
    cannot be split over partitions no one worker holds: ``UnsupportedQueryError``.
    """
    parts = plan.partitions
    splittable = plan.split is not None and parts is not None
    if splittable and (len(parts) > 1 or fragment_partitions is not None):
        groups = cover(parts, placement, usable)
        if groups and (len(groups) > 1 or fragment_partitions is not None):
            return split_batches(plan, placement, groups, fragment_partitions,
                                 scan=scan), True
    single = plan.single_sql()
    files = _placed_files(single, plan, placement)
    units = {placement.unit_of(f) for f in files} | {SHARED}
    candidates = single_holders(units, placement, usable)
    if candidates:
        seed = unit_key(parts[0].order, parts[0].pixel) if parts else plan.sql
        return [ReplicaBatch(stable_pick(candidates, seed), None, (single,), files)], False
    lacking = sorted(u for u in units if not set(placement.holders(u)) & set(usable))
    lost = [unit_partition(u) for u in lacking if u != SHARED]
    if lost:
        raise missing_error(lost, placement, usable)
    if lacking:
        raise ExternalError("no live worker holds the catalog's shared files (replicated "
                            "tables, orphans): restart a worker or run `skyshard replicas "
                            "repair`")
    if splittable:
        return split_batches(plan, placement, cover(parts, placement, usable),
                             fragment_partitions, scan=scan), True
    raise UnsupportedQueryError(
        f"this query cannot be split ({plan.split_refusal}) and no single worker holds all "
        f"{len(units) - 1} partitions it reads", construct="unsplittable query",
        suggestion="restrict it to a region, or place the catalog with a replication "
        "factor equal to the number of workers (or use shared storage)")


def split_batches(plan: QueryPlan, placement: Placement, groups: dict[str, list[Partition]],
                  fragment_partitions: int | None, *, orphans: bool = True,
                  scan: TableInfo | None = None) -> list[ReplicaBatch]:
    """One task per worker of ``groups`` (worker name -> partitions): the parallel
    statement over its partitions (several of at most ``fragment_partitions`` each); the
    first statement of the first task reads the orphans when ``orphans``. With ``scan``
    (and no ``fragment_partitions``), each task rides its worker's shared scans of
    ``scan`` instead."""
    size = max(1, fragment_partitions) if fragment_partitions is not None else None
    out = []
    for i, (worker, group) in enumerate(groups.items()):
        pairs = [(p.order, p.pixel) for p in group]
        chunks = [pairs[j:j + size] for j in range(0, len(pairs), size)] if size else [pairs]
        first = orphans and i == 0
        statements = tuple(plan.parallel_sql(c, orphans=first and j == 0)
                           for j, c in enumerate(chunks or [[]]))
        files = sorted(set().union(*(_placed_files(s, plan, placement) for s in statements)))
        if scan is not None and size is None:
            request = scan_request(plan, scan, pairs)
            out.append(ReplicaBatch(worker, tuple(pairs), (), tuple(files), orphans=first,
                                    request=request,
                                    orphan_sql=orphan_sql(plan, scan) if first else None))
        else:
            out.append(ReplicaBatch(worker, tuple(pairs), statements, tuple(files),
                                    orphans=first))
    return out


class StalePlacement(ExternalError):
    """A statement reads files the placement does not list: a version published (an
    ingest) after the catalog was placed on the workers."""


def _placed_files(sql: str, plan: QueryPlan, placement: Placement) -> tuple[str, ...]:
    """The files ``sql`` reads, every one of which the placement must list."""
    files = tuple(sorted(statement_files(sql, plan.root)))
    unknown = [f for f in files if placement.unit_of(f) is None]
    if unknown:
        raise StalePlacement(f"the catalog changed since it was placed on the workers: "
                             f"{unknown[0]} (and {len(unknown) - 1} more) not in the "
                             "placement; run `skyshard replicas place`")
    return files


# --- a local cluster ---------------------------------------------------------------------

#: Tasks a local cluster's worker runs at once: queries sent together run together on
#: it (full scans meet in its shared scans; a cone does not wait behind a scan), and
#: share its DuckDB's threads.
SLOTS = 4



class LocalDaskCluster:
    """A ``LocalCluster`` of ``workers`` processes on this machine, each running up to
    ``slots`` tasks at once (``SLOTS``).

    ``DaskExecutor(workers=N)`` starts one of its own; to run several executors on one
    cluster (``skyshard serve``: its interactive and scan databases), start one here and
    give it to each as ``scheduler=``. ``threads`` and ``memory_limit`` are each worker's
    DuckDB share of this machine's cores and memory (the tasks running at once on a
    worker share its DuckDB's threads). ``placement="replicas"``
    (shared-nothing mode): the workers keep their copies below ``replica_dir`` (default:
    a temporary directory removed by ``close``). ``close()`` stops the workers;
    idempotent.
    """

    def __init__(self, workers: int, *, placement: str = "shared",
                 replica_dir: str | os.PathLike | None = None, slots: int = SLOTS) -> None:
        if workers < 1 or slots < 1:
            raise UserError(f"workers and slots must be at least 1, not {workers} and {slots}")
        from distributed.system import MEMORY_LIMIT

        self.workers, self.slots = workers, slots
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.memory_limit = f"{max(256, int(MEMORY_LIMIT / workers / 2 / 2**20))}MB"
        self._own_replica_dir: str | None = None
        config = {}
        if placement == "replicas":
            if replica_dir is None:
                replica_dir = self._own_replica_dir = tempfile.mkdtemp(
                    prefix="skyshard-replicas-")
            config[replicas.CONFIG_KEY] = str(Path(replica_dir).resolve())
        try:
            with dask.config.set(config):  # the nannies pass it on to their workers
                self.cluster: LocalCluster | None = LocalCluster(
                    n_workers=workers, threads_per_worker=slots, processes=True,
                    dashboard_address=None)
        except BaseException:
            self.close()
            raise
        self.address: str = self.cluster.scheduler_address

    def close(self) -> None:
        cluster, self.cluster = getattr(self, "cluster", None), None
        if cluster is not None:
            try:
                cluster.close()
            except Exception:  # noqa: BLE001 - closing what may already be dead
                pass
        if self._own_replica_dir is not None:
            shutil.rmtree(self._own_replica_dir, ignore_errors=True)
            self._own_replica_dir = None

    def __enter__(self) -> LocalDaskCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the executor ------------------------------------------------------------------------


class DaskExecutor:
    """Runs queries on a Dask cluster: a new ``LocalCluster`` of ``workers`` processes
    (``LocalDaskCluster``), or the cluster whose scheduler is at ``scheduler``.

    ``data_dirs`` are the directories the workers' engines may read (default: the catalog
    root); ``engine`` runs the merges here (default: a new one). ``threads`` and
    ``memory_limit`` configure each worker's DuckDB (for a local cluster, default: the
    cores and a share of the memory divided among the workers). ``timeout`` (seconds)
    bounds a query (``QueryLimitError``); ``connect_timeout`` bounds reaching the
    scheduler and waiting for a worker (``ExternalError``).

    ``placement="replicas"``: shared-nothing mode (see the module docstring). Opening
    places the catalog on the workers (``replicas.place``: copies what is missing so that
    each partition has ``replication`` copies; sizes checked, not checksums). A local
    cluster keeps its workers' copies below ``replica_dir`` (default: a temporary
    directory removed on ``close``); an existing cluster's workers bring their own
    (``skyshard.replicas.directory`` in their Dask config).

    ``scheduler`` may also be a ``LocalDaskCluster``, for several executors on one local
    cluster: its address, and its share of cores and memory for each worker's DuckDB.

    ``shared_scans=True``: full scans of a big table ride the workers' shared scans (see
    the module docstring); ``scan_options`` are ``SharedScans`` keyword arguments
    (``unit_rows``, ``min_overlap``, ``min_rows``, ``gather_s``, ...). Not with
    ``fragment_partitions`` (then every query runs its statements as usual).
    """

    def __init__(self, catalog_root: str | os.PathLike, *, workers: int | None = None,
                 scheduler: str | LocalDaskCluster | None = None,
                 fragment_partitions: int | None = None,
                 data_dirs: Sequence[str | os.PathLike] | None = None,
                 engine: Engine | None = None, threads: int | None = None,
                 memory_limit: str | None = None, retries: int = 2,
                 timeout: float | None = None, connect_timeout: float = 10.0,
                 placement: str = "shared", replication: int | None = None,
                 replica_dir: str | os.PathLike | None = None,
                 storage_options: Mapping[str, Any] | None = None,
                 shared_scans: bool = False,
                 scan_options: Mapping[str, float] | None = None) -> None:
        if workers is not None and scheduler is not None:
            raise UserError("give either workers (a local cluster) or scheduler (an existing "
                            "cluster), not both")
        if workers is not None and workers < 1:
            raise UserError(f"workers must be at least 1, not {workers}")
        direct = False
        if isinstance(scheduler, LocalDaskCluster):
            threads = threads or scheduler.threads
            memory_limit = memory_limit or scheduler.memory_limit
            scheduler, direct = scheduler.address, True
        _check_placement_options(placement, replication, replica_dir, workers, scheduler)
        self.root = remote.catalog_root(catalog_root, storage_options)
        if isinstance(self.root, remote.RemotePath) and placement != "shared":
            raise UserError(f"placement={placement!r} copies the catalog from a local "
                            f"folder; {self.root} is served with placement='shared'")
        options = dict(storage_options or {})
        options_json = remote.options_text(options)  # before a cluster exists: may refuse
        dirs = tuple(sorted(str(remote.catalog_root(str(d)) if remote.is_url(str(d))
                                else Path(d).resolve()) for d in (data_dirs or [self.root])))
        self.fragment_partitions = fragment_partitions
        self.shared_scans = shared_scans
        self.scan_options = _scan_options(scan_options)
        self.retries = retries
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._cluster: LocalDaskCluster | None = None
        self.replica_spec: ReplicaSpec | None = None
        self.placement_report: replicas.ReplicaReport | None = None
        self._placement: tuple[int, Placement] | None = None
        self._place_lock = threading.Lock()
        self.replication = replication
        if scheduler is not None:
            self.client = _connect(scheduler, connect_timeout, direct=direct)
        else:
            self._cluster = LocalDaskCluster(workers or os.cpu_count() or 1,
                                             placement=placement, replica_dir=replica_dir)
            threads = threads or self._cluster.threads
            memory_limit = memory_limit or self._cluster.memory_limit
            self.client = Client(self._cluster.cluster, set_as_default=False,
                                 direct_to_workers=True)
        self.spec = EngineSpec(dirs, threads, memory_limit, options_json)
        self.engine = engine if engine is not None else Engine(dirs, storage_options=options)
        try:
            if placement == "replicas":
                self.placement_report = replicas.place(self.client, self.root,
                                                       replication=replication,
                                                       checksum=False, clean=False)
                placed = self._current_placement()
                self.replica_spec = ReplicaSpec(placed.catalog_id, str(self.root), threads,
                                                memory_limit)
                warmer: WorkerPlugin = ReplicaEngineWarmer(self.replica_spec)
                if self.placement_report.missing or self.placement_report.failed:
                    raise ExternalError("the catalog could not be placed on the workers:\n"
                                        + self.placement_report.text(every_unit=False))
            else:
                warmer = EngineWarmer(self.spec)
            plugin = f"skyshard-engine-{zlib.crc32(repr(warmer.__dict__).encode())}"
            self.client.register_plugin(warmer, name=plugin)
        except SkyshardError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise ExternalError(f"the Dask workers cannot open the catalog: {exc}") from exc

    # --- queries ---------------------------------------------------------------------

    def run(self, plan: QueryPlan, *, max_rows: int | None = None) -> pa.Table:
        if self.replica_spec is not None:
            return self._run_on_replicas(plan, max_rows)
        info = self._rides(plan)
        if info is not None:
            try:
                partials = self._gather(scan_batches(plan, info, self.workers()), None)
                return self._merged(plan, partials, max_rows)
            except SqlError as exc:
                # A statement the split made may fail where the whole query does not
                # (a function it cannot split): the usual statements decide.
                log.warning("shared scan of %s failed (%s); running it as usual",
                            info.name, exc)
        batches, merge = plan_batches(plan, self.workers(),
                                      fragment_partitions=self.fragment_partitions)
        if not merge:
            return named(self._gather(batches, max_rows)[0], plan)
        return self._merged(plan, self._gather(batches, None), max_rows)

    def _rides(self, plan: QueryPlan) -> TableInfo | None:
        """The table whose shared scans ``plan`` rides on the workers (``scans.rides``),
        or None."""
        if not self.shared_scans or self.fragment_partitions is not None:
            return None
        return rides(plan, int(dict(self.scan_options).get("min_rows", DEFAULT_MIN_ROWS)))

    def _merged(self, plan: QueryPlan, partials: list[pa.Table],
                max_rows: int | None) -> pa.Table:
        combined = pa.concat_tables(partials, promote_options="permissive")
        merged = self.engine.query(plan.merge_sql(), tables={PARTIALS: combined},
                                   max_rows=max_rows)
        return named(merged, plan)

    def workers(self) -> list[str]:
        """The addresses of the cluster's workers now, sorted; waits (up to
        ``connect_timeout``) for one when there is none."""
        try:
            found = sorted(replicas.cluster_workers(self.client))
            if not found:
                self.client.wait_for_workers(1, timeout=self.connect_timeout)
                found = sorted(replicas.cluster_workers(self.client))
        except Exception as exc:
            raise ExternalError(f"the Dask cluster has no worker or does not answer: "
                                f"{_describe(exc)}") from exc
        return found

    def remote_query(self) -> _RemoteQuery:
        """A new query's handle, registered with the query service's tracker (if the
        engine is tracked: ``service.cursors``) so that cancelling the query stops its
        tasks on the workers."""
        remote = _RemoteQuery(self.client, uuid.uuid4().hex[:12])
        track = getattr(self.engine, "track", None)
        if track is not None:
            track(remote)
        return remote

    def _gather(self, batches: list[Batch], max_rows: int | None) -> list[pa.Table]:
        """Submit one task per batch; their tables, in batch order."""
        remote = self.remote_query()
        tag = remote.tag
        futures = [self.client.submit(*self._task(b, max_rows, tag),
                                      key=f"skyshard-{tag}-{i}", pure=False,
                                      workers=[b.worker] if b.worker else None,
                                      allow_other_workers=True, retries=self.retries)
                   for i, b in enumerate(batches)]
        remote.futures = futures
        which = {f.key: i for i, f in enumerate(futures)}
        results: dict[int, pa.Table] = {}
        try:
            remote.check()  # interrupted before its tasks were known
            for fut in as_completed(futures, loop=self.client.loop, timeout=self.timeout):
                i = which[fut.key]
                try:
                    value = fut.result()
                except Exception as exc:
                    remote.check()
                    raise _lost(batches[i], exc) from exc
                if isinstance(value, QueryFailed):
                    raise value.error
                results[i] = value
        except TimeoutError as exc:
            raise QueryLimitError(f"the query took longer than {self.timeout} s") from exc
        finally:
            if len(results) < len(futures):
                self._cancel(futures)
                remote.interrupt()  # a task already running stops too (a convoy rider)
        return [results[i] for i in range(len(batches))]

    def scan_stats(self) -> dict[str, dict[str, int]]:
        """Worker address -> the counters of its shared scans (``SharedScans.stats``;
        those of every executor using the cluster)."""
        return self.client.run(worker_scan_stats)

    def _task(self, b: Batch, max_rows: int | None, tag: str) -> tuple:
        """The function and arguments of the task running ``b``."""
        if isinstance(b, ScanBatch):
            return run_scan, self.spec, b.request, b.orphans, self.scan_options, tag
        return run_batch, self.spec, b.statements, max_rows, tag

    # --- shared-nothing mode ---------------------------------------------------------------

    def _run_on_replicas(self, plan: QueryPlan, max_rows: int | None) -> pa.Table:
        scan = self._rides(plan)
        try:
            try:
                run = _ReplicaRun(self, plan, self._current_placement(), scan)
                tables = run.gather(max_rows)
            except StalePlacement:  # a new version was published: copy it out, then run
                self._place_new_version()
                run = _ReplicaRun(self, plan, self._current_placement(), scan)
                tables = run.gather(max_rows)
        except SqlError as exc:
            if scan is None:
                raise
            log.warning("shared scan of %s failed (%s); running it as usual", scan.name, exc)
            run = _ReplicaRun(self, plan, self._current_placement())
            tables = run.gather(max_rows)
        if not run.merge:
            return named(tables[0], plan)
        return self._merged(plan, tables, max_rows)

    def _place_new_version(self) -> None:
        """Place what a newly published version added (``replicas.place``: only missing
        copies are made), once for all the queries that found it missing."""
        assert self.replica_spec is not None
        with self._place_lock:  # queries that meet it together place it once:
            # the later ones find the copies there (place copies only what is missing)
            log.info("placing a new version of %s on the workers", self.root)
            try:
                report = replicas.place(self.client, self.root, replication=self.replication,
                                        checksum=False, clean=False)
            except OSError as exc:
                raise ExternalError(f"a new version of the catalog was published and cannot "
                                    f"be placed on the workers from here ({exc}); run "
                                    "`skyshard replicas place`") from exc
            self._placement = None
            placed = self._current_placement()
            self.replica_spec = replace(self.replica_spec, catalog_id=placed.catalog_id)
            if report.missing or report.failed:
                raise ExternalError("a new version of the catalog could not be placed on "
                                    "the workers:\n" + report.text(every_unit=False))

    def _current_placement(self) -> Placement:
        """The recorded placement, read again when ``replicas.json`` changed (a repair)."""
        path = self.root / PLACEMENT_FILE
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError as exc:
            raise ExternalError(f"{path} is gone: the catalog is no longer placed on the "
                                "workers") from exc
        if self._placement is None or self._placement[0] != stamp:
            placed = Placement.load(self.root)
            if placed is None:
                raise ExternalError(f"{path} is gone")
            self._placement = (stamp, placed)
        return self._placement[1]

    def named_workers(self) -> dict[str, str]:
        """Worker name -> address, for the workers in the cluster now."""
        return replicas.named_workers(self.client)

    def _cancel(self, futures: list) -> None:
        try:
            self.client.cancel(futures)
        except Exception:  # noqa: BLE001 - the cluster may be gone; nothing left to free
            pass

    # --- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect, and stop the local cluster if this executor started one."""
        for thing in (getattr(self, "client", None), self._cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing what may already be dead
                    pass
        self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ReplicaRun:
    """One query in shared-nothing mode: tasks pinned to named holders; a task whose
    worker leaves the cluster, lacks its files or keeps failing is planned again on the
    other holders of its partitions, that worker excluded for the rest of the query."""

    POLL_S = 0.1

    def __init__(self, ex: DaskExecutor, plan: QueryPlan, placement: Placement,
                 scan: TableInfo | None = None) -> None:
        self.ex, self.plan, self.placement, self.scan = ex, plan, placement, scan
        assert ex.replica_spec is not None
        self.spec = replace(ex.replica_spec, source_root=str(plan.root))
        self.remote = ex.remote_query()
        self.tag = self.remote.tag
        self.excluded: dict[str, str] = {}  # worker name -> why
        self.alive = ex.named_workers()
        if not self.alive:  # e.g. every worker restarting: wait like shared mode does
            ex.workers()
            self.alive = ex.named_workers()
        self.by_key = {(p.order, p.pixel): p for p in plan.partitions or ()}
        self.running: dict = {}  # future -> (sequence number, batch, address)
        self.finished = replicas.Completions()
        self.seq = 0
        self.merge = False

    def usable(self) -> list[str]:
        shared = set(self.placement.holders(SHARED))
        return [w for w in sorted(self.alive) if w in shared and w not in self.excluded]

    def gather(self, max_rows: int | None) -> list[pa.Table]:
        batches, self.merge = self._plan(replica_batches, self.plan, self.placement,
                                         self.usable(),
                                         fragment_partitions=self.ex.fragment_partitions,
                                         scan=self.scan)
        results: list[tuple[int, pa.Table]] = []
        deadline = None if self.ex.timeout is None else time.monotonic() + self.ex.timeout
        try:
            for b in batches:
                self._submit(b, None if self.merge else max_rows)
            while self.running:
                self.remote.check()
                lost = self._collect(results)
                for b, why in lost:
                    self.excluded[b.worker] = why
                    for nb in self._replan(b):
                        self._submit(nb, None if self.merge else max_rows)
                if deadline is not None and time.monotonic() > deadline:
                    raise QueryLimitError(f"the query took longer than {self.ex.timeout} s")
        finally:
            if self.running:
                self.ex._cancel(list(self.running))
        return [t for _, t in sorted(results, key=lambda r: r[0])]

    def _collect(self, results: list) -> list[tuple[ReplicaBatch, str]]:
        """Results of the tasks done within a poll; the batches lost, with why."""
        done = [f for f in self.finished.done(self.POLL_S) if f in self.running]
        lost = []
        for fut in done:
            seq, b, address = self.running.pop(fut)
            try:
                value = replicas.fetch(self.ex.client, fut, (address,))
            except Exception as exc:  # noqa: BLE001 - the batch runs elsewhere
                lost.append((b, _describe(exc)))
                continue
            if isinstance(value, QueryFailed):
                raise value.error
            if isinstance(value, MissingFiles):
                why = f"its copy lacks {len(value.files)} file(s), e.g. {value.files[0]}"
                lost.append((b, why))
                continue
            results.append((seq, value))
        if not done:
            self.alive = self.ex.named_workers()
            for fut, (_, b, address) in list(self.running.items()):
                if self.alive.get(b.worker) != address:
                    fut.cancel()
                    del self.running[fut]
                    lost.append((b, "it left the cluster"))
        return lost

    def _replan(self, b: ReplicaBatch) -> list[ReplicaBatch]:
        if b.partitions is None:  # the single statement: choose again from the start
            batches, self.merge = self._plan(
                replica_batches, self.plan, self.placement, self.usable(),
                fragment_partitions=self.ex.fragment_partitions, scan=self.scan)
            return batches
        groups = self._plan(cover, [self.by_key[k] for k in b.partitions], self.placement,
                            self.usable())
        return split_batches(self.plan, self.placement, groups, self.ex.fragment_partitions,
                             orphans=b.orphans, scan=self.scan)

    def _plan(self, fn, *args, **kwargs):
        """``fn(...)``, its missing-partition error saying which workers this query lost."""
        try:
            return fn(*args, **kwargs)
        except ExternalError as exc:
            if self.excluded and getattr(exc, "partitions", None) is not None:
                why = "; ".join(f"{w} ({r})" for w, r in sorted(self.excluded.items()))
                err = ExternalError(f"{exc}; lost during this query: {why}")
                err.partitions = exc.partitions  # type: ignore[attr-defined]
                raise err from exc
            raise

    def _submit(self, b: ReplicaBatch, max_rows: int | None) -> None:
        address = self.alive.get(b.worker)
        if address is None:  # cannot happen: batches are planned on live workers
            raise ExternalError(f"worker {b.worker} is not in the cluster")
        if b.request is not None:
            task: tuple = (run_replica_scan, self.spec, b.request, b.orphan_sql, b.files,
                           self.ex.scan_options, self.tag)
        else:
            task = (run_replica_batch, self.spec, b.statements, b.files, max_rows, self.tag)
        fut = self.ex.client.submit(*task, key=f"skyshard-{self.tag}-{self.seq}",
                                    pure=False, workers=[address], allow_other_workers=False,
                                    retries=self.ex.retries)
        self.running[fut] = (self.seq, b, address)
        self.remote.futures.append(fut)
        self.finished.watch(fut)
        self.seq += 1


def _scan_options(options: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    """``SharedScans`` keyword arguments, checked here (a bad one would fail every
    worker's task), as a hashable tuple."""
    out = tuple(sorted((options or {}).items()))
    try:
        SharedScans(None, **dict(out)).close()  # type: ignore[arg-type] - runs nothing
    except (TypeError, ValueError) as exc:
        raise UserError(f"scan_options: {exc}") from exc
    return out


def _check_placement_options(placement: str, replication: int | None,
                             replica_dir: str | os.PathLike | None, workers: int | None,
                             scheduler: str | None) -> None:
    if placement not in ("shared", "replicas"):
        raise UserError(f"placement must be 'shared' or 'replicas', not {placement!r}")
    if placement == "shared":
        if replication is not None or replica_dir is not None:
            raise UserError("replication and replica_dir need placement='replicas'")
        return
    if replication is not None and replication < 1:
        raise UserError(f"replication must be at least 1, not {replication}")
    if scheduler is not None and replica_dir is not None:
        raise UserError("replica_dir is for a local cluster; the workers of an existing "
                        f"cluster set their own ({replicas.CONFIG_KEY} in their Dask config)")
    n = workers or os.cpu_count() or 1
    if scheduler is None and (replication or DEFAULT_REPLICATION) > n:
        raise UserError(f"replication {replication or DEFAULT_REPLICATION} needs at least as "
                        f"many workers, not {n}")


def _connect(address: str, timeout: float, *, direct: bool = False) -> Client:
    try:
        if direct:  # a cluster on this machine: results straight from the workers
            return Client(address, timeout=timeout, set_as_default=False,
                          direct_to_workers=True)
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:
        raise ExternalError(f"cannot connect to the Dask scheduler at {address!r}: "
                            f"{_describe(exc)}") from exc


def _lost(batch: Batch, cause: BaseException) -> ExternalError:
    """The error for a group that no worker could compute."""
    if batch.partitions is None:
        where = "the query (one statement over all its partitions)"
    else:
        listed = ", ".join(f"Norder={o}/Npix={p}" for o, p in batch.partitions)
        where = f"{len(batch.partitions)} partitions ({listed})"
    err = ExternalError(f"no Dask worker could compute {where}: {_describe(cause)}")
    err.partitions = batch.partitions  # type: ignore[attr-defined]
    return err


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = ["SLOTS", "Batch", "DaskExecutor", "EngineSpec", "LocalDaskCluster", "MissingFiles",
           "ReplicaBatch", "ReplicaSpec", "ScanBatch", "balanced_groups", "plan_batches",
           "replica_batches", "run_batch", "run_replica_batch", "run_replica_scan", "run_scan",
           "scan_batches",
           "split_batches", "worker_engine", "worker_scan_stats", "worker_scans"]
