"""The MySQL front end with real clients: PyMySQL, SQLAlchemy + pandas, the mysql CLI."""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
import time
from decimal import Decimal

import pymysql
import pytest
from pymysql.constants import FIELD_TYPE

from served import SLOW_SQL, wait_until


def _types(cur) -> list[int]:
    return [d[1] for d in cur.description]


def _error(conn, sql: str) -> tuple[int, str]:
    with conn.cursor() as cur, pytest.raises(pymysql.MySQLError) as info:
        cur.execute(sql)
    return info.value.args[0], info.value.args[1]


def test_types_follow_the_arrow_schema(connect, served_tables):
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT objectId, ra, rMag, nEpochs, flags, band, kind, stamp, gMag "
                    "FROM Object ORDER BY objectId LIMIT 12")
        assert _types(cur) == [FIELD_TYPE.LONGLONG, FIELD_TYPE.DOUBLE, FIELD_TYPE.FLOAT,
                               FIELD_TYPE.LONG, FIELD_TYPE.TINY, FIELD_TYPE.SHORT,
                               FIELD_TYPE.VAR_STRING, FIELD_TYPE.BLOB, FIELD_TYPE.DOUBLE]
        rows = cur.fetchall()
    want = served_tables["Object"].sort_by("objectId").slice(0, 12).to_pylist()
    for got, w in zip(rows, want):
        assert got[0] == w["objectId"] and isinstance(got[0], int)
        assert got[1] == w["ra"]  # doubles round-trip exactly
        assert math.isclose(got[2], w["rMag"], rel_tol=1e-6)
        assert (got[3], got[4], got[5], got[6]) == (w["nEpochs"], w["flags"], w["band"], w["kind"])
        assert got[7] == w["stamp"] and isinstance(got[7], bytes)  # BLOB bytes, not text
        assert got[8] == w["gMag"]  # None where NULL
    assert any(r[8] is None for r in rows)


def test_null_only_column_decimal_and_empty_result(connect):
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT objectId, NULL AS nothing FROM Object ORDER BY objectId LIMIT 3")
        assert _types(cur) == [FIELD_TYPE.LONGLONG, FIELD_TYPE.NULL]
        assert [r[1] for r in cur.fetchall()] == [None, None, None]
        cur.execute("SELECT SUM(nEpochs) AS s, CAST(1.25 AS DECIMAL(6,2)) AS d FROM Object")
        assert _types(cur) == [FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.NEWDECIMAL]
        s, d = cur.fetchone()
        assert isinstance(s, Decimal) and d == Decimal("1.25")
        cur.execute("SELECT objectId, ra, rMag, kind, stamp FROM Object WHERE objectId < 0")
        assert cur.fetchall() == ()
        assert _types(cur) == [FIELD_TYPE.LONGLONG, FIELD_TYPE.DOUBLE, FIELD_TYPE.FLOAT,
                               FIELD_TYPE.VAR_STRING, FIELD_TYPE.BLOB]
        assert [d[0] for d in cur.description] == ["objectId", "ra", "rMag", "kind", "stamp"]


def test_names_are_the_users(connect):
    with connect().cursor() as cur:
        cur.execute("SELECT COUNT(*), AVG(ra) AS meanRa, kind FROM Object GROUP BY kind "
                    "ORDER BY kind")
        assert [d[0] for d in cur.description][1:] == ["meanRa", "kind"]
        assert sum(r[0] for r in cur.fetchall()) == 300


def test_spatial_query_and_parameters(connect, served_tables):
    with connect().cursor() as cur:
        cur.execute("SELECT objectId FROM Object WHERE qserv_areaspec_circle(%s, %s, %s)",
                    (40.0, 10.0, 30.0))
        got = {r[0] for r in cur.fetchall()}
        cur.execute("SELECT objectId FROM Object WHERE objectId IN (%s, %s)", (7, 14))
        assert {r[0] for r in cur.fetchall()} == {7, 14}
    assert got  # a 30-degree cone holds some of 300 objects spread over the sky


def test_what_clients_send_on_connect(connect):
    conn = connect(database=None)
    with conn.cursor() as cur:
        cur.execute("SELECT @@version_comment LIMIT 1")
        assert cur.fetchone()[0].startswith("skyshard")
        cur.execute("SET NAMES utf8mb4")
        cur.execute("SET autocommit = 1")
        cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone()[0] is None
        cur.execute("USE cat")
        cur.execute("SELECT DATABASE(), CURRENT_USER()")
        assert cur.fetchone() == ("cat", "alice")
        cur.execute("SHOW DATABASES")
        assert ("cat",) in cur.fetchall()
        cur.execute("SHOW TABLES")
        assert [r[0] for r in cur.fetchall()] == ["Filter", "Object", "Source"]
        cur.execute("SHOW FULL TABLES")
        assert ("Object", "BASE TABLE") in cur.fetchall()
        cur.execute("SHOW COLUMNS FROM Filter")
        assert [r[0] for r in cur.fetchall()] == ["filterId", "filterName", "photClam"]
        cur.execute("DESCRIBE Object")
        assert ("objectId", "bigint(20)") == cur.fetchone()[:2]
        cur.execute("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'cat' ORDER BY table_name")
        assert [r[0] for r in cur.fetchall()] == ["Filter", "Object", "Source"]
    assert _error(conn, "USE nowhere")[0] == 1049
    conn.ping()


