"""Ingest: input files -> a table of the catalog, published atomically.

Every ingest writes into ``CATALOG/.staging/<id>/`` and, only when every row has been
read, checked and written, moves the result into place and rewrites ``skyshard.json``.
An error at any point removes the staging directory: the catalog is left exactly as it was.

Director tables (two passes, memory bounded by the batch size and DuckDB's memory limit)::

    pass 1   read batches -> add _healpix_29 -> spool Parquet; histogram at max_order
    align    histogram -> adaptive partitions (partitioning.align)
    pass 2   DuckDB sorts the spool by _healpix_29; the sorted stream is cut into one
             file per partition, copied into the margins of adjacent partitions, and
             its (key, partition) pairs go to the director index

Child tables take the ``_healpix_29`` of their director row (looked up in the director
index), so they share the director's partitions. A child row whose director row is
missing goes to the table's ``orphans.parquet``, which every query on the table reads. Replicated tables are stored whole.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyshard.catalog import model
from skyshard.catalog.model import CatalogMeta, Partition, TableInfo, TableKind
from skyshard.errors import IngestError, InputError, InternalError
from skyshard.storage import hats_files, layout, partitioning

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MARGIN_ARCSEC = 60.0
DEFAULT_MAX_ORDER = 10


@dataclass(frozen=True)
class IngestOptions:
    """Knobs of one ingest. ``max_rows_per_partition`` is HATS's ``pixel_threshold``."""

    max_rows_per_partition: int = DEFAULT_MAX_ROWS
    max_order: int = DEFAULT_MAX_ORDER
    margin_arcsec: float = DEFAULT_MARGIN_ARCSEC
    batch_rows: int = 262_144
    memory_limit: str = "1500MB"
    allow_duplicate_keys: bool = False
    progress: bool | None = None  # None: show a bar when stderr is a terminal

    def __post_init__(self) -> None:
        if self.max_rows_per_partition < 1:
            raise IngestError("max_rows_per_partition must be at least 1")
        if not 0 <= self.max_order <= model.MAX_ORDER:
            raise IngestError(f"max_order must be within 0..{model.MAX_ORDER}")
        if not self.margin_arcsec > 0:
            raise IngestError("margin_arcsec must be positive")


def ingest(
    catalog_dir: str | os.PathLike,
    table: str,
    files: Sequence[str | os.PathLike],
    *,
    ra: str | None = None,
    dec: str | None = None,
    key: str | None = None,
    director: str | None = None,
    director_key: str | None = None,
    replicated: bool = False,
    schema: pa.Schema | str | os.PathLike | None = None,
    options: IngestOptions | None = None,
) -> TableInfo:
    """Load ``files`` into a new table of the catalog at ``catalog_dir`` (created if
    needed) and publish it. Returns the published table description.

    The role follows from the arguments: ``replicated=True`` -> replicated;
    ``director=`` -> child (keyed by ``director_key``, default the director's key);
    otherwise ``ra``/``dec``/``key`` make a director table.
    """
    opts = options or IngestOptions()
    root = Path(catalog_dir)
    if not files:
        raise IngestError("no input files given")
    missing = [str(f) for f in files if not Path(f).exists()]
    if missing:
        raise IngestError(f"input file not found: {', '.join(missing)}")
    meta = model.load(root) if (root / layout.CATALOG_META).exists() else CatalogMeta(root.name)
    if any(t.lower() == table.lower() for t in meta.tables):
        raise IngestError(f"table {table!r} already exists in catalog {str(root)!r}")
    arrow_schema = _resolve_schema(schema)

    staging = root / layout.STAGING / f"{table}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        if replicated:
            info = _ingest_replicated(staging, table, files, arrow_schema, opts)
        elif director is not None:
            dinfo = meta.table(director)
            if dinfo.kind is not TableKind.DIRECTOR:
                raise IngestError(f"{director!r} is a {dinfo.kind.value} table, not a director")
            info = _ingest_child(
                root, staging, table, files, arrow_schema, opts, dinfo,
                director_key or dinfo.key, ra, dec,
            )
        else:
            if not (ra and dec and key):
                raise IngestError(
                    "a director table needs --ra, --dec and --key "
                    "(or --director for a child table, --replicated for a replicated one)"
                )
            info = _ingest_director(staging, table, files, arrow_schema, opts, ra, dec, key)
        _publish(root, staging, meta, info)
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(root / layout.STAGING)


