"""Ingest transactions: begin/add/commit/abort/status/publish, parallel transactions,
atomic visibility for readers, garbage collection, validation errors, the HTTP API and
the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import skyshard
from skyshard.cli import main
from skyshard.errors import IngestError, InputError
from skyshard.storage import layout, leases, versions
from skyshard.storage import transactions as tx
from skyshard.storage.versions import ConflictError

OPTS = skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False)
DIRECTOR = {"ra": "ra", "dec": "decl", "key": "objectId"}


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def scan_count(root: Path | skyshard.Database, table: str = "Object") -> int:
    """A COUNT that reads every partition (a bare COUNT(*) is answered from metadata)."""
    db = root if isinstance(root, skyshard.Database) else skyshard.open(root)
    return db.sql(f"SELECT COUNT(*) AS n FROM {table} WHERE ra >= 0").column(0)[0].as_py()


@pytest.fixture()
def parts(tmp_path, sky_tables) -> list[Path]:
    """Object in four Parquet files of 1,500 rows."""
    out = []
    for i in range(4):
        p = tmp_path / f"object-{i}.parquet"
        pq.write_table(sky_tables["Object"].slice(1500 * i, 1500), p)
        out.append(p)
    return out


@pytest.fixture()
def catalog(tmp_path, parts) -> Path:
    root = tmp_path / "cat"
    skyshard.ingest(root, "Object", [parts[0]], options=OPTS, **DIRECTOR)
    return root


# --- the life of a transaction ----------------------------------------------------------


def test_begin_add_commit(catalog, parts, tmp_path, sky_tables):
    csv = tmp_path / "more.csv"
    pacsv.write_csv(sky_tables["Object"].slice(4500, 500), csv,
                    pacsv.WriteOptions(quoting_style="none"))
    st = tx.begin(catalog, "Object", options=OPTS)
    assert st.state is tx.State.OPEN and st.kind == "director"
    added = tx.add(catalog, st.id, [parts[1], csv])
    assert [c.rows for c in added] == [1500, 500]
    st = tx.status(catalog, st.id)
    assert (len(st.contributions), st.rows) == (2, 2000)
    assert st.bytes == parts[1].stat().st_size + csv.stat().st_size
    assert scan_count(catalog) == 1500  # nothing visible before the commit
    done = tx.commit(catalog, st.id)
    assert done.state is tx.State.PUBLISHED and done.published == {"Object": 2}
    assert scan_count(catalog) == 3500
    assert not (catalog / tx.TRANSACTIONS).exists() and not (catalog / ".locks").exists()
    assert tx.status(catalog, st.id).state is tx.State.PUBLISHED


def test_new_table_and_roles(tmp_path, parts, sky_tables):
    root = tmp_path / "cat"
    st = tx.begin(root, "Object", options=OPTS, **DIRECTOR)
    tx.add(root, st.id, parts[:2])
    tx.commit(root, st.id)
    src = tmp_path / "src.parquet"
    pq.write_table(sky_tables["Source"], src)
    st = tx.begin(root, "Source", director="Object", ra="ra", dec="decl", options=OPTS)
    tx.add(root, st.id, [src])
    tx.commit(root, st.id)
    db = skyshard.open(root)
    info = db.tables["Source"]
    assert info.kind.value == "child" and info.rows == sky_tables["Source"].num_rows
    # sources of the 3,000 objects not loaded yet, and the 37 true orphans
    assert info.orphan_rows > 37
    with pytest.raises(IngestError, match="exists with key"):
        tx.begin(root, "Object", ra="ra", dec="decl", key="gMag")


def test_abort_leaves_no_trace(catalog, parts):
    before = snapshot(catalog)
    st = tx.begin(catalog, "Object", options=OPTS)
    tx.add(catalog, st.id, parts[1:3])
    tx.abort(catalog, st.id)
    assert snapshot(catalog) == before
    with pytest.raises(tx.UnknownTransactionError):
        tx.status(catalog, st.id)


def test_aborting_a_prepared_transaction(catalog, parts):
    before = snapshot(catalog)
    st = tx.begin(catalog, "Object", options=OPTS)
    tx.add(catalog, st.id, [parts[1]])
    assert tx.commit(catalog, st.id, publish=False).state is tx.State.PREPARED
    assert snapshot(catalog) != before  # the build waits in the transaction
    assert scan_count(catalog) == 1500
    tx.abort(catalog, st.id)
    assert snapshot(catalog) == before


def test_prepare_then_publish_together(catalog, parts, tmp_path, sky_tables):
    flt = tmp_path / "filter.parquet"
    pq.write_table(sky_tables["Filter"], flt)
    a = tx.begin(catalog, "Object", options=OPTS)
    tx.add(catalog, a.id, [parts[1]])
    b = tx.begin(catalog, "Filter", replicated=True, options=OPTS)
    tx.add(catalog, b.id, [flt])
    for t in (a, b):
        tx.commit(catalog, t.id, publish=False)
    generation = skyshard.open(catalog).meta.generation
    assert "Filter" not in skyshard.open(catalog).tables
    done = tx.publish(catalog, [a.id, b.id])
    assert {s.state for s in done} == {tx.State.PUBLISHED}
    db = skyshard.open(catalog)
    assert db.meta.generation == generation + 1  # one atomic step
    assert scan_count(db) == 3000 and db.tables["Filter"].rows == 6


def test_publish_conflict_then_commit_again(catalog, parts):
    a = tx.begin(catalog, "Object", options=OPTS)
    tx.add(catalog, a.id, [parts[1]])
    tx.commit(catalog, a.id, publish=False)
    b = tx.begin(catalog, "Object", options=OPTS)
    tx.add(catalog, b.id, [parts[2]])
    tx.commit(catalog, b.id)
    with pytest.raises(ConflictError, match="changed since"):
        tx.publish(catalog, [a.id])
    assert scan_count(catalog) == 3000
    # back to OPEN by hand is not needed: a PREPARED transaction is rebuilt by commit
    tx.abort(catalog, a.id)
    c = tx.begin(catalog, "Object", options=OPTS)
    tx.add(catalog, c.id, [parts[1]])
    tx.commit(catalog, c.id)
    assert scan_count(catalog) == 4500


# --- parallel work ---------------------------------------------------------------------------


def _run_all(funcs) -> list:
    errors: list[BaseException] = []

    def wrap(f):
        try:
            f()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(f,)) for f in funcs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_parallel_transactions(catalog, parts, tmp_path, sky_tables):
    """Three transactions at once: two into Object (their commits serialise, each on
    the other's result), one creating another table (in parallel)."""
    flt = tmp_path / "filter.parquet"
    pq.write_table(sky_tables["Filter"], flt)
    jobs = [("Object", parts[1], {}), ("Object", parts[2], {}), ("Filter", flt, {"replicated": True})]

    def job(table, path, role):
        def run():
            st = tx.begin(catalog, table, options=OPTS, **role)
            tx.add(catalog, st.id, [path])
            tx.commit(catalog, st.id)
        return run

    assert _run_all([job(*j) for j in jobs]) == []
    db = skyshard.open(catalog)
    assert scan_count(db) == 4500 and db.tables["Object"].version == 3
    assert db.tables["Filter"].rows == 6
    ids = db.sql("SELECT objectId FROM Object").column(0).to_pylist()
    assert len(set(ids)) == 4500


def test_parallel_adds_in_one_transaction(catalog, parts):
    st = tx.begin(catalog, "Object", options=OPTS)
    assert _run_all([lambda p=p: tx.add(catalog, st.id, [p]) for p in parts[1:]]) == []
    got = tx.status(catalog, st.id)
    assert sorted(c.number for c in got.contributions) == [1, 2, 3] and got.rows == 4500
    tx.commit(catalog, st.id)
    assert scan_count(catalog) == 6000


def test_one_add_reads_several_files_at_once(catalog, parts):
    st = tx.begin(catalog, "Object", options=OPTS)
    got = tx.add(catalog, st.id, parts[1:], parallel=3)
    assert [c.source for c in got] == [str(p) for p in parts[1:]]  # the order given
    assert [c.number for c in got] == [1, 2, 3]  # numbered in that order too
    assert sum(c.rows for c in got) == 4500
    tx.commit(catalog, st.id)
    assert scan_count(catalog) == 6000


@pytest.mark.parametrize("parallel", [1, 2])
def test_each_file_has_the_disk_read_the_one_after_it(catalog, parts, monkeypatch, parallel):
    hinted: list[str] = []
    lock = threading.Lock()

    def record(path):
        with lock:
            hinted.append(str(path))
        return True

    monkeypatch.setattr(tx, "prefetch", record)
    st = tx.begin(catalog, "Object", options=OPTS)
    files = parts[1:]  # parts[0] is in the catalog already
    tx.add(catalog, st.id, files, parallel=parallel)
    # the first ``parallel`` files at once, then each as the one before it starts
    assert sorted(hinted) == sorted(str(p) for p in files)
    assert hinted[:parallel] == [str(p) for p in files[:parallel]]
    tx.abort(catalog, st.id)


def test_prefetch_hints_local_files_only(parts, tmp_path):
    from skyshard.storage.readers import prefetch

    assert prefetch(parts[0]) is hasattr(os, "posix_fadvise")
    assert prefetch(tmp_path / "missing.parquet") is False
    assert prefetch("https://example.org/object.parquet") is False


def test_a_bad_file_among_parallel_reads_is_named_and_leaves_no_trace(catalog, parts, tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"objectId": [1, 2], "ra": [10.0, 11.0], "decl": [95.0, 0.0]}), bad)
    st = tx.begin(catalog, "Object", options=OPTS)
    with pytest.raises(InputError, match="bad.parquet"):
        tx.add(catalog, st.id, [parts[1], bad, parts[2]], parallel=2)
    txn_dir = catalog / tx.TRANSACTIONS / st.id
    assert not list(txn_dir.glob("*.tmp"))  # the failed contribution was removed
    kept = tx.status(catalog, st.id).contributions
    assert {c.source for c in kept} <= {str(parts[1]), str(parts[2])}
    assert str(parts[1]) in {c.source for c in kept}  # started before the bad one, finished
    tx.abort(catalog, st.id)
    assert not txn_dir.exists()


