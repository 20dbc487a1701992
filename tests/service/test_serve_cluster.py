"""``skyshard serve`` on a Dask cluster (``[cluster]``, ``--workers``, ``--scheduler``):
the same answers over MySQL and TAP as the server without one, scans on the workers and
interactive queries where configured, typed configuration errors, and a shutdown that
leaves no worker process behind."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import psutil
import pymysql
import pytest
import requests
from served import TOKENS, USERS, start_server, wait_until

pytest.importorskip("distributed")

from distributed import LocalCluster  # noqa: E402

from skyshard.cli import main  # noqa: E402
from skyshard.service import config  # noqa: E402
from skyshard.service.errors import ConfigError  # noqa: E402

#: name -> (Qserv SQL, ADQL, lane): a cone and an id lookup read a few partitions, the
#: aggregates all 12 of Object (order-independent aggregates: the answers are exact).
QUERIES = {
    "cone": ("SELECT objectId, ra, decl, kind FROM Object "
             "WHERE qserv_areaspec_circle(45, 10, 20) ORDER BY objectId",
             "SELECT objectId, ra, decl, kind FROM cat.Object WHERE 1 = CONTAINS("
             "POINT('ICRS', ra, decl), CIRCLE('ICRS', 45, 10, 20)) ORDER BY objectId",
             "interactive"),
    "id": ("SELECT * FROM Object WHERE objectId = 70",
           "SELECT * FROM cat.Object WHERE objectId = 70", "interactive"),
    "scan": ("SELECT kind, COUNT(*) AS n, MIN(decl) AS lo, MAX(gMag) AS hi, "
             "SUM(nEpochs) AS e FROM Object GROUP BY kind ORDER BY kind",
             "SELECT kind, COUNT(*) AS n, MIN(decl) AS lo, MAX(gMag) AS hi, "
             "SUM(nEpochs) AS e FROM cat.Object GROUP BY kind ORDER BY kind", "scan"),
    "join": ("SELECT o.kind, COUNT(*) AS n, MAX(s.psfFlux) AS f FROM Object o "
             "JOIN Source s ON o.objectId = s.objectId GROUP BY o.kind ORDER BY o.kind",
             None, "scan"),
}

#: About a minute of one worker's time (6^13 rows of a cross product of the 6-row
#: replicated table); the planner accepts it and it reads no partition (an interactive
#: query).
SLOW_ON_A_WORKER = ("SELECT SUM(" + " + ".join(f"f{i}.filterId" for i in range(13))
                    + ") AS s FROM " + ", ".join(f"Filter f{i}" for i in range(13)))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def cluster_server(served_catalog, tmp_path_factory):
    """The served catalog with ``[cluster] workers = 2`` (shared storage: interactive
    queries in process), and what the server logged while starting."""
    logger = logging.getLogger("skyshard.service")
    records, level = _Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        srv = start_server(served_catalog, tmp_path_factory.mktemp("cluster-results"),
                           cluster={"workers": 2}, limits={"shared_scans": True})
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    srv.startup_log = records.messages
    yield srv
    srv.stop()


def _mysql(srv, user: str = "alice") -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=srv.mysql_port, user=user,
                           password=USERS[user], database="cat", connect_timeout=5,
                           read_timeout=60)


def _fetch(srv, sql: str) -> tuple[tuple, list]:
    """The rows and the column descriptions (name, type code) of ``sql`` over MySQL."""
    conn = _mysql(srv)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall(), [d[:2] for d in cur.description]
    finally:
        conn.close()


def _tap(srv, adql: str, fmt: str = "votable") -> bytes:
    resp = requests.post(f"http://127.0.0.1:{srv.http_port}/tap/sync",
                         data={"LANG": "ADQL", "QUERY": adql, "RESPONSEFORMAT": fmt},
                         headers={"Authorization": f"Bearer {TOKENS['alice']}"}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.content


def _executed(srv) -> int:
    """Tasks the cluster's workers have run so far."""
    client = srv.service.scan_db.executor.client
    return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


def _lane_of_last(srv) -> str:
    return srv.service.history()[-1].lane