@pytest.mark.parametrize("sql, code, fragment", [
    ("SELECT objectId\nFROM Object\nWHERE nope = 1", 1054, "(line 3, column 7)"),
    ("SELECT * FROM Nowhere", 1146, "no table 'Nowhere'"),
    ("SELECT objectId FROM Object WHERE (", 1064, "line 1"),
    ("SELECT * FROM Object WHERE ra < 1 OR qserv_areaspec_box(0, 0, 1, 1)", 1235, "top-level AND"),
    ("SET @poly = 1", 1235, "user variables"),
    ("SELECT * FROM read_csv('/etc/passwd')", 1227, "read_csv"),
    ("INSERT INTO Filter VALUES (9, 'q', 1.0)", 1227, "INSERT"),
])
def test_error_codes(connect, sql, code, fragment):
    got, message = _error(connect(), sql)
    assert got == code, message
    assert fragment in message


def test_authentication(server):
    def login(user, password):
        return pymysql.connect(host="127.0.0.1", port=server.mysql_port, user=user,
                               password=password, connect_timeout=5)

    login("bob", "hunter2").close()
    for user, password in [("alice", "wrong"), ("alice", ""), ("mallory", "secret")]:
        with pytest.raises(pymysql.err.OperationalError) as info:
            login(user, password)
        assert info.value.args[0] == 1045  # an unknown user looks like a wrong password


def test_max_rows(connect):
    code, message = _error(connect(), "SELECT sourceId FROM Source")  # 900 rows > 500
    assert code == 1104 and "500 rows" in message
    with connect().cursor() as cur:
        cur.execute("SELECT sourceId FROM Source LIMIT 500")
        assert len(cur.fetchall()) == 500


def test_time_limit_from_max_execution_time(connect, server):
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SET max_execution_time = 300")  # milliseconds, MySQL's variable
    start = time.monotonic()
    code, message = _error(conn, SLOW_SQL)
    assert code == 3024 and "time limit" in message
    assert time.monotonic() - start < 5
    q = server.service.history("alice")[-1]
    assert q.state.value == "FAILED" and q.error_type == "QueryTimeoutError"
    assert q._worker_done.wait(5), "DuckDB was not interrupted"


def _run_in_thread(conn, sql):
    out: dict = {}

    def target():
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                out["rows"] = cur.fetchall()
        except pymysql.MySQLError as exc:
            out["error"] = exc.args
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _executing(connect, user="alice"):
    with connect(user).cursor() as cur:
        def find():
            cur.execute("SHOW PROCESSLIST")
            return [r for r in cur.fetchall() if r[6] == "EXECUTING"]
        return wait_until(find)


def test_kill_query_by_query_id_interrupts_duckdb(connect, server):
    slow = connect()
    thread, out = _run_in_thread(slow, SLOW_SQL)
    (row,) = _executing(connect)
    qid = row[0]
    assert row[1] == "alice" and row[4] == "Query" and row[7] == SLOW_SQL[:100]
    start = time.monotonic()
    with connect().cursor() as cur:
        cur.execute(f"KILL QUERY {qid}")
    thread.join(10)
    assert out["error"][0] == 1317, out
    q = server.service.get(qid)
    assert q.state.value == "CANCELLED"
    assert q._worker_done.wait(5), "DuckDB was not interrupted"
    assert time.monotonic() - start < 5
    with slow.cursor() as cur:  # the connection lives on
        cur.execute("SELECT COUNT(*) FROM Filter")
        assert cur.fetchone()[0] == 6


def test_kill_query_by_connection_id_as_the_mysql_client_does(connect, server):
    slow = connect()
    thread, out = _run_in_thread(slow, SLOW_SQL)
    _executing(connect)
    with connect().cursor() as cur:
        cur.execute(f"KILL QUERY {slow.thread_id()}")  # Ctrl-C in the mysql client
    thread.join(10)
    assert out["error"][0] == 1317, out
    slow.ping()


def test_other_users_queries_are_invisible(connect):
    slow = connect("bob")
    thread, _ = _run_in_thread(slow, SLOW_SQL)
    (row,) = _executing(connect, "bob")
    with connect("alice").cursor() as cur:
        cur.execute("SHOW PROCESSLIST")
        assert all(r[0] != row[0] for r in cur.fetchall())
    assert _error(connect("alice"), f"KILL {row[0]}")[0] == 1094
    with connect("bob").cursor() as cur:
        cur.execute(f"CANCEL {row[0]}")
    thread.join(10)


