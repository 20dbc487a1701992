"""Writing a table version: partition files, margins, the director index, HATS metadata.

``PartitionWriter`` cuts a stream of rows sorted by ``_healpix_29`` into one file per
partition (rows outside every partition go to ``orphans.parquet``) and spools the
(key, partition) pairs of the director index. ``MarginCollector`` gathers, for some
partitions (the *owners*), the rows of other partitions within the margin, from any
number of row sources, then writes one sorted margin file per owner. ``write_index``
sorts the index pairs into a HATS index catalog, refusing duplicate keys.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skyshard.catalog.model import Partition
from skyshard.errors import IngestError
from skyshard.machine import cpus
from skyshard.storage import hats_files, layout, partitioning, writeback

ORPHANS = "orphans.parquet"


@dataclass(frozen=True)
class WrittenFile:
    """A data file of a HATS catalog: its partition (rows counted) and its footer."""

    partition: Partition
    rel: str  # relative to the catalog's dataset directory
    metadata: pq.FileMetaData


def partition_rel(p: Partition) -> str:
    """A partition's data file relative to its ``dataset`` directory."""
    return layout.partition_path("", p.order, p.pixel).lstrip(os.sep)


def healpix_of(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Column 0 (``_healpix_29``) as int64, NULL (or NaN) as -1."""
    col = table.column(0)
    if col.null_count:
        col = col.fill_null(-1)
    h = col.to_numpy(zero_copy_only=False)
    if h.dtype.kind == "f":
        h = np.where(np.isnan(h), -1, h)
    return h.astype(np.int64, copy=False)


class PartitionWriter:
    """Cuts a stream sorted by ``_healpix_29`` into one file per partition of
    ``partitions`` under ``dataset``; rows outside every partition (NULL or uncovered
    ``_healpix_29``) go to ``orphans`` (if given; else they are an error)."""

    def __init__(self, dataset: Path, schema: pa.Schema, partitions: Sequence[Partition], *,
                 orphans: Path | None = None, index_key: str | None = None,
                 index_spool: Path | None = None) -> None:
        self.dataset = dataset
        self.schema = schema
        self.partitions = list(partitions)
        self.starts = partitioning.starts29(self.partitions)
        self.ends = partitioning.ends29(self.partitions)
        self.orders = np.array([p.order for p in self.partitions], dtype=np.uint8)
        self.pixels = np.array([p.pixel for p in self.partitions], dtype=np.uint64)
        self.counts = np.zeros(len(self.partitions), dtype=np.int64)
        self.files: list[WrittenFile] = []
        self.orphans_path = orphans
        self.orphans = 0
        self.total = 0
        self.index_key = index_key
        self.index_spool = index_spool
        self._current: int | None = None
        self._writer: pq.ParquetWriter | None = None
        self._orphan_writer: pq.ParquetWriter | None = None
        self._index_writer: pq.ParquetWriter | None = None

    def write(self, batch: pa.RecordBatch | pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        """Write ``batch``; returns it as a table with its ``_healpix_29`` values and
        partition indices (-1: orphan), for margin collection."""
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        table = table.cast(self.schema)
        h = healpix_of(table)
        idx = partitioning.locate(h, self.starts, self.ends)
        self.total += table.num_rows
        # The stream is sorted and partitions are disjoint ranges: runs are contiguous.
        bounds = np.flatnonzero(np.diff(idx)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(idx)]):
            part = int(idx[lo])
            piece = table.slice(lo, hi - lo)
            if part < 0:
                self._write_orphans(piece)
            else:
                self._write_partition(part, piece)
        if self.index_key is not None:
            ok = idx >= 0
            parts = idx[ok]
            keys = table.column(self.index_key).filter(pa.array(ok))
            piece = pa.table({self.index_key: keys, "Norder": self.orders[parts],
                              "Npix": self.pixels[parts], layout.HEALPIX_COLUMN: h[ok]})
            if self._index_writer is None:
                assert self.index_spool is not None
                # a scratch file read once: unique keys gain nothing from dictionaries
                self._index_writer = pq.ParquetWriter(self.index_spool, piece.schema,
                                                      use_dictionary=False,
                                                      write_statistics=False)
            self._index_writer.write_table(piece)
        return table, h, idx

    def _write_partition(self, part: int, piece: pa.Table) -> None:
        if part != self._current:
            self._close_current()
            path = self.dataset / partition_rel(self.partitions[part])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, self.schema, sorting_columns=[pq.SortingColumn(0)],
                                            **hats_files.write_options(self.schema))
            self._current = part
        assert self._writer is not None
        self._writer.write_table(piece, row_group_size=hats_files.ROW_GROUP_ROWS)
        self.counts[part] += piece.num_rows

    def _close_current(self) -> None:
        if self._writer is not None and self._current is not None:
            self._writer.close()
            p = self.partitions[self._current]
            rel = partition_rel(p)
            writeback.start(self.dataset / rel)
            self.files.append(WrittenFile(p, rel, pq.read_metadata(self.dataset / rel)))
        self._writer = None
        self._current = None

    def _write_orphans(self, piece: pa.Table) -> None:
        if self.orphans_path is None:
            raise IngestError(f"{piece.num_rows} rows fall outside every partition")
        if self._orphan_writer is None:
            self.orphans_path.parent.mkdir(parents=True, exist_ok=True)
            self._orphan_writer = pq.ParquetWriter(self.orphans_path, self.schema,
                                                   **hats_files.write_options(self.schema))
        self._orphan_writer.write_table(piece)
        self.orphans += piece.num_rows

    @property
    def written(self) -> list[Partition]:
        """Partitions that received rows, with their row counts."""
        return [replace(p, rows=int(n)) for p, n in zip(self.partitions, self.counts) if n > 0]

    def close(self) -> int:
        self._close_current()
        if self._orphan_writer is not None:
            self._orphan_writer.close()
        if self._index_writer is not None:
            self._index_writer.close()
        self.files = [replace(f, partition=replace(f.partition, rows=f.metadata.num_rows))
                      for f in self.files]
        return self.total


#: margin rows held in memory (all owners) before they are spooled to disk
MARGIN_BUFFER_ROWS = 262_144


class MarginCollector:
    """Margin rows of the ``owners`` (indices into ``tiling``): rows of other partitions
    of ``tiling`` in the pixels (at the margin order) adjacent to each owner."""

    def __init__(self, tiling: Sequence[Partition], owners: Sequence[int], arcsec: float,
                 spool: Path, schema: pa.Schema) -> None:
        self.tiling = list(tiling)
        self.starts = partitioning.starts29(self.tiling)
        self.ends = partitioning.ends29(self.tiling)
        self.order = partitioning.margin_order(arcsec)
        owners = np.array(sorted(set(owners)), dtype=np.int64)
        pixels, local = partitioning.margin_map([self.tiling[i] for i in owners], self.order)
        self.pixels = pixels
        self.owners = owners[local] if len(local) else local
        self.spool = spool
        self.schema = schema
        self._buffers: dict[int, list[pa.Table]] = {}
        self._rows: dict[int, int] = {}
        self._files: dict[int, int] = {}
        self._buffered = 0

    def wanted_partitions(self) -> set[int]:
        """Indices of the partitions (of ``tiling``) holding rows some owner may want."""
        if not len(self.pixels):
            return set()
        h = self.pixels.astype(np.int64) << partitioning.histogram_order_shift(self.order)
        idx = partitioning.locate(h, self.starts, self.ends)
        return {int(i) for i in np.unique(idx[idx >= 0])}

    def feed(self, table: pa.Table, h: np.ndarray | None = None,
             idx: np.ndarray | None = None) -> None:
        """Offer rows (sorted or not) whose ``_healpix_29`` is column 0."""
        if not len(self.pixels) or table.num_rows == 0:
            return
        if h is None:
            h = healpix_of(table)
        if idx is None:
            idx = partitioning.locate(h, self.starts, self.ends)
        ok = idx >= 0
        rows, owners = partitioning.margin_pairs(h[ok], idx[ok], self.pixels, self.owners,
                                                 self.order)
        if not len(rows):
            return
        src = table.filter(pa.array(ok)) if not ok.all() else table
        for owner in np.unique(owners):
            sel = rows[owners == owner]
            self._buffer(int(owner), src.take(pa.array(sel)).cast(self.schema))

    def _buffer(self, owner: int, rows: pa.Table) -> None:
        self._buffers.setdefault(owner, []).append(rows)
        self._rows[owner] = self._rows.get(owner, 0) + rows.num_rows
        self._buffered += rows.num_rows
        if self._rows[owner] >= hats_files.ROW_GROUP_ROWS:
            self._flush(owner)
        if self._buffered > MARGIN_BUFFER_ROWS:
            # Most owners get a few thousand rows: without this, every partition's margin
            # of a large table would sit in memory until the end.
            for other in list(self._buffers):
                self._flush(other)

    def _flush(self, owner: int) -> None:
        tables = self._buffers.pop(owner, [])
        self._buffered -= self._rows.pop(owner, 0)
        if not tables:
            return
        self.spool.mkdir(parents=True, exist_ok=True)
        n = self._files.get(owner, 0)
        self._files[owner] = n + 1
        pq.write_table(pa.concat_tables(tables), self.spool / f"{owner:07d}-{n:05d}.parquet",
                       **hats_files.write_options(self.schema))

    def write(self, dataset: Path) -> list[WrittenFile]:
        """One file per owner with margin rows, sorted by ``_healpix_29``."""
        for owner in list(self._buffers):
            self._flush(owner)

        def one(owner: int) -> WrittenFile:
            p = self.tiling[owner]
            pieces = sorted(self.spool.glob(f"{owner:07d}-*.parquet"))
            t = pa.concat_tables([pq.read_table(f) for f in pieces]).sort_by(layout.HEALPIX_COLUMN)
            rel = partition_rel(p)
            path = dataset / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t.cast(self.schema), path, row_group_size=hats_files.ROW_GROUP_ROWS,
                           sorting_columns=[pq.SortingColumn(0)],
                           **hats_files.write_options(self.schema))
            writeback.start(path)
            return WrittenFile(Partition(p.order, p.pixel, t.num_rows), rel, pq.read_metadata(path))

        # Arrow reads, sorts and writes without the GIL: owners in parallel.
        with ThreadPoolExecutor(min(4, cpus()), thread_name_prefix="skyshard-margin") as pool:
            out = list(pool.map(one, sorted(self._files)))
        if self.spool.exists():
            shutil.rmtree(self.spool)
        return out


def write_catalog_files(catalog: Path, schema: pa.Schema, files: Sequence[WrittenFile],
                        props: dict[str, object]) -> list[Partition]:
    """``hats.properties``, ``partition_info.csv`` and the dataset metadata of a HATS
    catalog whose data files are ``files``; returns its partitions, sorted."""
    files = sorted(files, key=lambda f: f.partition.range29[0])
    parts = [f.partition for f in files]
    catalog.mkdir(parents=True, exist_ok=True)
    hats_files.write_properties(catalog, props)
    hats_files.write_partition_info(catalog, parts)
    hats_files.write_dataset_metadata(catalog, schema, [(f.rel, f.metadata) for f in files])
    return parts


def link_file(src: Path, dst: Path) -> None:
    """``dst`` names the same bytes as ``src``: a hard link (no copy, and the old name
    stays valid for readers of the old version), or a copy where links are impossible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_index(work: Path, target: Path, table: str, key: str, sources: Sequence[str],
                *, allow_duplicates: bool, memory_limit: str) -> None:
    """Sort the (key, Norder, Npix, _healpix_29) rows of the Parquet ``sources`` (paths or
    DuckDB ``read_parquet`` expressions over them) into the HATS index catalog directory
    ``target``; refuse duplicate keys unless allowed."""
    from skyshard.storage.duck import private_duckdb, sql_string

    data = target / layout.DATASET / "index"
    data.mkdir(parents=True)
    with private_duckdb(work, memory_limit) as con:
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {s}" for s in sources)
        if not allow_duplicates:
            dups = con.execute(
                f"""SELECT "{key}", count(*) FROM ({union}) GROUP BY 1 HAVING count(*) > 1
                    ORDER BY 1 LIMIT 5""").fetchall()
            if dups:
                listed = ", ".join(f"{k!r} ({n} rows)" for k, n in dups)
                raise IngestError(
                    f"duplicate director keys in {key!r}: {listed}; director keys must be unique "
                    "(pass allow_duplicate_keys / --allow-duplicate-keys to accept them)")
        con.execute(
            f"""COPY (SELECT * FROM ({union}) ORDER BY "{key}")
                TO {sql_string(data / 'part.0.parquet')}
                (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE 65536)""")
    writeback.start(data / "part.0.parquet")
    props = {"obs_collection": target.name, "dataproduct_type": "index", "hats_nrows": None,
             "hats_primary_table_url": table, "hats_index_column": key,
             "hats_index_extra_column": layout.HEALPIX_COLUMN, **hats_files.provenance()}
    hats_files.write_properties(target, props)


INDEX_FILE = f"{layout.DATASET}/index/part.0.parquet"
