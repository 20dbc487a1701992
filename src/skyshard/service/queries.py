"""The query service both front ends share: submit, status, result, cancel, history.

Every query, synchronous or not, is a ``Query`` record moving through one state machine::

                  a worker is free               result within the limits
        QUEUED -------------------> EXECUTING ---------------------------> COMPLETED
          |                           |     |
          |                           |     |  error, limit exceeded, time limit
          |                           |     +----------------------------> FAILED
          |  cancel                   |  cancel
          +---------------------------+----------------------------------> CANCELLED

``QUEUED -> EXECUTING`` when its plan is about to run on a worker thread. Two lanes, as
Qserv's interactive and scan queries: a worker of the interactive pool
(``max_concurrent`` threads) takes the query and ``Database.sql`` plans it, still QUEUED;
the plan reaches the service just before it runs (``_LaneExecutor``, so a query is
planned once) and gives the number of partitions read. Up to ``interactive_partitions``
the query runs there and then; above, it is a full scan and waits, QUEUED, for one of the
``max_scans`` scan threads (a caller that planned the query already, as TAP, sends it
there directly). Scan threads run ``scan_nice`` steps lower in CPU priority
(``priority``), on the scan database when there is one (a second DuckDB whose own worker
threads are lowered too), so scans take the CPUs interactive queries leave idle and
never queue in front of them. A statement answered without a plan (``SHOW``, a planning
error) passes through EXECUTING as it finishes.
``EXECUTING -> COMPLETED | FAILED`` when ``Database.sql`` returns or raises;
``-> CANCELLED`` on ``cancel`` (and for every pending query when the service closes);
``EXECUTING -> FAILED`` with ``QueryTimeoutError`` when the query runs past its time limit.
The last three states are final: a record never leaves them.
Cancelling or timing out an executing query interrupts its DuckDB statement
(``cursors.CursorTracker``) until its worker thread returns; the state changes at once.

Each record has its id (shared with MySQL connection ids, so ``KILL n`` is never
ambiguous), user, SQL, timestamps, rows, bytes, partitions total/done (from the plan;
done = total once finished) and error. Results of asynchronous queries go to a
``ResultStore`` (memory, then Parquet); a synchronous query's table is handed to its
caller once (``outcome``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from skyshard.errors import (
    InternalError,
    QueryCancelled,
    QueryLimitError,
    SkyshardError,
)
from skyshard.service import priority
from skyshard.service.config import Limits
from skyshard.service.cursors import CursorTracker
from skyshard.service.deadlines import Deadlines
from skyshard.service.errors import (
    NotFinishedError,
    QueryTimeoutError,
    ResultGoneError,
    ServerBusyError,
    UnknownQueryError,
)
from skyshard.service.results import ResultStore, StoredResult

log = logging.getLogger("skyshard.service")


class State(StrEnum):
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)


#: The allowed moves of the state machine drawn above.
MOVES: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.EXECUTING, State.CANCELLED}),
    State.EXECUTING: frozenset({State.COMPLETED, State.FAILED, State.CANCELLED}),
    State.COMPLETED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}


@dataclass
class Query:
    """One query's record."""

    id: int
    user: str
    sql: str
    mode: str  # "sync" | "async"
    timeout_s: float
    host: str | None = None
    state: State = State.QUEUED
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    updated: float = field(default_factory=time.time)
    rows: int | None = None
    bytes: int | None = None
    partitions_total: int | None = None
    partitions_done: int = 0
    #: "interactive" or "scan" (more than ``interactive_partitions`` partitions)
    lane: str = "interactive"
    error: SkyshardError | None = None
    done: Future = field(default_factory=Future, repr=False)
    _worker_done: threading.Event = field(default_factory=threading.Event, repr=False)
    _table: pa.Table | None = field(default=None, repr=False)
    #: the statement already parsed by the caller (TAP's translated ADQL), run as is
    _tree: Any = field(default=None, repr=False)

    @property
    def error_type(self) -> str | None:
        return type(self.error).__name__ if self.error is not None else None

    @property
    def error_message(self) -> str | None:
        return str(self.error) if self.error is not None else None

    def seconds(self, now: float | None = None) -> float:
        """Time executing (or queued, before it starts), up to now or the end."""
        end = self.finished or (time.time() if now is None else now)
        return max(0.0, end - (self.started or self.submitted))


