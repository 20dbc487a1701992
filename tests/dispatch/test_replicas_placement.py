"""Shared-nothing placement without a cluster: which files form a unit, the placement
record, routing a query's partitions to holders, planning copies."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import replace

import pytest

pytest.importorskip("distributed")

from test_oracle import CASES

from skyshard.catalog.model import Partition
from skyshard.dispatch.dask_executor import replica_batches
from skyshard.dispatch.placement import (
    SHARED,
    Placement,
    Unit,
    catalog_units,
    cover,
    describe,
    plan_copies,
    rebase,
    statement_files,
    unit_key,
    unit_partition,
)
from skyshard.errors import (
    CatalogError,
    ExternalError,
    UnsupportedQueryError,
    UserError,
)
from skyshard.storage import layout

NN = ("SELECT COUNT(*) FROM Object o1, Object o2 WHERE scisql_angSep(o1.ra, o1.decl, o2.ra, "
      "o2.decl) < 0.01 AND o1.objectId <> o2.objectId")
JOINS = [("SELECT s.filterId, f.filterName, COUNT(*) FROM Source s JOIN Filter f "
         "ON s.filterId = f.filterId GROUP BY 1, 2"), NN]


@pytest.fixture(scope="module")
def ids(sky_tables):
    oids = sky_tables["Object"].column("objectId").to_pylist()
    orphan = sky_tables["Source"].column("objectId").to_pylist()[-1]
    return {"oid": oids[17], "oid2": oids[4000], "orphan": orphan}


@pytest.fixture(scope="module")
def units(sky_db):
    return catalog_units(sky_db.meta)


def test_units_hold_every_file_a_statement_reads(sky_db, sky_root, units, ids):
    """Whatever the planner renders (single, parallel, margins, orphans, replicated
    tables) names only files of some unit, and each partition file sits in its own
    pixel's unit."""
    owner = {f: k for k, (files, _) in units.items() for f in files}
    for sql in [c.format(**ids) for c in CASES if ";" not in c] + JOINS:  # no scripts
        plan = sky_db.plan(sql)
        statements = [plan.single_sql()]
        if plan.split is not None and plan.partitions:
            pairs = [(p.order, p.pixel) for p in plan.partitions]
            statements += [plan.parallel_sql(pairs[:3], orphans=True),
                           plan.parallel_sql(pairs[3:], orphans=False)]
        for s in statements:
            for f in statement_files(s, sky_root):
                assert f in owner, (sql, f)
                if owner[f] != SHARED:
                    assert layout.parse_partition_path(f) == unit_partition(owner[f])
    for files, _ in units.values():
        assert all((sky_root / f).is_file() for f in files)


def test_units_of_the_small_catalog(sky_db, units):
    shared = set(units[SHARED][0])
    assert {"Filter/Filter.parquet", "Source/orphans.parquet",
            "Object/Object/dataset/_common_metadata"} <= shared
    assert not any("Npix=" in f or "index" in f for f in shared)
    obj = sky_db.meta.table("Object")
    assert set(units) - {SHARED} == {unit_key(p.order, p.pixel) for p in obj.partitions}
    # Object, Source and (where the margin has it) the Object margin, rows of both tables.
    p = max(obj.partitions, key=lambda p: p.rows)
    files, rows = units[unit_key(p.order, p.pixel)]
    src = {(q.order, q.pixel): q.rows for q in sky_db.meta.table("Source").partitions}
    assert rows == p.rows + src[(p.order, p.pixel)]
    assert {f.split("/")[1] for f in files} <= {"Object", "Source", "Object_60arcs"}
    assert len(files) in (2, 3)


def test_tables_outside_the_root_cannot_be_placed(sky_db):
    meta = sky_db.meta
    outside = replace(meta.table("Object"), path="/elsewhere/Object/Object")
    with pytest.raises(UserError, match="outside the catalog root"):
        catalog_units(meta.with_table(outside))


