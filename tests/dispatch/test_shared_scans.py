"""Shared scans: concurrent full scans ride one convoy and get the rows each would get
alone, including a query that joins mid-scan, a query that fails and a query that is
interrupted while it waits.

The convoy's progress is made deterministic with ``Gated``: an engine whose statements
(all but orphan reads; the convoy's shared passes too when it runs them) wait until a
test opens the gate, so queries can be lined up on a convoy before it moves; and with
a ``gather_s`` long enough for queries started together to board its first unit.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import duckdb
import pytest
from same_rows import assert_same_rows

from skyshard.dispatch.local import LocalExecutor
from skyshard.dispatch.scans import (
    MIN_UNITS,
    SharedScans,
    full_scan_table,
    needed_columns,
    scan_request,
    units_of,
)
from skyshard.errors import QueryLimitError, SqlError
from skyshard.service.cursors import CursorTracker

UNIT_ROWS = 1000  # the test sky's Object (6000 rows) makes several units

OBJECT_QUERIES = [
    "SELECT COUNT(*) AS n, SUM(nEpochs), MIN(gMag), MAX(gMag), AVG(rMag) FROM Object",
    "SELECT kind, COUNT(*) AS n, AVG(gMag) AS g FROM Object GROUP BY kind ORDER BY kind",
    "SELECT objectId, gMag FROM Object WHERE gMag > 24.5 ORDER BY gMag DESC, objectId",
    "SELECT kind, STDDEV(gMag), VAR_SAMP(rMag) FROM Object WHERE flags < 200 GROUP BY kind",
    "SELECT COUNT(DISTINCT nEpochs) FROM Object WHERE decl < 0",
    "SELECT DISTINCT kind, flags % 3 FROM Object ORDER BY 1, 2",
    "SELECT FLOOR(gMag) AS g, COUNT(*) FROM Object GROUP BY g HAVING COUNT(*) > 10 ORDER BY g",
    "SELECT COUNT(*) FROM Object WHERE gMag < 20 || rMag > 23 && kind = 'qso'",
]
SOURCE_QUERIES = [  # Source has orphans (rows whose object is not in Object)
    "SELECT COUNT(*), SUM(psfFlux) FROM Source WHERE objectId >= 20000000",
    "SELECT filterId, COUNT(*) AS n, AVG(psfFlux) FROM Source GROUP BY filterId ORDER BY filterId",
    "SELECT sourceId, psfFlux FROM Source WHERE sourceId % 97 = 0 ORDER BY sourceId",
]


class Gated:
    """An engine whose statements wait for ``gate`` (orphan reads excepted: they come
    before a query joins its convoy), except the first ``pass_first``; ``waiting``
    counts the statements that had to wait."""

    def __init__(self, engine, *, pass_first: int = 0) -> None:
        self.wrapped = engine
        self.gate = threading.Event()
        self.waiting = 0
        self._free = pass_first
        self._lock = threading.Lock()

    def cursor(self):
        return self.wrapped.cursor()

    def query(self, sql: str, **kwargs):
        if "orphans.parquet" not in sql:
            with self._lock:
                free = self._free > 0
                if free:
                    self._free -= 1
                else:
                    self.waiting += 1
            if not free and not self.gate.wait(30):
                raise AssertionError("the gate was never opened")
        return self.wrapped.query(sql, **kwargs)


@pytest.fixture
def alone(sky_db):
    """Reference: every query alone, one statement, no shared scan."""
    return LocalExecutor(sky_db.engine, shared_scans=False)


def shared(engine, **options) -> LocalExecutor:
    """Units of ``UNIT_ROWS``, tables of any size; every unit two queries need is read
    once for them (the default shares only when their columns overlap enough: see the
    test of that). ``engine`` runs the shared passes and the queries' statements."""
    defaults = {"min_overlap": 0, "min_rows": 0, "gather_s": 0}
    scans = SharedScans(engine, unit_rows=UNIT_ROWS, **(defaults | options))
    return LocalExecutor(engine, scans=scans)


