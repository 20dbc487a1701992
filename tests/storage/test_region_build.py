"""The commit writes a director table one sky region at a time when its rows do not fit
in the memory limit: built with a memory limit that forces many regions, the small sky
has exactly the files of a build in one region, and its increments land right.

Also the spool a director's rows wait in: an Arrow IPC file of batches each sorted by
``_healpix_29`` (what the regions take their slices of), its keys in input order in a
file of their own (what key errors name rows by)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import skyshard
from skyshard.errors import InputError
from skyshard.storage import contributions, incremental, layout, retiling, transactions

#: A region's share of the memory limit small enough that the small sky's Object table
#: (about 100 bytes a row) is cut into several regions: 1 GB / CPUs * 1e-5 = a few
#: thousand rows.
TIGHT = 1e-5


def _opts(**more) -> skyshard.IngestOptions:
    return skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False,
                                  gc_grace_s=0, **more)


@pytest.fixture(scope="module")
def object_file(tmp_path_factory, sky_tables) -> Path:
    path = tmp_path_factory.mktemp("regions-input") / "Object.parquet"
    pq.write_table(sky_tables["Object"], path)
    return path


@pytest.fixture(scope="module")
def regions_seen(monkeypatch_module) -> list[int]:
    """How many regions each commit of this module cut its rows into."""
    seen: list[int] = []
    real = incremental._regions

    def spy(parts, max_rows):
        out = real(parts, max_rows)
        seen.append(len(out))
        return out

    monkeypatch_module.setattr(incremental, "_regions", spy)
    return seen


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _build(root: Path, files: list[Path], share: float | None = None, *,
           append: bool = False):
    with pytest.MonkeyPatch.context() as mp:
        if share is not None:
            mp.setattr(incremental, "REGION_MEMORY_SHARE", share)
        return skyshard.ingest(root, "Object", files, ra="ra", dec="decl", key="objectId",
                               options=_opts(), append=append)


def _files(root: Path, rel: str) -> dict[str, pa.Table]:
    base = root / rel / layout.DATASET
    return {str(f.relative_to(base)): pq.read_table(f)
            for f in sorted(base.rglob("*.parquet"))}


def _same_files(a: Path, b: Path, info_a, info_b) -> None:
    for rel_a, rel_b in [(info_a.path, info_b.path), (info_a.margin_path, info_b.margin_path)]:
        fa, fb = _files(a, rel_a), _files(b, rel_b)
        assert fa.keys() == fb.keys()
        for name in fa:
            assert fa[name].equals(fb[name]), name
    ia = pq.read_table(a / info_a.index_path)
    ib = pq.read_table(b / info_b.index_path)
    assert ia.sort_by([("objectId", "ascending")]).equals(ib.sort_by([("objectId", "ascending")]))


def test_many_regions_build_the_same_files(tmp_path, object_file, regions_seen):
    one = _build(tmp_path / "one", [object_file])
    assert regions_seen[-1] == 1
    many = _build(tmp_path / "many", [object_file], TIGHT)
    assert regions_seen[-1] >= 4, regions_seen
    assert many.partitions == one.partitions
    assert many.margin_partitions == one.margin_partitions
    _same_files(tmp_path / "one", tmp_path / "many", one, many)


def test_partition_larger_than_a_region_is_taken_in_ranges(tmp_path, object_file,
                                                           monkeypatch):
    """A partition with more rows than a region may hold is merged a range of
    ``_healpix_29`` at a time: the files are those of a build in one region, and an
    increment into it lands right."""
    one = _build(tmp_path / "one", [object_file])
    seen: list[int] = []
    ranges = incremental._ranges

    def spy(*args, **kwargs):
        out = ranges(*args, **kwargs)
        seen.append(len(out))
        return out

    monkeypatch.setattr(incremental, "_ranges", spy)
    monkeypatch.setattr(incremental, "MIN_RANGE_ROWS", 50)
    many = _build(tmp_path / "many", [object_file], TIGHT)
    assert max(seen) >= 4, seen
    _same_files(tmp_path / "one", tmp_path / "many", one, many)


def test_increments_in_many_regions(tmp_path, sky_tables, regions_seen):
    obj = sky_tables["Object"]
    part = np.random.default_rng(5).integers(0, 3, obj.num_rows)
    files = []
    for k in range(3):
        f = tmp_path / f"o{k}.parquet"
        pq.write_table(obj.filter(pa.array(part == k)), f)
        files.append(f)
    whole = _build(tmp_path / "whole", files)
    for k, f in enumerate(files):
        info = _build(tmp_path / "inc", [f], TIGHT, append=k > 0)
    assert max(regions_seen[-3:]) >= 2, regions_seen
    assert info.rows == obj.num_rows == whole.rows
    # The same rows with the same keys; an incremental tiling may differ from a one-shot
    # one, so compare rows, not files.
    db_inc, db_whole = skyshard.open(tmp_path / "inc"), skyshard.open(tmp_path / "whole")
    sql = "SELECT objectId, ra, decl FROM Object ORDER BY objectId"
    assert db_inc.sql(sql).equals(db_whole.sql(sql))
    cone = ("SELECT objectId FROM Object WHERE scisql_s2PtInCircle(ra, decl, 10, 10, 5) = 1 "
            "ORDER BY objectId")
    assert db_whole.sql(cone).num_rows > 0
    assert db_inc.sql(cone).equals(db_whole.sql(cone))


def test_duplicate_key_across_increments_in_regions(tmp_path, object_file, sky_tables):
    _build(tmp_path / "c", [object_file], TIGHT)
    dup = tmp_path / "dup.parquet"
    pq.write_table(sky_tables["Object"].slice(100, 3), dup)
    with pytest.raises(skyshard.IngestError, match="duplicate director keys"):
        _build(tmp_path / "c", [dup], TIGHT, append=True)
    assert skyshard.open(tmp_path / "c").tables["Object"].rows == sky_tables["Object"].num_rows


def _spooled(tmp_path: Path, object_file: Path) -> tuple[Path, str, Path]:
    """A transaction holding ``object_file`` added in batches of 1,000 rows: the
    catalog, the transaction and the contribution's folder."""
    root = tmp_path / "c"
    tid = transactions.begin(root, "Object", ra="ra", dec="decl", key="objectId",
                             options=_opts(batch_rows=1000)).id
    transactions.add(root, tid, [object_file], show_progress=False)
    (folder,) = [d for d in (root / ".transactions" / tid).iterdir() if d.name.startswith("c")]
    return root, tid, folder


