"""Shared-nothing mode on a real cluster: a scheduler and three worker processes (w0, w1,
w2), each keeping its copies in its own directory, R = 2. Workers are plain
``dask worker`` processes started and killed here, so a killed worker stays dead until
started again under the same name and directory, as on a real cluster.

Each test starts from a healthy cluster (``healthy``: dead workers restarted, the
catalog placed again) and may break it. Answers are compared with the embedded executor
run fragment by fragment (``sky_db_split``, checked against the oracle in test_oracle).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("distributed")

from background import run_in_thread
from named_workers import empty_cluster
from same_rows import assert_same_rows
from test_oracle import CASES

import skyshard
from skyshard.catalog import model
from skyshard.cli import main
from skyshard.dispatch import replicas
from skyshard.dispatch.dask_executor import DaskExecutor
from skyshard.dispatch.placement import (
    PLACEMENT_FILE,
    SHARED,
    Placement,
    single_holders,
    statement_files,
    unit_key,
)
from skyshard.errors import ExternalError, UnsupportedQueryError
from skyshard.storage import leases

NAMES = ("w0", "w1", "w2")
SLOW_SQL = ("SELECT kind, COUNT(*) AS n, AVG(gMag) AS g, STDDEV(rMag) AS s, MAX(decl) AS m "
            "FROM Object GROUP BY kind")
SCAN_SQL = ("SELECT s.filterId, COUNT(*) AS n, SUM(s.psfFlux) AS f FROM Object o "
            "JOIN Source s ON o.objectId = s.objectId GROUP BY s.filterId")


@pytest.fixture(scope="module")
def cluster(sky_root, tmp_path_factory):
    with empty_cluster(sky_root, tmp_path_factory.mktemp("replicas")) as c:
        c["workers"].start(*NAMES)
        replicas.place(c["client"], c["root"], replication=2)
        ex = DaskExecutor(c["root"], scheduler=c["address"], placement="replicas")
        db = skyshard.open(c["root"])
        db.executor = ex
        try:
            yield {**c, "ex": ex, "db": db}
        finally:
            ex.close()


@pytest.fixture
def healthy(cluster):
    w = cluster["workers"]
    dead = w.dead(NAMES)
    if dead:
        w.start(*dead)
    cluster["client"].run(_restore_tasks)
    report = replicas.place(cluster["client"], cluster["root"])
    assert report.healthy, report.text(every_unit=False)
    return cluster


def home(cluster, name: str) -> Path:
    placed = Placement.load(cluster["root"])
    return cluster["workers"].base / name / placed.catalog_id


def same_as_default(ref_db, cluster, sql: str) -> None:
    want = ref_db.sql(sql)
    got = cluster["db"].sql(sql)
    assert_same_rows(got, want, ordered=" order by " in sql.lower())
    assert got.column_names == want.column_names


# --- functions run on the workers -------------------------------------------------------------


def _slow_tasks(marks: str, seconds: float, dask_worker=None) -> None:
    """Every query task notes its start (a file named after the worker), then sleeps."""
    import skyshard.dispatch.dask_executor as mod

    original = getattr(mod, "_original_run_replica_batch", mod.run_replica_batch)
    mod._original_run_replica_batch = original
    name = dask_worker.name

    def slow(*args, **kwargs):
        Path(marks, f"started-{name}-{time.monotonic_ns()}").touch()
        time.sleep(seconds)
        return original(*args, **kwargs)

    mod.run_replica_batch = slow


def _restore_tasks() -> None:
    import skyshard.dispatch.dask_executor as mod

    mod.run_replica_batch = getattr(mod, "_original_run_replica_batch", mod.run_replica_batch)


def _started(marks: Path) -> list[str]:
    """Worker names of the tasks started, in order."""
    found = sorted(marks.glob("started-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return [p.name.split("-")[1] for p in found]


# --- tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref_db(sky_db_split):
    return sky_db_split


@pytest.fixture(scope="module")
def ids(sky_tables):
    oids = sky_tables["Object"].column("objectId").to_pylist()
    orphan = sky_tables["Source"].column("objectId").to_pylist()[-1]
    return {"oid": oids[17], "oid2": oids[4000], "orphan": orphan}


def test_each_worker_holds_only_its_units(healthy):
    root = healthy["root"]
    placed = Placement.load(root)
    assert placed.replication == 2
    for key in placed.partition_units:
        assert len(set(placed.holders(key))) >= 2
    assert set(placed.holders(SHARED)) == set(NAMES)
    for name in NAMES:
        mine = {f for k, u in placed.units.items() if name in u.holders for f in u.files}
        d = home(healthy, name)
        there = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}
        assert there == mine
        assert all((d / f).stat().st_size == (root / f).stat().st_size for f in mine)
    # Three workers, two copies: no worker holds everything.
    assert all(len({k for k in placed.partition_units if n in placed.holders(k)})
               < len(placed.partition_units) for n in NAMES)


@pytest.mark.parametrize("template", CASES)
def test_same_rows_as_embedded(ref_db, healthy, ids, template):
    sql = template.format(**ids)
    try:
        same_as_default(ref_db, healthy, sql)
    except UnsupportedQueryError:
        # Only a query that cannot be split over partitions no one worker holds.
        plan = healthy["db"].plan(sql)
        placed = Placement.load(healthy["root"])
        units = {placed.unit_of(f) for f in statement_files(plan.single_sql(), plan.root)}
        assert plan.split is None and not single_holders(units | {SHARED}, placed, NAMES)


def test_workers_never_read_the_catalog_root(ref_db, healthy):
    """The coordinator's copy of the partitions moved away: same answers."""
    root = healthy["root"]
    moved = []
    try:
        for table in ("Object/Object", "Object/Object_60arcs", "Source/Source"):
            (root / table / "dataset").rename(root / table / "dataset.away")
            moved.append(root / table)
        (root / "Source" / "orphans.parquet").rename(root / "Source" / "orphans.away")
        for sql in (SLOW_SQL, SCAN_SQL,
                    "SELECT COUNT(*) AS n FROM Object WHERE qserv_areaspec_circle(45, 10, 2)"):
            same_as_default(ref_db, healthy, sql)
    finally:
        for d in moved:
            (d / "dataset.away").rename(d / "dataset")
        if (root / "Source" / "orphans.away").exists():
            (root / "Source" / "orphans.away").rename(root / "Source" / "orphans.parquet")