#: Queries started together board a new convoy together when it waits this long first
#: (long enough for threads started at once to join on a machine busy with other tests:
#: 0.3 s was not always).
TOGETHER = {"gather_s": 1.5}


def run_all(ex, db, sqls, *, wrap=None):
    """Run ``sqls`` on threads (planned first); their results (or exceptions) in order."""
    out: list = [None] * len(sqls)
    plans = [db.plan(sql) for sql in sqls]

    def one(i):
        try:
            ctx = wrap(i) if wrap else None
            if ctx is None:
                out[i] = ex.run(plans[i])
            else:
                with ctx:
                    out[i] = ex.run(plans[i])
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sqls))]
    for t in threads:
        t.start()
    return threads, out


def request_of(db, table):
    """The shared-scan request of a full scan of ``table``."""
    return scan_request(db.plan(f"SELECT COUNT(*) FROM {table}"), db.tables[table])


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def finish(threads):
    for t in threads:
        t.join(60)
        assert not t.is_alive()


def check_same(got, sql, db, alone):
    assert not isinstance(got, BaseException), got
    want = alone.run(db.plan(sql))
    assert_same_rows(got, want, ordered=" order by " in sql.lower())
    assert got.column_names == want.column_names


# --- what rides a convoy -------------------------------------------------------------------


@pytest.mark.parametrize("sql", OBJECT_QUERIES + SOURCE_QUERIES)
def test_full_scans_ride(sky_db, sql):
    info = full_scan_table(sky_db.plan(sql))
    assert info is not None and info.name in ("Object", "Source")


@pytest.mark.parametrize("sql", [
    "SELECT * FROM Object WHERE objectId = 1234",                       # key lookup
    "SELECT COUNT(*) FROM Object WHERE qserv_areaspec_circle(45, 10, 0.7)",  # region
    "SELECT COUNT(*) FROM Object WHERE scisql_s2PtInCircle(ra, decl, 0.5, 0.5, 1.5) = 1",
    "SELECT o.kind, COUNT(*) FROM Object o, Source s WHERE o.objectId = s.objectId GROUP BY o.kind",
    "SELECT chunkId, COUNT(*) FROM Object GROUP BY chunkId",            # pseudo-column
    "SELECT COUNT(*) FROM (SELECT kind FROM Object) t",                 # not splittable
    "SELECT * FROM Filter",                                             # replicated
    "SELECT objectId, gMag FROM Object ORDER BY gMag DESC, objectId LIMIT 5",  # top-k
    "SELECT objectId FROM Object LIMIT 3",
])
def test_other_queries_do_not(sky_db, sql):
    assert full_scan_table(sky_db.plan(sql)) is None


def test_small_tables_are_scanned_as_usual(sky_db, alone):
    sql = OBJECT_QUERIES[1]
    ex = LocalExecutor(sky_db.engine)  # the default: tables of 1,000,000 rows or more
    assert ex.scans.rides(sky_db.plan(sql)) is None
    check_same(ex.run(sky_db.plan(sql)), sql, sky_db, alone)
    assert ex.scans.stats["queries"] == 0
    assert shared(sky_db.engine).scans.rides(sky_db.plan(sql)).name == "Object"


def test_needed_columns(sky_db):
    p = sky_db.plan("SELECT kind, AVG(gmag) FROM Object WHERE rMag > 20 GROUP BY kind "
                    "ORDER BY 2")
    assert needed_columns(p, full_scan_table(p)) == {"kind", "gMag", "rMag"}
    p = sky_db.plan("SELECT COUNT(*) FROM Object WHERE 1 = 1")
    assert needed_columns(p, full_scan_table(p)) == set()