def test_submit_result_processlist_and_history(connect):
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SUBMIT SELECT objectId, stamp FROM Object ORDER BY objectId LIMIT 50")
        assert [d[0] for d in cur.description] == ["jobId", "resultLocation"]
        qid, location = cur.fetchone()
        assert location == f"table:result_{qid}"

        def finished():
            cur.execute(f"SELECT STATUS FROM information_schema.queries WHERE ID = {qid}")
            status = cur.fetchone()[0]
            return status if status != "EXECUTING" and status != "QUEUED" else None
        assert wait_until(finished) == "COMPLETED"
        cur.execute(f"SELECT * FROM qserv_result({qid})")
        rows = cur.fetchall()
        assert _types(cur) == [FIELD_TYPE.LONGLONG, FIELD_TYPE.BLOB]
        assert len(rows) == 50 and rows[0][0] == 7 and isinstance(rows[0][1], bytes)
        cur.execute("SELECT ID, USER, TYPE, STATUS, ROWS, CHUNKS, CHUNKS_COMP, ERROR "
                    f"FROM information_schema.queries WHERE ID = {qid}")
        row = cur.fetchone()
        assert row[:5] == (qid, "alice", "ASYNC", "COMPLETED", 50)
        assert row[5] == row[6] and row[5] > 0 and row[7] is None
        cur.execute(f"CALL qserv_result_delete({qid})")
    code, _ = _error(conn, f"SELECT * FROM qserv_result({qid})")
    assert code == 1146  # as Qserv: the result table is gone


def test_submit_of_a_failing_query_reports_its_error(connect):
    with connect().cursor() as cur:
        cur.execute("SUBMIT SELECT nope FROM Object")
        qid = cur.fetchone()[0]

        def failed():
            cur.execute("SELECT STATUS, ERROR_TYPE, ERROR FROM information_schema.queries "
                        f"WHERE ID = {qid}")
            row = cur.fetchone()
            return row if row[0] == "FAILED" else None
        status, kind, message = wait_until(failed)
        assert kind == "UnknownNameError" and "nope" in message
    assert _error(connect(), f"SELECT * FROM qserv_result({qid})")[0] == 1054


def test_async_query_in_the_processlist_then_cancelled(connect, server):
    conn = connect()
    with conn.cursor() as cur:
        cur.execute(f"SUBMIT {SLOW_SQL}")
        qid = cur.fetchone()[0]

        def executing():
            cur.execute("SELECT ID, STATE, TYPE, CHUNKS, CHUNKS_COMP, INFO "
                        f"FROM information_schema.processlist WHERE ID = {qid}")
            row = cur.fetchone()  # CHUNKS is known once the query is planned
            return row if row and row[1] == "EXECUTING" and row[3] is not None else None
        row = wait_until(executing)
        assert row[2] == "ASYNC" and row[3] == 0 and row[5] == SLOW_SQL
        cur.execute("SHOW FULL PROCESSLIST")
        assert qid in [r[0] for r in cur.fetchall()]
        cur.execute(f"KILL {qid}")
        cur.execute(f"SELECT STATUS FROM information_schema.queries WHERE ID = {qid}")
        assert cur.fetchone()[0] == "CANCELLED"
    assert server.service.get(qid)._worker_done.wait(5), "DuckDB was not interrupted"
    code, message = _error(conn, f"KILL {qid}")
    assert code == 1094 and "unknown or finished" in message
    assert _error(conn, f"SELECT * FROM qserv_result({qid})")[0] == 1317


def test_sqlalchemy_and_pandas(server, served_tables):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pd = pytest.importorskip("pandas")
    engine = sqlalchemy.create_engine(
        f"mysql+pymysql://alice:secret@127.0.0.1:{server.mysql_port}/cat")
    try:
        df = pd.read_sql("SELECT objectId, ra, kind, stamp FROM Object ORDER BY objectId",
                         engine)
        want = served_tables["Object"].sort_by("objectId")
        assert df["objectId"].tolist() == want.column("objectId").to_pylist()
        assert df["stamp"].tolist() == want.column("stamp").to_pylist()
        with engine.connect() as conn:
            n = conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM Source WHERE objectId = :k"),
                             {"k": 7}).scalar()
            assert n == 3
        assert sorted(sqlalchemy.inspect(engine).get_table_names()) == [
            "Filter", "Object", "Source"]
    finally:
        engine.dispose()


def test_mysql_command_line_client(server):
    mysql = shutil.which("mysql") or shutil.which("mariadb")
    if mysql is None:
        pytest.skip("no mysql/mariadb command-line client (Debian: apt-get install mariadb-client)")
    base = [mysql, "-h", "127.0.0.1", "-P", str(server.mysql_port), "-u", "alice", "-psecret",
            "--batch", "cat"]
    out = subprocess.run(base + ["-e", "SELECT objectId, kind, NULL AS n FROM Object "
                                       "ORDER BY objectId LIMIT 2; SHOW TABLES"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "objectId\tkind\tn" and lines[1].startswith("7\t")
    assert lines[1].endswith("\tNULL") and "Tables_in_cat" in lines
    bad = subprocess.run(base + ["-e", "SELECT nope FROM Object"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 1 and "ERROR 1054 (42S22)" in bad.stderr
    denied = subprocess.run([mysql, "-h", "127.0.0.1", "-P", str(server.mysql_port), "-u",
                             "alice", "-pnope", "-e", "SELECT 1"], capture_output=True,
                            text=True, timeout=30)
    assert "ERROR 1045" in denied.stderr