# --- roles -----------------------------------------------------------------------------


def _ingest_replicated(staging, table, files, schema, opts) -> TableInfo:
    out = staging / table
    out.mkdir()
    writer: pq.ParquetWriter | None = None
    rows = 0
    with _Progress(f"{table}: reading", opts) as bar:
        for batch in _read_all(files, schema, opts):
            if writer is None:
                writer = pq.ParquetWriter(out / f"{table}.parquet", batch.schema,
                                          **hats_files.write_options(batch.schema))
            writer.write_batch(batch, row_group_size=hats_files.ROW_GROUP_ROWS)
            rows += batch.num_rows
            bar.update(batch.num_rows)
    if writer is None:
        raise InputError("no rows and no schema: cannot create an empty table", path=str(files[0]))
    file_schema = writer.schema
    writer.close()
    return TableInfo(
        name=table, kind=TableKind.REPLICATED, columns=_columns(file_schema),
        column_sql=_column_sql(file_schema),
        path=f"{table}/{table}.parquet", rows=rows,
    )


def _ingest_director(staging, table, files, schema, opts, ra, dec, key) -> TableInfo:
    from skyshard.sphere.coverage import healpix29

    spool = staging / "spool"
    spool.mkdir()
    order = min(opts.max_order, partitioning.margin_order(opts.margin_arcsec))
    counts = np.zeros(12 * 4**order, dtype=np.int64)
    shift = partitioning.histogram_order_shift(order)
    rows_in = 0
    file_schema: pa.Schema | None = None
    with _Progress(f"{table}: reading", opts) as bar:
        for i, (path, batch) in enumerate(_read_all_with_path(files, schema, opts)):
            for col in (ra, dec, key):
                if col not in batch.schema.names:
                    raise InputError(f"no column {col!r} (columns: {', '.join(batch.schema.names)})",
                                     path=str(path), column=col)
            ra_np = _float_column(batch, ra, path)
            dec_np = _float_column(batch, dec, path)
            if batch.column(key).null_count:
                row = int(np.nonzero(pc.is_null(batch.column(key)).to_numpy(zero_copy_only=False))[0][0])
                raise InputError(f"director key is NULL (row {rows_in + row + 1} of the input)",
                                 path=str(path), column=key)
            h = healpix29(ra_np, dec_np)
            cells, n = np.unique(h >> shift, return_counts=True)
            counts[cells] += n
            batch = _with_healpix(batch, h)
            file_schema = batch.schema
            pq.write_table(pa.Table.from_batches([batch]), spool / f"part-{i:06d}.parquet",
                           compression="snappy", use_dictionary=False)
            rows_in += batch.num_rows
            bar.update(batch.num_rows)
    if file_schema is None:
        raise InputError("the input holds no rows", path=str(files[0]))
    partitions = partitioning.align(counts, opts.max_rows_per_partition)

    out = staging / table
    primary = out / table
    writer = _TableWriter(primary, file_schema, partitions, opts,
                          margin=(out / layout.margin_name(table, opts.margin_arcsec), opts.margin_arcsec),
                          index_key=key)
    with _duckdb(staging, opts) as con, _Progress(f"{table}: partitioning", opts, total=rows_in) as bar:
        reader = con.sql(
            f"SELECT * FROM read_parquet('{spool}/*.parquet') ORDER BY {layout.HEALPIX_COLUMN}"
        ).fetch_record_batch(opts.batch_rows)
        for batch in reader:
            writer.write(batch)
            bar.update(batch.num_rows)
    written = writer.close()
    if written != rows_in:
        raise InternalError(f"{table}: read {rows_in} rows but wrote {written}")
    shutil.rmtree(spool)

    index_rel = _write_index(staging, out, table, key, writer.index_spool, opts)
    parts = tuple(writer.partitions_written)
    props = hats_files.object_properties(table, rows_in, ra, dec, list(parts))
    hats_files.write_properties(primary, props)
    hats_files.write_partition_info(primary, parts)
    hats_files.write_dataset_metadata(primary, file_schema, writer.metadata)
    margin_dir, margin_parts = writer.write_margin_catalog(table, ra, dec)
    hats_files.write_collection(out, table, margin=margin_dir.name,
                                index=(key, Path(index_rel).name))
    return TableInfo(
        name=table, kind=TableKind.DIRECTOR, columns=_columns(file_schema, hidden=True),
        column_sql=_column_sql(file_schema, hidden=True),
        ra=ra, dec=dec, key=key, path=f"{table}/{table}",
        margin_path=f"{table}/{margin_dir.name}", margin_arcsec=opts.margin_arcsec,
        margin_partitions=tuple(margin_parts),
        index_path=f"{table}/{index_rel}", partitions=parts, rows=rows_in,
    )