def test_units_cover_every_partition_once(sky_db):
    info = sky_db.tables["Source"]
    units = units_of(request_of(sky_db, "Source").parts, UNIT_ROWS)
    assert len(units) > 3
    seen = [pp for u in units for pp in u.partitions]
    assert sorted(seen) == sorted((p.order, p.pixel) for p in info.partitions)
    assert len(seen) == len(set(seen))
    assert [u.index for u in units] == list(range(len(units)))
    assert sum(u.rows for u in units) == sum(p.rows for p in info.partitions)
    assert len(units) >= sum(u.rows for u in units) // (2 * UNIT_ROWS)


def test_a_small_table_still_makes_several_units(sky_db):
    assert len(sky_db.tables["Object"].partitions) > MIN_UNITS
    scans = SharedScans(sky_db.engine, unit_rows=10**9)
    assert len(scans.units(request_of(sky_db, "Object"))) >= MIN_UNITS


@pytest.mark.parametrize("sqls, shares", [
    (["SELECT AVG(gMag), AVG(rMag) FROM Object",
      "SELECT MIN(gMag), MAX(rMag) FROM Object WHERE gMag > 20"], True),
    (["SELECT AVG(gMag) FROM Object", "SELECT MAX(nEpochs) FROM Object"], False),
])
def test_reads_are_shared_when_columns_overlap(sky_db, alone, sqls, shares):
    gated = Gated(sky_db.engine)
    scans = SharedScans(gated, unit_rows=UNIT_ROWS, min_rows=0, **TOGETHER)  # min_overlap 2
    ex = LocalExecutor(gated, scans=scans)
    threads, out = run_all(ex, sky_db, sqls)
    wait_for(lambda: scans.stats["queries"] == 2)
    gated.gate.set()
    finish(threads)
    for got, sql in zip(out, sqls):
        check_same(got, sql, sky_db, alone)
    units = len(scans.units(request_of(sky_db, "Object")))
    stats = scans.stats
    assert stats["served"] == 2 * units
    if shares:
        assert stats["shared_reads"] == units and stats["own_reads"] == 0
    else:  # each read its first unit alone (in case others came), then went on alone
        assert stats["shared_reads"] == 0 and stats["own_reads"] == 2 * units


# --- results ----------------------------------------------------------------------------------


def test_lone_full_scan_reads_its_files(sky_db, alone):
    ex = shared(sky_db.engine)
    for sql in (OBJECT_QUERIES[1], SOURCE_QUERIES[1]):
        check_same(ex.run(sky_db.plan(sql)), sql, sky_db, alone)
    stats = ex.scans.stats
    assert stats["shared_reads"] == 0 and stats["own_reads"] == stats["served"] > 2


def test_a_scan_sent_just_after_a_lone_one_shares_with_it(sky_db, alone):
    first, second = OBJECT_QUERIES[1], OBJECT_QUERIES[2]
    gated = Gated(sky_db.engine)
    ex = shared(gated)  # no gathering wait
    t1, out1 = run_all(ex, sky_db, [first])
    wait_for(lambda: gated.waiting == 1)  # its first unit, read alone, waits at the gate
    t2, out2 = run_all(ex, sky_db, [second])
    wait_for(lambda: ex.scans.stats["queries"] == 2)
    gated.gate.set()
    finish(t1 + t2)
    check_same(out1[0], first, sky_db, alone)
    check_same(out2[0], second, sky_db, alone)
    units = len(ex.scans.units(request_of(sky_db, "Object")))
    stats = ex.scans.stats
    # Unit 0 by the first alone, the others shared, then unit 0 by the second alone.
    assert stats["shared_reads"] == units - 1
    assert stats["own_reads"] == 2 and stats["served"] == 2 * units