# --- a local cluster (--workers), interactive queries in process -----------------------


def test_startup_logs_the_cluster_and_where_queries_run(cluster_server):
    log = cluster_server.startup_log
    started = next(m for m in log if m.startswith("local Dask cluster of 2 worker"))
    assert cluster_server.cluster.address in started
    where = next(m for m in log if m.startswith("full scans run on"))
    assert "a local Dask cluster of 2 worker process(es)" in where
    assert "interactive queries run in this process" in where
    assert log.index(where) > log.index(started)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")
def test_shared_scans_are_on_for_the_scans_only(cluster_server):
    assert cluster_server.service.scan_db.executor.wrapped.shared_scans is True
    assert cluster_server.service.db.executor.wrapped.scans is None  # in process, never


def test_workers_that_only_scan_run_at_the_scan_priority(cluster_server):
    client = cluster_server.service.scan_db.executor.client
    pids = client.run(os.getpid).values()
    scan_nice = cluster_server.config.limits.scan_nice
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [scan_nice] * 2


@pytest.mark.parametrize("name", list(QUERIES))
def test_mysql_answers_equal_the_local_servers(cluster_server, server, name):
    sql, _, lane = QUERIES[name]
    before = _executed(cluster_server)
    got = _fetch(cluster_server, sql)
    assert _lane_of_last(cluster_server) == lane
    ran_on_workers = _executed(cluster_server) > before
    assert ran_on_workers == (lane == "scan")  # interactive ones ran in the front end
    assert got == _fetch(server, sql)
    assert got[0]


@pytest.mark.parametrize("name", [n for n, q in QUERIES.items() if q[1]])
def test_tap_answers_equal_the_local_servers(cluster_server, server, name):
    _, adql, lane = QUERIES[name]
    before = _executed(cluster_server)
    got = _tap(cluster_server, adql)
    assert _lane_of_last(cluster_server) == lane
    assert (_executed(cluster_server) > before) == (lane == "scan")
    assert got == _tap(server, adql)
    assert _tap(cluster_server, adql, "csv") == _tap(server, adql, "csv")


def test_the_scan_is_what_duckdb_says(cluster_server, served_tables):
    obj = served_tables["Object"]  # noqa: F841 - read by DuckDB below
    want = duckdb.sql(QUERIES["scan"][0].replace("FROM Object", "FROM obj")).fetchall()
    rows, _ = _fetch(cluster_server, QUERIES["scan"][0])
    assert [tuple(r) for r in rows] == [tuple(r) for r in want]


def test_async_scan_and_its_partitions_in_the_history(cluster_server):
    conn = _mysql(cluster_server)
    try:
        with conn.cursor() as cur:
            cur.execute("SUBMIT " + QUERIES["scan"][0])
            qid = cur.fetchone()[0]
            wait_until(lambda: cluster_server.service.get(qid).state.final, timeout=30)
            cur.execute(f"SELECT * FROM qserv_result({qid})")
            assert len(cur.fetchall()) == 3
            cur.execute("SELECT STATUS, CHUNKS, CHUNKS_COMP FROM information_schema.queries "
                        f"WHERE ID = {qid}")
            assert cur.fetchone() == ("COMPLETED", 12, 12)
    finally:
        conn.close()


# --- an existing cluster (--scheduler), every query on it ------------------------------