def test_status_reports_running_work(catalog):
    st = tx.begin(catalog, "Object", options=OPTS)
    running = catalog / tx.TRANSACTIONS / st.id / "c000009.tmp"
    running.mkdir()
    (running / tx.PROGRESS).write_text(json.dumps({"phase": "Object: x.csv", "rows": 42,
                                                   "bytes": 0}))
    got = tx.status(catalog, st.id)
    assert got.running[0]["rows"] == 42
    assert "running: Object: x.csv: 42 rows" in got.summary()


# --- readers see the catalog wholly before or wholly after a commit ------------------------


def test_readers_see_before_or_after(catalog, parts):
    old_db = skyshard.open(catalog)
    assert scan_count(old_db) == 1500
    seen: set[int] = set()
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(scan_count(catalog))
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        for p in parts[1:3]:
            skyshard.ingest(catalog, "Object", [p], options=OPTS, append=True)
    finally:
        stop.set()
        t.join()
    assert not failures, "".join(traceback.format_exception(failures[0]))
    assert seen <= {1500, 3000, 4500} and 4500 in seen | {scan_count(catalog)}
    # a Database opened before moves to the newest version at its next query
    assert scan_count(old_db) == 4500
    assert old_db.sql("SELECT COUNT(*) FROM Object").column(0)[0].as_py() == 4500
    assert scan_count(catalog) == 4500


