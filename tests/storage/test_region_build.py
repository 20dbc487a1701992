"""The commit writes a director table one sky region at a time when its rows do not fit
in the memory limit: built with a memory limit that forces many regions, the small sky
has exactly the files of a build in one region, and its increments land right.

Also the spool a director's rows wait in: grouped by sky region in small row groups
with ``_healpix_29`` statistics (what the regions' reads skip by), its keys in input
order in a file of their own (what key errors name rows by)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import skyshard
from skyshard.storage import contributions, incremental, layout, retiling, transactions

#: A region's share of the memory limit small enough that the small sky's Object table
#: (about 100 bytes a row) is cut into several regions: 1 GB / CPUs * 1e-5 = a few
#: thousand rows.
TIGHT = 1e-5


def _opts() -> skyshard.IngestOptions:
    return skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False,
                                  gc_grace_s=0)


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


def test_spool_grouped_by_region_and_keys_in_input_order(tmp_path, object_file, sky_tables):
    root = tmp_path / "c"
    tid = transactions.begin(root, "Object", ra="ra", dec="decl", key="objectId",
                                      options=_opts()).id
    transactions.add(root, tid, [object_file], show_progress=False)
    (folder,) = [d for d in (root / ".transactions" / tid).iterdir() if d.name.startswith("c")]
    spool = pq.ParquetFile(folder / contributions.SPOOL)
    assert spool.metadata.num_rows == sky_tables["Object"].num_rows
    assert spool.metadata.row_group(0).num_rows <= contributions.SPOOL_ROW_GROUP
    stats = [spool.metadata.row_group(i).column(0).statistics
             for i in range(spool.metadata.num_row_groups)]
    assert all(s is not None and s.has_min_max for s in stats)
    # regions ascend within a batch: row groups cover narrow, increasing ranges
    shift = 2 * (layout.HEALPIX_ORDER - contributions.SPOOL_REGION_ORDER)
    h = spool.read(columns=[layout.HEALPIX_COLUMN]).column(0).to_numpy()
    assert np.all(np.diff(h >> shift) >= 0)
    keys = pq.read_table(folder / contributions.KEYS)
    assert keys.column("objectId").equals(sky_tables["Object"].column("objectId"))
    spooled = spool.read(columns=["objectId"]).column(0).to_numpy()
    assert sorted(spooled) == sorted(sky_tables["Object"].column("objectId").to_numpy())
    transactions.abort(root, tid)


def test_sparse_histogram_sum_gives_the_dense_one(tmp_path, object_file):
    """Histograms above order 10 are summed and retiled sparsely; the small sky's
    order-7 one densely. Forcing the sparse path must give the same tiling."""
    dense = _build(tmp_path / "dense", [object_file])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retiling, "DENSE_ORDER", -1)
        sparse = _build(tmp_path / "sparse", [object_file])
    assert sparse.partitions == dense.partitions