def _ingest_child(root, staging, table, files, schema, opts, dinfo: TableInfo, dkey, ra, dec):
    from skyshard.sphere.coverage import healpix29

    if dkey is None:
        raise IngestError(f"director {dinfo.name!r} has no key; give --director-key")
    if (ra is None) != (dec is None):
        raise IngestError("give both --ra and --dec, or neither")
    spool = staging / "spool"
    spool.mkdir()
    rows_in = 0
    file_schema = None
    with _Progress(f"{table}: reading", opts) as bar:
        for i, (path, batch) in enumerate(_read_all_with_path(files, schema, opts)):
            needed = [dkey] + ([ra, dec] if ra else [])
            for col in needed:
                if col not in batch.schema.names:
                    raise InputError(f"no column {col!r} (columns: {', '.join(batch.schema.names)})",
                                     path=str(path), column=col)
            h = np.full(batch.num_rows, -1, dtype=np.int64)  # set from the director index below
            batch = _with_healpix(batch, h)
            file_schema = batch.schema
            pq.write_table(pa.Table.from_batches([batch]), spool / f"part-{i:06d}.parquet",
                           compression="snappy", use_dictionary=False)
            rows_in += batch.num_rows
            bar.update(batch.num_rows)
    if file_schema is None:
        raise InputError("the input holds no rows", path=str(files[0]))
    index_file = _index_file(root, dinfo)
    partitions = list(dinfo.partitions)
    out = staging / table
    primary = out / table
    writer = _TableWriter(primary, file_schema, partitions, opts, margin=None, index_key=None)
    cols = ", ".join(f'c."{n}"' for n in file_schema.names[1:])
    h = layout.HEALPIX_COLUMN
    with _duckdb(staging, opts) as con, _Progress(f"{table}: partitioning", opts, total=rows_in) as bar:
        reader = con.sql(
            f"""SELECT d.{h} AS {h}, {cols}
                FROM read_parquet('{spool}/*.parquet') c
                LEFT JOIN (SELECT "{dinfo.key}" AS k, min({h}) AS {h}
                           FROM read_parquet('{index_file}') GROUP BY 1) d
                  ON c."{dkey}" = d.k
                ORDER BY 1 NULLS LAST"""
        ).fetch_record_batch(opts.batch_rows)
        for batch in reader:
            writer.write(batch)
            bar.update(batch.num_rows)
    written = writer.close()
    if written != rows_in:
        raise InternalError(f"{table}: read {rows_in} rows but wrote {written}")
    parts = tuple(writer.partitions_written)
    hats_files.write_properties(primary, hats_files.object_properties(
        table, rows_in, ra or dinfo.ra, dec or dinfo.dec, list(parts), kind="source"))
    hats_files.write_partition_info(primary, parts)
    hats_files.write_dataset_metadata(primary, file_schema, writer.metadata)
    hats_files.write_collection(out, table, margin=None, index=None)
    return TableInfo(
        name=table, kind=TableKind.CHILD, columns=_columns(file_schema, hidden=True),
        column_sql=_column_sql(file_schema, hidden=True),
        ra=ra, dec=dec, director=dinfo.name, director_key=dkey, path=f"{table}/{table}",
        partitions=parts, orphan_rows=writer.orphans, rows=rows_in,
    )


# --- writing partitions, margins and the index -------------------------------------------


