"""The scale-out executor: a query's partitions run on the worker processes of a Dask
cluster, their partial results are merged here.

    ex = DaskExecutor("catalog", workers=2)                 # a LocalCluster of 2 processes
    ex = DaskExecutor("catalog", scheduler="tcp://host:8786")  # an existing cluster

This is the only module that imports ``dask.distributed``.

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
Shared storage: every worker reads the catalog at the same path (a local disk for a
``LocalCluster``; a shared file system such as NFS, Lustre or CephFS for a real cluster).
Nothing is copied to workers.

Not built yet: shared-nothing replication. Each worker would hold a subset of the
partitions on local disk, each partition on ``r`` workers (Qserv's replicas). That needs:
a placement map (partition -> replica workers, kept in the catalog or by a small
registry) instead of the hash placement above; groups built per worker from the
partitions it holds (a query's partitions covered greedily by workers, balancing rows),
submitted with strict ``workers=`` restrictions; on a worker's loss, its groups rerouted
to the other replicas of each partition (not to any worker), and a repair step copying
the lost replicas elsewhere; replicated tables and margins copied to every worker;
ingest publishing to all replicas atomically. Until then a partition is readable only if
the shared storage is.
"""

from __future__ import annotations

import os
import threading
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from skyshard.catalog.model import Partition
from skyshard.dispatch.executor import named
from skyshard.engine.duck import Engine
from skyshard.errors import ExternalError, QueryLimitError, SkyshardError, UserError
from skyshard.sql.plan import QueryPlan
from skyshard.sql.split import PARTIALS

# --- the worker side ---------------------------------------------------------------------


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to open the catalog's engine (hashable: the cache key)."""

    data_dirs: tuple[str, ...]
    threads: int | None = None
    memory_limit: str | None = None


