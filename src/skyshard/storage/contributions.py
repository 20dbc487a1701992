"""Contributions: input files read, validated and spooled into a transaction at ``add``.

A contribution comes from a local path, a URL (``http``, ``https``, ``file``) or bytes
uploaded over HTTP, in any format ``readers`` knows. It is read once, checked, and
written to its own directory in the transaction::

    c000003/rows.parquet   a child's or a replicated table's rows, cast to the table's
                           schema, in input order; a child's with ``_healpix_29`` first,
                           NULL until commit
    c000003/rows.arrow     a director's rows, cast likewise, ``_healpix_29`` first
                           (computed from the position): an Arrow IPC file of record
                           batches each sorted by ``_healpix_29``, so that the commit
                           maps it and takes one region of the sky at a time from each
                           batch, by binary search, without decoding anything
    c000003/keys.parquet   a director's keys in input order: the key checks name input
                           rows by their position in this file
    c000003/cells.npz      a director's row counts per HEALPix cell (sparse histogram)

Checks at ``add`` (each error names the file, the line or row, and the column): the
schema (readers match names and cast types), unreadable values, a director's position
(numeric, not NULL, in range) and key (not NULL, unique within the file, not already in
the published table). Duplicates across contributions and against rows published by
other transactions meanwhile are checked again at commit.
"""

from __future__ import annotations

import mmap
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyshard.catalog.model import TableInfo, TableKind
from skyshard.errors import ExternalError, IngestError, InputError
from skyshard.storage import layout, partitioning
from skyshard.storage.duck import private_duckdb, read_parquet, sql_list, sql_string
from skyshard.storage.options import memory_bytes
from skyshard.storage.progress import Progress

