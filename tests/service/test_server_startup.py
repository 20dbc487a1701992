"""What the server does once, at start, so that clients never pay for it: director
indexes loaded, a second database for scans, quiet about clients that only knock."""

from __future__ import annotations

import logging
import socket
import time

import pymysql
from served import USERS, start_server

from skyshard.storage.resident import director_files


def test_director_indexes_are_loaded_before_the_ports_open(served_catalog, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="skyshard.service")
    srv = start_server(served_catalog, tmp_path / "results")
    try:
        messages = [r.getMessage() for r in caplog.records]
        loaded = next(i for i, m in enumerate(messages) if m.startswith("index of Object loaded"))
        listening = next(i for i, m in enumerate(messages) if m.startswith("MySQL protocol on"))
        assert loaded < listening
    finally:
        srv.stop()


def test_scans_have_a_database_of_their_own(server):
    service = server.service
    assert service.scan_db is not service.db
    assert service.scan_db.root == service.db.root


def test_a_client_that_hangs_up_in_the_handshake_leaves_no_traceback(server, caplog):
    caplog.set_level(logging.DEBUG)
    for _ in range(3):  # as a TCP health check or a port scan does
        with socket.create_connection(("127.0.0.1", server.mysql_port), timeout=5):
            pass
    time.sleep(0.3)
    conn = pymysql.connect(host="127.0.0.1", port=server.mysql_port, user="alice",
                           password=USERS["alice"], connect_timeout=5)
    with conn.cursor() as cur:  # the server serves on
        cur.execute("SELECT COUNT(*) FROM Filter")
        assert cur.fetchone()[0] == 6
    conn.close()
    unhandled = [r for r in caplog.records
                 if r.levelno >= logging.ERROR or r.exc_info is not None]
    assert unhandled == [], [r.getMessage() for r in unhandled]


def test_director_tables_are_kept_in_memory_before_the_ports_open(served_catalog, tmp_path,
                                                                  caplog):
    caplog.set_level(logging.INFO, logger="skyshard.service")
    srv = start_server(served_catalog, tmp_path / "results")
    try:
        assert srv.resident is not None
        kept = srv.resident.keep(director_files(srv.db.meta, srv.db.root))  # as the follower
        assert kept.files == len(director_files(srv.db.meta, srv.db.root)) > 0
        messages = [r.getMessage() for r in caplog.records]
        held = next(i for i, m in enumerate(messages) if m.startswith("director tables: "))
        listening = next(i for i, m in enumerate(messages) if m.startswith("MySQL protocol on"))
        assert held < listening
        assert "kept in memory" in messages[held]
    finally:
        srv.stop()
    assert srv.resident is None  # released by stop


def test_resident_share_zero_keeps_nothing(served_catalog, tmp_path):
    srv = start_server(served_catalog, tmp_path / "results", limits={"resident_share": 0})
    try:
        assert srv.resident is None
    finally:
        srv.stop()


def test_scans_use_the_threads_they_are_given(served_catalog, tmp_path):
    srv = start_server(served_catalog, tmp_path / "results", limits={"scan_threads": 1})
    try:
        threads = srv.service.scan_db.engine.query(
            "SELECT current_setting('threads') AS n").column("n")[0].as_py()
        assert int(threads) == 1
    finally:
        srv.stop()


def test_shared_scans_are_a_setting_of_the_scan_lane(served_catalog, tmp_path):
    srv = start_server(served_catalog, tmp_path / "results", limits={"shared_scans": True})
    try:
        assert srv.service.scan_db.executor.wrapped.scans is not None
        assert srv.service.db.executor.wrapped.scans is None  # interactive queries: never
    finally:
        srv.stop()
    srv = start_server(served_catalog, tmp_path / "results")
    try:
        assert srv.service.scan_db.executor.wrapped.scans is None  # off by default
    finally:
        srv.stop()
