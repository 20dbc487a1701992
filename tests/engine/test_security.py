"""User SQL can never reach the file system, the network or the settings."""

from __future__ import annotations

import pytest

from skyshard.errors import ForbiddenQueryError, SqlError, UnknownNameError, UnsupportedQueryError

ATTEMPTS = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM read_json('/etc/passwd')",
    "SELECT * FROM read_parquet('/tmp/other.parquet')",
    "SELECT * FROM parquet_scan('/tmp/other.parquet')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM \"/etc/passwd\"",
    "SELECT * FROM glob('/etc/*')",
    "SELECT getenv('HOME')",
    "SELECT current_setting('threads')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM query('SELECT 1')",
    "SELECT objectId FROM Object WHERE objectId IN (SELECT 1 FROM read_csv('/etc/passwd'))",
    "COPY Object TO '/tmp/out.csv'",
    "COPY (SELECT 1) TO '/tmp/out.csv'",
    "EXPORT DATABASE '/tmp/dump'",
    "ATTACH '/tmp/x.db'",
    "ATTACH '/tmp/x.db' AS x",
    "DETACH x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET threads = 1",
    "RESET threads",
    "PRAGMA version",
    "PRAGMA enable_profiling",
    "CREATE TABLE t AS SELECT 1",
    "CREATE MACRO f(x) AS x",
    "DROP TABLE Object",
    "INSERT INTO Filter VALUES (9, 'q', 1.0)",
    "UPDATE Filter SET filterName = 'x'",
    "DELETE FROM Filter",
    "CALL pragma_version()",
    "SELECT 1; COPY (SELECT 1) TO '/tmp/out.csv'",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM parquet_metadata('/etc/passwd')",
    "USE other",
    "DESCRIBE SELECT 1",
    "VACUUM",
    "CHECKPOINT",
]


@pytest.mark.parametrize("sql", ATTEMPTS)
def test_refused(sky_db, sql, tmp_path):
    with pytest.raises((ForbiddenQueryError, UnsupportedQueryError, UnknownNameError, SqlError)) as info:
        sky_db.sql(sql)
    assert str(info.value)


@pytest.mark.parametrize("sql,name", [
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
    ("SELECT * FROM read_parquet('/tmp/other.parquet')", "read_parquet"),
    ("SELECT getenv('HOME')", "getenv"),
    ("SELECT current_setting('threads')", "current_setting"),
    ("SELECT * FROM '/etc/passwd'", "/etc/passwd"),
    ("SELECT objectId FROM Object WHERE objectId IN (SELECT 1 FROM read_csv('/etc/passwd'))", "read_csv"),
    ("COPY Object TO '/tmp/out.csv'", "COPY"),
    ("ATTACH '/tmp/x.db'", "ATTACH"),
    ("SET threads = 1", "SET"),
    ("PRAGMA version", "PRAGMA"),
])
def test_refusal_names_the_construct(sky_db, sql, name):
    with pytest.raises(ForbiddenQueryError) as info:
        sky_db.sql(sql)
    assert name in str(info.value)


def test_engine_itself_is_locked(sky_db):
    """Below the parser, the DuckDB itself refuses files outside the catalog and settings."""
    cur = sky_db.engine.cursor()
    for stmt in ("SELECT * FROM read_csv('/etc/passwd')", "SET enable_external_access = true",
                 "SET allowed_directories = ['/']", "INSTALL httpfs"):
        with pytest.raises(Exception) as info:
            cur.execute(stmt)
        assert any(w in str(info.value).lower() for w in ("permission", "locked", "cannot", "disabled")), \
            str(info.value)


def test_no_file_written(sky_db, tmp_path):
    target = tmp_path / "leak.csv"
    with pytest.raises(ForbiddenQueryError):
        sky_db.sql(f"COPY (SELECT * FROM Object) TO '{target}'")
    assert not target.exists()