_ENGINES: dict[EngineSpec, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def worker_engine(spec: EngineSpec) -> Engine:
    """This process's engine for ``spec``, created on first use."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(spec)
        if engine is None:
            engine = Engine(spec.data_dirs, threads=spec.threads, memory_limit=spec.memory_limit)
            _ENGINES[spec] = engine
        return engine


@dataclass(frozen=True)
class QueryFailed:
    """A ``SkyshardError`` raised by the query on a worker, returned as a value so that
    Dask does not retry it."""

    error: SkyshardError


def run_batch(spec: EngineSpec, statements: tuple[str, ...],
              max_rows: int | None = None) -> pa.Table | QueryFailed:
    """The task: run ``statements`` in order on this worker's engine, one table out."""
    engine = worker_engine(spec)
    try:
        tables = [engine.query(s, max_rows=max_rows) for s in statements]
    except SkyshardError as exc:
        return QueryFailed(exc)
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


class EngineWarmer(WorkerPlugin):
    """Opens the engine on every worker as it starts, restarted ones included, so that a
    replacement worker's first task does not pay for imports and a new DuckDB."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec

    def setup(self, worker) -> None:
        worker_engine(self.spec)


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


def _worker_for(first: Partition | None, i: int, workers: Sequence[str]) -> str | None:
    if not workers:
        return None
    offset = zlib.crc32(f"{first.order}/{first.pixel}".encode()) if first else 0
    return workers[(offset + i) % len(workers)]


# --- the executor ------------------------------------------------------------------------


class DaskExecutor:
    """Runs queries on a Dask cluster: a new ``LocalCluster`` of ``workers`` processes
    (one thread each), or the cluster whose scheduler is at ``scheduler``.

    ``data_dirs`` are the directories the workers' engines may read (default: the catalog
    root); ``engine`` runs the merges here (default: a new one). ``threads`` and
    ``memory_limit`` configure each worker's DuckDB (for a local cluster, default: the
    cores and a share of the memory divided among the workers). ``timeout`` (seconds)
    bounds a query (``QueryLimitError``); ``connect_timeout`` bounds reaching the
    scheduler and waiting for a worker (``ExternalError``).
    """

    def __init__(self, catalog_root: str | os.PathLike, *, workers: int | None = None,
                 scheduler: str | None = None, fragment_partitions: int | None = None,
                 data_dirs: Sequence[str | os.PathLike] | None = None,
                 engine: Engine | None = None, threads: int | None = None,
                 memory_limit: str | None = None, retries: int = 2,
                 timeout: float | None = None, connect_timeout: float = 10.0) -> None:
        if workers is not None and scheduler is not None:
            raise UserError("give either workers (a local cluster) or scheduler (an existing "
                            "cluster), not both")
        if workers is not None and workers < 1:
            raise UserError(f"workers must be at least 1, not {workers}")
        self.root = Path(catalog_root).resolve()
        dirs = tuple(sorted(str(Path(d).resolve()) for d in (data_dirs or [self.root])))
        self.fragment_partitions = fragment_partitions
        self.retries = retries
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._cluster: LocalCluster | None = None
        if scheduler is not None:
            self.client = _connect(scheduler, connect_timeout)
        else:
            n = workers or os.cpu_count() or 1
            threads = threads or max(1, (os.cpu_count() or 1) // n)
            if memory_limit is None:
                from distributed.system import MEMORY_LIMIT

                memory_limit = f"{max(256, int(MEMORY_LIMIT / n / 2 / 2**20))}MB"
            self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                         dashboard_address=None)
            self.client = Client(self._cluster, set_as_default=False, direct_to_workers=True)
        self.spec = EngineSpec(dirs, threads, memory_limit)
        self.engine = engine if engine is not None else Engine(dirs)
        plugin = f"skyshard-engine-{zlib.crc32(repr(self.spec).encode())}"
        try:
            self.client.register_plugin(EngineWarmer(self.spec), name=plugin)
        except Exception as exc:
            self.close()
            raise ExternalError(f"the Dask workers cannot open the catalog: {exc}") from exc

    # --- queries ---------------------------------------------------------------------

    def run(self, plan: QueryPlan, *, max_rows: int | None = None) -> pa.Table:
        batches, merge = plan_batches(plan, self.workers(),
                                      fragment_partitions=self.fragment_partitions)
        if not merge:
            return named(self._gather(batches, max_rows)[0], plan)
        partials = self._gather(batches, None)
        combined = pa.concat_tables(partials, promote_options="permissive")
        merged = self.engine.query(plan.merge_sql(), tables={PARTIALS: combined},
                                   max_rows=max_rows)
        return named(merged, plan)

    def workers(self) -> list[str]:
        """The addresses of the cluster's workers now, sorted; waits (up to
        ``connect_timeout``) for one when there is none."""
        try:
            found = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
            if not found:
                self.client.wait_for_workers(1, timeout=self.connect_timeout)
                found = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        except Exception as exc:
            raise ExternalError(f"the Dask cluster has no worker or does not answer: "
                                f"{_describe(exc)}") from exc
        return found

    def _gather(self, batches: list[Batch], max_rows: int | None) -> list[pa.Table]:
        """Submit one task per batch; their tables, in batch order."""
        tag = uuid.uuid4().hex[:12]
        futures = [self.client.submit(run_batch, self.spec, b.statements, max_rows,
                                      key=f"skyshard-{tag}-{i}", pure=False,
                                      workers=[b.worker] if b.worker else None,
                                      allow_other_workers=True, retries=self.retries)
                   for i, b in enumerate(batches)]
        which = {f.key: i for i, f in enumerate(futures)}
        results: dict[int, pa.Table] = {}
        try:
            for fut in as_completed(futures, loop=self.client.loop, timeout=self.timeout):
                i = which[fut.key]
                try:
                    value = fut.result()
                except Exception as exc:
                    raise _lost(batches[i], exc) from exc
                if isinstance(value, QueryFailed):
                    raise value.error
                results[i] = value
        except TimeoutError as exc:
            raise QueryLimitError(f"the query took longer than {self.timeout} s") from exc
        finally:
            if len(results) < len(futures):
                self._cancel(futures)
        return [results[i] for i in range(len(batches))]

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


def _connect(address: str, timeout: float) -> Client:
    try:
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


__all__ = ["Batch", "DaskExecutor", "EngineSpec", "balanced_groups", "plan_batches",
           "run_batch", "worker_engine"]
