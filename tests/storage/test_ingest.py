"""Ingest: partitions, margins, director index, HATS compatibility, atomic failure."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import skyshard
from skyshard.errors import IngestError, InputError
from skyshard.storage import layout

OPTS = skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False)


def partition_files(root: Path, table: str) -> list[Path]:
    return sorted((root / table / table / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))


def test_director_layout_and_row_conservation(sky_root, sky_tables):
    files = partition_files(sky_root, "Object")
    assert len(files) > 20
    total = 0
    for f in files:
        order, pixel = layout.parse_partition_path(str(f))
        t = pq.read_table(f)
        assert t.column_names[0] == "_healpix_29"
        h = t.column(0).to_numpy()
        assert np.all(np.diff(h) >= 0), f"{f} is not sorted by _healpix_29"
        assert np.all(h >> (2 * (29 - order)) == pixel), f"{f} holds rows of other pixels"
        assert t.num_rows <= 400 or order == 7
        total += t.num_rows
    assert total == sky_tables["Object"].num_rows
    ids = sorted(pa.concat_tables([pq.read_table(f) for f in files]).column("objectId").to_pylist())
    assert ids == sorted(sky_tables["Object"].column("objectId").to_pylist())
    props = (sky_root / "Object" / "Object" / "hats.properties").read_text()
    assert "dataproduct_type=object" in props and "hats_nrows=6000" in props


def test_child_rows_live_with_their_director(sky_root, sky_tables):
    obj = pa.concat_tables([pq.read_table(f).append_column(
        "part", pa.array([str(f.name)] * pq.read_metadata(f).num_rows))
        for f in partition_files(sky_root, "Object")])
    home = dict(zip(obj.column("objectId").to_pylist(), obj.column("_healpix_29").to_pylist()))
    n = 0
    for f in partition_files(sky_root, "Source"):
        order, pixel = layout.parse_partition_path(str(f))
        t = pq.read_table(f, columns=["_healpix_29", "objectId"])
        for h, oid in zip(t.column(0).to_pylist(), t.column(1).to_pylist()):
            assert home[oid] == h
        n += t.num_rows
    orphans = pq.read_table(sky_root / "Source" / "orphans.parquet")
    assert orphans.num_rows == 37
    assert n + orphans.num_rows == sky_tables["Source"].num_rows


def test_margin_holds_every_close_neighbour(sky_root, sky_tables):
    """Brute force: every pair of objects closer than the margin, in different partitions,
    appears in each other's margin."""
    import duckdb

    from skyshard.engine.macros import install

    info = skyshard.open(sky_root).tables["Object"]
    parts = {}
    for f in partition_files(sky_root, "Object"):
        for oid in pq.read_table(f, columns=["objectId"]).column(0).to_pylist():
            parts[oid] = layout.parse_partition_path(str(f))
    margin_dir = sky_root / info.margin_path
    margins: dict[tuple[int, int], set[int]] = {}
    for f in sorted((margin_dir / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet")):
        margins[layout.parse_partition_path(str(f))] = set(
            pq.read_table(f, columns=["objectId"]).column(0).to_pylist())
    con = duckdb.connect()
    install(con)
    con.register("o", sky_tables["Object"].select(["objectId", "ra", "decl"]))
    r = info.margin_arcsec / 3600
    pairs = con.sql(
        f"SELECT a.objectId, b.objectId FROM o a, o b WHERE a.objectId <> b.objectId "
        f"AND abs(a.decl - b.decl) < {r} AND scisql_angSep(a.ra, a.decl, b.ra, b.decl) < {r}").fetchall()
    checked = 0
    for a, b in pairs:
        if parts[a] != parts[b]:
            assert b in margins.get(parts[a], set()), f"{b} missing from margin of {parts[a]}"
            checked += 1
    assert checked > 0, "the test data should have close pairs across partitions"


def test_director_index(sky_root, sky_tables):
    info = skyshard.open(sky_root).tables["Object"]
    idx = pq.read_table(sky_root / info.index_path)
    keys = idx.column("objectId").to_pylist()
    assert keys == sorted(keys)
    assert len(keys) == sky_tables["Object"].num_rows


def test_hats_reads_what_we_write(sky_root):
    hats = pytest.importorskip("hats")
    from hats.io.validation import is_valid_catalog

    cat = hats.read_hats(sky_root / "Object")
    assert len(cat.get_healpix_pixels()) == len(partition_files(sky_root, "Object"))
    assert is_valid_catalog(sky_root / "Object" / "Object", strict=True)


def test_lsdb_cone_matches(sky_root, sky_db):
    lsdb = pytest.importorskip("lsdb")
    cat = lsdb.open_catalog(sky_root / "Object")
    got = cat.cone_search(ra=45, dec=10, radius_arcsec=1800).compute()
    ours = sky_db.sql("SELECT objectId FROM Object WHERE qserv_areaspec_circle(45, 10, 0.5)")
    assert sorted(got["objectId"].tolist()) == sorted(ours.column(0).to_pylist())
    assert len(got) > 50


def test_serve_hats_catalog_in_place(tmp_path, sky_tables):
    lsdb = pytest.importorskip("lsdb")
    df = sky_tables["Object"].to_pandas()
    cat = lsdb.from_dataframe(df, ra_column="ra", dec_column="decl", partition_rows=500)
    out = tmp_path / "lsdb_object"
    cat.write_catalog(out, catalog_name="ObjectCopy")
    db = skyshard.open(out)
    assert list(db.tables) == ["ObjectCopy"]
    n = db.sql("SELECT COUNT(*) AS n FROM ObjectCopy").column(0)[0].as_py()
    assert n == 6000
    cone = db.sql("SELECT objectId FROM ObjectCopy WHERE qserv_areaspec_circle(45, 10, 0.5)")
    want = skyshard_brute_cone(sky_tables["Object"], 45, 10, 0.5)
    assert sorted(cone.column(0).to_pylist()) == want


def skyshard_brute_cone(t: pa.Table, ra0: float, dec0: float, r: float) -> list[int]:
    from skyshard.sphere.regions import angular_separation_deg

    d = angular_separation_deg(t.column("ra").to_numpy(), t.column("decl").to_numpy(), ra0, dec0)
    return sorted(np.asarray(t.column("objectId"))[d <= r].tolist())


# --- failures leave the catalog exactly as it was ---------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def small_catalog(tmp_path, sky_tables) -> Path:
    root = tmp_path / "cat"
    src = tmp_path / "obj.parquet"
    pq.write_table(sky_tables["Object"].slice(0, 500), src)
    skyshard.ingest(root, "Object", [src], ra="ra", dec="decl", key="objectId", options=OPTS)
    return root


def test_bad_row_names_file_line_column_and_changes_nothing(small_catalog, tmp_path):
    before = snapshot(small_catalog)
    bad = tmp_path / "bad.csv"
    bad.write_text("sourceId,objectId,flux\n1,100,1.5\n2,abc,2.5\n")
    schema = pa.schema([("sourceId", pa.int64()), ("objectId", pa.int64()), ("flux", pa.float64())])
    with pytest.raises(InputError) as info:
        skyshard.ingest(small_catalog, "Source", [bad], director="Object", director_key="objectId",
                        schema=schema, options=OPTS)
    err = info.value
    assert (Path(err.path).name, err.line, err.column) == ("bad.csv", 3, "objectId")
    assert snapshot(small_catalog) == before
    assert not (small_catalog / layout.STAGING).exists()


def test_unknown_column_is_named(small_catalog, tmp_path, sky_tables):
    before = snapshot(small_catalog)
    src = tmp_path / "other.parquet"
    pq.write_table(sky_tables["Object"].slice(0, 10), src)
    with pytest.raises(InputError) as info:
        skyshard.ingest(small_catalog, "Object2", [src], ra="ra", dec="dec_missing", key="objectId",
                        options=OPTS)
    assert info.value.column == "dec_missing"
    assert snapshot(small_catalog) == before


def test_duplicate_director_keys_refused(small_catalog, tmp_path, sky_tables):
    before = snapshot(small_catalog)
    t = sky_tables["Object"].slice(0, 10)
    src = tmp_path / "dups.parquet"
    pq.write_table(pa.concat_tables([t, t.slice(0, 2)]), src)
    with pytest.raises(IngestError, match="duplicate director keys"):
        skyshard.ingest(small_catalog, "Dup", [src], ra="ra", dec="decl", key="objectId", options=OPTS)
    assert snapshot(small_catalog) == before
    opts = skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False,
                                  allow_duplicate_keys=True)
    info = skyshard.ingest(small_catalog, "Dup", [src], ra="ra", dec="decl", key="objectId", options=opts)
    assert info.rows == 12


def test_existing_table_refused(small_catalog, tmp_path, sky_tables):
    src = tmp_path / "o.parquet"
    pq.write_table(sky_tables["Object"].slice(0, 10), src)
    with pytest.raises(IngestError, match="already exists"):
        skyshard.ingest(small_catalog, "object", [src], ra="ra", dec="decl", key="objectId", options=OPTS)


def test_mysqldump_text_with_schema(tmp_path):
    schema_file = tmp_path / "T.schema"
    schema_file.write_text("CREATE TABLE `T` (\n  `id` bigint(20) NOT NULL,\n  `ra` double NOT NULL,\n"
                           "  `decl` double NOT NULL,\n  `note` varchar(20) DEFAULT NULL,\n"
                           "  PRIMARY KEY (`id`)\n) ENGINE=MyISAM DEFAULT CHARSET=latin1;\n")
    data = tmp_path / "T.tsv"
    data.write_bytes(b"1\t10.5\t-3.25\t\\N\n2\t11.5\t-3.5\ttab\\there\n3\t359.9\t0.0\tline\\\nbreak\n")
    root = tmp_path / "cat"
    info = skyshard.ingest(root, "T", [data], ra="ra", dec="decl", key="id", schema=schema_file,
                           options=OPTS)
    assert info.rows == 3
    got = skyshard.open(root).sql("SELECT id, note FROM T ORDER BY id").to_pylist()
    assert got == [{"id": 1, "note": None}, {"id": 2, "note": "tab\there"},
                   {"id": 3, "note": "line\nbreak"}]


def test_margins_spooled_early_are_the_same(sky_root, sky_tables, tmp_path, monkeypatch):
    """With a tiny in-memory margin budget (every few rows spooled to disk) the margin
    files hold exactly the rows of the default build."""
    from skyshard.storage import writers

    monkeypatch.setattr(writers, "MARGIN_BUFFER_ROWS", 7)
    root = tmp_path / "catalog"
    source = tmp_path / "Object.parquet"
    pq.write_table(sky_tables["Object"], source)
    opts = skyshard.IngestOptions(max_rows_per_partition=400, max_order=7, progress=False)
    skyshard.ingest(root, "Object", [source], ra="ra", dec="decl", key="objectId", options=opts)

    def margins(catalog: Path) -> dict[str, list[int]]:
        info = skyshard.open(catalog).tables["Object"]
        files = sorted((catalog / info.margin_path / "dataset").glob("Norder=*/Dir=*/*.parquet"))
        return {str(f.relative_to(catalog / info.margin_path)):
                sorted(pq.read_table(f, columns=["objectId"]).column(0).to_pylist())
                for f in files}

    small = margins(root)
    assert small == margins(sky_root)
    assert sum(len(v) for v in small.values()) > 7
