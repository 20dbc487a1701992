"""Interrupting running queries: which DuckDB cursors each query holds.

``Database`` runs a query through its executor, which takes a cursor from its ``Engine``
for every statement. ``CursorTracker.install(db)`` puts a thin wrapper in front of the
executor's engine: each cursor it hands out is recorded against the query that the
current thread is running (inside ``tracker.running(query_id)``). ``interrupt(query_id)``
calls ``cursor.interrupt()`` on each of them; DuckDB stops the statement and it raises
``duckdb.InterruptException``.

Limits, honestly: the fragment threads of ``LocalExecutor(fragment_partitions=N)`` are
not the query's thread, so their cursors are attributed to a query only while it is the
only one running (the merge statement, on the query's thread, always is). A cluster
executor registers, on the query's thread, an object whose ``interrupt()`` stops the
query's tasks on the workers (``engine.track(obj)``). An executor without an ``engine``
attribute gets no wrapper: ``install`` returns False and a cancelled query is only
marked and its result dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb


class CursorTracker:
    """Cursors by query id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_query: dict[int, list[Any]] = {}
        self._query_of_thread: dict[int, int] = {}

    def install(self, db: Any) -> bool:
        """Wrap ``db.executor.engine`` so its cursors are tracked; False if it has none."""
        executor = getattr(db, "executor", None)
        engine = getattr(executor, "engine", None)
        if executor is None or engine is None:
            return False
        if isinstance(engine, _TrackedEngine):
            engine = engine.wrapped
        executor.engine = _TrackedEngine(engine, self)
        return True

    @contextmanager
    def running(self, query_id: int) -> Iterator[None]:
        """The current thread runs ``query_id`` until the block ends."""
        thread = threading.get_ident()
        with self._lock:
            self._query_of_thread[thread] = query_id
            self._by_query[query_id] = []
        try:
            yield
        finally:
            with self._lock:
                self._query_of_thread.pop(thread, None)
                self._by_query.pop(query_id, None)

    def interrupt(self, query_id: int) -> int:
        """Interrupt every cursor of the query; how many there were."""
        with self._lock:
            cursors = list(self._by_query.get(query_id, ()))
        for cur in cursors:
            try:
                cur.interrupt()
            except duckdb.Error:
                pass  # already closed: that statement is over
            except Exception:  # noqa: BLE001 - a cluster that stopped answering
                pass
        return len(cursors)

    def _add(self, cursor: Any) -> None:
        with self._lock:
            query_id = self._query_of_thread.get(threading.get_ident())
            if query_id is None and len(self._by_query) == 1:
                query_id = next(iter(self._by_query))
            if query_id is not None:
                self._by_query[query_id].append(cursor)


class _TrackedEngine:
    """The engine, with every cursor it hands out reported to the tracker."""

    def __init__(self, engine: Any, tracker: CursorTracker) -> None:
        self.wrapped = engine
        self._tracker = tracker

    def cursor(self) -> Any:
        cur = self.wrapped.cursor()
        self._tracker._add(cur)
        return cur

    def track(self, interruptible: Any) -> None:
        """Interrupt ``interruptible`` (anything with ``interrupt()``) with the query the
        current thread runs."""
        self._tracker._add(interruptible)

    def query(self, sql: str, **kwargs: Any) -> Any:
        # The engine's own method, with ``self.cursor()`` resolved on this wrapper.
        return type(self.wrapped).query(self, sql, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)