class _TableWriter:
    """Cuts a stream sorted by ``_healpix_29`` into partition files; rows outside every
    partition (NULL or uncovered ``_healpix_29``) go to ``orphans.parquet``."""

    def __init__(self, primary: Path, schema: pa.Schema, partitions: list[Partition],
                 opts: IngestOptions, *, margin: tuple[Path, float] | None, index_key: str | None):
        self.primary = primary
        self.schema = schema
        self.partitions = partitions
        self.starts = partitioning.starts29(partitions)
        self.ends = partitioning.ends29(partitions)
        self.opts = opts
        self.current: int | None = None
        self.writer: pq.ParquetWriter | None = None
        self.counts = np.zeros(len(partitions), dtype=np.int64)
        self.metadata: list[tuple[str, pq.FileMetaData]] = []
        self.orphans = 0
        self.orphan_writer: pq.ParquetWriter | None = None
        self.total = 0
        self.margin = margin
        self.index_key = index_key
        self.index_spool: Path | None = None
        self._index_writer: pq.ParquetWriter | None = None
        if margin is not None:
            self.m_order = partitioning.margin_order(margin[1])
            self.m_pixels, self.m_owners = partitioning.margin_map(partitions, self.m_order)
            self.m_buffers: dict[int, list[pa.Table]] = {}
            self.m_rows: dict[int, int] = {}
            self.m_spool = primary.parent / ".margin-spool"
            self.m_spool.mkdir(parents=True)
            self.m_files: dict[int, int] = {}
        if index_key is not None:
            self.index_spool = primary.parent / ".index-spool.parquet"

    def write(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([batch]).cast(self.schema)
        h = table.column(0).to_numpy(zero_copy_only=False)
        h = np.where(np.isnan(h), -1, h).astype(np.int64) if h.dtype.kind == "f" else h
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
        if self.margin is not None:
            ok = idx >= 0
            rows, owners = partitioning.margin_pairs(h[ok], idx[ok], self.m_pixels, self.m_owners,
                                                     self.m_order)
            if len(rows):
                src = table.filter(pa.array(ok)) if not ok.all() else table
                for owner in np.unique(owners):
                    sel = rows[owners == owner]
                    self._buffer_margin(int(owner), src.take(pa.array(sel)))
        if self.index_key is not None:
            ok = idx >= 0
            parts = idx[ok]
            orders = np.array([p.order for p in self.partitions], dtype=np.uint8)
            pixels = np.array([p.pixel for p in self.partitions], dtype=np.uint64)
            keys = table.column(self.index_key).filter(pa.array(ok))
            piece = pa.table({self.index_key: keys, "Norder": orders[parts], "Npix": pixels[parts],
                              layout.HEALPIX_COLUMN: h[ok]})
            if self._index_writer is None:
                self._index_writer = pq.ParquetWriter(self.index_spool, piece.schema)
            self._index_writer.write_table(piece)

    def _write_partition(self, part: int, piece: pa.Table) -> None:
        if part != self.current:
            self._close_current()
            p = self.partitions[part]
            path = Path(layout.partition_path(str(self.primary / layout.DATASET), p.order, p.pixel))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(
                path, self.schema, sorting_columns=[pq.SortingColumn(0)],
                **hats_files.write_options(self.schema))
            self.current = part
        assert self.writer is not None
        self.writer.write_table(piece, row_group_size=hats_files.ROW_GROUP_ROWS)
        self.counts[part] += piece.num_rows

    def _close_current(self) -> None:
        if self.writer is not None and self.current is not None:
            self.writer.close()
            p = self.partitions[self.current]
            rel = os.path.relpath(
                layout.partition_path(str(self.primary / layout.DATASET), p.order, p.pixel),
                self.primary / layout.DATASET)
            self.metadata.append((rel, pq.read_metadata(self.primary / layout.DATASET / rel)))
        self.writer = None
        self.current = None

    def _write_orphans(self, piece: pa.Table) -> None:
        if self.orphan_writer is None:
            self.primary.mkdir(parents=True, exist_ok=True)
            self.orphan_writer = pq.ParquetWriter(self.primary.parent / "orphans.parquet",
                                                  self.schema,
                                                  **hats_files.write_options(self.schema))
        self.orphan_writer.write_table(piece)
        self.orphans += piece.num_rows

    def _buffer_margin(self, owner: int, rows: pa.Table) -> None:
        self.m_buffers.setdefault(owner, []).append(rows)
        self.m_rows[owner] = self.m_rows.get(owner, 0) + rows.num_rows
        if self.m_rows[owner] >= hats_files.ROW_GROUP_ROWS:
            self._flush_margin(owner)

    def _flush_margin(self, owner: int) -> None:
        tables = self.m_buffers.pop(owner, [])
        self.m_rows.pop(owner, None)
        if not tables:
            return
        n = self.m_files.get(owner, 0)
        self.m_files[owner] = n + 1
        pq.write_table(pa.concat_tables(tables), self.m_spool / f"{owner:07d}-{n:05d}.parquet",
                       **hats_files.write_options(self.schema))

    @property
    def partitions_written(self) -> list[Partition]:
        return [replace(p, rows=int(n)) for p, n in zip(self.partitions, self.counts) if n > 0]

    def close(self) -> int:
        self._close_current()
        if self.orphan_writer is not None:
            self.orphan_writer.close()
        if self._index_writer is not None:
            self._index_writer.close()
        if self.margin is not None:
            for owner in list(self.m_buffers):
                self._flush_margin(owner)
        return self.total

    def write_margin_catalog(self, table: str, ra: str, dec: str) -> tuple[Path, list[Partition]]:
        """Gather the margin spool into one sorted file per partition: a HATS margin catalog."""
        assert self.margin is not None
        out, arcsec = self.margin
        written: list[Partition] = []
        metadata = []
        total = 0
        for owner in sorted(self.m_files):
            p = self.partitions[owner]
            pieces = sorted(self.m_spool.glob(f"{owner:07d}-*.parquet"))
            t = pa.concat_tables([pq.read_table(f) for f in pieces])
            t = t.sort_by(layout.HEALPIX_COLUMN)
            path = Path(layout.partition_path(str(out / layout.DATASET), p.order, p.pixel))
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, path, row_group_size=hats_files.ROW_GROUP_ROWS,
                           sorting_columns=[pq.SortingColumn(0)],
                           **hats_files.write_options(self.schema))
            metadata.append((os.path.relpath(path, out / layout.DATASET), pq.read_metadata(path)))
            written.append(Partition(p.order, p.pixel, t.num_rows))
            total += t.num_rows
        shutil.rmtree(self.m_spool)
        out.mkdir(parents=True, exist_ok=True)
        props = hats_files.object_properties(out.name, total, ra, dec, written, kind="margin")
        props["hats_primary_table_url"] = table
        props["hats_margin_threshold"] = f"{arcsec:g}"
        hats_files.write_properties(out, props)
        hats_files.write_partition_info(out, written)
        hats_files.write_dataset_metadata(out, self.schema, metadata)
        return out, written


