"""The query service on its own: the state machine, limits, cancellation, results."""

from __future__ import annotations

import time

import pytest

import skyshard
from skyshard.errors import QueryCancelled, QueryLimitError, UnknownNameError
from skyshard.service.config import Limits
from skyshard.service.errors import (
    NotFinishedError,
    QueryTimeoutError,
    ResultGoneError,
    ServerBusyError,
    UnknownQueryError,
)
from skyshard.service.queries import MOVES, QueryService, State
from served import SLOW_SQL, wait_until


@pytest.fixture
def make_service(served_catalog, tmp_path):
    made = []

    def _make(**limits):
        svc = QueryService(skyshard.open(served_catalog), Limits(**limits),
                           results_dir=tmp_path / "results")
        made.append(svc)
        return svc

    yield _make
    for svc in made:
        svc.close()


def test_the_state_machine_has_three_final_states():
    assert {s for s in State if s.final} == {State.COMPLETED, State.FAILED, State.CANCELLED}
    assert all(not MOVES[s] for s in State if s.final)
    assert MOVES[State.QUEUED] == {State.EXECUTING, State.CANCELLED}


def test_a_query_completes_with_its_record(make_service):
    svc = make_service()
    assert svc.interruptible
    q = svc.submit("SELECT objectId FROM Object WHERE qserv_areaspec_box(0, -90, 360, 90)",
                   "alice", host="h:1")
    q.done.result(10)
    assert q.state is State.COMPLETED and q.error is None
    assert q.rows == 300 and q.bytes >= 300 * 8
    assert q.partitions_total == q.partitions_done > 1
    assert q.submitted <= q.started <= q.finished
    assert svc.result(q.id, "alice").table().num_rows == 300
    with pytest.raises(UnknownQueryError):
        svc.result(q.id, "bob")  # another user's query does not exist for bob


def test_synchronous_results_are_handed_over_once(make_service):
    svc = make_service()
    assert svc.run("SELECT COUNT(*) AS n FROM Filter", "alice").to_pylist() == [{"n": 6}]
    q = svc.history()[-1]
    assert q.mode == "sync" and svc.results.get(q.id) is None
    with pytest.raises(ResultGoneError):
        svc.outcome(q)


def test_errors_are_recorded_with_type_and_message(make_service):
    svc = make_service()
    with pytest.raises(UnknownNameError):
        svc.run("SELECT nope FROM Object", "alice")
    q = svc.history()[-1]
    assert q.state is State.FAILED and q.error_type == "UnknownNameError"
    assert "nope" in q.error_message and q.partitions_total is None


def test_limits_on_rows_and_bytes(make_service):
    svc = make_service(max_rows=10, max_result_bytes=100)
    with pytest.raises(QueryLimitError, match="10 rows"):
        svc.run("SELECT objectId FROM Object", "alice")
    with pytest.raises(QueryLimitError, match="bytes"):
        svc.run("SELECT objectId, stamp, kind FROM Object LIMIT 10", "alice")


def test_cancel_a_queued_query(make_service):
    svc = make_service(max_concurrent=1)
    slow = svc.submit(SLOW_SQL, "alice")
    wait_until(lambda: slow.state is State.EXECUTING)
    queued = svc.submit("SELECT 1", "alice")
    assert queued.state is State.QUEUED
    assert [q.id for q in svc.active()] == [slow.id, queued.id]
    svc.cancel(queued.id, "alice")
    assert queued.state is State.CANCELLED and queued.started is None
    assert isinstance(queued.error, QueryCancelled)
    with pytest.raises(NotFinishedError):
        svc.result(slow.id)
    svc.cancel(slow.id)
    assert slow._worker_done.wait(5)
    with pytest.raises(UnknownQueryError):
        svc.cancel(slow.id)  # finished: as Qserv, "unknown or finished"


def test_cancel_interrupts_the_running_statement(make_service):
    svc = make_service()
    q = svc.submit(SLOW_SQL, "alice")
    wait_until(lambda: q.state is State.EXECUTING and svc.cursors._by_query.get(q.id))
    time.sleep(0.2)  # DuckDB is inside the statement now
    start = time.monotonic()
    svc.cancel(q.id, "alice")
    assert q.state is State.CANCELLED  # at once
    assert q._worker_done.wait(5), "the DuckDB statement was not interrupted"
    assert time.monotonic() - start < 5
    assert svc.run("SELECT COUNT(*) AS n FROM Filter", "alice").to_pylist() == [{"n": 6}]


def test_time_limit(make_service):
    svc = make_service(timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(QueryTimeoutError):
        svc.run(SLOW_SQL, "alice")
    assert time.monotonic() - start < 3
    q = svc.history()[-1]
    assert q.state is State.FAILED and q._worker_done.wait(5)


def test_a_shorter_per_query_timeout_only_lowers_the_limit(make_service):
    svc = make_service(timeout_s=0.3)
    assert svc.submit("SELECT 1", "a", timeout_s=100).timeout_s == 0.3
    assert svc.submit("SELECT 1", "a", timeout_s=0.1).timeout_s == 0.1


def test_queue_limit(make_service):
    svc = make_service(max_concurrent=1, max_queued=1)
    slow = svc.submit(SLOW_SQL, "alice")
    wait_until(lambda: slow.state is State.EXECUTING)
    svc.submit("SELECT 1", "alice")
    with pytest.raises(ServerBusyError):
        svc.submit("SELECT 2", "alice")
    svc.cancel(slow.id)


def test_spill_expiry_and_history(make_service):
    svc = make_service(memory_results_bytes=1000, result_ttl_s=60, history=3)
    small = svc.submit("SELECT filterId FROM Filter", "alice")
    big = svc.submit("SELECT * FROM Source LIMIT 400", "alice")
    for q in (small, big):
        q.done.result(10)
    assert not svc.results.get(small.id).spilled
    path = svc.results.get(big.id).path
    assert path.exists() and path.suffix == ".parquet"
    assert svc.result(big.id).table().num_rows == 400
    assert sorted(svc.results.expire(now=time.time() + 61)) == [small.id, big.id]
    assert not path.exists()
    with pytest.raises(ResultGoneError):
        svc.result(big.id)
    for i in range(4):
        svc.run(f"SELECT {i} AS i", "alice")
    svc.submit("SELECT 9", "alice").done.result(10)
    assert len([q for q in svc.history() if q.state.final]) <= 4
    with pytest.raises(UnknownQueryError):
        svc.get(small.id)  # forgotten


def test_close_cancels_what_is_pending(make_service):
    svc = make_service(max_concurrent=1)
    slow = svc.submit(SLOW_SQL, "alice")
    wait_until(lambda: slow.state is State.EXECUTING)
    queued = svc.submit("SELECT 1", "alice")
    svc.close()
    assert slow.state is State.CANCELLED and queued.state is State.CANCELLED
    assert slow._worker_done.wait(5)
    with pytest.raises(ServerBusyError):
        svc.submit("SELECT 1", "alice")
