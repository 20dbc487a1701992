"""Cancelling a query on a Dask cluster stops its tasks on the workers: running DuckDB
statements are interrupted and tasks not yet started never run."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("distributed")

import skyshard  # noqa: E402
from background import run_in_thread  # noqa: E402
from skyshard.dispatch import dask_executor  # noqa: E402
from skyshard.errors import QueryCancelled  # noqa: E402
from skyshard.service.cursors import CursorTracker  # noqa: E402

#: Minutes of one worker's time (6^14 rows of a cross product of the 6-row replicated
#: Filter table), were it not stopped.
ENDLESS = ("SELECT SUM(" + " + ".join(f"f{i}.filterId" for i in range(14)) + ") AS s FROM "
           + ", ".join(f"Filter f{i}" for i in range(14)))


def _running_statements() -> int:
    with dask_executor._RUNNING_LOCK:
        return sum(len(c) for c in dask_executor._RUNNING.values())


@pytest.fixture(scope="module")
def tracked_db(sky_root):
    db = skyshard.open(sky_root, workers=2)
    tracker = CursorTracker()
    assert tracker.install(db)  # as the query service does
    yield db, tracker
    db.close()


def _busy(db) -> bool:
    counts = db.executor.client.run(_running_statements)
    return sum(counts.values()) > 0


def test_cancelling_stops_the_statement_on_the_worker(tracked_db):
    db, tracker = tracked_db
    client = db.executor.client

    def query():
        with tracker.running(7):
            return db.sql(ENDLESS)

    thread, out = run_in_thread(query)
    deadline = time.monotonic() + 20
    while not _busy(db):  # its statement runs on a worker
        assert time.monotonic() < deadline, "the query never started on a worker"
        time.sleep(0.05)
    started = time.monotonic()
    assert tracker.interrupt(7) >= 1
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(out.get("error"), QueryCancelled)
    assert time.monotonic() - started < 20  # uninterrupted, it would run for minutes
    deadline = time.monotonic() + 20
    while _busy(db):  # the worker's DuckDB statement was interrupted, not left running
        assert time.monotonic() < deadline, "the statement still runs on the worker"
        time.sleep(0.05)
    still = [key for keys in client.processing().values() for key in keys
             if str(key).startswith("skyshard-")]
    assert not still, f"tasks of the cancelled query still run: {still}"
    # the workers are free: a query answers at once
    t0 = time.monotonic()
    assert db.sql("SELECT COUNT(*) AS n FROM Filter").column(0)[0].as_py() == 6
    assert time.monotonic() - t0 < 20


def test_a_task_starting_after_the_interrupt_does_not_run():
    dask_executor.interrupt_query("t-late")
    out = dask_executor.run_batch(dask_executor.EngineSpec(()), ("SELECT 1",), None, "t-late")
    assert isinstance(out, dask_executor.QueryFailed)
    assert isinstance(out.error, QueryCancelled)


def test_other_queries_are_not_interrupted(tracked_db):
    db, tracker = tracked_db
    dask_executor.interrupt_query("some-other-query")
    with tracker.running(8):
        assert db.sql("SELECT COUNT(*) AS n FROM Filter").column(0)[0].as_py() == 6