def test_existing_cluster_runs_every_query_and_keeps_time_limits(served_catalog, server,
                                                                  tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as dask_cluster:
        srv = start_server(served_catalog, tmp_path / "results",
                           cluster={"scheduler": dask_cluster.scheduler_address,
                                    "local_interactive": False})
        try:
            assert srv.cluster is None  # nothing started: the test's cluster is used
            for name, (sql, _, lane) in QUERIES.items():
                before = _executed(srv)
                assert _fetch(srv, sql) == _fetch(server, sql), name
                assert _lane_of_last(srv) == lane
                assert _executed(srv) > before, name  # on the workers, interactive too
            adql = QUERIES["cone"][1]
            assert _tap(srv, adql, "csv") == _tap(server, adql, "csv")

            # A query that runs for seconds on a worker: the client gets its time limit
            # error on time (its statement on the worker is interrupted).
            conn = _mysql(srv)
            try:
                with conn.cursor() as cur:
                    cur.execute("SET max_execution_time = 300")
                    started = time.monotonic()
                    with pytest.raises(pymysql.err.OperationalError) as info:
                        cur.execute(SLOW_ON_A_WORKER)
                    assert info.value.args[0] == 3024
                    assert time.monotonic() - started < 10  # not the query's minute
                    cur.execute("SET max_execution_time = 0")
                    cur.execute(QUERIES["id"][0])  # the server still answers
                    assert len(cur.fetchall()) == 1
            finally:
                conn.close()
        finally:
            srv.stop()
        assert dask_cluster.status.name == "running"  # the server left it running


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("cluster, message", [
    ({"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}, "not both"),
    ({"workers": 0}, "workers must be"),
    ({"scheduler": "127.0.0.1:8786"}, "tcp://HOST:8786"),
    ({"workers": 2, "placement": "everywhere"}, "placement must be"),
    ({"workers": 2, "replication": 2}, "replication needs placement"),
    ({"workers": 2, "placement": "replicas", "replication": 3}, "at least as many workers"),
    ({"workers": 1, "placement": "replicas"}, "at least 2 workers"),
    ({"workers": 2, "local_interactive": "yes"}, "true or false"),
    ({"placement": "replicas"}, "need workers or scheduler"),
])
def test_bad_cluster_settings(tmp_path, cluster, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(None, catalog=tmp_path, allow_anonymous=True, cluster=cluster)


def test_cluster_section_of_the_file_and_the_command_line(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text('catalog = "cat"\nallow_anonymous = true\n[cluster]\n'
                    'scheduler = "tcp://sched:8786"\nplacement = "replicas"\nreplication = 3\n')
    c = config.load(path).cluster
    assert (c.scheduler, c.workers, c.placement, c.replication) == (
        "tcp://sched:8786", None, "replicas", 3)
    assert not c.interactive_in_process  # replicas: everything on the cluster by default
    c = config.load(path, cluster={"workers": 4, "local_interactive": True}).cluster
    assert (c.scheduler, c.workers, c.local_interactive) == (None, 4, True)  # CLI wins
    assert c.interactive_in_process
    assert not config.load(None, catalog="cat", allow_anonymous=True).cluster.enabled
    path.write_text('catalog = "cat"\nallow_anonymous = true\n[cluster]\nthreads = 2\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        config.load(path)


def test_serve_refuses_workers_and_scheduler_together(served_catalog, capsys):
    assert main(["serve", "--catalog", str(served_catalog), "--allow-anonymous",
                 "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"]) == 2
    assert "not both" in capsys.readouterr().err


# --- the command, shared-nothing, and its shutdown ----------------------------------------


def test_serve_workers_replicas_then_sigterm_leaves_no_worker(served_catalog, server,
                                                              tmp_path):
    catalog = tmp_path / "cat"  # placing writes replicas.json: not in the shared catalog
    shutil.copytree(served_catalog, catalog)
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyshard.cli", "serve", "--catalog", str(catalog),
         "--mysql-port", "0", "--http-port", "0", "--allow-anonymous",
         "--workers", "2", "--placement", "replicas", "--replication", "2"],
        stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not any("full scans run on" in line for line in lines):
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        log = "".join(lines)
        assert "replicas on the workers' disks (replication 2)" in log
        assert "interactive queries run on the cluster too" in log
        port = int(re.search(r"MySQL protocol on 127\.0\.0\.1:(\d+)", log).group(1))
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in workers]
        conn = pymysql.connect(host="127.0.0.1", port=port, user="guest", password="",
                               database="cat", connect_timeout=5, read_timeout=60)
        try:
            with conn.cursor() as cur:
                for name in ("id", "scan"):
                    sql = QUERIES[name][0]
                    cur.execute(sql)
                    assert (cur.fetchall(), [d[:2] for d in cur.description]) == (
                        _fetch(server, sql)), name
        finally:
            conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, rest
    assert "local Dask cluster stopped" in rest and "stopped" in rest
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