@pytest.mark.parametrize("table", ["Object", "Source"])
def test_concurrent_full_scans_share_reads(sky_db, alone, table):
    sqls = OBJECT_QUERIES if table == "Object" else SOURCE_QUERIES + [SOURCE_QUERIES[0]]
    gated = Gated(sky_db.engine)
    ex = shared(gated, **TOGETHER)  # every statement waits for the gate
    threads, out = run_all(ex, sky_db, sqls)
    wait_for(lambda: ex.scans.stats["queries"] == len(sqls))
    gated.gate.set()
    finish(threads)
    for got, sql in zip(out, sqls):
        check_same(got, sql, sky_db, alone)
    units = len(ex.scans.units(request_of(sky_db, table)))
    stats = ex.scans.stats
    assert units >= 5
    assert stats["served"] == len(sqls) * units  # every query had every unit once
    assert stats["shared_reads"] == units  # each read once for all of them
    assert stats["own_reads"] == 0
    assert stats["convoys"] == 1


def test_query_joining_mid_scan_wraps_around(sky_db, alone):
    first, late = OBJECT_QUERIES[1:3], OBJECT_QUERIES[3]
    gated = Gated(sky_db.engine, pass_first=2)  # two shared passes, then the gate
    ex = shared(gated, **TOGETHER)
    units = len(ex.scans.units(request_of(sky_db, "Object")))
    assert units >= 5
    t1, out1 = run_all(ex, sky_db, first)
    wait_for(lambda: ex.scans.position("Object") == 2 and gated.waiting == 1)
    t2, out2 = run_all(ex, sky_db, [late])
    wait_for(lambda: ex.scans.stats["queries"] == 3)
    gated.gate.set()
    finish(t1 + t2)
    for got, sql in zip(out1 + out2, first + [late]):
        check_same(got, sql, sky_db, alone)
    stats = ex.scans.stats
    # Units 0-2 for the first two, 3.. for the three, then 0-2 for the late one alone
    # (one statement of its own).
    assert stats["served"] == 3 * units
    assert stats["shared_reads"] == units
    assert stats["own_reads"] == 3


def test_many_at_once_without_gate(sky_db, alone):
    sqls = OBJECT_QUERIES + SOURCE_QUERIES
    ex = shared(sky_db.engine)
    threads, out = run_all(ex, sky_db, sqls)
    finish(threads)
    for got, sql in zip(out, sqls):
        check_same(got, sql, sky_db, alone)
    assert ex.scans.stats["served"] > 0


# --- failures --------------------------------------------------------------------------------


def test_a_failing_query_leaves_the_others_alone(sky_db, alone):
    bad = "SELECT SUM(CAST(kind AS INTEGER)) FROM Object"
    with pytest.raises(SqlError):
        alone.run(sky_db.plan(bad))
    good = [OBJECT_QUERIES[0], OBJECT_QUERIES[2]]
    gated = Gated(sky_db.engine)
    ex = shared(gated, **TOGETHER)
    threads, out = run_all(ex, sky_db, [good[0], bad, good[1]])
    wait_for(lambda: ex.scans.stats["queries"] == 3)
    gated.gate.set()
    finish(threads)
    assert isinstance(out[1], SqlError)
    check_same(out[0], good[0], sky_db, alone)
    check_same(out[2], good[1], sky_db, alone)
    # The first pass failed (the bad cast); each read unit 0 itself, the bad query failed
    # there, and the good ones shared the other units.
    units = len(ex.scans.units(request_of(sky_db, "Object")))
    stats = ex.scans.stats
    assert stats["shared_failures"] == 1 and stats["shared_reads"] == units - 1


def test_a_failed_shared_pass_falls_back_to_own_reads(sky_db, alone, monkeypatch):
    def broken(self, convoy, unit, riders):
        raise OSError("disk on fire")

    monkeypatch.setattr(SharedScans, "_shared_pass", broken)
    gated = Gated(sky_db.engine)
    ex = shared(gated, **TOGETHER)
    sqls = OBJECT_QUERIES[:3]
    threads, out = run_all(ex, sky_db, sqls)
    wait_for(lambda: ex.scans.stats["queries"] == 3)
    gated.gate.set()
    finish(threads)
    for got, sql in zip(out, sqls):
        check_same(got, sql, sky_db, alone)
    units = len(ex.scans.units(request_of(sky_db, "Object")))
    stats = ex.scans.stats
    assert stats["shared_failures"] == units and stats["shared_reads"] == 0
    assert stats["own_reads"] == stats["served"] == 3 * units


