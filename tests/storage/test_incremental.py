"""Incremental ingest: the small sky loaded in three increments answers every oracle case
like the unpartitioned oracle, and its files obey the same invariants as a one-shot
build (rows in their partition, margins exact, director index right, children with
their director, orphans adopted when their director arrives)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_oracle import CASES, check

import skyshard
from skyshard.catalog.model import Partition
from skyshard.storage import incremental, layout, partitioning, retiling

OPTS = skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False,
                              gc_grace_s=0)
PARTS = 3


def _split(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, PARTS, n)


@pytest.fixture(scope="module")
def inc_root(tmp_path_factory, sky_tables) -> Path:
    """Object, Source and Filter loaded in three increments each, Source rows arriving
    before their Object row in about a third of the cases (orphans, adopted later)."""
    # Tiny regions: every commit sorts and writes several regions of the sky in parallel.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(incremental, "REGION_MEMORY_SHARE", 1e-5)
        base = tmp_path_factory.mktemp("incremental")
        root = base / "catalog"
        inputs = base / "inputs"
        inputs.mkdir()
        obj, src, flt = sky_tables["Object"], sky_tables["Source"], sky_tables["Filter"]
        po, ps, pf = _split(obj.num_rows, 1), _split(src.num_rows, 2), _split(flt.num_rows, 3)
        pf[0] = 0  # the first increment creates Filter
        for k in range(PARTS):
            o, s, f = (inputs / f"{n}{k}.parquet" for n in "osf")
            pq.write_table(obj.filter(pa.array(po == k)), o)
            pq.write_table(src.filter(pa.array(ps == k)), s)
            skyshard.ingest(root, "Object", [o], ra="ra", dec="decl", key="objectId", options=OPTS,
                            append=True)
            skyshard.ingest(root, "Source", [s], director="Object", director_key="objectId",
                            ra="ra", dec="decl", options=OPTS, append=True)
            if (pf == k).any():
                pq.write_table(flt.filter(pa.array(pf == k)), f)
                skyshard.ingest(root, "Filter", [f], replicated=True, options=OPTS, append=True)
    return root


@pytest.fixture(scope="module")
def inc_db(inc_root):
    return skyshard.open(inc_root)


@pytest.fixture(scope="module")
def inc_db_split(inc_root):
    return skyshard.open(inc_root, fragment_partitions=1)


@pytest.fixture(scope="module")
def ids(sky_tables):
    oids = sky_tables["Object"].column("objectId").to_pylist()
    orphan = sky_tables["Source"].column("objectId").to_pylist()[-1]
    return {"oid": oids[17], "oid2": oids[4000], "orphan": orphan}


@pytest.mark.parametrize("template", CASES)
def test_oracle_case_after_increments(inc_db, inc_db_split, oracle, ids, template):
    check(inc_db, inc_db_split, oracle, template.format(**ids))


def test_versions_and_splits(inc_db, sky_tables):
    obj, src, flt = (inc_db.tables[n] for n in ("Object", "Source", "Filter"))
    assert obj.version >= PARTS and obj.rows == sky_tables["Object"].num_rows
    assert src.rows == sky_tables["Source"].num_rows and src.orphan_rows == 37
    assert flt.version >= 2 and flt.rows == 6
    assert all(p.rows <= 400 or p.order == 7 for p in obj.partitions)
    assert obj.path == f"Object/v{obj.version}/Object"
    # the child follows its director's tiling exactly
    assert {(p.order, p.pixel) for p in src.partitions} <= {(p.order, p.pixel)
                                                            for p in obj.partitions}


def _rows(root: Path, info) -> pa.Table:
    files = sorted((root / info.path / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    assert len(files) == len(info.partitions)
    tables = []
    for f in files:
        order, pixel = layout.parse_partition_path(str(f))
        t = pq.read_table(f)
        h = t.column(0).to_numpy()
        assert np.all(np.diff(h) >= 0), f"{f} is not sorted"
        assert np.all(h >> (2 * (29 - order)) == pixel), f"{f} holds rows of other pixels"
        tables.append(t.append_column("Norder", pa.array([order] * t.num_rows, pa.int64()))
                       .append_column("Npix", pa.array([pixel] * t.num_rows, pa.int64())))
    return pa.concat_tables(tables)


def test_rows_partitions_and_index(inc_root, inc_db, sky_tables):
    info = inc_db.tables["Object"]
    rows = _rows(inc_root, info)
    assert sorted(rows.column("objectId").to_pylist()) == sorted(
        sky_tables["Object"].column("objectId").to_pylist())
    counts = {(p.order, p.pixel): p.rows for p in info.partitions}
    got: dict[tuple[int, int], int] = {}
    for o, p in zip(rows.column("Norder").to_pylist(), rows.column("Npix").to_pylist()):
        got[(o, p)] = got.get((o, p), 0) + 1
    assert got == counts
    idx = pq.read_table(inc_root / info.index_path)
    keys = idx.column("objectId").to_pylist()
    assert keys == sorted(keys) and len(keys) == info.rows
    home = dict(zip(rows.column("objectId").to_pylist(),
                    zip(rows.column("Norder").to_pylist(), rows.column("Npix").to_pylist())))
    for k, o, p in zip(keys, idx.column("Norder").to_pylist(), idx.column("Npix").to_pylist()):
        assert home[k] == (o, p)


def test_margins_are_exact(inc_root, inc_db):
    """Every margin file holds exactly the rows of other partitions in the pixels
    adjacent to its partition: what a one-shot build computes."""
    info = inc_db.tables["Object"]
    rows = _rows(inc_root, info)
    parts = list(info.partitions)
    order = partitioning.margin_order(info.margin_arcsec)
    pixels, owners = partitioning.margin_map(parts, order)
    h = rows.column(0).to_numpy()
    own = partitioning.locate(h, partitioning.starts29(parts), partitioning.ends29(parts))
    r, o = partitioning.margin_pairs(h, own, pixels, owners, order)
    ids = np.asarray(rows.column("objectId"))
    want: dict[tuple[int, int], set[int]] = {}
    for row, owner in zip(r, o):
        p = parts[owner]
        want.setdefault((p.order, p.pixel), set()).add(int(ids[row]))
    got = {}
    for f in sorted((inc_root / info.margin_path / "dataset").glob("Norder=*/Dir=*/*.parquet")):
        got[layout.parse_partition_path(str(f))] = set(
            pq.read_table(f, columns=["objectId"]).column(0).to_pylist())
    assert got == want
    assert {(p.order, p.pixel): p.rows for p in info.margin_partitions} == {
        k: len(v) for k, v in want.items()}


def test_children_live_with_their_director(inc_root, inc_db, sky_tables):
    obj = _rows(inc_root, inc_db.tables["Object"])
    home = dict(zip(obj.column("objectId").to_pylist(), obj.column(0).to_pylist()))
    info = inc_db.tables["Source"]
    src = _rows(inc_root, info)
    for h, oid in zip(src.column(0).to_pylist(), src.column("objectId").to_pylist()):
        assert home[oid] == h
    orphans = pq.read_table(inc_root / Path(info.path).parent / "orphans.parquet")
    assert orphans.num_rows == 37
    assert not set(orphans.column("objectId").to_pylist()) & set(home)
    assert src.num_rows + orphans.num_rows == sky_tables["Source"].num_rows


def test_hats_reads_the_current_version(inc_root, inc_db):
    hats = pytest.importorskip("hats")
    from hats.io.validation import is_valid_catalog

    info = inc_db.tables["Object"]
    cat = hats.read_hats(inc_root / "Object")
    assert len(cat.get_healpix_pixels()) == len(info.partitions)
    assert is_valid_catalog(inc_root / info.path, strict=True)


def test_untouched_partitions_are_linked_not_rewritten(tmp_path, sky_tables):
    """A small increment in one corner of the sky rewrites only the partitions it
    touches (and their margins); every other file of the new version is the old one."""
    root = tmp_path / "cat"
    obj = sky_tables["Object"]
    first = tmp_path / "a.parquet"
    pq.write_table(obj.slice(0, 5000), first)
    skyshard.ingest(root, "Object", [first], ra="ra", dec="decl", key="objectId", options=OPTS)
    before = skyshard.open(root).tables["Object"]
    old_files = {f.relative_to(root / before.path): f.stat().st_ino
                 for f in (root / before.path / "dataset").glob("Norder=*/Dir=*/*.parquet")}
    near = obj.slice(5000).filter(pa.array(
        np.abs(obj.slice(5000).column("decl").to_numpy() + 30) < 3))
    assert 10 < near.num_rows < 400
    more = tmp_path / "b.parquet"
    pq.write_table(near, more)
    skyshard.ingest(root, "Object", [more], options=OPTS, append=True)
    after = skyshard.open(root).tables["Object"]
    new_files = {f.relative_to(root / after.path): f.stat().st_ino
                 for f in (root / after.path / "dataset").glob("Norder=*/Dir=*/*.parquet")}
    shared = {k for k in new_files if old_files.get(k) == new_files[k]}
    assert len(shared) >= len(new_files) // 2
    assert len(shared) < len(new_files)


@pytest.mark.parametrize("seed", range(20))
def test_dense_and_sparse_retiling_agree(seed, monkeypatch):
    """retile's dense path (histograms up to retiling.DENSE_ORDER) gives the partitions of
    its sparse path, with kept partitions blocking their ancestors."""
    rng = np.random.default_rng(seed)
    order = int(rng.integers(2, 6))
    kept = sorted({Partition(int(k), int(rng.integers(0, 12 * 4 ** int(k))))
                   for k in rng.integers(0, order + 1, size=int(rng.integers(0, 4)))},
                  key=lambda p: p.range29[0])
    kept = [p for i, p in enumerate(kept)  # disjoint, as a tiling's partitions are
            if all(not (q.range29[0] <= p.range29[0] < q.range29[1]) for q in kept[:i])]
    cells = np.unique(rng.integers(0, 12 * 4 ** order, size=int(rng.integers(1, 400))))
    shift = partitioning.histogram_order_shift(order)
    inside = partitioning.locate(cells << shift, partitioning.starts29(kept),
                                 partitioning.ends29(kept)) >= 0
    cells = cells[~inside]
    counts = rng.integers(1, 60, size=len(cells))
    dense = retiling.retile(kept, cells, counts, order, 100)
    monkeypatch.setattr(retiling, "DENSE_ORDER", -1)
    assert retiling.retile(kept, cells, counts, order, 100) == dense
    assert sum(p.rows for p in dense) == counts.sum()


def test_free_sky_and_split_plan():
    """retiling.plan on its own: a partition that overflows splits, rows in empty sky
    get a new partition, an untouched partition keeps its name."""
    old = [Partition(1, 0, 300), Partition(1, 5, 100)]
    order = 3
    new_cells = np.array([0, 1, 40 * 4]) # two cells in (1, 0), one in (1, 10)
    new_counts = np.array([150, 100, 7])
    old_cells = (np.arange(16), np.full(16, 300 // 16 + 1))
    p = retiling.plan(old, new_cells, new_counts, order, 400, lambda q: old_cells)
    assert [(q.order, q.pixel) for q in p.split] == [(1, 0)]
    assert (1, 5) in {(q.order, q.pixel) for q in p.untouched}
    assert all(q.order >= 2 for q in p.tiling if q.range29[0] < Partition(1, 1).range29[0])
    assert any(q.range29[0] <= (40 * 4) << 2 * (29 - order) < q.range29[1] for q in p.written)