def _write_index(staging, out: Path, table: str, key: str, spool: Path | None, opts) -> str:
    """Sort the (key, partition) pairs by key into a HATS index catalog; refuse duplicate
    keys unless allowed. Returns the index file path relative to ``out``'s parent."""
    assert spool is not None
    name = layout.index_name(table, key)
    target = out / name / layout.DATASET / "index"
    target.mkdir(parents=True)
    with _duckdb(staging, opts) as con:
        if not opts.allow_duplicate_keys:
            dups = con.execute(
                f"""SELECT "{key}", count(*) FROM read_parquet('{spool}')
                    GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 5"""
            ).fetchall()
            if dups:
                listed = ", ".join(f"{k!r} ({n} rows)" for k, n in dups)
                raise IngestError(
                    f"duplicate director keys in {key!r}: {listed}; director keys must be unique "
                    "(pass allow_duplicate_keys / --allow-duplicate-keys to accept them)")
        con.execute(
            f"""COPY (SELECT * FROM read_parquet('{spool}') ORDER BY "{key}")
                TO '{target / 'part.0.parquet'}'
                (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE 65536)"""
        )
    spool.unlink()
    props = {"obs_collection": name, "dataproduct_type": "index", "hats_nrows": None,
             "hats_primary_table_url": table, "hats_index_column": key,
             "hats_index_extra_column": layout.HEALPIX_COLUMN, **hats_files.provenance()}
    hats_files.write_properties(out / name, props)
    return f"{name}/{layout.DATASET}/index/part.0.parquet"