def test_check_and_repair_after_a_lost_directory(ref_db, healthy, capsys):
    client, root = healthy["client"], healthy["root"]
    placed = Placement.load(root)
    shutil.rmtree(home(healthy, "w1"))
    report = replicas.check(client, root)
    held = {k for k in placed.partition_units if "w1" in placed.holders(k)}
    assert {u.unit for u in report.under_replicated} == held
    assert all(u.missing == ("w1",) for u in report.units if u.unit in held)
    assert [u.unit for u in report.missing] == [SHARED] and not report.healthy
    # Queries still answer: w1's tasks find their files missing and move to the others.
    same_as_default(ref_db, healthy, SCAN_SQL)
    assert main(["replicas", "check", str(root), "--scheduler", healthy["address"],
                 "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"under-replicated: {len(held)}" in out
    assert main(["replicas", "repair", str(root), "--scheduler", healthy["address"]]) == 0
    out = capsys.readouterr().out
    assert f"copied {len(held) + 1} unit(s)" in out and out.rstrip().endswith("healthy")
    report = replicas.check(client, root)
    assert report.healthy and Placement.load(root).units == placed.units
    same_as_default(ref_db, healthy, SCAN_SQL)


def test_corrupt_copy_is_found_and_repaired(healthy):
    client, root = healthy["client"], healthy["root"]
    placed = Placement.load(root)
    key = max(placed.partition_units, key=lambda k: placed.units[k].rows)
    victim = placed.holders(key)[0]
    f = next(iter(placed.units[key].files))
    path = home(healthy, victim) / f
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    report = replicas.check(client, root)
    assert [(u.unit, u.corrupt) for u in report.corrupt] == [(key, (victim,))]
    assert not report.healthy
    # Sizes alone do not see it; checksums do, and the repair copies an intact replica.
    assert replicas.place(client, root, checksum=False).copied == []
    report = replicas.repair(client, root)
    assert [(c.unit, c.target) for c in report.copied] == [(key, victim)]
    assert replicas.check(client, root).healthy
    assert path.read_bytes() == (root / f).read_bytes()


def test_killed_worker_mid_query_reruns_elsewhere_and_rejoins(ref_db, healthy, tmp_path):
    client, ex = healthy["client"], healthy["ex"]
    client.run(_slow_tasks, str(tmp_path), 1.5)
    plan = healthy["db"].plan(SLOW_SQL)
    thread, out = run_in_thread(lambda: ex.run(plan))
    deadline = time.monotonic() + 30
    while set(_started(tmp_path)) != set(NAMES):
        assert time.monotonic() < deadline, _started(tmp_path)
        time.sleep(0.01)
    healthy["workers"].kill("w1")
    thread.join(60)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    assert_same_rows(out["table"], ref_db.sql(SLOW_SQL), ordered=False)
    started = _started(tmp_path)
    assert len(started) > 3 and "w1" not in started[3:]  # w1's part ran on its other holders
    # w1 comes back under its name with its directory: nothing to copy, and it is used.
    healthy["workers"].start("w1")
    assert replicas.place(client, healthy["root"]).copied == []
    client.run(_slow_tasks, str(tmp_path), 0.0)
    before = len(_started(tmp_path))
    same_as_default(ref_db, healthy, SLOW_SQL)
    assert "w1" in _started(tmp_path)[before:]


def test_every_replica_gone_is_an_error_never_a_partial_answer(ref_db, healthy, capsys):
    root, ex = healthy["root"], healthy["ex"]
    placed = Placement.load(root)
    healthy["workers"].kill("w1", "w2")
    plan = healthy["db"].plan(SCAN_SQL)
    lost = {(p.order, p.pixel) for p in plan.partitions
            if "w0" not in placed.holders(unit_key(p.order, p.pixel))}
    assert lost
    with pytest.raises(ExternalError, match="no live worker holds a copy") as info:
        ex.run(plan)
    assert set(info.value.partitions) == lost
    o, p = min(lost)
    assert f"Norder={o}/Npix={p}" in str(info.value)
    # Nothing to repair from: said so, exit status 1.
    assert main(["replicas", "repair", str(root), "--scheduler", healthy["address"],
                 "--quiet"]) == 1
    assert "no intact copy to repair from" in capsys.readouterr().out
    # They come back: the same query answers.
    healthy["workers"].start("w1", "w2")
    same_as_default(ref_db, healthy, SCAN_SQL)


def test_open_on_a_local_cluster_places_the_catalog(sky_root, ref_db, ids, tmp_path):
    """``skyshard.open(..., workers=2, placement="replicas")``: a local cluster whose
    workers each keep a copy under ``replica_dir``; a worker killed mid-query (its nanny
    restarts it) costs nothing but time."""
    root = tmp_path / "catalog"
    shutil.copytree(sky_root, root)
    with skyshard.open(root, workers=2, placement="replicas",
                       replica_dir=tmp_path / "copies") as db:
        assert (root / PLACEMENT_FILE).exists()
        assert sorted(p.name for p in (tmp_path / "copies").iterdir()) == ["0", "1"]
        for template in CASES[::4]:  # every worker holds everything: all queries run
            sql = template.format(**ids)
            assert_same_rows(db.sql(sql), ref_db.sql(sql), ordered=" order by " in sql.lower())
        ex = db.executor
        ex.client.run(_slow_tasks, str(tmp_path), 1.0)
        out: dict = {}
        thread = threading.Thread(target=lambda: out.update(table=db.sql(SLOW_SQL)))
        thread.start()
        deadline = time.monotonic() + 30
        while len(set(_started(tmp_path))) < 2:
            assert time.monotonic() < deadline, _started(tmp_path)
            time.sleep(0.01)
        pids = ex.client.run(os.getpid)
        os.kill(pids[ex.named_workers()["0"]], signal.SIGKILL)
        thread.join(60)
        assert_same_rows(out["table"], ref_db.sql(SLOW_SQL), ordered=False)
    # A new local cluster over the same directories: workers 0 and 1 hold their copies.
    assert main(["replicas", "check", str(root), "--workers", "2", "--replica-dir",
                 str(tmp_path / "copies"), "--quiet"]) == 0


def test_a_result_lost_with_its_worker_is_not_waited_for(healthy):
    """A task that finished on a worker killed before its result was fetched: the
    scheduler would recompute it, but the task may only run on that worker, so fetching
    gives up (``WorkerLost``) instead of waiting forever."""
    client = healthy["client"]
    address = replicas.named_workers(client)["w1"]
    fut = client.submit(os.getpid, workers=[address], allow_other_workers=False, pure=False)
    finished = replicas.Completions()
    finished.watch(fut)
    assert finished.done(30) == [fut] and fut.status == "finished"
    healthy["workers"].kill("w1")
    t0 = time.monotonic()
    with pytest.raises(replicas.WorkerLost):
        replicas.fetch(client, fut, (address,))
    assert time.monotonic() - t0 < 10


def append_fifty_objects(root: Path, sky_tables, tmp_path: Path) -> None:
    """Ingest 50 new objects into ``root``: a new version of Object."""
    extra = sky_tables["Object"].slice(0, 50)
    extra = extra.set_column(extra.schema.get_field_index("objectId"), "objectId",
                             pa.array([10**12 + i for i in range(50)], pa.int64()))
    more = tmp_path / "more.parquet"
    pq.write_table(extra, more)
    skyshard.ingest(root, "Object", [more], append=True,
                    options=skyshard.IngestOptions(progress=False))


def test_a_version_ingested_after_placement_is_placed_by_its_first_query(sky_root, sky_tables,
                                                                        tmp_path):
    """Ingest publishes to the catalog folder; the next query finds files the workers
    lack, copies them out (only those) and answers from the new version."""
    root = tmp_path / "catalog"
    shutil.copytree(sky_root, root)
    count = "SELECT COUNT(*) AS n FROM Object WHERE ra >= 0"
    with skyshard.open(root, workers=2, placement="replicas", replication=1,
                       replica_dir=tmp_path / "copies") as db:
        before = db.sql(count).column(0)[0].as_py()
        append_fifty_objects(root, sky_tables, tmp_path)
        assert db.sql(count).column(0)[0].as_py() == before + 50
        placed = Placement.load(root)
        assert placed.generation == model.load(root).generation  # the record follows


def test_older_versions_leave_the_workers_once_the_catalog_drops_them(sky_root, sky_tables,
                                                                       tmp_path):
    """A new version is placed beside the old one; the old one's copies stay while the
    catalog root keeps it, and ``place`` removes them once its garbage collection has
    (which rewrites the catalog's description: the placement must be renewed anyway)."""
    from skyshard.storage import transactions

    root = tmp_path / "catalog"
    shutil.copytree(sky_root, root)
    # not the leases of sky_root's readers (this process's among them): they would pin v1
    shutil.rmtree(root / leases.READERS_DIR, ignore_errors=True)
    copies = tmp_path / "copies"
    count = "SELECT COUNT(*) AS n FROM Object WHERE ra >= 0"
    with skyshard.open(root, workers=2, placement="replicas", replication=1,
                       replica_dir=copies) as db:
        before = db.sql(count).column(0)[0].as_py()
        append_fifty_objects(root, sky_tables, tmp_path)
        assert db.sql(count).column(0)[0].as_py() == before + 50  # the new version placed
        client = db.executor.client
        catalog_id = Placement.load(root).catalog_id

        def held() -> set[tuple[str, str]]:  # (worker, file)
            return {(h.parent.name, p.relative_to(h).as_posix())
                    for h in copies.glob(f"*/{catalog_id}") for p in h.rglob("*")
                    if p.is_file()}

        assert replicas.check(client, root).leftovers == {}  # the root still has v1
        transactions.collect_garbage(root, grace_s=0)
        gone = {(w, f) for w, f in held() if not (root / f).exists()}
        assert gone, "the older version's copies should outlive it at the root"
        report = replicas.check(client, root)
        assert not report.cleaned and sum(n for n, _ in report.leftovers.values()) == len(gone)
        assert "`skyshard replicas repair` removes them" in report.text()
        assert held() >= gone  # check removes nothing

        report = replicas.place(client, root)
        assert report.cleaned and sum(n for n, _ in report.leftovers.values()) == len(gone)
        assert report.healthy, report.text(every_unit=False)
        assert not held() & gone and all((root / f).exists() for _, f in held())
        assert replicas.check(client, root).leftovers == {}
        assert db.sql(count).column(0)[0].as_py() == before + 50

        # a copy a crash interrupted goes too, with ``repair``, once it is old enough: one
        # written just now may be a copy under way
        worker_home = next(copies.glob(f"*/{catalog_id}"))
        stray = worker_home / "Object" / ".Npix=1.parquet.0badc0de.tmp"
        stray.write_bytes(b"half a file")
        report = replicas.repair(client, root)
        assert report.leftovers == {} and stray.exists()
        old = time.time() - replicas.COPY_GRACE_S - 60
        os.utime(stray, (old, old))
        report = replicas.repair(client, root)
        assert report.cleaned and report.leftovers == {worker_home.parent.name: (1, 11)}
        assert report.healthy and not stray.exists()


def test_nothing_is_removed_when_the_catalog_root_cannot_be_read(healthy, tmp_path):
    root = Path(healthy["root"])
    meta = root / "skyshard.json"
    moved = tmp_path / "skyshard.json"
    shutil.move(meta, moved)
    try:
        with pytest.raises(ExternalError, match="nothing was removed"):
            replicas._leftovers(healthy["client"], root, Placement.load(root),
                                replicas.named_workers(healthy["client"]))
        report = replicas.check(healthy["client"], root)  # the rest of the report stays
        assert "nothing was removed" in report.left[replicas.ALL_WORKERS]
        assert not report.missing and not report.corrupt
    finally:
        shutil.move(moved, meta)
