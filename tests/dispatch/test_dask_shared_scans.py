"""Shared scans on a Dask cluster: concurrent full scans meet in the workers' convoys
(each worker gets the same partitions every time) and get the rows each would get alone;
a worker killed during a shared scan changes nothing in the answers."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402
from test_dask_executor import _kill_a_busy_worker  # noqa: E402
from test_shared_scans import (  # noqa: E402
    OBJECT_QUERIES,
    SOURCE_QUERIES,
    check_same,
    finish,
    run_all,
)

from skyshard.dispatch.dask_executor import DaskExecutor, scan_batches  # noqa: E402
from skyshard.dispatch.local import LocalExecutor  # noqa: E402
from skyshard.dispatch.scans import SharedScans, rides  # noqa: E402
from skyshard.errors import UserError  # noqa: E402

#: Units of 1000 rows (the test sky's Object has 6000), any table size, every unit two
#: queries need read once for them, and a wait long enough for queries sent together
#: to board a convoy's first unit together on each worker.
OPTIONS = {"unit_rows": 1000, "min_rows": 0, "min_overlap": 0, "gather_s": 1.5}


@pytest.fixture
def alone(sky_db):
    return LocalExecutor(sky_db.engine, shared_scans=False)


@pytest.fixture(scope="module")
def scan_ex(sky_root):
    with DaskExecutor(sky_root, workers=2, shared_scans=True, scan_options=OPTIONS) as ex:
        yield ex


def totals(ex: DaskExecutor) -> dict[str, int]:
    out: dict[str, int] = {}
    for stats in ex.scan_stats().values():
        for k, v in stats.items():
            out[k] = out.get(k, 0) + v
    return out


def test_scans_go_to_the_same_workers_every_time(sky_db):
    plan = sky_db.plan(OBJECT_QUERIES[0])
    info = rides(plan, 0)
    workers = ["tcp://10.0.0.1:1", "tcp://10.0.0.2:1"]
    first = scan_batches(plan, info, workers)
    again = scan_batches(sky_db.plan(OBJECT_QUERIES[1]), info, workers)
    assert [(b.worker, b.partitions) for b in first] == [(b.worker, b.partitions) for b in again]
    assert {b.worker for b in first} == set(workers)
    covered = sorted(pp for b in first for pp in b.partitions)
    assert covered == sorted((p.order, p.pixel) for p in info.partitions)
    # the request covers its batch's partitions; the orphans go in one batch only
    assert all([(p.order, p.pixel) for p in b.request.parts] == list(b.partitions) for b in first)
    source = sky_db.plan(SOURCE_QUERIES[0])
    batches = scan_batches(source, rides(source, 0), workers)
    assert sum(b.orphans is not None for b in batches) == 1


@pytest.mark.parametrize("sqls", [OBJECT_QUERIES[:4], SOURCE_QUERIES], ids=["Object", "Source"])
def test_concurrent_full_scans_share_reads_on_the_workers(sky_db, alone, scan_ex, sqls):
    before = totals(scan_ex)
    threads, out = run_all(scan_ex, sky_db, sqls)
    finish(threads)
    for got, sql in zip(out, sqls):
        check_same(got, sql, sky_db, alone)
    after = totals(scan_ex)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta["queries"] == 2 * len(sqls)  # one task per worker per query
    assert delta["shared_reads"] > 0
    # Every unit of every query's group was handed to it once.
    plan = sky_db.plan(sqls[0])
    cutter = SharedScans(None, **OPTIONS)
    units = sum(len(cutter.units(b.request))
                for b in scan_batches(plan, rides(plan, 0), scan_ex.workers()))
    assert delta["served"] == len(sqls) * units


def test_a_lone_full_scan_reads_its_own_files(sky_db, alone, scan_ex):
    before = totals(scan_ex)
    check_same(scan_ex.run(sky_db.plan(OBJECT_QUERIES[1])), OBJECT_QUERIES[1], sky_db, alone)
    after = totals(scan_ex)
    assert after["shared_reads"] == before.get("shared_reads", 0)
    assert after["queries"] - before.get("queries", 0) == 2
    # on each worker: its first unit alone (waiting for company), then the rest at once
    assert after["own_reads"] - before.get("own_reads", 0) >= 2


def test_off_by_default(sky_root, sky_db, alone):
    with DaskExecutor(sky_root, workers=1) as ex:
        check_same(ex.run(sky_db.plan(OBJECT_QUERIES[0])), OBJECT_QUERIES[0], sky_db, alone)
        assert all(not stats for stats in ex.scan_stats().values())


def _slow_scans(marks: str, seconds: float) -> None:
    """On a worker: every shared pass of a convoy notes that it started, then sleeps
    first (so that a worker can be killed in the middle of a convoy)."""
    from skyshard.dispatch.scans import SharedScans

    original = SharedScans._shared_pass

    def slow(*args, **kwargs):
        Path(marks, f"started-{os.getpid()}-{time.monotonic_ns()}").touch()
        time.sleep(seconds)
        return original(*args, **kwargs)

    SharedScans._shared_pass = slow


class SlowScans(WorkerPlugin):
    def __init__(self, marks: str, seconds: float) -> None:
        self.marks, self.seconds = marks, seconds

    def setup(self, worker) -> None:
        _slow_scans(self.marks, self.seconds)


def test_a_worker_killed_during_shared_scans_changes_no_answer(sky_root, sky_db, alone,
                                                              tmp_path):
    """Killed inside a shared pass: the scan tasks of that worker run again elsewhere
    (riding the survivor's convoy, which may be mid-scan), and every answer is whole."""
    sqls = OBJECT_QUERIES[:3]
    with DaskExecutor(sky_root, workers=2, shared_scans=True, scan_options=OPTIONS) as ex:
        ex.client.register_plugin(SlowScans(str(tmp_path), 1.0))
        threads, out = run_all(ex, sky_db, sqls)
        victim = _kill_a_busy_worker(ex, tmp_path)
        finish(threads)
        for got, sql in zip(out, sqls):
            check_same(got, sql, sky_db, alone)
        assert victim not in set(ex.client.run(os.getpid).values())


def test_shared_scans_on_replicas(sky_root, sky_db, alone, tmp_path):
    """Shared-nothing mode: each task rides its worker's convoy over its own copy (the
    workers' engines may read nothing else)."""
    root = tmp_path / "catalog"
    shutil.copytree(sky_root, root)
    sqls = OBJECT_QUERIES[:3] + SOURCE_QUERIES[:1]
    with DaskExecutor(root, workers=2, placement="replicas", replica_dir=tmp_path / "copies",
                      shared_scans=True, scan_options=OPTIONS) as ex:
        threads, out = run_all(ex, sky_db, sqls)
        finish(threads)
        for got, sql in zip(out, sqls):
            check_same(got, sql, sky_db, alone)
        stats = totals(ex)
    assert stats["queries"] >= len(sqls) and stats["shared_reads"] > 0


@pytest.mark.parametrize("options, message", [
    ({"unit_rowz": 1000}, "unexpected keyword argument 'unit_rowz'"),
    ({"unit_rows": 0}, "unit_rows must be >= 1"),
])
def test_bad_scan_options_are_refused_before_anything_starts(sky_root, options, message):
    with pytest.raises(UserError, match=message):
        DaskExecutor(sky_root, workers=1, shared_scans=True, scan_options=options)
