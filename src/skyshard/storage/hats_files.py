"""The small files that make a directory of partitions a HATS catalog.

``hats.properties`` (and its copy ``properties``), ``partition_info.csv``,
``dataset/_common_metadata`` and ``dataset/_metadata``; plus ``collection.properties``
for a table's collection (primary + margin + index). Readers are here too, so an
existing HATS catalog written by hats-import can be served in place.

>>> text = properties_text({"obs_collection": "Object", "hats_nrows": 3})
>>> parse_properties(text)["hats_nrows"]
'3'
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from skyshard import __version__
from skyshard.catalog.model import Partition
from skyshard.errors import CatalogError
from skyshard.storage import layout

#: Parquet settings for every data file: plain snappy scans fastest in DuckDB here for
#: numbers; strings keep dictionary encoding (GROUP BY on them is ~3x faster).
WRITE_OPTIONS = dict(compression="snappy", write_statistics=True)
#: Small row groups: rows are sorted by _healpix_29, so a cone or an id lookup reads only
#: the few row groups whose _healpix_29 range it needs.
ROW_GROUP_ROWS = 16_384


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: strings."""
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def write_options(schema: pa.Schema) -> dict:
    return dict(WRITE_OPTIONS, use_dictionary=dictionary_columns(schema))


def properties_text(props: Mapping[str, object]) -> str:
    lines = ["#HATS catalog"] + [f"{k}={v}" for k, v in props.items() if v is not None]
    return "\n".join(lines) + "\n"


def parse_properties(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def read_properties(catalog_dir: str | os.PathLike) -> dict[str, str]:
    for name in (layout.PROPERTIES, "properties", layout.COLLECTION_PROPERTIES):
        p = Path(catalog_dir) / name
        if p.exists():
            return parse_properties(p.read_text())
    raise CatalogError(f"{catalog_dir}: no hats.properties, properties or collection.properties")


def write_properties(catalog_dir: Path, props: Mapping[str, object]) -> None:
    text = properties_text(props)
    (catalog_dir / layout.PROPERTIES).write_text(text)
    (catalog_dir / "properties").write_text(text)


def provenance() -> dict[str, str]:
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "hats_builder": f"skyshard v{__version__}",
        "hats_creation_date": now.strftime("%Y-%m-%dT%H:%MUTC"),
        "hats_estsize": "0",
        "hats_release_date": "2025-08-22",
        "hats_version": "v1.0",
    }


def object_properties(
    name: str, nrows: int, ra: str, dec: str, partitions: list[Partition], *, kind: str = "object"
) -> dict[str, object]:
    max_order = max((p.order for p in partitions), default=0)
    return {
        "obs_collection": name,
        "dataproduct_type": kind,
        "hats_nrows": nrows,
        "hats_col_ra": ra,
        "hats_col_dec": dec,
        "hats_col_healpix": layout.HEALPIX_COLUMN,
        "hats_col_healpix_order": layout.HEALPIX_ORDER,
        "hats_npix_suffix": ".parquet",
        "hats_order": max_order,
        **provenance(),
    }


def write_partition_info(catalog_dir: Path, partitions: Iterable[Partition]) -> None:
    rows = ["Norder,Npix"] + [f"{p.order},{p.pixel}" for p in partitions]
    (catalog_dir / layout.PARTITION_INFO).write_text("\n".join(rows) + "\n")


def read_partition_info(catalog_dir: Path) -> list[tuple[int, int]]:
    path = catalog_dir / layout.PARTITION_INFO
    if path.exists():
        lines = path.read_text().split()
        header = [h.strip() for h in lines[0].split(",")]
        io, ip = header.index("Norder"), header.index("Npix")
        return [(int(r.split(",")[io]), int(r.split(",")[ip])) for r in lines[1:] if r]
    dataset = catalog_dir / layout.DATASET
    found = sorted(
        layout.parse_partition_path(str(p.relative_to(dataset)))
        for p in dataset.glob("Norder=*/Dir=*/Npix=*")
    )
    if not found:
        raise CatalogError(f"{catalog_dir}: no partition_info.csv and no partition files")
    return found


def write_dataset_metadata(
    catalog_dir: Path, schema: pa.Schema, files: Iterable[tuple[str, pq.FileMetaData]]
) -> None:
    """``_common_metadata`` (schema) and ``_metadata`` (every row group, relative paths)."""
    dataset = catalog_dir / layout.DATASET
    dataset.mkdir(parents=True, exist_ok=True)
    pq.write_metadata(schema, dataset / "_common_metadata")
    collected = []
    for rel, md in files:
        md.set_file_path(rel)
        collected.append(md)
    pq.write_metadata(schema, dataset / "_metadata", metadata_collector=collected)


def write_collection(
    collection_dir: Path, name: str, *, margin: str | None, index: tuple[str, str] | None
) -> None:
    props: dict[str, object] = {"obs_collection": name, "hats_primary_table_url": name}
    if margin:
        props["all_margins"] = margin
        props["default_margin"] = margin
    if index:
        props["all_indexes"] = f"{index[0]} {index[1]}"
        props["default_index"] = index[0]
    props.update(provenance())
    text = properties_text(props).replace("#HATS catalog", "#HATS collection")
    (collection_dir / layout.COLLECTION_PROPERTIES).write_text(text)
