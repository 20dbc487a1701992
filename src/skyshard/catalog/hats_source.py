"""Serve a HATS catalog or collection (as hats-import writes them) without re-ingesting.

``describe(path)`` reads the properties, partition list and schema and returns a
one-table catalog description pointing at the files in place. A collection brings its
default margin and its default index (used as the director index).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from skyshard.catalog.model import CatalogMeta, Partition, TableInfo, TableKind
from skyshard.errors import CatalogError
from skyshard.storage import hats_files, layout


def describe(path: str | Path) -> CatalogMeta:
    root = Path(path).resolve()
    if (root / layout.COLLECTION_PROPERTIES).exists():
        props = hats_files.parse_properties((root / layout.COLLECTION_PROPERTIES).read_text())
        primary = root / props.get("hats_primary_table_url", "")
        margin = props.get("default_margin")
        index = props.get("default_index")
        index_dir = None
        if index:
            for pair in _pairs(props.get("all_indexes", "")):
                if pair[0] == index:
                    index_dir = root / pair[1]
        info = _table(primary, root / margin if margin else None, index_dir)
    elif (root / layout.PROPERTIES).exists() or (root / "properties").exists():
        info = _table(root, None, None)
    else:
        raise CatalogError(
            f"{root}: neither a skyshard catalog (skyshard.json) nor a HATS catalog "
            "(hats.properties or collection.properties)")
    return CatalogMeta(info.name, {info.name: info})


def _pairs(text: str) -> list[tuple[str, str]]:
    items = text.split()
    return list(zip(items[0::2], items[1::2]))


def _table(primary: Path, margin: Path | None, index_dir: Path | None) -> TableInfo:
    props = hats_files.read_properties(primary)
    kind = props.get("dataproduct_type", "object")
    if kind not in ("object", "source"):
        raise CatalogError(f"{primary}: a {kind!r} catalog cannot be served as a table")
    name = props.get("obs_collection") or primary.name
    ra, dec = props.get("hats_col_ra"), props.get("hats_col_dec")
    schema_file = primary / layout.DATASET / "_common_metadata"
    if not schema_file.exists():
        schema_file = primary / layout.DATASET / "_metadata"
    schema = pq.read_schema(schema_file)
    counts = _row_counts(primary)
    parts = tuple(
        Partition(o, p, counts.get((o, p), 0))
        for o, p in sorted(hats_files.read_partition_info(primary),
                           key=lambda op: layout.pixel_range29(*op)[0])
    )
    columns = tuple((f.name, str(f.type)) for f in schema if f.name != layout.HEALPIX_COLUMN
                    and f.name not in ("Norder", "Dir", "Npix"))
    key = None
    index_path = None
    if index_dir is not None:
        iprops = hats_files.read_properties(index_dir)
        key = iprops.get("hats_index_column")
        index_path = str(index_dir / layout.DATASET / "index" / "*.parquet")
    margin_parts: tuple[Partition, ...] = ()
    margin_arcsec = None
    if margin is not None:
        mprops = hats_files.read_properties(margin)
        margin_arcsec = float(mprops.get("hats_margin_threshold", 0) or 0)
        margin_parts = tuple(Partition(o, p) for o, p in hats_files.read_partition_info(margin))
    return TableInfo(
        name=name, kind=TableKind.DIRECTOR, columns=columns, ra=ra, dec=dec, key=key,
        path=str(primary), margin_path=str(margin) if margin else None,
        margin_arcsec=margin_arcsec, margin_partitions=margin_parts,
        index_path=index_path, partitions=parts, rows=sum(counts.values()),
    )


def _row_counts(primary: Path) -> dict[tuple[int, int], int]:
    md_path = primary / layout.DATASET / "_metadata"
    if not md_path.exists():
        return {}
    md = pq.read_metadata(md_path)
    out: dict[tuple[int, int], int] = {}
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        try:
            key = layout.parse_partition_path(rg.column(0).file_path)
        except ValueError:
            continue
        out[key] = out.get(key, 0) + rg.num_rows
    return out