def test_garbage_collection_rule(catalog, parts):
    old_db = skyshard.open(catalog)
    old_info = old_db.tables["Object"]
    old_files = root_files(catalog, old_info)
    skyshard.ingest(catalog, "Object", [parts[1]], options=OPTS, append=True)
    meta = skyshard.open(catalog).meta
    assert [r.version for r in meta.retired] == [1]
    assert tx.collect_garbage(catalog) == []  # still within the grace period
    assert tx.collect_garbage(catalog, grace_s=0) == []  # old_db's lease pins version 1
    assert all(f.exists() for f in old_files)
    assert scan_count(old_db) == 3000  # it moves to version 2, releasing version 1
    removed = tx.collect_garbage(catalog, grace_s=0)
    assert set(removed) == set(versions.version_paths(old_info))
    assert not any(f.exists() for f in old_files)
    assert skyshard.open(catalog).meta.retired == ()
    assert_only_live_files(catalog)
    assert scan_count(catalog) == 3000


def root_files(root: Path, info) -> list[Path]:
    return sorted((root / info.path / "dataset").glob("Norder=*/Dir=*/*.parquet"))


def assert_only_live_files(root: Path) -> None:
    """Every file of the catalog belongs to a current or retired table version (reader
    leases are not catalog data)."""
    meta = skyshard.open(root).meta
    live = versions.live_paths(meta)
    tops = {p for info in meta.tables.values() for p in (info.name,)}
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] == (leases.READERS_DIR,):
            continue
        for name in files:
            f = rel / name
            if str(f) == layout.CATALOG_META:
                continue
            if len(f.parts) == 2 and f.parts[0] in tops and f.name in (
                    layout.COLLECTION_PROPERTIES, versions.MARKER):
                continue
            assert any(str(f) == p or str(f).startswith(p + "/") for p in live), f
    assert not (root / tx.TRANSACTIONS).exists()
    assert not (root / ".locks").exists()


# --- validation -------------------------------------------------------------------------------


