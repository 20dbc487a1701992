"""Shared scans of a catalog on S3-compatible object storage: the convoy's shared passes
read the partition files at the catalog's URL, and every query gets the rows it gets
alone from the local copy; the same overlap rule decides what is shared as on a local
catalog.

The store is a moto S3 server on localhost, started once for this module.
"""

from __future__ import annotations

import logging

import pytest
from test_shared_scans import (
    UNIT_ROWS,
    Gated,
    check_same,
    finish,
    request_of,
    run_all,
    wait_for,
)

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

import skyshard
from skyshard.dispatch.local import LocalExecutor
from skyshard.dispatch.scans import SharedScans
from skyshard.storage import remote
from skyshard.storage.remote import RemotePath

URL = "s3://scans/catalog"


@pytest.fixture(scope="module")
def s3_db(sky_root):
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://{host}:{port}"}
    remote.filesystem("s3", options).mkdir("scans")
    remote.upload(sky_root, URL, options)
    db = skyshard.open(URL, storage_options=options)
    yield db
    db.close()
    server.stop()


@pytest.mark.parametrize("sqls, shares", [
    (["SELECT AVG(gMag), AVG(rMag) FROM Object",
      "SELECT MIN(gMag), MAX(rMag) FROM Object WHERE gMag > 20",
      ("SELECT kind, COUNT(*) AS n, AVG(gMag) AS g FROM Object WHERE rMag < 24 "
       "GROUP BY kind ORDER BY kind")], True),
    (["SELECT AVG(gMag) FROM Object", "SELECT MAX(nEpochs) FROM Object"], False),
])
def test_full_scans_of_a_catalog_at_a_url(sky_db, s3_db, sqls, shares):
    assert isinstance(s3_db.root, RemotePath)
    gated = Gated(s3_db.engine)
    scans = SharedScans(gated, unit_rows=UNIT_ROWS, min_rows=0, gather_s=0.3)  # min_overlap 2
    ex = LocalExecutor(gated, scans=scans)
    threads, out = run_all(ex, s3_db, sqls)
    wait_for(lambda: scans.stats["queries"] == len(sqls))
    gated.gate.set()
    finish(threads)
    alone = LocalExecutor(sky_db.engine, shared_scans=False)  # the local copy, alone
    for got, sql in zip(out, sqls):
        check_same(got, sql, sky_db, alone)
    units = len(scans.units(request_of(s3_db, "Object")))
    stats = scans.stats
    assert units >= 5 and stats["served"] == len(sqls) * units
    if shares:  # one read of each unit at the URL for all of them
        assert stats["shared_reads"] == units and stats["own_reads"] == 0
        assert stats["shared_failures"] == 0
    else:  # too little overlap: each reads its own columns
        assert stats["shared_reads"] == 0 and stats["own_reads"] == len(sqls) * units
