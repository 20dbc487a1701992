"""The query service both front ends share: submit, status, result, cancel, history.

Every query, synchronous or not, is a ``Query`` record moving through one state machine::

                  a worker is free               result within the limits
        QUEUED -------------------> EXECUTING ---------------------------> COMPLETED
          |                           |     |
          |                           |     |  error, limit exceeded, time limit
          |                           |     +----------------------------> FAILED
          |  cancel                   |  cancel
          +---------------------------+----------------------------------> CANCELLED

``QUEUED -> EXECUTING`` when one of ``max_concurrent`` worker threads takes it;
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
from collections import OrderedDict
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from skyshard.errors import InternalError, QueryCancelled, QueryLimitError, SkyshardError
from skyshard.service.config import Limits
from skyshard.service.cursors import CursorTracker
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
    error: SkyshardError | None = None
    done: Future = field(default_factory=Future, repr=False)
    _worker_done: threading.Event = field(default_factory=threading.Event, repr=False)
    _table: pa.Table | None = field(default=None, repr=False)

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
    """Runs queries on one ``Database`` within ``Limits``. Thread-safe."""

    def __init__(self, db: Any, limits: Limits | None = None, *,
                 results_dir: str | Path | None = None) -> None:
        self.db = db
        self.limits = limits or Limits()
        self.results = ResultStore(results_dir, memory_bytes=self.limits.memory_results_bytes,
                                   ttl_s=self.limits.result_ttl_s)
        self.cursors = CursorTracker()
        self.interruptible = self.cursors.install(db)
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.limits.max_concurrent),
                                        thread_name_prefix="skyshard-query")
        self._queries: OrderedDict[int, Query] = OrderedDict()
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
               timeout_s: float | None = None) -> Query:
        """Queue a query; it starts when a worker is free. ``ServerBusyError`` if the queue
        is full."""
        self._housekeeping()
        limit = self.limits.timeout_s
        timeout = min(limit, timeout_s) if timeout_s and timeout_s > 0 else limit
        with self._lock:
            if self._closed:
                raise ServerBusyError("the server is shutting down")
            queued = sum(1 for q in self._queries.values() if q.state is State.QUEUED)
            if queued >= self.limits.max_queued:
                raise ServerBusyError(f"{queued} queries are queued already; retry later")
            q = Query(self.next_id(), user, sql, mode, timeout, host=host)
            self._queries[q.id] = q
            self._pool.submit(self._execute, q)
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
        for q in pending:
            try:
                self.cancel(q.id)
            except UnknownQueryError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.results.close()

    # --- the worker -----------------------------------------------------------------

    def _execute(self, q: Query) -> None:
        with self._lock:
            if q.state is not State.QUEUED:
                q._worker_done.set()
                return
            self._move(q, State.EXECUTING)
            q.started = q.updated
        timer = threading.Timer(q.timeout_s, self._expire, args=(q,))
        timer.daemon = True
        timer.start()
        outcome: pa.Table | BaseException
        try:
            with self.cursors.running(q.id):
                q.partitions_total = self._partitions(q.sql)
                table = self.db.sql(q.sql, max_rows=self.limits.max_rows)
            self._check_size(table)
            outcome = table
        except Exception as exc:  # every failure becomes the query's error
            outcome = exc
        finally:
            timer.cancel()
            q._worker_done.set()
        self._complete(q, outcome)

    def _complete(self, q: Query, outcome: pa.Table | BaseException) -> None:
        stored = None
        if isinstance(outcome, pa.Table) and q.mode == "async":
            try:
                stored = self.results.put(q.id, outcome)
            except OSError as exc:
                outcome = InternalError(f"cannot store the result: {exc}")
        with self._lock:
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

    def _expire(self, q: Query) -> None:
        with self._lock:
            if q.state is not State.EXECUTING:
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
        q.state = state
        q.updated = time.time()

    # --- internals ------------------------------------------------------------------

    def _partitions(self, sql: str) -> int | None:
        """How many partitions the query reads, from its plan (None: no plan, e.g. SHOW)."""
        try:
            plan = self.db.plan(sql)
        except Exception:
            return None  # db.sql raises the same error, or answers without a plan
        if plan.partitions is not None:
            return len(plan.partitions)
        chosen = getattr(plan, "chosen", None) or {}
        return len(set().union(*chosen.values())) if chosen else 0

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
            finished = [q for q in self._queries.values() if q.state.final]
            for q in finished[:max(0, len(finished) - self.limits.history)]:
                del self._queries[q.id]
                q._table = None
                self.results.delete(q.id)


def _as_skyshard_error(exc: BaseException, q: Query) -> SkyshardError:
    if isinstance(exc, SkyshardError):
        return exc
    if isinstance(exc, duckdb.InterruptException):
        return QueryCancelled(f"query {q.id} was interrupted")
    log.error("query %d failed with an unexpected error", q.id, exc_info=exc)
    err = InternalError(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err