def test_schema_mismatch_names_file_and_column(catalog, tmp_path, sky_tables):
    before = snapshot(catalog)
    st = tx.begin(catalog, "Object", options=OPTS)
    extra = tmp_path / "extra.parquet"
    pq.write_table(sky_tables["Object"].slice(2000, 10).append_column(
        "bogus", pa.array(range(10))), extra)
    with pytest.raises(InputError) as info:
        tx.add(catalog, st.id, [extra])
    assert (Path(info.value.path).name, info.value.column) == ("extra.parquet", "bogus")
    short = tmp_path / "short.parquet"
    pq.write_table(sky_tables["Object"].slice(2000, 10).drop_columns(["gMag"]), short)
    with pytest.raises(InputError) as info:
        tx.add(catalog, st.id, [short])
    assert info.value.column == "gMag"
    assert tx.status(catalog, st.id).contributions == ()  # the transaction is still usable
    tx.abort(catalog, st.id)
    assert snapshot(catalog) == before


def test_unparsable_row_names_file_line_column(catalog, tmp_path):
    st = tx.begin(catalog, "Object", options=OPTS)
    bad = tmp_path / "bad.csv"
    header = "objectId,ra,decl,gMag,rMag,gFlux,nEpochs,kind,flags"
    bad.write_text(header + "\n1,10.0,5.0,20.1,19.5,1e-30,3,star,1\n"
                   "2,11.0,5.0,20.1,19.5,1e-30,x3,star,1\n")
    with pytest.raises(InputError) as info:
        tx.add(catalog, st.id, [bad])
    err = info.value
    assert (Path(err.path).name, err.line, err.column) == ("bad.csv", 3, "nEpochs")
    tx.abort(catalog, st.id)


def test_duplicate_keys(catalog, parts, tmp_path, sky_tables):
    before = snapshot(catalog)
    obj = sky_tables["Object"]
    st = tx.begin(catalog, "Object", options=OPTS)
    within = tmp_path / "within.parquet"
    pq.write_table(pa.concat_tables([obj.slice(2000, 5), obj.slice(2001, 1)]), within)
    with pytest.raises(IngestError, match=r"within.parquet, column 'objectId': duplicate "
                                          r"director keys: \d+ in rows 2, 6"):
        tx.add(catalog, st.id, [within])
    again = tmp_path / "again.parquet"
    pq.write_table(obj.slice(1490, 20), again)  # ten rows already in the table
    with pytest.raises(IngestError, match=r"already in table Object: \d+ in row 1;"):
        tx.add(catalog, st.id, [again])
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(obj.slice(3000, 10), a)
    pq.write_table(obj.slice(3005, 10), b)
    tx.add(catalog, st.id, [a, b])  # each is fine on its own
    with pytest.raises(IngestError, match=r"across contributions: \d+ in .*a.parquet row 6, "
                                          r".*b.parquet row 1"):
        tx.commit(catalog, st.id)
    got = tx.status(catalog, st.id)
    assert got.state is tx.State.OPEN and "across contributions" in got.error
    tx.abort(catalog, st.id)
    assert snapshot(catalog) == before
    # the option accepts them, across increments too
    opts = skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False,
                                  allow_duplicate_keys=True)
    st = tx.begin(catalog, "Object", options=opts)
    tx.add(catalog, st.id, [a, b, again])
    tx.commit(catalog, st.id)
    assert scan_count(catalog) == 1540


def test_orphans_documented(catalog, tmp_path, sky_tables):
    src = sky_tables["Source"]
    p = tmp_path / "src.parquet"
    pq.write_table(src, p)
    info = skyshard.ingest(catalog, "Source", [p], director="Object", options=OPTS)
    loaded = set(sky_tables["Object"].slice(0, 1500).column("objectId").to_pylist())
    want = sum(1 for k in src.column("objectId").to_pylist() if k not in loaded)
    assert info.orphan_rows == want
    orphans = pq.read_table(catalog / Path(info.path).parent / "orphans.parquet")
    assert orphans.num_rows == want


def test_nothing_to_commit_and_busy(catalog):
    st = tx.begin(catalog, "Object", options=OPTS)
    with pytest.raises(IngestError, match="nothing to commit"):
        tx.commit(catalog, st.id)
    with tx._Txn(catalog, st.id).locked(blocking=False), \
            pytest.raises(tx.TransactionStateError, match="busy"):
        tx.abort(catalog, st.id)
    tx.abort(catalog, st.id)


# --- the command line ------------------------------------------------------------------------