def test_a_query_the_split_gets_wrong_runs_as_one_statement(sky_db, alone):
    # AVG is split into SUM + COUNT, and DuckDB has no SUM of timestamps
    sql = "SELECT MAX(gMag), AVG(TIMESTAMP '2020-01-01' + INTERVAL nEpochs DAY) AS m FROM Object"
    p = sky_db.plan(sql)
    with pytest.raises(SqlError):  # its parallel statement fails
        LocalExecutor(sky_db.engine, fragment_partitions=100).run(p)
    ex = shared(sky_db.engine)
    assert ex.scans.rides(p) is not None
    check_same(ex.run(p), sql, sky_db, alone)


def test_max_rows_applies_to_the_merged_result(sky_db):
    ex = shared(sky_db.engine)
    with pytest.raises(QueryLimitError):
        ex.run(sky_db.plan("SELECT objectId FROM Object"), max_rows=10)
    assert ex.run(sky_db.plan("SELECT objectId FROM Object"), max_rows=6000).num_rows == 6000


def test_interrupting_a_waiting_query_stops_only_it(sky_db, alone):
    passes = Gated(sky_db.engine)  # the shared passes wait for the gate
    scans = SharedScans(passes, unit_rows=UNIT_ROWS, min_overlap=0, min_rows=0, poll_s=0.01,
                        **TOGETHER)
    ex = LocalExecutor(sky_db.engine, scans=scans)
    tracker = CursorTracker()
    assert tracker.install(SimpleNamespace(executor=ex))  # as the service does
    first, second = OBJECT_QUERIES[1:3], OBJECT_QUERIES[3]
    t1, out1 = run_all(ex, sky_db, first, wrap=lambda i: tracker.running(1 + i))
    wait_for(lambda: passes.waiting == 1)  # their first pass is held at the gate
    t2, out2 = run_all(ex, sky_db, [second], wrap=lambda i: tracker.running(3))
    wait_for(lambda: scans.stats["queries"] == 3)  # the third waits for the next unit
    start = time.monotonic()
    while t2[0].is_alive() and time.monotonic() - start < 10:
        tracker.interrupt(3)  # repeated, as the service does
        time.sleep(0.02)
    assert not t2[0].is_alive(), "the interrupted query kept waiting"
    assert isinstance(out2[0], duckdb.InterruptException)
    assert all(t.is_alive() for t in t1) and out1 == [None, None]  # still at the gate
    passes.gate.set()
    finish(t1)
    for got, sql in zip(out1, first):
        check_same(got, sql, sky_db, alone)


def test_close_stops_the_convoys(sky_db, alone):
    ex = shared(sky_db.engine, linger_s=30)
    sql = OBJECT_QUERIES[1]
    before = set(threading.enumerate())
    ex.run(sky_db.plan(sql))
    assert ex.scans.position("Object") is not None  # its thread waits for the next scan
    mine = [t for t in threading.enumerate() if t not in before and t.name == "skyshard-scan-Object"]
    assert len(mine) == 1
    ex.close()
    assert ex.scans.position("Object") is None
    assert not mine[0].is_alive()
    check_same(ex.run(sky_db.plan(sql)), sql, sky_db, alone)  # as usual from now on
    assert ex.scans.stats["queries"] == 1


def test_off(sky_db):
    ex = LocalExecutor(sky_db.engine, shared_scans=False)
    assert ex.scans is None
    assert ex.run(sky_db.plan(OBJECT_QUERIES[0])).num_rows == 1
