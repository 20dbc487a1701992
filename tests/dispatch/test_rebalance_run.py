"""Rebalance and drain on a real cluster: a scheduler and ``dask worker`` processes
(w0..w3), each keeping its copies in its own directory, one copy of each partition
(R = 1: a copy moved is the only one, so a query routed to it before the move must
still find it). Queries run while copies move and must answer as the embedded
executor does."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from background import run_in_thread
from named_workers import empty_cluster
from same_rows import assert_same_rows
from test_oracle import CASES
from test_replicas import SCAN_SQL

import skyshard
from skyshard.cli import main
from skyshard.dispatch import replicas
from skyshard.dispatch.dask_executor import DaskExecutor
from skyshard.dispatch.placement import PLACEMENT_FILE, SHARED, Placement, unit_weight
from skyshard.errors import UnsupportedQueryError


@pytest.fixture(scope="module")
def cluster(sky_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rebalance-run")
    with empty_cluster(sky_root, tmp, threads=2) as c:  # 2 threads: copies beside a held task
        c["workers"].start("w0", "w1", "w2")
        assert replicas.place(c["client"], c["root"], replication=1).healthy
        ex = DaskExecutor(c["root"], scheduler=c["address"], placement="replicas")
        db = skyshard.open(c["root"])
        db.executor = ex
        try:
            yield {**c, "db": db, "marks": tmp / "marks"}
        finally:
            ex.close()


@pytest.fixture(scope="module")
def ids(sky_tables):
    oids = sky_tables["Object"].column("objectId").to_pylist()
    orphan = sky_tables["Source"].column("objectId").to_pylist()[-1]
    return {"oid": oids[17], "oid2": oids[4000], "orphan": orphan}


# --- on the workers ---------------------------------------------------------------------------


def _held_tasks(marks: str, dask_worker=None) -> None:
    """Every query task notes its start, then waits for ``marks/release`` (at most 60 s)
    before it looks for its files."""
    import skyshard.dispatch.dask_executor as mod

    original = getattr(mod, "_original_run_replica_batch", mod.run_replica_batch)
    mod._original_run_replica_batch = original
    name = dask_worker.name

    def held(*args, **kwargs):
        Path(marks, f"started-{name}-{time.monotonic_ns()}").touch()
        deadline = time.monotonic() + 60
        while not Path(marks, "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return original(*args, **kwargs)

    mod.run_replica_batch = held


def _restore_tasks() -> None:
    import skyshard.dispatch.dask_executor as mod

    mod.run_replica_batch = getattr(mod, "_original_run_replica_batch", mod.run_replica_batch)


# --- helpers ------------------------------------------------------------------------------------


def home(cluster, name: str) -> Path:
    return cluster["workers"].base / name / Placement.load(cluster["root"]).catalog_id


def files_on(cluster, name: str) -> set[str]:
    d = home(cluster, name)
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} if d.exists() else set()


def recorded_files(placed: Placement, name: str) -> set[str]:
    return {f for u in placed.units.values() if name in u.holders for f in u.files}


def bytes_by_worker(placed: Placement) -> Counter:
    out: Counter = Counter()
    for k in placed.partition_units:
        for h in placed.holders(k):
            out[h] += unit_weight(placed.units[k])
    return out


def assert_balanced(placed: Placement, workers) -> None:
    size = bytes_by_worker(placed)
    count = Counter(h for k in placed.partition_units for h in placed.holders(k))
    mean_b = sum(size[w] for w in workers) / len(workers)
    mean_n = sum(count[w] for w in workers) / len(workers)
    for w in workers:
        assert abs(size[w] - mean_b) <= 0.1 * mean_b or abs(count[w] - mean_n) <= 1, (
            w, dict(size), dict(count))


def query_during(cluster, run_move, sql: str = SCAN_SQL) -> dict:
    """Start ``sql``, planned on the record as it is, its tasks held on their workers;
    start ``run_move()``; once it has recorded the new placement, give it a second (to
    remove copies, if it would), then let the tasks read their files. The query's
    outcome, with ``move``: what ``run_move()`` returned."""
    marks, record = cluster["marks"], cluster["root"] / PLACEMENT_FILE
    shutil.rmtree(marks, ignore_errors=True)
    marks.mkdir()
    cluster["client"].run(_held_tasks, str(marks))
    try:
        thread, out = run_in_thread(lambda: cluster["db"].sql(sql))
        deadline = time.monotonic() + 30
        while not list(marks.glob("started-*")):
            assert time.monotonic() < deadline, "the query's tasks did not start"
            time.sleep(0.01)
        before = record.read_bytes()
        mover, moved = run_in_thread(run_move)
        deadline = time.monotonic() + 60
        while record.read_bytes() == before and mover.is_alive():
            assert time.monotonic() < deadline, "the placement was not recorded"
            time.sleep(0.01)
        time.sleep(1.0)
        (marks / "release").touch()
        thread.join(60)
        mover.join(60)
        assert not thread.is_alive() and not mover.is_alive()
    finally:
        (marks / "release").touch()
        cluster["client"].run(_restore_tasks)
    if "error" in moved:
        raise moved["error"]
    out["move"] = moved["table"]
    out["ran_on"] = {p.name.split("-")[1] for p in marks.glob("started-*")}
    return out


# --- tests ------------------------------------------------------------------------------------


def test_scale_up_then_drain_then_refuse(cluster, sky_db_split, ids, capsys):
    """One story, in order (each step starts from the state the last one left, so they
    are one test: pytest-xdist may not split them across processes): w3 joins and the
    copies spread onto it; w1 is drained and leaves; draining everyone left is refused."""
    _scale_up_rebalance_moves_copies_while_queries_run(cluster, sky_db_split, ids, capsys)
    _drain_empties_a_worker_that_then_leaves(cluster, sky_db_split, capsys)
    _drain_refuses_when_too_few_workers_would_remain(cluster, capsys)


def _scale_up_rebalance_moves_copies_while_queries_run(cluster, sky_db_split, ids,
                                                           capsys):
    root, client = cluster["root"], cluster["client"]
    before = Placement.load(root)
    cluster["workers"].start("w3")
    argv = ["replicas", "rebalance", str(root), "--scheduler", cluster["address"],
            "--expect-workers", "4", "--wait", "30", "--grace", "0"]
    out = query_during(cluster, lambda: main(argv))
    assert out["move"] == 0, capsys.readouterr()
    assert "error" not in out, out.get("error")
    assert_same_rows(out["table"], sky_db_split.sql(SCAN_SQL), ordered=False)
    text = capsys.readouterr().out
    assert text.rstrip().endswith("healthy") and "w3" in text.splitlines()[-2]

    after = Placement.load(root)
    assert after.replication == 1 and after.catalog_id == before.catalog_id
    assert all(len(after.holders(k)) == 1 for k in after.partition_units)
    assert_balanced(after, ["w0", "w1", "w2", "w3"])
    moved = [k for k in after.partition_units if after.holders(k) != before.holders(k)]
    assert moved and all(after.holders(k) == ("w3",) for k in moved)
    # the query planned before the move ran on old holders of moved partitions
    assert out["ran_on"] & {before.holders(k)[0] for k in moved}
    # every worker keeps exactly what the record names: the surplus copies are gone
    for name in ("w0", "w1", "w2", "w3"):
        assert files_on(cluster, name) == recorded_files(after, name), name
    assert replicas.check(client, root).healthy
    answered = 0
    for template in CASES[::3]:
        sql = template.format(**ids)
        try:
            got = cluster["db"].sql(sql)
        except UnsupportedQueryError:  # one copy each: no worker holds all it reads
            assert cluster["db"].plan(sql).split is None
            continue
        assert_same_rows(got, sky_db_split.sql(sql), ordered=" order by " in sql.lower())
        answered += 1
    assert answered >= len(CASES[::3]) // 2
    # balanced already: nothing moves
    again = replicas.rebalance(client, root, grace_s=0)
    assert not again.copied and not again.removed and Placement.load(root).units == after.units


def _drain_empties_a_worker_that_then_leaves(cluster, sky_db_split, capsys):
    root, client = cluster["root"], cluster["client"]
    before = Placement.load(root)
    held = [k for k in before.partition_units if before.holders(k) == ("w1",)]
    assert held
    argv = ["replicas", "drain", str(root), "w1", "--scheduler", cluster["address"],
            "--grace", "0"]
    out = query_during(cluster, lambda: main(argv))
    assert out["move"] == 0, capsys.readouterr()
    assert "error" not in out, out.get("error")
    assert_same_rows(out["table"], sky_db_split.sql(SCAN_SQL), ordered=False)
    text = capsys.readouterr().out
    assert "drained: w1 holds nothing the placement names; it can be removed" in text
    assert text.rstrip().endswith("healthy")

    after = Placement.load(root)
    assert after.drained == ("w1",)
    assert not any("w1" in u.holders for u in after.units.values())
    assert all(len(after.holders(k)) == 1 for k in after.partition_units)
    assert_balanced(after, ["w0", "w2", "w3"])
    assert files_on(cluster, "w1") == set()
    # while it is still in the cluster, place gives it nothing and check is content
    assert replicas.place(client, root).copied == []
    assert "w1" not in Placement.load(root).holders(SHARED)
    assert replicas.check(client, root).healthy
    # it leaves: queries answer, the replicas are healthy
    cluster["workers"].stop_one("w1")
    assert_same_rows(cluster["db"].sql(SCAN_SQL), sky_db_split.sql(SCAN_SQL), ordered=False)
    assert main(["replicas", "check", str(root), "--scheduler", cluster["address"],
                 "--quiet"]) == 0


def _drain_refuses_when_too_few_workers_would_remain(cluster, capsys):
    root = cluster["root"]
    record = (root / PLACEMENT_FILE).read_bytes()
    on_disk = {n: files_on(cluster, n) for n in ("w0", "w2", "w3")}
    code = main(["replicas", "drain", str(root), "w0,w2", "w3", "--scheduler",
                 cluster["address"]])
    assert code == 2
    err = capsys.readouterr().err
    assert ("0 live worker(s) would hold copies without w0, w2, w3 (none), fewer than the "
            "replication factor 1: nothing was moved") in err, err
    assert (root / PLACEMENT_FILE).read_bytes() == record
    assert {n: files_on(cluster, n) for n in ("w0", "w2", "w3")} == on_disk
