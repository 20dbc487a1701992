"""Reader leases, and a Database following the catalog to its newest published version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import skyshard
from skyshard.storage import leases
from skyshard.storage import transactions as tx

OPTS = skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False)


@pytest.fixture()
def catalog(tmp_path, sky_tables) -> tuple[Path, list[Path]]:
    parts = []
    for i in range(2):
        p = tmp_path / f"object-{i}.parquet"
        pq.write_table(sky_tables["Object"].slice(1500 * i, 1500), p)
        parts.append(p)
    root = tmp_path / "cat"
    skyshard.ingest(root, "Object", [parts[0]], options=OPTS, ra="ra", dec="decl",
                    key="objectId")
    return root, parts


def count(db: skyshard.Database) -> int:
    return db.sql("SELECT COUNT(*) FROM Object WHERE ra >= 0").column(0)[0].as_py()


def test_a_lease_pins_until_released(tmp_path):
    lease = leases.Lease(tmp_path)
    assert lease.pin({("Object", 1), ("Source", 3)})
    assert leases.live_versions(tmp_path) == {("Object", 1), ("Source", 3)}
    assert lease.pin({("Object", 2)})  # replaces what it pinned
    assert leases.live_versions(tmp_path) == {("Object", 2)}
    lease.release()
    assert leases.live_versions(tmp_path) == set()
    assert list((tmp_path / leases.READERS_DIR).iterdir()) == []


def test_leases_of_dead_or_silent_readers_do_not_count(tmp_path):
    folder = tmp_path / leases.READERS_DIR
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    import socket

    host = socket.gethostname()
    (folder / "dead.json").write_text(json.dumps(
        {"host": host, "pid": int(dead.stdout), "versions": [["Object", 1]]}))
    (folder / "silent.json").write_text(json.dumps(
        {"host": "elsewhere", "pid": 1, "versions": [["Object", 2]]}))
    (folder / "remote.json").write_text(json.dumps(
        {"host": "elsewhere", "pid": 1, "versions": [["Object", 3]]}))
    old = time.time() - leases.STALE_S - 10
    os.utime(folder / "silent.json", (old, old))
    assert leases.live_versions(tmp_path) == {("Object", 3)}
    removed = leases.remove_dead(tmp_path)
    assert sorted(removed) == [f"{leases.READERS_DIR}/dead.json",
                               f"{leases.READERS_DIR}/silent.json"]
    assert [p.name for p in folder.iterdir()] == ["remote.json"]


def test_a_read_only_catalog_works_without_a_lease(tmp_path):
    (tmp_path / leases.READERS_DIR).write_text("not a directory")
    lease = leases.Lease(tmp_path)
    assert lease.pin({("Object", 1)}) is False
    assert lease.pinned is False


def test_an_open_database_follows_new_versions(catalog):
    root, parts = catalog
    db = skyshard.open(root)
    assert count(db) == 1500
    assert leases.live_versions(root) == {("Object", 1)}
    skyshard.ingest(root, "Object", [parts[1]], options=OPTS, append=True)
    assert db.refresh() is True
    assert db.refresh() is False
    assert db.tables["Object"].version == 2
    assert count(db) == 3000
    assert db.sql("SELECT COUNT(*) FROM Object").column(0)[0].as_py() == 3000
    assert leases.live_versions(root) == {("Object", 2)}  # version 1 released
    assert tx.collect_garbage(root, grace_s=0) == ["Object/Object", "Object/Object_60arcs",
                                                    "Object/Object_objectId_index"]
    assert count(db) == 3000
    db.close()
    assert leases.live_versions(root) == set()


def test_a_running_query_keeps_its_version_from_garbage_collection(catalog):
    root, parts = catalog
    db = skyshard.open(root)
    old = db.tables["Object"]
    with db._read() as running:  # a query planned on version 1, still running
        skyshard.ingest(root, "Object", [parts[1]], options=OPTS, append=True)
        assert count(db) == 3000  # a new query runs on version 2
        assert leases.live_versions(root) == {("Object", 1), ("Object", 2)}
        assert tx.collect_garbage(root, grace_s=0) == []
        assert (root / old.path).exists()
        assert running.meta.tables["Object"].version == 1
    assert leases.live_versions(root) == {("Object", 2)}
    assert tx.collect_garbage(root, grace_s=0) != []
    assert not (root / old.path).exists()
    db.close()


def test_a_database_never_closed_releases_its_lease(catalog):
    root, _ = catalog
    db = skyshard.open(root)
    assert leases.live_versions(root) == {("Object", 1)}
    del db
    import gc

    gc.collect()
    assert leases.live_versions(root) == set()
