"""Fixtures of the serving tests: one catalog, one server for the session."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pymysql
import pytest

from served import USERS, Http, build, make_tables, start_server


@pytest.fixture(scope="session")
def served_tables() -> dict[str, pa.Table]:
    return make_tables()


@pytest.fixture(scope="session")
def served_catalog(tmp_path_factory, served_tables) -> Path:
    root = tmp_path_factory.mktemp("served") / "cat"
    build(root, served_tables)
    return root


@pytest.fixture(scope="session")
def server(served_catalog, tmp_path_factory):
    srv = start_server(served_catalog, tmp_path_factory.mktemp("results"))
    yield srv
    srv.stop()


@pytest.fixture
def connect(server):
    """``connect(user, password, **pymysql options)`` to the served catalog."""
    opened = []

    def _connect(user: str = "alice", password: str | None = None, **kw):
        kw.setdefault("database", "cat")
        conn = pymysql.connect(host="127.0.0.1", port=server.mysql_port, user=user,
                               password=USERS.get(user, "") if password is None else password,
                               connect_timeout=5, read_timeout=30, **kw)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture(scope="session")
def http(server) -> Http:
    return Http(server.http_port)
