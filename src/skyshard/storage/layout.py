"""HATS path conventions, in one place.

A skyshard catalog directory holds one HATS *collection* per partitioned table::

    CATALOG/
      skyshard.json                       table roles (see catalog.model)
      Object/                             collection.properties
        Object/                           primary HATS catalog
          hats.properties, properties, partition_info.csv
          dataset/_metadata, dataset/_common_metadata
          dataset/Norder=K/Dir=D/Npix=N.parquet
        Object_60arcs/                    margin catalog (same layout)
        Object_objectId_index/            index catalog: dataset/index/part.0.parquet
      Filter/Filter.parquet               replicated table, stored whole

>>> partition_path("dataset", 3, 123456)
'dataset/Norder=3/Dir=120000/Npix=123456.parquet'
>>> pixel_range29(0, 4)
(1152921504606846976, 1441151880758558720)
"""

from __future__ import annotations

import os
import re

HEALPIX_COLUMN = "_healpix_29"
HEALPIX_ORDER = 29
DATASET = "dataset"
PROPERTIES = "hats.properties"
COLLECTION_PROPERTIES = "collection.properties"
PARTITION_INFO = "partition_info.csv"
CATALOG_META = "skyshard.json"
STAGING = ".staging"

_PATH_RE = re.compile(r".*Norder=(\d+).*Npix=(\d+)")


def pixel_directory(pixel: int) -> int:
    """The ``Dir=`` bucket of a pixel: pixels are grouped by ten thousands."""
    return (pixel // 10_000) * 10_000


def partition_path(root: str, order: int, pixel: int, suffix: str = ".parquet") -> str:
    """Path of one partition's data file under ``root`` (the dataset directory)."""
    return os.path.join(
        root, f"Norder={order}", f"Dir={pixel_directory(pixel)}", f"Npix={pixel}{suffix}"
    )


def parse_partition_path(path: str) -> tuple[int, int]:
    """``(order, pixel)`` from a HATS data path.

    >>> parse_partition_path("dataset/Norder=1/Dir=0/Npix=44.parquet")
    (1, 44)
    """
    m = _PATH_RE.match(path)
    if not m:
        raise ValueError(f"not a HATS partition path: {path}")
    return int(m.group(1)), int(m.group(2))


def pixel_range29(order: int, pixel: int) -> tuple[int, int]:
    """Half-open range of ``_healpix_29`` values inside pixel ``(order, pixel)``."""
    shift = 2 * (HEALPIX_ORDER - order)
    return pixel << shift, (pixel + 1) << shift


def margin_name(table: str, margin_arcsec: float) -> str:
    """Directory name of a table's margin catalog, as hats-import names them."""
    return f"{table}_{margin_arcsec:g}arcs"


def index_name(table: str, key: str) -> str:
    """Directory name of a table's director-index catalog."""
    return f"{table}_{key}_index"