def test_cli_transaction(catalog, parts, capsys):
    assert main(["ingest", "begin", str(catalog), "Object"]) == 0
    tid = capsys.readouterr().out.strip()
    assert main(["ingest", "add", str(catalog), tid, str(parts[1]), str(parts[2])]) == 0
    out = capsys.readouterr().out
    assert "contribution 2:" in out and "2 contribution(s), 3,000 rows" in out
    assert main(["ingest", "status", str(catalog), "--json"]) == 0
    (st,) = json.loads(capsys.readouterr().out)
    assert (st["id"], st["rows"], st["contributions"]) == (tid, 3000, 2)
    assert main(["ingest", "commit", str(catalog), tid]) == 0
    assert "PUBLISHED" in capsys.readouterr().out
    assert main(["ingest", str(catalog), "Object", str(parts[3]), "--append"]) == 0
    assert "Object: 6,000 rows" in capsys.readouterr().out
    assert main(["ingest", "gc", str(catalog), "--grace", "0"]) == 0
    assert "removed Object/Object" in capsys.readouterr().out
    assert main(["ingest", "abort", str(catalog), "nope"]) == 2
    assert capsys.readouterr().err == "error: unknown transaction 'nope'\n"


# --- HTTP ----------------------------------------------------------------------------------


@pytest.fixture()
def client(catalog):
    import warnings

    from starlette.applications import Starlette

    with warnings.catch_warnings():  # the test client's own deprecation notice
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from starlette.responses import JSONResponse

    from skyshard.errors import SkyshardError
    from skyshard.service.config import ANONYMOUS
    from skyshard.service.errors import wire
    from skyshard.service.ingest_api import IngestApi

    def user_of(request):
        return request.headers.get("x-user") or ANONYMOUS

    async def error(request, exc):
        w = wire(exc)
        return JSONResponse({"success": 0, **w.json()}, status_code=w.http_status)

    app = Starlette(routes=IngestApi(catalog, user_of).routes(),
                    exception_handlers={SkyshardError: error})
    with TestClient(app, headers={"x-user": "alice"}) as c:
        yield c


def test_http_ingest(client, catalog, parts, tmp_path, sky_tables):
    r = client.post("/ingest/trans", json={"table": "Object"})
    assert r.status_code == 200, r.text
    tid = r.json()["transaction"]["id"]
    r = client.post(f"/ingest/trans/{tid}/file?name=part1.parquet", content=parts[1].read_bytes(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json()["contribution"]["rows"] == 1500
    csv = tmp_path / "bad.csv"
    csv.write_text("objectId,ra,decl,gMag,rMag,gFlux,nEpochs,kind,flags\n1,x,1,1,1,1,1,a,1\n")
    r = client.post(f"/ingest/trans/{tid}/file?name=bad.csv", content=csv.read_bytes())
    assert r.status_code == 400 and "upload bad.csv, line 2, column 'ra'" in r.json()["error"]["message"]
    st = client.get(f"/ingest/trans/{tid}").json()["transaction"]
    assert (st["contributions"], st["rows"], st["bytes"]) == (1, 1500, parts[1].stat().st_size)
    assert client.get("/ingest/trans").json()["transactions"][0]["id"] == tid
    r = client.put(f"/ingest/trans/{tid}")
    assert r.status_code == 200 and r.json()["transaction"]["published"] == {"Object": 2}
    assert scan_count(catalog) == 3000
    assert client.get("/ingest/trans/nope").status_code == 404
    assert client.post("/ingest/trans", json={"table": "T"}, headers={"x-user": ""}).status_code == 401
    r = client.post("/ingest/trans", json={"table": "Object"})
    tid = r.json()["transaction"]["id"]
    assert client.post(f"/ingest/trans/{tid}/file", json={"url": "/etc/passwd"}).status_code == 400
    assert client.put(f"/ingest/trans/{tid}?abort=1").json()["transaction"]["state"] == "ABORTED"
    assert client.post("/ingest/gc?grace=0").json()["removed"] == ["Object/Object",
                                                                  "Object/Object_60arcs",
                                                                  "Object/Object_objectId_index"]


def test_http_add_by_url(client, catalog, parts):
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(parts[2].parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tid = client.post("/ingest/trans", json={"table": "Object"}).json()["transaction"]["id"]
        url = f"http://127.0.0.1:{server.server_address[1]}/{parts[2].name}"
        r = client.post(f"/ingest/trans/{tid}/file", json={"url": url})
        assert r.status_code == 200, r.text
        assert r.json()["contribution"]["source"] == url
        assert client.put(f"/ingest/trans/{tid}?publish=0").json()["transaction"]["state"] == "PREPARED"
        r = client.put("/ingest/publish", json={"transactions": [tid]})
        assert r.json()["transactions"][0]["state"] == "PUBLISHED"
    finally:
        server.shutdown()
    assert scan_count(catalog) == 3000