SPOOL = "rows.parquet"
DIRECTOR_SPOOL = "rows.arrow"
KEYS = "keys.parquet"
CELLS = "cells.npz"
#: URL schemes a contribution may be fetched from.
URL_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class TableSpec:
    """What a transaction loads into: the table's role, keys and tiling rule."""

    name: str
    kind: TableKind
    ra: str | None = None
    dec: str | None = None
    key: str | None = None
    director: str | None = None
    director_key: str | None = None
    max_rows_per_partition: int = 1_000_000
    max_order: int = 10
    margin_arcsec: float = 60.0
    allow_duplicate_keys: bool = False

    @property
    def histogram_order(self) -> int:
        """Order of the row-count histogram: partitions are never deeper."""
        return min(self.max_order, partitioning.margin_order(self.margin_arcsec))

    def to_json(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d

    @classmethod
    def from_json(cls, d: dict) -> TableSpec:
        return cls(**{**d, "kind": TableKind(d["kind"])})


@dataclass(frozen=True)
class Contribution:
    """One recorded contribution of a transaction."""

    number: int
    source: str
    format: str
    rows: int
    bytes: int

    @property
    def dirname(self) -> str:
        return contribution_dir(self.number)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Contribution:
        return cls(**d)


def contribution_dir(number: int) -> str:
    return f"c{number:06d}"


# --- sources ------------------------------------------------------------------------------


def fetch(source: str, work: Path, *, name: str | None = None) -> tuple[Path, str]:
    """A local file holding ``source`` (a path, or a URL downloaded into ``work``), and
    the name to detect its format from."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in URL_SCHEMES:
        base = name or Path(urllib.parse.unquote(parsed.path)).name or "download"
        if parsed.scheme == "file":
            path = Path(urllib.request.url2pathname(parsed.path))
            if not path.is_file():
                raise InputError("input file not found", path=source)
            return path, name or path.name
        target = work / "download" / base
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(source, timeout=60) as resp, open(target, "wb") as out:
                shutil.copyfileobj(resp, out, 4 << 20)
        except OSError as exc:
            raise ExternalError(f"{source}: cannot download: {exc}") from exc
        return target, base
    if parsed.scheme and len(parsed.scheme) > 1:
        raise InputError(f"unsupported URL scheme {parsed.scheme!r} "
                         f"(one of {', '.join(URL_SCHEMES)})", path=source)
    path = Path(source)
    if not path.is_file():
        raise InputError("input file not found", path=source)
    return path, name or path.name


# --- spooling -----------------------------------------------------------------------------


def spool(dest: Path, path: Path, display: str, fmt_name: str, spec: TableSpec,
          schema: pa.Schema | None, *, batch_rows: int, progress: Progress,
          index_file: Path | None = None, memory_limit: str = "1GB") -> tuple[int, pa.Schema]:
    """Read ``path``, check it and spool its rows into ``dest`` (a director's as
    ``rows.arrow``, with its keys and histogram; others as ``rows.parquet``).
    ``schema`` is the table's (None: inferred from this file); ``index_file`` the
    published director index to check new keys against. Returns the row count and the
    table schema (without ``_healpix_29``)."""
    from skyshard.storage.readers import detect_format, read_batches

    fmt = detect_format(fmt_name)
    dest.mkdir(parents=True, exist_ok=True)
    order = spec.histogram_order
    shift = partitioning.histogram_order_shift(order)
    hist_cells: list[np.ndarray] = []
    hist_counts: list[np.ndarray] = []
    rows = 0
    writer: pq.ParquetWriter | pa.ipc.RecordBatchFileWriter | None = None
    key_writer: pq.ParquetWriter | None = None
    data_schema = schema
    size = path.stat().st_size
    try:
        batches = read_batches(path, schema=schema, format=fmt, batch_rows=batch_rows)
        for batch in _named(batches, display):
            if layout.HEALPIX_COLUMN in batch.schema.names:
                batch = batch.drop_columns([layout.HEALPIX_COLUMN])
            if data_schema is None:
                data_schema = batch.schema
            batch = _conform(batch, data_schema, display)
            director = spec.kind is TableKind.DIRECTOR
            if director:
                h = _director_healpix(batch, spec, display, rows)
                keys = batch.select([spec.key])
                if key_writer is None:
                    key_writer = _scratch_writer(dest / KEYS, keys.schema)
                key_writer.write_batch(keys)
                batch, h = by_healpix(with_healpix(batch, h), h)
                cells, n = _runs(h >> shift)
                hist_cells.append(cells)
                hist_counts.append(n)
                if sum(len(c) for c in hist_cells) > HISTOGRAM_REDUCE:
                    hist_cells, hist_counts = map(list, zip(sum_cells(hist_cells, hist_counts)))
                if writer is None:
                    writer = pa.ipc.new_file(dest / DIRECTOR_SPOOL, batch.schema)
            elif spec.kind is TableKind.CHILD:
                _require(batch, [spec.director_key] + ([spec.ra, spec.dec] if spec.ra else []),
                         display)
                batch = with_healpix(batch, None)
            if writer is None:
                writer = _scratch_writer(dest / SPOOL, batch.schema)
            writer.write_batch(batch)
            rows += batch.num_rows
            progress.update(batch.num_rows, nbytes=0)
    finally:
        for w in (writer, key_writer):
            if w is not None:
                w.close()
    progress.update(0, nbytes=size)
    if writer is None or data_schema is None:
        raise InputError("the input holds no rows", path=display)
    if spec.kind is TableKind.DIRECTOR:
        cells, counts = sum_cells(hist_cells, hist_counts)
        np.savez(dest / CELLS, cells=cells, counts=counts, order=order)
        if not spec.allow_duplicate_keys:
            _check_keys(dest, display, spec, index_file, memory_limit)
    return rows, data_schema


HISTOGRAM_REDUCE = 4_000_000  # histogram entries kept before summing them (bounds memory)


def _scratch_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer of scratch Parquet read once by the commit: no compression, no
    dictionaries, no statistics (fastest both ways)."""
    return pq.ParquetWriter(path, schema, compression="none", use_dictionary=False,
                            write_statistics=False)


def by_healpix(batch: pa.RecordBatch, h: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """``batch`` and its ``_healpix_29`` values ``h``, sorted by ``_healpix_29`` (input
    order kept among equal values).

    >>> b = pa.record_batch({"_healpix_29": [5, 1, 5], "x": [0, 1, 2]})
    >>> by_healpix(b, b.column(0).to_numpy())[0].column("x").to_pylist()
    [1, 0, 2]
    """
    order = np.argsort(h, kind="stable")
    return batch.take(pa.array(order)), h[order]


def _runs(values: np.ndarray, weights: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of sorted ``values`` and how often each occurs (or the sum of
    their ``weights``): ``np.unique(values, return_counts=True)`` without its sort,
    3x faster on a sorted batch.

    >>> _runs(np.array([2, 2, 5]))
    (array([2, 5]), array([2, 1]))
    >>> _runs(np.array([2, 2, 5]), np.array([1, 3, 4]))
    (array([2, 5]), array([4, 4]))
    """
    if not len(values):
        return values, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    if weights is None:
        return values[starts], np.diff(np.r_[starts, len(values)])
    return values[starts], np.add.reduceat(weights, starts)


def sum_cells(cells: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch ``(cells, counts)`` summed into one sorted sparse histogram.

    >>> sum_cells([np.array([3, 5]), np.array([5])], [np.array([1, 2]), np.array([4])])
    (array([3, 5]), array([1, 6]))
    """
    c = np.concatenate(cells).astype(np.int64, copy=False)
    n = np.concatenate(counts).astype(np.int64, copy=False)
    if len(c) == 0:
        return c, n
    # Each part is sorted already: a stable sort merges the runs (~7x faster than
    # np.unique with return_inverse on 10 M cells).
    by_cell = np.argsort(c, kind="stable")
    return _runs(c[by_cell], n[by_cell])


def _named(batches: Iterator[pa.RecordBatch], display: str) -> Iterator[pa.RecordBatch]:
    """Errors of the readers name the input as the user gave it."""
    try:
        yield from batches
    except InputError as exc:
        if exc.path is not None and exc.path != display:
            raise type(exc)(exc.reason, path=display, line=exc.line, column=exc.column) from exc
        raise


def _conform(batch: pa.RecordBatch, schema: pa.Schema, display: str) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``: same names in order, types cast."""
    if batch.schema == schema:
        return batch
    if batch.schema.names != schema.names:
        have, want = set(batch.schema.names), set(schema.names)
        missing = [n for n in schema.names if n not in have]
        extra = [n for n in batch.schema.names if n not in want]
        if missing:
            raise InputError("no such column in this input (the table has it)", path=display,
                             column=missing[0])
        if extra:
            raise InputError("the table has no such column", path=display, column=extra[0])
        batch = batch.select(schema.names)
    arrays = []
    for f, col in zip(schema, batch.columns):
        if col.type != f.type:
            try:
                col = pc.cast(col, f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(f"cannot convert {col.type} to the table's {f.type}: {exc}",
                                 path=display, column=f.name) from exc
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _require(batch: pa.RecordBatch, columns: list[str | None], display: str) -> None:
    for col in columns:
        if col is not None and col not in batch.schema.names:
            raise InputError(f"no column {col!r} (columns: {', '.join(batch.schema.names)})",
                             path=display, column=col)


def _director_healpix(batch: pa.RecordBatch, spec: TableSpec, display: str,
                      first_row: int) -> np.ndarray:
    from skyshard.sphere.coverage import healpix29

    assert spec.ra and spec.dec and spec.key
    _require(batch, [spec.ra, spec.dec, spec.key], display)
    ra = _position(batch, spec.ra, display, first_row, -1e300, 1e300)
    dec = _position(batch, spec.dec, display, first_row, -90.0, 90.0)
    if batch.column(spec.key).null_count:
        row = _first(pc.is_null(batch.column(spec.key)))
        raise InputError(f"director key is NULL (row {first_row + row + 1} of the input)",
                         path=display, column=spec.key)
    return healpix29(ra % 360.0, dec)


def _position(batch: pa.RecordBatch, name: str, display: str, first_row: int, low: float,
              high: float) -> np.ndarray:
    col = batch.column(name)
    try:
        arr = pc.cast(col, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"position column is not numeric ({col.type})", path=display,
                         column=name) from exc
    if arr.null_count:
        raise InputError(f"position is NULL in row {first_row + _first(pc.is_null(arr)) + 1} "
                         "of the input", path=display, column=name)
    values = arr.to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(values) | (values < low) | (values > high)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"position {values[i]!r} out of range in row {first_row + i + 1} "
                         "of the input", path=display, column=name)
    return values


def _first(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def with_healpix(batch: pa.RecordBatch, h: np.ndarray | None) -> pa.RecordBatch:
    """``batch`` with ``_healpix_29`` first (all NULL when ``h`` is None)."""
    col = pa.nulls(batch.num_rows, pa.int64()) if h is None else pa.array(h, pa.int64())
    return pa.RecordBatch.from_arrays(
        [col, *batch.columns],
        schema=pa.schema([pa.field(layout.HEALPIX_COLUMN, pa.int64(), nullable=True),
                          *batch.schema]))


def _check_keys(dest: Path, display: str, spec: TableSpec, index_file: Path | None,
                memory_limit: str) -> None:
    """Director keys unique within the file and not already in the published table."""
    key = spec.key
    keys = keys_file(dest)
    # the column, and its sorted copy, within the memory limit
    unique = _integers_unique(keys, key, memory_bytes(memory_limit) // 24)
    if unique and index_file is None:
        return
    rows = f"read_parquet({sql_string(keys)}, file_row_number = true)"
    with private_duckdb(dest, memory_limit) as con:
        if unique is None:
            unique = con.execute(
                f"""SELECT count(*) = count(DISTINCT "{key}")
                    FROM read_parquet({sql_string(keys)})""").fetchone()[0]
        dups = [] if unique else con.execute(
            f"""SELECT "{key}", count(*), list(file_row_number + 1 ORDER BY file_row_number)[1:3]
                FROM {rows} GROUP BY 1 HAVING count(*) > 1
                ORDER BY min(file_row_number) LIMIT 5""").fetchall()
        if dups:
            listed = "; ".join(f"{k!r} in rows {', '.join(map(str, r))}"
                               + (" ..." if n > len(r) else "") for k, n, r in dups)
            raise IngestError(
                f"{display}, column {key!r}: duplicate director keys: {listed}; director keys "
                "must be unique (pass allow_duplicate_keys / --allow-duplicate-keys to accept "
                "them)")
        if index_file is None or not _any_in_index(con, [keys], key, index_file):
            return
        old = con.execute(
            f"""SELECT s."{key}", s.file_row_number + 1 FROM {rows} s
                SEMI JOIN read_parquet({sql_string(index_file)}) i ON s."{key}" = i."{key}"
                ORDER BY 2 LIMIT 5""").fetchall()
    if old:
        listed = "; ".join(f"{k!r} in row {r}" for k, r in old)
        raise IngestError(
            f"{display}, column {key!r}: duplicate director keys already in table "
            f"{spec.name}: {listed} (pass allow_duplicate_keys / --allow-duplicate-keys to "
            "accept them)")


def _integers_unique(keys: Path, key: str, max_keys: int) -> bool | None:
    """Whether the integer keys in the Parquet file ``keys`` are all distinct, by a sort
    in memory (twice as fast as DuckDB's count DISTINCT); None when they are not
    integers, hold NULLs or are more than ``max_keys``.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "k.parquet"
    >>> pq.write_table(pa.table({"id": [3, 1, 3]}), f); _integers_unique(f, "id", 10)
    False
    """
    meta = pq.read_metadata(keys)
    field = meta.schema.to_arrow_schema().field(key)
    if not pa.types.is_integer(field.type) or meta.num_rows > max_keys:
        return None
    col = pq.read_table(keys, columns=[key]).column(0)
    if col.null_count:
        return None
    k = np.sort(col.to_numpy())
    return not bool(np.any(k[1:] == k[:-1]))


def duplicates_across(contributions: list[tuple[Contribution, Path]], key: str,
                      index_file: Path | None, work: Path, memory_limit: str) -> str | None:
    """A description of director keys repeated across contributions or already in the
    published index, or None."""
    if not contributions:
        return None
    parts = [f"""SELECT "{key}" AS k, {c.number} AS c, file_row_number + 1 AS r
                 FROM read_parquet({sql_string(keys_file(d))}, file_row_number = true)"""
             for c, d in contributions]
    names = {c.number: c.source for c, _ in contributions}
    files = [keys_file(d) for _, d in contributions]
    with private_duckdb(work, memory_limit) as con:
        # cheap checks first (keys alone); rows and files named only when one fails
        # a GROUP BY spills to disk under the memory limit (1.6x faster than DISTINCT)
        repeated = len(files) > 1 and con.execute(
            f"""SELECT "{key}" FROM {read_parquet(files)}
                GROUP BY 1 HAVING count(*) > 1 LIMIT 1""").fetchone() is not None
        known = index_file is not None and _any_in_index(con, files, key, index_file)
        if not repeated and not known:
            return None
        found = [] if not repeated else con.execute(
            f"""SELECT k, list(struct_pack(c, r) ORDER BY c, r)[1:3] FROM ({' UNION ALL '.join(parts)})
                GROUP BY k HAVING count(*) > 1 ORDER BY k LIMIT 5""").fetchall()
        if found:
            listed = "; ".join(
                f"{k!r} in " + ", ".join(f"{names[x['c']]} row {x['r']}" for x in where)
                for k, where in found)
            return f"duplicate director keys across contributions: {listed}"
        if not known:
            return None
        old = con.execute(
            f"""SELECT s.k, s.c, s.r FROM ({' UNION ALL '.join(parts)}) s
                SEMI JOIN read_parquet({sql_string(index_file)}) i ON s.k = i."{key}"
                ORDER BY 2, 3 LIMIT 5""").fetchall()
    if old:
        listed = "; ".join(f"{k!r} in {names[c]} row {r}" for k, c, r in old)
        return f"duplicate director keys already in the table: {listed}"
    return None


def _any_in_index(con, files: list[Path], key: str, index_file: Path) -> bool:
    """Whether any key of the spools ``files`` is in the director index: a binary
    search in the index's keys (integers, loaded once per index file), else a DuckDB
    semi join."""
    keys = _index_keys(index_file, key)
    if keys is not None:
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(columns=[key]):
                want = np.sort(batch.column(0).to_numpy(zero_copy_only=False))
                pos = np.searchsorted(keys, want)  # sorted needles: cache-friendly
                pos[pos == len(keys)] = 0
                if len(keys) and np.any(keys[pos] == want):
                    return True
        return False
    return con.execute(
        f"""SELECT EXISTS (SELECT 1 FROM read_parquet({sql_list(files)}) s
                           SEMI JOIN read_parquet({sql_string(index_file)}) i
                           ON s."{key}" = i."{key}")""").fetchone()[0]


_INDEX_KEYS: dict[tuple[str, int, str], np.ndarray | None] = {}


def _index_keys(index_file: Path, key: str) -> np.ndarray | None:
    """The sorted integer keys of a director index file (None for other key types),
    cached for the last index file read: index files are never modified in place."""
    st = index_file.stat()
    tag = (str(index_file), st.st_ino, key)
    if tag not in _INDEX_KEYS:
        schema = pq.read_schema(index_file)
        keys = None
        if pa.types.is_integer(schema.field(key).type):
            col = pq.read_table(index_file, columns=[key]).column(0)
            if not col.null_count:
                keys = col.to_numpy()
                if len(keys) > 1 and not np.all(keys[1:] >= keys[:-1]):
                    keys = np.sort(keys)  # index files are written sorted by key
        _INDEX_KEYS.clear()
        _INDEX_KEYS[tag] = keys
    return _INDEX_KEYS[tag]


def keys_file(dest: Path) -> Path:
    """The file holding a director contribution's keys in input order (its spool, for
    a contribution spooled before keys had a file of their own)."""
    keys = dest / KEYS
    return keys if keys.exists() else spool_file(dest)


def load_cells(dest: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(dest / CELLS) as f:
        return f["cells"], f["counts"]


def spool_file(dest: Path) -> Path:
    """A contribution's spooled rows: a director's Arrow IPC file, else Parquet."""
    arrow = dest / DIRECTOR_SPOOL
    return arrow if arrow.exists() else dest / SPOOL


def spool_schema(dest: Path) -> pa.Schema:
    path = spool_file(dest)
    if path.name == DIRECTOR_SPOOL:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).schema
    return pq.read_schema(path)


def read_spool(path: Path, between: tuple[int, int] | None = None,
               columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The record batches of a director's spool (mapped, not copied), each sorted by
    ``_healpix_29``; only the rows whose ``_healpix_29`` is in the half-open range
    ``between`` if given; only ``columns`` if given.

    The file is mapped by Python's ``mmap``, not Arrow's ``memory_map``: Arrow asks the
    system to read every batch it opens in full (``madvise(WILLNEED)``), which for a
    region of the sky is mostly bytes it never touches. The mapping lives as long as
    the batches returned (it is unmapped when the last is freed)."""
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: the spooled rows are empty (the file was cut short); "
                          "abort the transaction")
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    reader = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mapped)))
    del mapped  # the buffer holds it
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        if between is not None:
            h = batch.column(0).to_numpy()
            lo, hi = np.searchsorted(h, between)
            batch = batch.slice(lo, hi - lo)
        if columns is not None:
            batch = batch.select(columns)
        if batch.num_rows:
            yield batch