class QueryService:
    """Runs queries on one ``Database`` within ``Limits``. Thread-safe.

    ``scan_db``: the same catalog opened a second time, for full scans (default: ``db``).
    """

    def __init__(self, db: Any, limits: Limits | None = None, *,
                 results_dir: str | Path | None = None, scan_db: Any = None) -> None:
        self.db = db
        self.scan_db = scan_db if scan_db is not None else db
        self.limits = limits or Limits()
        self.results = ResultStore(results_dir, memory_bytes=self.limits.memory_results_bytes,
                                   ttl_s=self.limits.result_ttl_s)
        self.cursors = CursorTracker()
        self.interruptible = self.cursors.install(db)
        if self.scan_db is not db:
            self.interruptible = self.cursors.install(self.scan_db) and self.interruptible
        for each in {id(db): db, id(self.scan_db): self.scan_db}.values():
            _LaneExecutor.install(each, self)
        self._local = threading.local()  # the query (and lane) this worker thread runs
        self._deadlines = Deadlines(self._expire)
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.limits.max_concurrent),
                                        thread_name_prefix="skyshard-query")
        self._scan_pool = ThreadPoolExecutor(
            max_workers=max(1, self.limits.max_scans), thread_name_prefix="skyshard-scan",
            initializer=priority.lower_current_thread, initargs=(self.limits.scan_nice,))
        self._queries: OrderedDict[int, Query] = OrderedDict()
        self._queued = 0  # queries in state QUEUED
        self._finished: deque[int] = deque()  # ids of finished queries, oldest first
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._closed = False

    # --- ids ------------------------------------------------------------------------

    def next_id(self) -> int:
        """A fresh id; MySQL connection ids come from here too."""
        with self._lock:
            return next(self._ids)

    # --- submit and wait ------------------------------------------------------------

    def submit(self, sql: str, user: str, *, mode: str = "async", host: str | None = None,
               timeout_s: float | None = None, partitions: int | None = None,
               tree: Any = None) -> Query:
        """Queue a query; it starts when a worker is free. ``ServerBusyError`` if the queue
        is full. ``partitions``: how many partitions it reads, when the caller has planned
        it already (TAP does), so that it is not planned once more to choose its lane.
        ``tree``: the statement parsed already (TAP's ADQL, of which ``sql`` is the Qserv
        text shown in the process list), so that it is not parsed again."""
        self._housekeeping()
        limit = self.limits.timeout_s
        timeout = min(limit, timeout_s) if timeout_s and timeout_s > 0 else limit
        with self._lock:
            if self._closed:
                raise ServerBusyError("the server is shutting down")
            if self._queued >= self.limits.max_queued:
                raise ServerBusyError(f"{self._queued} queries are queued already; retry later")
            q = Query(self.next_id(), user, sql, mode, timeout, host=host,
                      partitions_total=partitions, _tree=tree)
            self._queries[q.id] = q
            self._queued += 1
            if (partitions or 0) > self.limits.interactive_partitions:
                q.lane = "scan"
                self._scan_pool.submit(self._work, q, "scan")
            else:
                self._pool.submit(self._work, q, "interactive")
        log.debug("query %d by %s queued (%s)", q.id, user, mode)
        return q

    def run(self, sql: str, user: str, **options: Any) -> pa.Table:
        """Submit synchronously and wait: the result, or the query's error raised."""
        q = self.submit(sql, user, mode="sync", **options)
        try:
            q.done.result()
        except BaseException:
            try:
                self.cancel(q.id)
            except UnknownQueryError:
                pass
            raise
        return self.outcome(q)

    def outcome(self, q: Query) -> pa.Table:
        """A finished query's table (a synchronous one's is handed over once), or its
        error raised."""
        if not q.state.final:
            raise NotFinishedError(q.id, q.state.value)
        if q.state is not State.COMPLETED:
            raise q.error or InternalError(f"query {q.id} is {q.state.value} without an error")
        if q.mode == "sync":
            table, q._table = q._table, None
            if table is None:
                raise ResultGoneError(q.id)
            return table
        return self.result(q.id).table()

    # --- look up --------------------------------------------------------------------

    def get(self, query_id: int, user: str | None = None) -> Query:
        """The record of ``query_id``; ``UnknownQueryError`` if there is none or it is
        another user's (``user=None``: anyone's)."""
        with self._lock:
            q = self._queries.get(query_id)
        if q is None or (user is not None and q.user != user):
            raise UnknownQueryError(query_id)
        return q

    def result(self, query_id: int, user: str | None = None) -> StoredResult:
        """The stored result of a completed asynchronous query, else the reason why not
        (its error, not finished, gone)."""
        q = self.get(query_id, user)
        if not q.state.final:
            raise NotFinishedError(q.id, q.state.value)
        if q.state is not State.COMPLETED:
            raise q.error or InternalError(f"query {q.id} is {q.state.value} without an error")
        stored = self.results.get(q.id)
        if stored is None:
            raise ResultGoneError(q.id)
        return stored

    def delete_result(self, query_id: int, user: str | None = None) -> bool:
        q = self.get(query_id, user)
        return self.results.delete(q.id)

    def active(self, user: str | None = None) -> list[Query]:
        """Queued and executing queries, oldest first."""
        with self._lock:
            return [q for q in self._queries.values()
                    if not q.state.final and (user is None or q.user == user)]

    def history(self, user: str | None = None) -> list[Query]:
        """Every remembered query, oldest first."""
        with self._lock:
            return [q for q in self._queries.values() if user is None or q.user == user]

    # --- cancel ---------------------------------------------------------------------

    def cancel(self, query_id: int, user: str | None = None) -> Query:
        """Cancel a queued or executing query; ``UnknownQueryError`` if it is unknown or
        already finished (as Qserv's ``KILL``)."""
        q = self.get(query_id, user)
        with self._lock:
            if q.state.final:
                raise UnknownQueryError(query_id)
            was_running = q.state is State.EXECUTING
            self._finish(q, State.CANCELLED, QueryCancelled(
                f"query {q.id} was cancelled" + ("" if was_running else " before it started")))
        if was_running:
            self._interrupt(q)
        return q

    def close(self) -> None:
        """Cancel everything, stop the workers, delete stored results."""
        with self._lock:
            self._closed = True
            pending = [q for q in self._queries.values() if not q.state.final]
        # queued ones first: cancelling a running one frees its worker, which would
        # otherwise start the next queued query before its turn to be cancelled came
        pending.sort(key=lambda q: q.state is State.EXECUTING)
        for q in pending:
            try:
                self.cancel(q.id)
            except UnknownQueryError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._scan_pool.shutdown(wait=False, cancel_futures=True)
        self._deadlines.close()
        self.results.close()

    # --- the workers ----------------------------------------------------------------

    def _work(self, q: Query, lane: str) -> None:
        """Run ``q`` on a worker of ``lane``. ``Database.sql`` plans it (still QUEUED);
        the plan reaches ``_LaneExecutor`` just before it runs, which counts its partitions
        and either starts it (EXECUTING) or, on an interactive worker, turns a full scan
        back to the scan lane."""
        if q.state is not State.QUEUED:
            q._worker_done.set()
            return
        db = self.db if lane == "interactive" else self.scan_db
        self._local.query, self._local.lane = q, lane
        outcome: pa.Table | BaseException
        try:
            with self.cursors.running(q.id):
                table = db.sql(q.sql, max_rows=self.limits.max_rows, tree=q._tree)
            self._check_size(table)
            outcome = table
        except _Rerouted:
            self._to_scan_lane(q)
            return
        except Exception as exc:  # every failure becomes the query's error
            outcome = exc
        finally:
            self._local.query = self._local.lane = None
            q._tree = None
        self._deadlines.discard(q.id)
        q._worker_done.set()
        self._complete(q, outcome)

    def _to_scan_lane(self, q: Query) -> None:
        with self._lock:
            if q.state is not State.QUEUED or self._closed:
                q._worker_done.set()  # cancelled meanwhile (close() cancels it)
                return
            q.lane = "scan"
            self._scan_pool.submit(self._work, q, "scan")
        log.debug("query %d reads %s partitions: a full scan", q.id, q.partitions_total)

    def _starting(self, plan: Any) -> None:
        """Called with each plan about to run on this thread (``_LaneExecutor``)."""
        q: Query | None = getattr(self._local, "query", None)
        if q is None:
            return  # not a query of this service (a plan run directly on the database)
        with self._lock:
            if q.state is State.EXECUTING:
                return  # a further statement of a query already started
            if q.state is not State.QUEUED:
                raise QueryCancelled(f"query {q.id} was cancelled before it started")
            q.partitions_total = partitions_read(plan)
            if (self._local.lane == "interactive"
                    and (q.partitions_total or 0) > self.limits.interactive_partitions):
                raise _Rerouted
            self._start(q)

    def _start(self, q: Query) -> None:
        """QUEUED -> EXECUTING, with its time limit (under the lock)."""
        self._move(q, State.EXECUTING)
        q.started = q.updated
        self._deadlines.add(q.id, q.timeout_s)

    def _complete(self, q: Query, outcome: pa.Table | BaseException) -> None:
        stored = None
        if isinstance(outcome, pa.Table) and q.mode == "async":
            try:
                stored = self.results.put(q.id, outcome)
            except OSError as exc:
                outcome = InternalError(f"cannot store the result: {exc}")
        with self._lock:
            if q.state is State.QUEUED:  # answered without running a plan (SHOW, an error)
                self._start(q)
                self._deadlines.discard(q.id)
            if q.state is not State.EXECUTING:  # cancelled or timed out meanwhile
                if stored is not None:
                    self.results.delete(q.id)
                return
            if isinstance(outcome, pa.Table):
                q.rows, q.bytes = outcome.num_rows, outcome.nbytes
                q.partitions_done = q.partitions_total or 0
                if q.mode == "sync":
                    q._table = outcome
                self._finish(q, State.COMPLETED, None)
            else:
                self._finish(q, State.FAILED, _as_skyshard_error(outcome, q))

    def _expire(self, query_id: int) -> None:
        with self._lock:
            q = self._queries.get(query_id)
            if q is None or q.state is not State.EXECUTING:
                return
            self._finish(q, State.FAILED, QueryTimeoutError(q.timeout_s))
        self._interrupt(q)

    def _interrupt(self, q: Query) -> None:
        """Interrupt the query's statements until its worker thread has returned (an
        interrupt sent before DuckDB starts a statement is lost, so repeat it)."""
        def loop() -> None:
            while True:
                self.cursors.interrupt(q.id)
                if q._worker_done.wait(0.05):
                    return
        threading.Thread(target=loop, name=f"skyshard-interrupt-{q.id}", daemon=True).start()

    def _finish(self, q: Query, state: State, error: SkyshardError | None) -> None:
        self._move(q, state)
        q.finished = q.updated
        q.error = error
        level = logging.WARNING if isinstance(error, InternalError) else logging.INFO
        log.log(level, "query %d by %s %s in %.3f s%s", q.id, q.user, state.value,
                q.seconds(), f": {error}" if error else f", {q.rows} rows")
        try:
            q.done.set_result(None)
        except InvalidStateError:  # the waiter gave up (cancelled its future)
            q._table = None

    def _move(self, q: Query, state: State) -> None:
        if state not in MOVES[q.state]:
            raise InternalError(f"query {q.id}: {q.state.value} -> {state.value} is not a move")
        if q.state is State.QUEUED:
            self._queued -= 1
        q.state = state
        q.updated = time.time()
        if state.final:
            self._finished.append(q.id)

    # --- internals ------------------------------------------------------------------

    def _check_size(self, table: pa.Table) -> None:
        if table.num_rows > self.limits.max_rows:
            raise QueryLimitError(f"result exceeds the limit of {self.limits.max_rows} rows")
        if table.nbytes > self.limits.max_result_bytes:
            raise QueryLimitError(f"result of {table.nbytes:,} bytes exceeds the limit of "
                                  f"{self.limits.max_result_bytes:,} bytes")

    def _housekeeping(self) -> None:
        """Delete expired results; forget the oldest finished queries beyond ``history``."""
        for query_id in self.results.expire():
            log.debug("result of query %d expired", query_id)
        with self._lock:
            while len(self._finished) > self.limits.history:
                q = self._queries.pop(self._finished.popleft(), None)
                if q is not None:
                    q._table = None
                    self.results.delete(q.id)


