"""Over MySQL, nothing reaches files, the network or DuckDB's settings: each attempt is
refused with a clear error and nothing is written."""

from __future__ import annotations

import pymysql
import pytest


@pytest.fixture
def target(tmp_path):
    """A path that must still not exist after the attempt."""
    return tmp_path / "written"


ATTEMPTS = [
    ("SELECT * FROM read_csv('/etc/passwd')", 1227, "read_csv"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", 1227, "read_csv_auto"),
    ("SELECT * FROM read_parquet('{catalog}/../inputs/Object.parquet')", 1227, "read_parquet"),
    ("SELECT * FROM '/etc/passwd'", 1227, "files cannot be queried"),
    ("SELECT * FROM glob('/etc/*')", None, ""),
    ("SELECT getenv('HOME')", 1227, "getenv"),
    ("SELECT current_setting('threads')", 1227, "current_setting"),
    ("COPY Object TO '{target}'", 1227, "COPY"),
    ("COPY (SELECT 1) TO '{target}' (FORMAT csv)", 1227, "COPY"),
    ("EXPORT DATABASE '{target}'", None, ""),
    ("ATTACH '{target}'", 1227, "ATTACH"),
    ("ATTACH '{target}' AS x", None, ""),
    ("INSTALL httpfs", 1227, "INSTALL"),
    ("LOAD httpfs", 1227, "LOAD"),
    ("PRAGMA enable_profiling", 1227, "PRAGMA"),
    ("SET enable_external_access = true", 1227, "enable_external_access"),
    ("SET threads = 1", 1227, "threads"),
    ("SET GLOBAL memory_limit = '1GB'", 1227, "memory_limit"),
    ("SET allowed_directories = ['/']", 1227, "allowed_directories"),
    ("RESET threads", None, ""),
    ("CREATE TABLE t AS SELECT 1", 1227, "CREATE"),
    ("DROP TABLE Object", 1227, "DROP"),
    ("SELECT 1; COPY Object TO '{target}'", 1235, "statements"),
]


@pytest.mark.parametrize("template, code, fragment", ATTEMPTS,
                         ids=[a[0].split("(")[0][:40] for a in ATTEMPTS])
def test_refused_and_nothing_written(connect, served_catalog, target, template, code, fragment):
    sql = template.format(target=target, catalog=served_catalog)
    conn = connect()
    with conn.cursor() as cur, pytest.raises(pymysql.MySQLError) as info:
        cur.execute(sql)
    got, message = info.value.args[0], info.value.args[1]
    if code is not None:
        assert got == code, message
    else:  # refused before planning (syntax) or by the planner: a user error either way
        assert got in (1064, 1227, 1235), message
    assert fragment.lower() in message.lower()
    assert not target.exists()
    with conn.cursor() as cur:  # the connection and the engine are unharmed
        cur.execute("SELECT COUNT(*) FROM Filter")
        assert cur.fetchone()[0] == 6


def test_client_session_sets_do_not_touch_duckdb(connect, server):
    conn = connect()
    with conn.cursor() as cur:
        for sql in ["SET NAMES utf8mb4", "SET CHARACTER SET utf8mb4",
                    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                    "SET autocommit = 0", "SET time_zone = '+00:00'",
                    "SET @@session.sql_mode = 'TRADITIONAL'"]:
            cur.execute(sql)
        cur.execute("SELECT @@time_zone, @@autocommit")
        assert cur.fetchone() == ("+00:00", 0)
    before = len(server.service.history())
    with conn.cursor() as cur:
        cur.execute("SET NAMES utf8mb4")
    assert len(server.service.history()) == before  # answered by the session, not run
    engine = server.db.engine
    settings = engine.query("SELECT current_setting('enable_external_access') AS e, "
                            "current_setting('lock_configuration') AS l").to_pylist()
    assert settings == [{"e": False, "l": True}]