def test_spool_sorted_by_batch_and_keys_in_input_order(tmp_path, object_file, sky_tables):
    """A director's spool is an Arrow IPC file whose batches are each sorted by
    ``_healpix_29``, holding every row once; its keys file keeps the input order; a
    range read returns exactly the rows in the range."""
    root, tid, folder = _spooled(tmp_path, object_file)
    spool = contributions.spool_file(folder)
    assert spool.name == contributions.DIRECTOR_SPOOL
    batches = list(contributions.read_spool(spool))
    assert len(batches) > 1
    for b in batches:
        h = b.column(0).to_numpy()
        assert np.all(h[1:] >= h[:-1])
    rows = pa.Table.from_batches(batches)
    assert rows.num_rows == sky_tables["Object"].num_rows
    assert sorted(rows.column("objectId").to_numpy()) == \
        sorted(sky_tables["Object"].column("objectId").to_numpy())
    h = rows.column(0).to_numpy()
    lo, hi = np.quantile(h, [0.3, 0.6]).astype(np.int64)
    part = pa.Table.from_batches(list(contributions.read_spool(spool, (int(lo), int(hi)))))
    assert part.num_rows == int(((h >= lo) & (h < hi)).sum())
    assert sorted(part.column("objectId").to_numpy()) == \
        sorted(rows.column("objectId").to_numpy()[(h >= lo) & (h < hi)])
    keys = pq.read_table(folder / contributions.KEYS)
    assert keys.column("objectId").equals(sky_tables["Object"].column("objectId"))
    transactions.abort(root, tid)


def test_sparse_histogram_sum_gives_the_dense_one(tmp_path, object_file):
    """Histograms above order 10 are summed and retiled sparsely; the small sky's
    order-7 one densely. Forcing the sparse path must give the same tiling."""
    dense = _build(tmp_path / "dense", [object_file])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retiling, "DENSE_ORDER", -1)
        sparse = _build(tmp_path / "sparse", [object_file])
    assert sparse.partitions == dense.partitions


def test_conform_director_spool_keeps_sorted_batches(tmp_path, object_file, sky_tables):
    """A director's spool recast to the table's schema (another contribution fixed it
    first) keeps its rows and its batches sorted; a value that does not fit names the
    file and column."""
    root, tid, folder = _spooled(tmp_path, object_file)
    have = contributions.spool_schema(folder)
    wider = pa.schema([pa.field(f.name, pa.float64()) if f.name == "ra" else f
                       for f in list(have)[1:]])
    contributions.conform_spool(folder, wider, "Object.parquet")
    assert contributions.spool_schema(folder).field("ra").type == pa.float64()
    batches = list(contributions.read_spool(contributions.spool_file(folder)))
    assert sum(b.num_rows for b in batches) == sky_tables["Object"].num_rows
    assert all(np.all(np.diff(b.column(0).to_numpy()) >= 0) for b in batches)
    narrow = pa.schema([pa.field(f.name, pa.int8()) if f.name == "objectId" else f
                        for f in wider])
    with pytest.raises(InputError, match="Object.parquet, column 'objectId'"):
        contributions.conform_spool(folder, narrow, "Object.parquet")
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) == []
    transactions.abort(root, tid)