class _Rerouted(Exception):
    """An interactive worker met a full scan's plan: the query goes to the scan lane."""


class _LaneExecutor:
    """A database's executor, with each plan shown to the service just before it runs
    (on the thread of the query it belongs to): the one place a query is planned."""

    def __init__(self, wrapped: Any, service: QueryService) -> None:
        self.wrapped = wrapped
        self._service = service

    @classmethod
    def install(cls, db: Any, service: QueryService) -> None:
        executor = getattr(db, "executor", None)
        if executor is None:
            return
        if isinstance(executor, _LaneExecutor):
            executor = executor.wrapped
        db.executor = cls(executor, service)

    @property
    def engine(self) -> Any:  # what ``CursorTracker.install`` wraps
        return self.wrapped.engine

    @engine.setter
    def engine(self, value: Any) -> None:
        self.wrapped.engine = value

    def run(self, plan: Any, **options: Any) -> Any:
        self._service._starting(plan)
        return self.wrapped.run(plan, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def partitions_read(plan: Any) -> int | None:
    """How many partitions a ``QueryPlan`` reads (None: not a plan)."""
    partitions = getattr(plan, "partitions", None)
    if partitions is not None:
        return len(partitions)
    if not hasattr(plan, "chosen"):
        return None
    chosen = plan.chosen or {}
    return len(set().union(*chosen.values())) if chosen else 0


def _as_skyshard_error(exc: BaseException, q: Query) -> SkyshardError:
    if isinstance(exc, SkyshardError):
        return exc
    if isinstance(exc, duckdb.InterruptException):
        return QueryCancelled(f"query {q.id} was interrupted")
    log.error("query %d failed with an unexpected error", q.id, exc_info=exc)
    err = InternalError(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err
