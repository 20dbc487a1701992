"""Full scans on a lane of their own: routing by partitions read, a bounded scan pool of
lowered priority, and interactive queries that never wait behind scans."""

from __future__ import annotations

import os
import threading

import pyarrow.compute as pc
import pytest
from served import wait_until

import skyshard
from skyshard.errors import SqlSyntaxError
from skyshard.service import priority
from skyshard.service.config import Limits
from skyshard.service.queries import QueryService, State

#: A full scan of Object (all 12 partitions) that DuckDB needs minutes for: Object
#: times a 9-fold cross product of the replicated 6-row Filter table.
SLOW_SCAN = ("SELECT SUM(o.nEpochs + " + " + ".join(f"f{i}.filterId" for i in range(9))
             + ") AS s FROM Object o, " + ", ".join(f"Filter f{i}" for i in range(9)))
SCAN = "SELECT SUM(nEpochs) AS s FROM Object"
LOOKUP = "SELECT objectId FROM Object WHERE objectId = 70"


@pytest.fixture
def make_service(served_catalog, tmp_path):
    made = []

    def _make(**limits):
        limits.setdefault("interactive_partitions", 2)
        svc = QueryService(skyshard.open(served_catalog), Limits(**limits),
                           results_dir=tmp_path / "results")
        made.append(svc)
        return svc

    yield _make
    for svc in made:
        svc.close()


def test_queries_take_the_lane_of_the_partitions_they_read(make_service, served_tables):
    svc = make_service()
    partitions = len(svc.db.tables["Object"].partitions)
    assert partitions > 2
    scan = svc.submit(SCAN, "alice")
    lookup = svc.submit(LOOKUP, "alice")
    scan.done.result(30)
    lookup.done.result(30)
    assert (scan.lane, scan.partitions_total, scan.state) == ("scan", partitions, State.COMPLETED)
    assert (lookup.lane, lookup.partitions_total) == ("interactive", 1)
    want = pc.sum(served_tables["Object"]["nEpochs"]).as_py()
    assert svc.result(scan.id).table().to_pylist() == [{"s": want}]
    assert svc.result(lookup.id).table().to_pylist() == [{"objectId": 70}]
    assert scan.submitted <= scan.started <= scan.finished


def test_interactive_queries_do_not_wait_behind_scans(make_service):
    svc = make_service(max_scans=1, max_concurrent=1, timeout_s=60)
    slow = svc.submit(SLOW_SCAN, "alice")
    wait_until(lambda: slow.state is State.EXECUTING)
    assert slow.lane == "scan"
    waiting = svc.submit(SCAN, "alice")  # the one scan slot is taken: it waits
    lookups = [svc.submit(LOOKUP, "alice") for _ in range(3)]
    for q in lookups:  # the single interactive worker is free for them
        q.done.result(30)
        assert q.state is State.COMPLETED and q.lane == "interactive"
    wait_until(lambda: waiting.lane == "scan")
    assert waiting.state is State.QUEUED and slow.state is State.EXECUTING
    svc.cancel(slow.id, "alice")
    assert slow._worker_done.wait(10), "the scan was not interrupted"
    waiting.done.result(30)
    assert waiting.state is State.COMPLETED


def test_cancel_a_scan_waiting_for_its_lane(make_service):
    svc = make_service(max_scans=1, timeout_s=60)
    slow = svc.submit(SLOW_SCAN, "alice")
    wait_until(lambda: slow.state is State.EXECUTING)
    waiting = svc.submit(SCAN, "alice")
    wait_until(lambda: waiting.lane == "scan")
    svc.cancel(waiting.id, "alice")
    assert waiting.state is State.CANCELLED and waiting.started is None
    svc.cancel(slow.id, "alice")
    assert slow._worker_done.wait(10) and waiting._worker_done.wait(10)
    assert waiting.state is State.CANCELLED  # the scan worker did not start it after all


def test_a_caller_that_planned_sends_a_scan_straight_to_its_lane(make_service):
    svc = make_service()
    q = svc.submit(SCAN, "alice", partitions=12)
    assert q.lane == "scan"
    q.done.result(30)
    assert q.state is State.COMPLETED and q.partitions_total == 12


def test_statements_without_a_plan_still_pass_through_executing(make_service):
    svc = make_service()
    assert "Object" in svc.run("SHOW TABLES", "alice").column(0).to_pylist()
    with pytest.raises(SqlSyntaxError):
        svc.run("SELEC 1", "alice")
    shown, failed = svc.history()[-2:]
    for q in (shown, failed):
        assert q.started is not None and q.submitted <= q.started <= q.finished
        assert q.partitions_total is None
    assert (shown.state, failed.state) == (State.COMPLETED, State.FAILED)


def test_time_limits_still_stop_scans(make_service):
    svc = make_service(timeout_s=60)
    q = svc.submit(SLOW_SCAN, "alice", timeout_s=0.3)
    q.done.result(30)
    assert q.state is State.FAILED and q.error_type == "QueryTimeoutError"
    assert q._worker_done.wait(10), "DuckDB was not interrupted"


@pytest.mark.skipif(not priority.supported(), reason="per-thread priorities are Linux's")
def test_scan_threads_run_at_lower_priority(make_service):
    svc = make_service(scan_nice=7)
    q = svc.submit(SCAN, "alice")
    q.done.result(30)
    scan_threads = list(svc._scan_pool._threads)  # this service's (others may be alive)
    query_threads = list(svc._pool._threads)
    assert scan_threads
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    for t in scan_threads:
        assert os.getpriority(os.PRIO_PROCESS, t.native_id) == min(19, base + 7)
    for t in query_threads:
        assert os.getpriority(os.PRIO_PROCESS, t.native_id) == base


@pytest.mark.skipif(not priority.supported(), reason="per-thread priorities are Linux's")
def test_threads_started_from_a_lowered_thread_inherit_its_priority():
    base = priority.current_nice()
    seen = {}

    def inner() -> None:
        seen["inner"] = priority.current_nice()

    def outer() -> int | None:
        t = threading.Thread(target=inner)
        t.start()
        t.join()
        return priority.current_nice()

    assert priority.run_lowered(outer, 3) == min(19, base + 3) == seen["inner"]
    assert priority.current_nice() == base  # the caller is untouched
    assert priority.lower_current_thread(0) is None  # nothing to do


def test_run_lowered_raises_what_the_function_raises():
    with pytest.raises(ZeroDivisionError):
        priority.run_lowered(lambda: 1 / 0, 1)