def conform_spool(dest: Path, schema: pa.Schema, display: str) -> None:
    """Rewrite a spool whose schema was inferred differently from the table's (another
    contribution fixed it first), casting column by column; errors name the column.
    Batches (a director's sorted by ``_healpix_29``) are kept."""
    src = spool_file(dest)
    have = spool_schema(dest)
    hidden = have.names[:1] == [layout.HEALPIX_COLUMN]
    target = (pa.schema([have.field(0), *schema]) if hidden else schema)
    if have != target:
        director = src.name == DIRECTOR_SPOOL
        batches = (read_spool(src) if director
                   else pq.ParquetFile(src).iter_batches(batch_size=1 << 16))
        tmp = src.with_name(src.name + ".tmp")
        writer = pa.ipc.new_file(tmp, target) if director else _scratch_writer(tmp, target)
        try:
            with writer:
                for group in batches:
                    body = group.drop_columns([layout.HEALPIX_COLUMN]) if hidden else group
                    body = _conform(body, schema, display)
                    if hidden:
                        body = pa.RecordBatch.from_arrays([group.column(0), *body.columns],
                                                          schema=target)
                    writer.write_batch(body)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, src)
    keys = dest / KEYS
    if keys.exists():
        have = pq.read_schema(keys)
        want = pa.schema([schema.field(have.names[0])])
        if have != want:
            table = _conform_table(pq.read_table(keys), want, display)
            with _scratch_writer(dest / (KEYS + ".tmp"), want) as w:
                w.write_table(table)
            os.replace(dest / (KEYS + ".tmp"), keys)


def _conform_table(table: pa.Table, schema: pa.Schema, display: str) -> pa.Table:
    """``table`` cast to ``schema`` batch by batch (``_conform``'s checks and errors)."""
    batches = [_conform(b, schema, display) for b in table.to_batches()]
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def table_schema(root: Path, info: TableInfo) -> pa.Schema:
    """The Arrow schema of a published table's rows (without ``_healpix_29``)."""
    base = Path(info.path) if Path(info.path).is_absolute() else root / info.path
    if info.kind is TableKind.REPLICATED:
        return pq.read_schema(base)
    schema = pq.read_schema(base / layout.DATASET / "_common_metadata")
    if schema.names[:1] == [layout.HEALPIX_COLUMN]:
        schema = pa.schema(list(schema)[1:], metadata=schema.metadata)
    return schema.remove_metadata() if schema.metadata and b"pandas" in schema.metadata else schema