def _index_file(root: Path, info: TableInfo) -> Path:
    if not info.index_path:
        raise IngestError(f"director {info.name!r} has no director index")
    p = Path(info.index_path)
    return p if p.is_absolute() else root / p


# --- publishing ---------------------------------------------------------------------------


def _publish(root: Path, staging: Path, meta: CatalogMeta, info: TableInfo) -> None:
    """Move the staged table into place, then rewrite skyshard.json (the commit point)."""
    src = staging / info.name
    dst = root / info.name
    if dst.exists():
        raise IngestError(f"{dst} exists but is not a table of the catalog; remove it first")
    os.replace(src, dst)
    try:
        model.save(root, meta.with_table(info))
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


# --- small pieces ------------------------------------------------------------------------


def _resolve_schema(schema) -> pa.Schema | None:
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    from skyshard.catalog.mysql_schema import parse_create_table

    path = Path(schema)
    if not path.exists():
        raise IngestError(f"schema file not found: {path}")
    return parse_create_table(path.read_text(encoding="latin-1"), path=str(path)).schema


def _read_all(files, schema, opts) -> Iterator[pa.RecordBatch]:
    for _, batch in _read_all_with_path(files, schema, opts):
        yield batch


def _read_all_with_path(files, schema, opts) -> Iterator[tuple[str, pa.RecordBatch]]:
    from skyshard.storage.readers import read_batches

    first: pa.Schema | None = None
    for path in files:
        for batch in read_batches(path, schema=schema, batch_rows=opts.batch_rows):
            if layout.HEALPIX_COLUMN in batch.schema.names:
                batch = batch.drop_columns([layout.HEALPIX_COLUMN])
            if first is None:
                first = batch.schema
            elif batch.schema != first:
                if batch.schema.names != first.names:
                    raise InputError(
                        f"columns differ from the first file's ({', '.join(first.names)})",
                        path=str(path))
                try:
                    batch = batch.cast(first)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise InputError(f"types differ from the first file's: {exc}",
                                     path=str(path)) from exc
            if batch.num_rows:
                yield str(path), batch


def _float_column(batch: pa.RecordBatch, name: str, path) -> np.ndarray:
    col = batch.column(name)
    try:
        arr = pc.cast(col, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"position column is not numeric ({col.type})", path=str(path),
                         column=name) from exc
    if arr.null_count:
        row = int(np.nonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0][0])
        raise InputError(f"position is NULL in row {row + 1} of this batch", path=str(path),
                         column=name)
    return arr.to_numpy(zero_copy_only=False)


def _with_healpix(batch: pa.RecordBatch, h: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(h, pa.int64()), *batch.columns],
        schema=pa.schema([pa.field(layout.HEALPIX_COLUMN, pa.int64(), nullable=True),
                          *batch.schema]),
    )


def _columns(schema: pa.Schema, hidden: bool = False) -> tuple[tuple[str, str], ...]:
    fields = list(schema)[1:] if hidden else list(schema)
    return tuple((f.name, str(f.type)) for f in fields)


def _column_sql(schema: pa.Schema, hidden: bool = False) -> tuple[tuple[str, bool], ...]:
    fields = list(schema)[1:] if hidden else list(schema)
    return tuple(((f.metadata or {}).get(b"mysql_type", b"").decode(), f.nullable) for f in fields)


class _duckdb:
    """A private DuckDB for ingest work (never the query engine's locked database)."""

    def __init__(self, staging: Path, opts: IngestOptions):
        self.con = duckdb.connect(config={"memory_limit": opts.memory_limit,
                                          "temp_directory": str(staging / "duckdb-tmp"),
                                          "preserve_insertion_order": False})

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


class _Progress:
    """A tqdm bar on a terminal, silent otherwise."""

    def __init__(self, label: str, opts: IngestOptions, total: int | None = None):
        show = opts.progress if opts.progress is not None else sys.stderr.isatty()
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit=" rows", unit_scale=True, file=sys.stderr)
        self.t0 = time.perf_counter()

    def __enter__(self) -> _Progress:
        return self

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