def test_statement_paths_with_quotes_are_found_and_rebased():
    root = "/data/o'brien/cat"
    sql = ("SELECT * FROM read_parquet(['/data/o''brien/cat/T/T/dataset/Norder=1/Dir=0/"
           "Npix=5.parquet', '/data/o''brien/cat/F/F.parquet', '/other/x.parquet'])")
    assert statement_files(sql, root) == {"T/T/dataset/Norder=1/Dir=0/Npix=5.parquet",
                                          "F/F.parquet"}
    moved = rebase(sql, root, "/w/it's/c1")
    assert statement_files(moved, "/w/it's/c1") == statement_files(sql, root)
    assert "'/other/x.parquet'" in moved and "brien" not in moved


def test_record_round_trip(tmp_path, sky_root, sky_db):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(sky_root, root)
    placed = describe(root, sky_db.meta)
    assert placed.replication == 2 and placed.generation == sky_db.meta.generation
    key = placed.partition_units[0]
    placed = placed.with_holders({key: ("w1", "w0")})
    placed.save(root)
    back = Placement.load(root)
    assert back == placed and back.holders(key) == ("w1", "w0")
    f = next(iter(back.units[key].files))
    assert back.unit_of(f) == key and back.unit_of("nope") is None
    # Signatures are the files' sizes and checksums; reused while skyshard.json is unchanged.
    assert back.units[key].files[f][0] == (root / f).stat().st_size
    again = describe(root, sky_db.meta, back)
    assert again.catalog_id == back.catalog_id and again.holders(key) == ("w1", "w0")
    (root / "replicas.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(CatalogError, match="unsupported placement format"):
        Placement.load(root)


# --- routing ---------------------------------------------------------------------------


def _placement(parts: list[Partition], holders: dict[tuple[int, int], tuple[str, ...]],
               everyone: tuple[str, ...]) -> Placement:
    units = {unit_key(p.order, p.pixel): Unit({}, p.rows, holders[(p.order, p.pixel)])
             for p in parts}
    units[SHARED] = Unit({}, 0, everyone)
    return Placement("c", 2, units)


def _round_robin(parts, workers, r=2):
    cycle = itertools.cycle(itertools.combinations(workers, r))
    return {(p.order, p.pixel): next(cycle) for p in parts}


def test_cover_uses_holders_only_and_balances():
    parts = [Partition(5, i, rows=100 + (i * 37) % 250) for i in range(40)]
    workers = ("a", "b", "c", "d")
    pl = _placement(parts, _round_robin(parts, workers), workers)
    groups = cover(parts, pl, workers)
    got = [p for g in groups.values() for p in g]
    assert sorted(got, key=lambda p: p.pixel) == parts
    for w, g in groups.items():
        assert all(w in pl.holders(unit_key(p.order, p.pixel)) for p in g)
        assert [p.range29 for p in g] == sorted(p.range29 for p in g)
    loads = [sum(p.rows for p in g) for g in groups.values()]
    assert max(loads) - min(loads) <= max(p.rows for p in parts)
    assert cover(parts, pl, workers) == groups  # the same query, the same workers
    # Without "a", its partitions go to their other holders.
    groups = cover(parts, pl, ("b", "c", "d"))
    assert "a" not in groups and sum(len(g) for g in groups.values()) == len(parts)


def test_cover_names_partitions_without_a_live_holder():
    parts = [Partition(3, i, rows=5) for i in range(6)]
    pl = _placement(parts, _round_robin(parts, ("a", "b", "c")), ("a", "b", "c"))
    with pytest.raises(ExternalError) as info:
        cover(parts, pl, ["c"])
    lost = {(p.order, p.pixel) for p in parts
            if "c" not in pl.holders(unit_key(p.order, p.pixel))}
    assert set(info.value.partitions) == lost and lost
    o, p = min(lost)
    assert f"Norder={o}/Npix={p} (held by a, b)" in str(info.value)


def _sky_placement(sky_db, units, workers, r):
    parts = sorted(sky_db.meta.table("Object").partitions, key=lambda p: (p.order, p.pixel))
    holders = _round_robin(parts, workers, r)
    pl = Placement("c", r, {k: Unit({f: (0, "") for f in files}, rows,
                                    holders[unit_partition(k)] if k != SHARED else workers)
                            for k, (files, rows) in units.items()})
    return pl


def test_replica_batches_of_a_full_scan(sky_db, units):
    workers = ("a", "b", "c")
    pl = _sky_placement(sky_db, units, workers, 2)
    plan = sky_db.plan("SELECT COUNT(*), SUM(s.psfFlux) FROM Object o JOIN Source s "
                       "ON o.objectId = s.objectId")
    batches, merge = replica_batches(plan, pl, workers)
    assert merge and len(batches) == 3
    seen = Counter(k for b in batches for k in b.partitions)
    assert set(seen) == {(p.order, p.pixel) for p in plan.partitions} and max(seen.values()) == 1
    assert [b.orphans for b in batches].count(True) == 1
    for b in batches:
        assert {pl.unit_of(f) for f in b.files} <= {
            k for k in pl.units if b.worker in pl.holders(k)}
        assert set(b.files) == statement_files(b.statements[0], plan.root)
    # In fragments of 4 partitions: several statements per worker, orphans read once.
    batches, _ = replica_batches(plan, pl, workers, fragment_partitions=4)
    statements = [s for b in batches for s in b.statements]
    assert sum("orphans.parquet" in s for s in statements) == 1
    assert all(len(b.statements) == -(-len(b.partitions) // 4) for b in batches)


def test_replica_batches_of_small_and_unsplittable_queries(sky_db, units, ids):
    workers = ("a", "b", "c")
    pl = _sky_placement(sky_db, units, workers, 2)
    cone = sky_db.plan("SELECT COUNT(*) FROM Object WHERE qserv_areaspec_circle(45, 10, 0.01)")
    [b], merge = replica_batches(cone, pl, workers)
    assert not merge and b.partitions is None
    held = {k for k in pl.units if b.worker in pl.holders(k)}
    assert {pl.unit_of(f) for f in b.files} <= held
    sub = sky_db.plan("SELECT COUNT(*) FROM Object WHERE objectId IN "
                      "(SELECT objectId FROM Source WHERE filterId = 2)")
    with pytest.raises(UnsupportedQueryError, match="no single worker holds all"):
        replica_batches(sub, pl, workers)
    # Held whole by every worker (replication = workers): one worker runs it.
    full = _sky_placement(sky_db, units, workers, 3)
    [b], merge = replica_batches(sub, full, workers)
    assert not merge and b.worker in workers
    # A partition nobody live holds: named, never skipped.
    with pytest.raises(ExternalError) as info:
        replica_batches(sky_db.plan("SELECT COUNT(*) FROM Object"), pl, ["a"])
    assert info.value.partitions


# --- planning copies -----------------------------------------------------------------------


def _rows_placement(n: int) -> Placement:
    units = {unit_key(4, i): Unit({f"T/dataset/Norder=4/Dir=0/Npix={i}.parquet": (1, "x")},
                                  10 + i % 7) for i in range(n)}
    units[SHARED] = Unit({"F/F.parquet": (1, "y")})
    return Placement("c", 2, units)


def test_first_placement_spreads_replicas():
    pl = _rows_placement(30)
    out = plan_copies(pl, {}, ["w2", "w0", "w1"], replication=2, from_catalog=True)
    assert all(c.source is None for c in out.copies) and not out.unrepairable
    assert out.holders[SHARED] == ("w0", "w1", "w2")
    for key in pl.partition_units:
        assert len(set(out.holders[key])) == 2
    rows = Counter()
    for key in pl.partition_units:
        for w in out.holders[key]:
            rows[w] += pl.units[key].rows
    assert max(rows.values()) - min(rows.values()) <= 16
    # Nothing to do once it is all there.
    placed = pl.with_holders(out.holders)
    verified = {w: {k for k, hs in out.holders.items() if w in hs} for w in ("w0", "w1", "w2")}
    again = plan_copies(placed, verified, ["w0", "w1", "w2"], replication=2, from_catalog=True)
    assert again.copies == [] and again.holders == out.holders


def test_repair_restores_a_lost_worker_from_survivors():
    pl = _rows_placement(12)
    first = plan_copies(pl, {}, ["w0", "w1", "w2"], replication=2, from_catalog=True)
    placed = pl.with_holders(first.holders)
    verified = {w: {k for k, hs in first.holders.items() if w in hs} for w in ("w0", "w2")}
    verified["w1"] = set()  # w1 lost its directory
    out = plan_copies(placed, verified, ["w0", "w1", "w2"], replication=2, from_catalog=False)
    lost = {k for k, hs in first.holders.items() if "w1" in hs}
    assert {c.unit for c in out.copies} == lost
    assert all(c.target == "w1" and c.source in ("w0", "w2") for c in out.copies)
    assert out.holders == first.holders or all(
        set(out.holders[k]) == set(first.holders[k]) for k in first.holders)
    # w1 gone for good: its units go to the other live worker instead.
    out = plan_copies(placed, {w: verified[w] for w in ("w0", "w2")}, ["w0", "w2"],
                      replication=2, from_catalog=False)
    for c in out.copies:
        assert c.target in ("w0", "w2") and c.source in ("w0", "w2") and c.source != c.target
    for k in lost:
        assert {"w0", "w2"} <= set(out.holders[k]) and "w1" in out.holders[k]


def test_units_without_an_intact_copy_are_unrepairable():
    pl = _rows_placement(4)
    first = plan_copies(pl, {}, ["w0", "w1"], replication=2, from_catalog=True)
    placed = pl.with_holders(first.holders)
    out = plan_copies(placed, {"w0": set(), "w1": {SHARED}}, ["w0", "w1"], replication=2,
                      from_catalog=False)
    assert sorted(out.unrepairable) == sorted(pl.partition_units)
    assert {c.unit for c in out.copies} == {SHARED}


def test_a_stale_placement_is_named_not_guessed(sky_db, units):
    """Files the placement does not list (the catalog changed since): an error saying so."""
    workers = ("a", "b")
    pl = _sky_placement(sky_db, units, workers, 2)
    key = unit_key(*min((p.order, p.pixel) for p in sky_db.meta.table("Object").partitions))
    stale = Placement(pl.catalog_id, 2, {**pl.units, key: replace(pl.units[key], files={})})
    with pytest.raises(ExternalError, match="changed since it was placed"):
        replica_batches(sky_db.plan("SELECT COUNT(*) FROM Object"), stale, workers)


def test_bad_options_are_refused_before_any_cluster(sky_root):
    import skyshard
    from skyshard.dispatch.dask_executor import DaskExecutor

    with pytest.raises(UserError, match="needs workers or scheduler"):
        skyshard.open(sky_root, placement="replicas")
    with pytest.raises(UserError, match="'shared' or 'replicas'"):
        DaskExecutor(sky_root, workers=2, placement="copies")
    with pytest.raises(UserError, match="need placement='replicas'"):
        DaskExecutor(sky_root, workers=2, replication=2)
    with pytest.raises(UserError, match="replication 3 needs at least as many workers"):
        DaskExecutor(sky_root, workers=2, placement="replicas", replication=3)
    with pytest.raises(UserError, match="replica_dir is for a local cluster"):
        DaskExecutor(sky_root, scheduler="tcp://127.0.0.1:1", placement="replicas",
                     replica_dir="x")
