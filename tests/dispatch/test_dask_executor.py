"""The Dask executor against the embedded default, on a local cluster of 2 processes:
same rows for the oracle's queries, a worker killed mid-query, failures that are reported
and never merged into a partial answer."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

import dask  # noqa: E402
from distributed import LocalCluster  # noqa: E402
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

import skyshard  # noqa: E402
from background import run_in_thread  # noqa: E402
from same_rows import assert_same_rows  # noqa: E402
from skyshard.dispatch.dask_executor import DaskExecutor  # noqa: E402
from skyshard.dispatch.executor import Executor  # noqa: E402
from skyshard.errors import ExternalError, QueryLimitError, SqlError  # noqa: E402
from test_oracle import CASES  # noqa: E402

EXTRA = [
    "SELECT kind, COUNT(*) AS n, AVG(gMag), STDDEV(rMag), VARIANCE(gMag) FROM Object "
    "GROUP BY kind HAVING COUNT(*) > 100 ORDER BY n DESC",
    "SELECT COUNT(DISTINCT nEpochs), COUNT(DISTINCT kind) FROM Object WHERE decl < 0",
    "SELECT DISTINCT s.filterId FROM Source s ORDER BY 1",
    "SELECT objectId, ra, decl FROM Object ORDER BY decl DESC, objectId LIMIT 11 OFFSET 7",
    "SELECT o.objectId, COUNT(*) AS n FROM Object o JOIN Source s ON o.objectId = s.objectId "
    "GROUP BY o.objectId HAVING COUNT(*) > 7 ORDER BY n DESC, o.objectId LIMIT 5",
    "SELECT * FROM Object WHERE qserv_areaspec_box(-1, -1, 1, 1) ORDER BY objectId",
]


@pytest.fixture(scope="module")
def dask_ex(sky_root):
    with DaskExecutor(sky_root, workers=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def ids(sky_tables):
    oids = sky_tables["Object"].column("objectId").to_pylist()
    orphan = sky_tables["Source"].column("objectId").to_pylist()[-1]
    return {"oid": oids[17], "oid2": oids[4000], "orphan": orphan}


def same_as_default(db, ex, sql: str) -> None:
    """``sql`` through a Database on ``ex`` (scripts of SET/SELECT INTO included) gives
    the rows of the embedded default ``db``."""
    want = db.sql(sql)
    via = skyshard.open(db.root)
    via.executor = ex
    got = via.sql(sql)
    assert_same_rows(got, want, ordered=" order by " in sql.lower())
    assert got.column_names == want.column_names


@pytest.mark.parametrize("template", CASES + EXTRA)
def test_same_rows_as_embedded(sky_db, dask_ex, ids, template):
    same_as_default(sky_db, dask_ex, template.format(**ids))


def test_connect_to_a_running_scheduler_in_fragments(sky_root, sky_db, dask_ex, ids):
    """A second executor on the same cluster, by address, with 3-partition fragments
    (several statements per task)."""
    address = dask_ex.client.scheduler.address
    with DaskExecutor(sky_root, scheduler=address, fragment_partitions=3) as ex:
        assert len(ex.workers()) == 2
        for template in EXTRA + CASES[:12]:
            same_as_default(sky_db, ex, template.format(**ids))


def test_database_runs_on_it(sky_root, dask_ex):
    db = skyshard.open(sky_root)
    db.executor = dask_ex
    assert isinstance(dask_ex, Executor)
    got = db.sql("SELECT kind, COUNT(*) AS n FROM Object GROUP BY kind ORDER BY kind")
    assert got.column_names == ["kind", "n"] and sum(got.column("n").to_pylist()) == 6000


def test_result_types_match_embedded(sky_db, dask_ex):
    sql = "SELECT kind, COUNT(*) AS n, AVG(gMag) AS g FROM Object GROUP BY kind"
    assert dask_ex.run(sky_db.plan(sql)).schema == sky_db.sql(sql).schema


def test_query_errors_keep_their_type(sky_db, dask_ex):
    with pytest.raises(QueryLimitError):
        dask_ex.run(sky_db.plan("SELECT objectId FROM Object"), max_rows=10)
    with pytest.raises(QueryLimitError):
        dask_ex.run(sky_db.plan("SELECT objectId FROM Object WHERE objectId = "
                                f"{sky_db.sql('SELECT MIN(objectId) AS m FROM Object')[0][0]}"),
                    max_rows=0)
    with pytest.raises(SqlError):
        dask_ex.run(sky_db.plan("SELECT CAST(kind AS INTEGER) FROM Object"))


def test_bad_scheduler_address():
    address = "tcp://127.0.0.1:1"
    with pytest.raises(ExternalError, match=f"cannot connect to the Dask scheduler at '{address}'"):
        DaskExecutor(".", scheduler=address, connect_timeout=1)


# --- failures ----------------------------------------------------------------------------
# Functions run on the workers (``client.run``) to make tasks slow or broken there.

SLOW_SQL = ("SELECT kind, COUNT(*) AS n, AVG(gMag) AS g, STDDEV(rMag) AS s, MAX(decl) AS m "
            "FROM Object GROUP BY kind")


def _slow_tasks(marks: str, seconds: float) -> None:
    """On a worker: every task notes that it started (a file named after the process),
    then sleeps before doing its work."""
    import skyshard.dispatch.dask_executor as mod

    original = mod.run_batch

    def slow(*args, **kwargs):
        Path(marks, f"started-{os.getpid()}-{time.monotonic_ns()}").touch()
        time.sleep(seconds)
        return original(*args, **kwargs)

    mod.run_batch = slow


class SlowTasks(WorkerPlugin):
    """``_slow_tasks`` on every worker, restarted ones included."""

    def __init__(self, marks: str, seconds: float) -> None:
        self.marks, self.seconds = marks, seconds

    def setup(self, worker) -> None:
        _slow_tasks(self.marks, self.seconds)


def _broken_tasks() -> None:
    import skyshard.dispatch.dask_executor as mod

    def broken(*args, **kwargs):
        raise OSError("disk unreadable")

    mod.run_batch = broken


def _run_in_thread(ex: DaskExecutor, plan) -> tuple[threading.Thread, dict]:
    return run_in_thread(lambda: ex.run(plan))


def _kill_a_busy_worker(ex: DaskExecutor, marks: Path) -> int:
    """Wait until both workers run a task, then SIGKILL one of them; its pid."""
    pids = set(ex.client.run(os.getpid).values())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        busy = {int(p.name.split("-")[1]) for p in marks.glob("started-*")}
        if busy >= pids:
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"the tasks did not start on both workers: {busy} of {pids}")
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    return victim


def test_killed_worker_mid_query_gives_the_same_answer(sky_root, sky_db, tmp_path):
    want = skyshard.open(sky_root).sql(SLOW_SQL)
    with DaskExecutor(sky_root, workers=2) as ex:
        ex.client.register_plugin(SlowTasks(str(tmp_path), 1.5))
        plan = sky_db.plan(SLOW_SQL)
        assert plan.split is not None
        thread, out = _run_in_thread(ex, plan)
        victim = _kill_a_busy_worker(ex, tmp_path)
        thread.join(60)
        assert not thread.is_alive()
        assert "error" not in out, out.get("error")
        assert_same_rows(out["table"], want, ordered=False)
        survivors = set(ex.client.run(os.getpid).values())
        assert victim not in survivors
        # The lost group ran again, elsewhere: 2 tasks started, then one more.
        started = sorted(tmp_path.glob("started-*"), key=lambda p: int(p.name.split("-")[2]))
        assert len(started) == 3 and int(started[2].name.split("-")[1]) != victim
        # The restarted cluster keeps answering.
        same_as_default(sky_db, ex, "SELECT COUNT(*) AS n, SUM(nEpochs) FROM Object")


def test_lost_group_is_an_error_never_a_partial_answer(sky_root, sky_db, tmp_path):
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with DaskExecutor(sky_root, workers=2) as ex:
            ex.client.run(_slow_tasks, str(tmp_path), 2.0)
            plan = sky_db.plan(SLOW_SQL)
            thread, out = _run_in_thread(ex, plan)
            _kill_a_busy_worker(ex, tmp_path)
            thread.join(60)
    assert "table" not in out
    err = out["error"]
    assert isinstance(err, ExternalError), err
    assert "no Dask worker could compute" in str(err) and "KilledWorker" in str(err)
    assert err.partitions and set(err.partitions) < {(p.order, p.pixel) for p in plan.partitions}
    assert f"Norder={err.partitions[0][0]}/Npix={err.partitions[0][1]}" in str(err)


def test_failing_tasks_are_retried_then_reported(sky_root, sky_db):
    with DaskExecutor(sky_root, workers=2, retries=1) as ex:
        ex.client.run(_broken_tasks)
        with pytest.raises(ExternalError, match="disk unreadable") as info:
            ex.run(sky_db.plan("SELECT COUNT(*) FROM Object "
                               "WHERE qserv_areaspec_circle(45, 10, 0.01)"))
        assert info.value.partitions is None  # one statement over the query's partitions
        with pytest.raises(ExternalError, match="Norder=") as info:
            ex.run(sky_db.plan(SLOW_SQL))
        assert info.value.partitions


def test_lost_scheduler_is_an_error(sky_root, sky_db, tmp_path):
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    try:
        ex = DaskExecutor(sky_root, scheduler=cluster.scheduler_address)
        ex.client.register_plugin(SlowTasks(str(tmp_path), 3.0))
        thread, out = _run_in_thread(ex, sky_db.plan(SLOW_SQL))
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        cluster.close()  # scheduler and workers gone while both tasks run
    thread.join(60)
    ex.close()
    assert "table" not in out
    assert isinstance(out["error"], ExternalError), out["error"]
    assert "no Dask worker could compute" in str(out["error"])
