"""Crash safety: an incremental ingest killed with SIGKILL at random moments (and at
every named moment of a commit) leaves a catalog that opens and answers as before the
ingest or as after it; the transaction can then be aborted or resumed, and after
cleanup no file is left that the catalog does not use.

The ingest runs in a child process forked from a server that has skyshard imported
(multiprocessing ``forkserver``), so a kill can land anywhere in the ingest itself
rather than in Python's start-up. The long variant is marked ``slow`` and runs only
with ``-m slow``.
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_transactions import assert_only_live_files, scan_count

import skyshard
from skyshard.storage import crashpoints
from skyshard.storage import transactions as tx

OPTS = skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False)
_PRELOAD = ["skyshard.cli", "skyshard.storage.transactions", "skyshard.storage.incremental",
            "skyshard.sphere.coverage", "duckdb", "pyarrow.parquet", "cdshealpix"]


def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _objects(n: int, seed: int, first_id: int) -> pa.Table:
    """Director rows: a dense clump (so partitions split) and a uniform sky."""
    rng = np.random.default_rng(seed)
    k = n // 2
    ra = np.r_[rng.normal(45, 2, k) % 360, rng.uniform(0, 360, n - k)]
    dec = np.clip(np.r_[rng.normal(10, 2, k),
                        np.degrees(np.arcsin(rng.uniform(-1, 1, n - k)))], -90, 90)
    return pa.table({"objectId": np.arange(first_id, first_id + n, dtype=np.int64),
                     "ra": ra, "decl": dec, "mag": rng.normal(22, 1, n)})


def _sources(objects: pa.Table, seed: int, first_id: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.repeat(objects.column("objectId").to_numpy(), 2)
    return pa.table({"sourceId": np.arange(first_id, first_id + len(ids), dtype=np.int64),
                     "objectId": ids, "flux": rng.lognormal(0, 1, len(ids))})


@dataclass
class Scenario:
    """A base catalog and one increment to load into it, with the expected counts."""

    base: Path
    increment: list[str]  # the ``skyshard`` command line of the increment
    table: str
    before: int
    after: int
    files: list[Path]
    role: dict


def _scenario(tmp: Path, n_base: int, n_more: int, *, child: bool) -> Scenario:
    base = tmp / "base"
    obj = _objects(n_base, 1, 1)
    more = _objects(n_more, 2, 10_000_000)
    pq.write_table(obj, tmp / "object-base.parquet")
    pq.write_table(more, tmp / "object-more.parquet")
    skyshard.ingest(base, "Object", [tmp / "object-base.parquet"], ra="ra", dec="decl",
                    key="objectId", options=OPTS)
    if child:
        # Source rows of the next increment's objects arrive first: orphans, adopted
        # when the director increment commits.
        src = pa.concat_tables([_sources(obj, 3, 1), _sources(more, 4, 50_000_000)])
        pq.write_table(src, tmp / "source.parquet")
        skyshard.ingest(base, "Source", [tmp / "source.parquet"], director="Object",
                        options=OPTS)
    files = [tmp / "object-more.parquet"]
    argv = ["ingest", "__CATALOG__", "Object", str(files[0]), "--append",
            "--max-rows-per-partition", "400"]
    return Scenario(base, argv, "Object", n_base, n_base + n_more, files, {})


def _run_child(ctx, argv: list[str], crash_at: str | None = None):
    p = ctx.Process(target=crashpoints.run_cli, args=(argv, crash_at))
    p.start()
    return p


def _prepare(s: Scenario, work: Path, base: Path | None = None) -> tuple[Path, list[str]]:
    root = work / "cat"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(base or s.base, root)
    return root, [str(root) if a == "__CATALOG__" else a for a in s.increment]


def _check_and_settle(s: Scenario, root: Path, resume: bool) -> str:
    """After a kill: the catalog answers as before or after; then abort or resume the
    transaction, collect garbage and check nothing is left behind. Returns what
    happened: ``before`` or ``after`` (the kill's side of the publish)."""
    db = skyshard.open(root)
    n = scan_count(db, s.table)
    version = db.tables[s.table].version
    assert (version, n) in {(1, s.before), (2, s.after)}, (version, n)
    side = "after" if version == 2 else "before"
    if db.tables.get("Source") is not None:
        src = db.tables["Source"]
        total = db.sql("SELECT COUNT(*) FROM Source WHERE flux >= 0").column(0)[0].as_py()
        assert total == src.rows
    db.close()  # its reader lease would (rightly) keep the old version from gc below
    tx.recover(root)
    pending = tx.list_transactions(root)
    assert len(pending) <= 1
    assert all(p.state is tx.State.OPEN for p in pending)
    if side == "after":
        assert pending == []
    elif resume:
        if pending and pending[0].contributions:
            tx.commit(root, pending[0].id)
        elif pending:
            tx.add(root, pending[0].id, s.files)
            tx.commit(root, pending[0].id)
        else:
            skyshard.ingest(root, s.table, s.files, options=OPTS, append=True)
    else:
        for p in pending:
            tx.abort(root, p.id)
    tx.collect_garbage(root, grace_s=0)
    assert_only_live_files(root)
    db = skyshard.open(root)
    n = s.after if side == "after" or resume else s.before
    assert scan_count(db, s.table) == n
    info = db.tables[s.table]
    index = pq.read_metadata(root / info.index_path).num_rows
    assert index == info.rows == n
    if "Source" in db.tables:
        adopted = db.sql("SELECT COUNT(*) FROM Object o JOIN Source s USING (objectId) "
                         "WHERE o.mag > -100").column(0)[0].as_py()
        assert adopted == 2 * n  # every source whose object is loaded joins it
    return side


def _random_kills(s: Scenario, work: Path, kills: int, seed: int, budget_s: float) -> dict:
    """Kill the increment ``kills`` times after a random delay: half of the time the
    whole one-shot ingest (begin, add, commit), half of the time ``ingest commit`` of a
    transaction begun and filled beforehand (so commits get their share of kills)."""
    ctx = _context()
    filled = work.parent / "filled"  # the base catalog with a filled transaction
    shutil.copytree(s.base, filled)
    tid = tx.begin(filled, s.table, options=OPTS).id
    tx.add(filled, tid, s.files)

    def start(mode: str) -> tuple[Path, multiprocessing.process.BaseProcess]:
        if mode == "commit":
            root, _ = _prepare(s, work, filled)
            argv = ["ingest", "commit", str(root), tid]
        else:
            root, argv = _prepare(s, work)
        return root, _run_child(ctx, argv)

    full = {}
    for mode in ("whole", "commit"):
        durations = []
        for _ in range(2):  # the first run also starts the fork server
            t0 = time.perf_counter()
            root, p = start(mode)
            p.join(120)
            durations.append(time.perf_counter() - t0)
            assert p.exitcode == 0
            assert scan_count(root, s.table) == s.after
        full[mode] = min(durations)
    rng = random.Random(seed)
    done = {"before": 0, "after": 0, "kills": 0, "runs": 0}
    began = time.perf_counter()
    while done["kills"] < kills:
        assert time.perf_counter() - began < budget_s, f"too slow: {done}"
        mode = ("whole", "commit")[done["runs"] % 2]
        root, p = start(mode)
        time.sleep(rng.uniform(0, 0.95 * full[mode]))
        killed = p.is_alive()
        p.kill()
        p.join()
        done["runs"] += 1
        if killed:
            done["kills"] += 1
        done[_check_and_settle(s, root, resume=rng.random() < 0.5)] += 1
    return done


def test_random_kills_fast(tmp_path):
    """20 kills at random moments of an increment that splits partitions."""
    s = _scenario(tmp_path, 1500, 1500, child=False)
    done = _random_kills(s, tmp_path / "work", kills=20, seed=7, budget_s=300)
    assert done["kills"] == 20
    assert done["before"] > 0  # some kills landed before the publish


@pytest.mark.parametrize("moment", crashpoints.NAMES)
def test_kill_at_each_moment(tmp_path, moment):
    """A kill at each named moment of begin/add/commit/publish/cleanup/gc."""
    s = _scenario(tmp_path, 1200, 1200, child=False)
    ctx = _context()
    root, argv = _prepare(s, tmp_path / "work")
    if moment == "gc-removed":
        # the increment keeps the old version (default grace); a gc then removes it
        p = _run_child(ctx, argv)
        p.join(120)
        assert p.exitcode == 0
        p = _run_child(ctx, ["ingest", "gc", str(root), "--grace", "0"], crash_at=moment)
        p.join(120)
        assert p.exitcode == -9
        assert scan_count(root) == s.after
        tx.collect_garbage(root, grace_s=0)
        assert_only_live_files(root)
        assert skyshard.open(root).meta.retired == ()
        return
    p = _run_child(ctx, argv, crash_at=moment)
    p.join(120)
    assert p.exitcode == -9, f"the ingest did not reach {moment}"
    side = _check_and_settle(s, root, resume=True)
    assert side == ("after" if moment in ("publish-after-save", "cleanup") else "before")


@pytest.fixture()
def slow_only(request):
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("long variant: run with -m slow")


@pytest.mark.slow
def test_random_kills_long(tmp_path, slow_only):
    """100 kills on a larger catalog whose director increment also re-cuts a child
    table and adopts its orphans."""
    s = _scenario(tmp_path, 20_000, 20_000, child=True)
    done = _random_kills(s, tmp_path / "work", kills=100, seed=11, budget_s=3600)
    assert done["kills"] == 100 and done["before"] > 0
