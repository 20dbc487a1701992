"""How the Dask executor groups a query's partitions into tasks (no cluster needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed")

from skyshard.catalog.model import Partition  # noqa: E402
from skyshard.dispatch.dask_executor import balanced_groups, plan_batches  # noqa: E402
from skyshard.dispatch.executor import Executor  # noqa: E402
from skyshard.dispatch.local import LocalExecutor  # noqa: E402

WORKERS = ["tcp://127.0.0.1:1001", "tcp://127.0.0.1:1002"]


def test_local_executor_is_an_executor(sky_db):
    assert isinstance(sky_db.executor, LocalExecutor)
    assert isinstance(sky_db.executor, Executor)


@pytest.mark.parametrize("rows,k", [
    ([1] * 10, 3), ([100, 1, 1, 1, 1], 2), ([1, 1, 1, 1, 100], 2), ([5], 4), ([3, 3], 5),
    ([0, 0, 0, 0], 2), (list(range(1, 60)), 7),
])
def test_groups_are_contiguous_nonempty_and_cover(rows, k):
    parts = [Partition(3, i, rows=r) for i, r in enumerate(rows)]
    groups = balanced_groups(parts, k)
    assert [p for g in groups for p in g] == parts
    assert all(groups) and len(groups) == min(k, len(parts))


def test_groups_balance_rows():
    parts = [Partition(5, i, rows=r) for i, r in enumerate([10] * 40 + [30] * 10)]
    sizes = [sum(p.rows for p in g) for g in balanced_groups(parts, 2)]
    assert abs(sizes[0] - sizes[1]) <= 30


def test_full_scan_is_one_statement_per_worker(sky_db):
    plan = sky_db.plan("SELECT kind, AVG(gMag) FROM Object GROUP BY kind")
    batches, merge = plan_batches(plan, WORKERS)
    assert merge and len(batches) == 2
    assert {b.worker for b in batches} == set(WORKERS)
    assert all(len(b.statements) == 1 for b in batches)
    covered = [pr for b in batches for pr in b.partitions]
    assert sorted(covered) == sorted((p.order, p.pixel) for p in plan.partitions)
    assert len(set(covered)) == len(covered)


def test_orphans_are_read_by_exactly_one_statement(sky_db):
    plan = sky_db.plan("SELECT COUNT(*) FROM Source")
    batches, _ = plan_batches(plan, WORKERS, fragment_partitions=4)
    statements = [s for b in batches for s in b.statements]
    assert len(statements) > 2
    assert sum("orphans.parquet" in s for s in statements) == 1


def test_placement_is_stable(sky_db):
    plan = sky_db.plan("SELECT COUNT(*) FROM Object")
    first, _ = plan_batches(plan, WORKERS)
    again, _ = plan_batches(sky_db.plan("SELECT MAX(ra) FROM Object"), WORKERS)
    assert [(b.worker, b.partitions) for b in first] == [(b.worker, b.partitions) for b in again]


def test_small_or_unsplittable_queries_are_one_task(sky_db):
    cone = sky_db.plan("SELECT * FROM Object WHERE qserv_areaspec_circle(45, 10, 0.01)")
    assert len(cone.partitions) == 1
    batches, merge = plan_batches(cone, WORKERS)
    assert not merge and batches[0].statements == (cone.single_sql(),)
    window = sky_db.plan("SELECT objectId, ROW_NUMBER() OVER (ORDER BY gMag) FROM Object")
    assert window.split is None
    batches, merge = plan_batches(window, WORKERS, fragment_partitions=1)
    assert not merge and len(batches) == 1 and batches[0].statements == (window.single_sql(),)
    one_worker, merge = plan_batches(sky_db.plan("SELECT COUNT(*) FROM Object"), WORKERS[:1])
    assert not merge and len(one_worker) == 1
