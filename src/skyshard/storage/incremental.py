"""Building the next version of a table from a transaction's spooled contributions.

A new table is the special case of an increment to an empty table, so one procedure per
role builds both.

Director (``_director``)::

    plan     retiling.plan: old partitions + the new rows' histogram -> kept partitions,
             partitions that gain rows (rewritten), partitions past max_rows (split, to
             order+1 recursively), new partitions in free sky
    data     the new rows are merged with the old rows of rewritten partitions, one
             region of the sky at a time (regions in parallel, each sorted in memory:
             spooled batches and partition files are sorted already); the stream is
             cut into the new files; untouched partitions are hard-linked
    margins  rebuilt for every written partition and its neighbours, from the stream and
             the untouched neighbours' files; other margin files are hard-linked
    index    old (key, partition) pairs minus those of rewritten partitions, plus the
             stream's: one sorted file
    children each child table whose rows sit in a split partition is re-cut the same
             way, and child rows kept as orphans whose director row has just arrived
             move into their director's partition

Child (``_child``): new rows take the ``_healpix_29`` of their director row (director
index); rows without one are appended to ``orphans.parquet``; the child files of the
partitions they land in are rewritten, the others hard-linked.

Replicated (``_replicated``): the old rows and the new ones, in one new file.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyshard.catalog.model import CatalogMeta, Partition, TableInfo, TableKind
from skyshard.errors import IngestError, InternalError
from skyshard.machine import cpus
from skyshard.storage import crashpoints, hats_files, layout, partitioning, retiling
from skyshard.storage.contributions import (
    DIRECTOR_SPOOL,
    HISTOGRAM_REDUCE,
    Contribution,
    TableSpec,
    duplicates_across,
    load_cells,
    read_spool,
    spool_file,
    sum_cells,
)
from skyshard.storage.duck import private_duckdb, read_parquet, sql_string
from skyshard.storage.options import memory_bytes
from skyshard.storage.progress import Progress
from skyshard.storage.versions import Build, version_root, write_marker
from skyshard.storage.writers import (
    INDEX_FILE,
    ORPHANS,
    MarginCollector,
    PartitionWriter,
    WrittenFile,
    link_file,
    partition_rel,
    write_catalog_files,
    write_index,
)


@dataclass(frozen=True)
class BuildContext:
    """Everything a build needs: the catalog as published when the build started, the
    transaction's contributions and where to work."""

    root: Path
    meta: CatalogMeta
    spec: TableSpec
    contributions: list[tuple[Contribution, Path]]  # (record, its folder)
    schema: pa.Schema  # the table's columns, without _healpix_29
    work: Path  # scratch space
    out: Path  # new versions, laid out like the catalog
    transaction: str
    memory_limit: str = "1GB"
    batch_rows: int = 262_144
    show_progress: bool | None = None
    report: Path | None = None

    @property
    def spools(self) -> list[Path]:
        return [spool_file(d) for _, d in self.contributions]

    @property
    def new_rows(self) -> int:
        return sum(c.rows for c, _ in self.contributions)

    def progress(self, label: str, total: int | None = None) -> Progress:
        return Progress(f"{self.spec.name}: {label}", show=self.show_progress, total=total,
                        report=self.report)

    def abs(self, rel: str) -> Path:
        return self.root / rel


def build(ctx: BuildContext) -> Build:
    """Build the next version of ``ctx.spec.name`` (and of the child tables a director
    increment moves rows of) under ``ctx.out``."""
    old = _find(ctx.meta, ctx.spec.name)
    if old is not None and Path(old.path).is_absolute():
        raise IngestError(f"table {old.name!r} is a HATS catalog served in place; "
                          "it cannot be ingested into")
    if ctx.spec.kind is TableKind.DIRECTOR:
        tables = _director(ctx, old)
    elif ctx.spec.kind is TableKind.CHILD:
        tables = {ctx.spec.name: _child(ctx, old)}
    else:
        tables = {ctx.spec.name: _replicated(ctx, old)}
    crashpoints.reached("build-done")
    bases = {}
    for name in tables:
        prior = _find(ctx.meta, name)
        bases[name] = prior.version if prior is not None else 0
    family = [t for t in ctx.meta.tables.values()
              if (ctx.spec.director and t.name.lower() == ctx.spec.director.lower())
              or (t.director and t.director.lower() == ctx.spec.name.lower())]
    depends = {t.name: t.version for t in family if t.name not in tables}
    return Build(ctx.transaction, ctx.out, tables, bases, depends)


def _find(meta: CatalogMeta, name: str) -> TableInfo | None:
    for t in meta.tables.values():
        if t.name.lower() == name.lower():
            return t
    return None


# --- director ------------------------------------------------------------------------------


def _director(ctx: BuildContext, old: TableInfo | None) -> dict[str, TableInfo]:
    spec = ctx.spec
    name, key = spec.name, spec.key
    assert key and spec.ra and spec.dec
    version = old.version + 1 if old else 1
    vroot = version_root(name, version)
    out = ctx.out / vroot
    file_schema = _file_schema(ctx.schema)
    old_index = ctx.abs(old.index_path) if old and old.index_path else None

    order = spec.histogram_order
    old_parts = list(old.partitions) if old else []
    old_dataset = ctx.abs(old.path) / layout.DATASET if old else None

    def old_cells(p: Partition) -> tuple[np.ndarray, np.ndarray]:
        assert old_dataset is not None
        h = pq.read_table(old_dataset / partition_rel(p), columns=[layout.HEALPIX_COLUMN])
        return retiling.sparse_histogram(h.column(0).to_numpy(), order)

    if not old_parts and order <= retiling.DENSE_ORDER:
        plan = retiling.fresh(_dense_histogram(ctx), spec.max_rows_per_partition)
    else:
        cells, counts = _histogram(ctx)
        plan = retiling.plan(old_parts, cells, counts, order, spec.max_rows_per_partition,
                             old_cells)
    tiling = plan.tiling
    position = {(p.order, p.pixel): i for i, p in enumerate(tiling)}
    written = [position[(p.order, p.pixel)] for p in plan.written]

    primary = out / name
    dataset = primary / layout.DATASET
    margin_order = partitioning.margin_order(spec.margin_arcsec)
    owners = set(written) | _neighbours(tiling, written, margin_order)
    margins = MarginCollector(tiling, sorted(owners), spec.margin_arcsec,
                              ctx.work / "margin-spool", file_schema)
    assert old_dataset is not None or not plan.rewritten
    sources = ctx.spools + [old_dataset / partition_rel(p) for p in plan.rewritten]  # type: ignore[operator]
    stream_rows = ctx.new_rows + sum(p.rows for p in plan.rewritten)
    with ctx.progress("partitioning", total=stream_rows) as bar:
        cut = _cut_by_region(ctx, sources, stream_rows, plan.written, dataset, file_schema,
                             margins, bar)
    if cut.total != stream_rows:
        raise InternalError(f"{name}: expected {stream_rows} rows, wrote {cut.total}")
    for got, want in zip(cut.written, plan.written, strict=True):
        if got != want:
            raise InternalError(f"{name}: partition {want} received {got.rows} rows")
    crashpoints.reached("build-data")

    index_dir = out / layout.index_name(name, key)
    index_sources = [read_parquet(cut.index_spools)] if cut.index_spools else []
    if old_index is not None:
        gone = ", ".join(f"({p.order}, {p.pixel})" for p in plan.rewritten) or "(-1, -1)"
        index_sources.insert(0, f"""(SELECT i.* FROM read_parquet({sql_string(old_index)}) i
                                     ANTI JOIN (VALUES {gone}) r(o, p)
                                     ON i.Norder = r.o AND i.Npix = r.p)""")
    # The index (a DuckDB sort) is built while the margins are (Arrow): both release
    # the GIL, and neither needs the other.
    with ThreadPoolExecutor(1, thread_name_prefix="skyshard-index") as pool:
        index_built = pool.submit(write_index, ctx.work, index_dir, name, key, index_sources,
                                  allow_duplicates=True, memory_limit=ctx.memory_limit)
        files = list(cut.files)
        for p in plan.untouched:
            files.append(_link(old_dataset, dataset, p))  # type: ignore[arg-type]
        for i in sorted(margins.wanted_partitions() - set(written)):
            margins.feed(pq.read_table(dataset / partition_rel(tiling[i])))
        margin_dir = out / layout.margin_name(name, spec.margin_arcsec)
        margin_files = margins.write(margin_dir / layout.DATASET)
        if old and old.margin_path:
            old_margin = ctx.abs(old.margin_path) / layout.DATASET
            rebuilt = {(tiling[i].order, tiling[i].pixel) for i in owners}
            for p in old.margin_partitions:
                if (p.order, p.pixel) in position and (p.order, p.pixel) not in rebuilt:
                    margin_files.append(_link(old_margin, margin_dir / layout.DATASET, p))
        index_built.result()
    if not spec.allow_duplicate_keys and _repeats(index_dir / INDEX_FILE, key):
        # Checked on the sorted index, the one pass over every key the build makes
        # anyway; the contributions are searched only to name the rows.
        problem = duplicates_across(ctx.contributions, key, old_index, ctx.work, ctx.memory_limit)
        if problem:
            raise IngestError(f"{name}: {problem}; director keys must be unique (pass "
                              "allow_duplicate_keys / --allow-duplicate-keys to accept them)")
    for spool in cut.index_spools:
        spool.unlink(missing_ok=True)

    rows = (old.rows if old else 0) + ctx.new_rows
    parts = _catalog(primary, file_schema, files, name, rows, spec.ra, spec.dec, "object")
    margin_parts = _margin_catalog(margin_dir, file_schema, margin_files, name, spec)
    hats_files.write_collection(out, name, margin=margin_dir.name,
                                index=(key, index_dir.name))
    write_marker(out, name, version, ctx.transaction)
    info = TableInfo(
        name=name, kind=TableKind.DIRECTOR, columns=_columns(file_schema),
        column_sql=_column_sql(file_schema), ra=spec.ra, dec=spec.dec, key=key,
        path=f"{vroot}/{name}", margin_path=f"{vroot}/{margin_dir.name}",
        margin_arcsec=spec.margin_arcsec, margin_partitions=tuple(margin_parts),
        index_path=f"{vroot}/{index_dir.name}/{INDEX_FILE}", partitions=tuple(parts),
        rows=rows, version=version, transaction=ctx.transaction,
        max_rows_per_partition=spec.max_rows_per_partition, max_order=spec.max_order)
    tables = {name: info}
    if old is not None:
        for child in ctx.meta.tables.values():
            if child.director and child.director.lower() == name.lower():
                moved = _rehome_children(ctx, child, info, plan)
                if moved is not None:
                    tables[child.name] = moved
    return tables


def _histogram(ctx: BuildContext) -> tuple[np.ndarray, np.ndarray]:
    """The new rows' sparse histogram, summed over contributions."""
    if ctx.spec.histogram_order <= retiling.DENSE_ORDER:
        dense = _dense_histogram(ctx)
        cells = np.flatnonzero(dense)
        return cells.astype(np.int64), dense[cells]
    cells: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for _, d in ctx.contributions:
        c, n = load_cells(d)
        cells.append(c)
        counts.append(n)
        if sum(len(x) for x in cells) > HISTOGRAM_REDUCE:  # bounded memory at any size
            cells, counts = map(list, zip(sum_cells(cells, counts)))
    if not cells:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return sum_cells(cells, counts)


def _spooled_keys(ctx: BuildContext, key: str) -> Path:
    """A Parquet file of the director spools' ``key`` and ``_healpix_29`` columns."""
    path = ctx.work / "spooled-keys.parquet"
    columns = [key, layout.HEALPIX_COLUMN]
    schema = pa.schema([ctx.schema.field(key), pa.field(layout.HEALPIX_COLUMN, pa.int64())])
    with pq.ParquetWriter(path, schema) as w:
        for spool in ctx.spools:
            batches = (read_spool(spool, columns=columns) if spool.name == DIRECTOR_SPOOL
                       else pq.ParquetFile(spool).iter_batches(columns=columns))
            for batch in batches:
                w.write_batch(batch.select(columns).cast(schema))
    return path


def _dense_histogram(ctx: BuildContext) -> np.ndarray:
    """The new rows' row counts per cell at the histogram order (up to
    ``retiling.DENSE_ORDER``), summed over contributions."""
    dense = np.zeros(12 * 4 ** ctx.spec.histogram_order, dtype=np.int64)
    for _, d in ctx.contributions:
        c, n = load_cells(d)
        dense[c] += n  # a contribution's cells are unique
    return dense


def _repeats(index_file: Path, key: str) -> bool:
    """Whether a key repeats in an index file sorted by key (read a batch at a time)."""
    last = None
    for batch in pq.ParquetFile(index_file).iter_batches(batch_size=1 << 20, columns=[key]):
        keys = batch.column(0)
        if not len(keys):
            continue
        if last is not None and last == keys[0]:
            return True
        if len(keys) > 1 and pc.any(pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1))).as_py():
            return True
        last = keys[len(keys) - 1]
    return False


def _neighbours(tiling: list[Partition], indices: list[int], order: int) -> set[int]:
    """Partitions (indices into ``tiling``) touching the given ones at ``order``."""
    if not indices:
        return set()
    pixels, _ = partitioning.margin_map([tiling[i] for i in indices], order)
    h = pixels.astype(np.int64) << partitioning.histogram_order_shift(order)
    idx = partitioning.locate(h, partitioning.starts29(tiling), partitioning.ends29(tiling))
    return {int(i) for i in np.unique(idx[idx >= 0])}


def _rehome_children(ctx: BuildContext, child: TableInfo, director: TableInfo,
                     plan: retiling.Plan) -> TableInfo | None:
    """A child table follows its director's new tiling: its rows in split partitions are
    re-cut, and orphans whose director row is new join their director's partition.
    None when the child is unchanged."""
    dkey, ckey = director.key, child.director_key
    split = {(p.order, p.pixel) for p in plan.split}
    old_parts = {(p.order, p.pixel): p for p in child.partitions}
    recut = [p for k, p in old_parts.items() if k in split]
    old_top = ctx.abs(child.path).parent
    orphans = old_top / ORPHANS
    adopt = new_keys = ""
    targets: list[int] = []
    tiling = plan.tiling
    if child.orphan_rows and orphans.exists():
        new_keys = (f"""(SELECT "{dkey}" AS k, min({layout.HEALPIX_COLUMN}) AS h
                         FROM {read_parquet([_spooled_keys(ctx, dkey)])} GROUP BY 1)""")
        adopt = (f"""SELECT n.h AS "{layout.HEALPIX_COLUMN}", o.* EXCLUDE ("{layout.HEALPIX_COLUMN}")
                     FROM read_parquet({sql_string(orphans)}) o JOIN {new_keys} n
                     ON o."{ckey}" = n.k""")
        with private_duckdb(ctx.work, ctx.memory_limit) as con:
            hs = np.array([r[0] for r in con.execute(
                f'SELECT DISTINCT "{layout.HEALPIX_COLUMN}" FROM ({adopt})').fetchall()],
                          dtype=np.int64)
        idx = partitioning.locate(hs, partitioning.starts29(tiling), partitioning.ends29(tiling))
        targets = sorted({int(i) for i in idx if i >= 0})
    if not recut and not targets:
        return None
    target_keys = {(tiling[i].order, tiling[i].pixel) for i in targets}
    rewrite = recut + [p for k, p in old_parts.items() if k in target_keys and k not in split]
    rewrite_keys = {(p.order, p.pixel) for p in rewrite}
    version = child.version + 1
    vroot = version_root(child.name, version)
    out = ctx.out / vroot
    primary = out / child.name
    dataset = primary / layout.DATASET
    old_dataset = ctx.abs(child.path) / layout.DATASET
    file_schema = pq.read_schema(old_dataset / "_common_metadata")
    writer = PartitionWriter(dataset, file_schema, tiling)
    queries = [f"SELECT * FROM {read_parquet([old_dataset / partition_rel(p) for p in rewrite])}"
               ] if rewrite else []
    if adopt:
        queries.append(adopt)
    with private_duckdb(ctx.work, ctx.memory_limit) as con:
        union = " UNION ALL BY NAME ".join(f"({q})" for q in queries)
        cols = ", ".join(f'"{n}"' for n in file_schema.names)
        reader = con.sql(f"SELECT {cols} FROM ({union}) ORDER BY 1").to_arrow_reader(
            ctx.batch_rows)
        for batch in reader:
            writer.write(batch)
    writer.close()
    files = list(writer.files)
    for p in child.partitions:
        if (p.order, p.pixel) not in rewrite_keys:
            files.append(_link(old_dataset, dataset, p))
    orphan_rows = child.orphan_rows
    if child.orphan_rows:
        if adopt:
            orphan_rows = _write_query(
                ctx, f"""SELECT o.* FROM read_parquet({sql_string(orphans)}) o
                         ANTI JOIN {new_keys} n ON o."{ckey}" = n.k""",
                out / ORPHANS, file_schema)
        else:
            link_file(orphans, out / ORPHANS)
    parts = _catalog(primary, file_schema, files, child.name, child.rows,
                     child.ra or director.ra, child.dec or director.dec, "source")
    hats_files.write_collection(out, child.name, margin=None, index=None)
    write_marker(out, child.name, version, ctx.transaction)
    return replace(child, path=f"{vroot}/{child.name}", partitions=tuple(parts),
                   orphan_rows=orphan_rows, version=version, transaction=ctx.transaction)


# --- child ---------------------------------------------------------------------------------


def _child(ctx: BuildContext, old: TableInfo | None) -> TableInfo:
    spec = ctx.spec
    name = spec.name
    director = _find(ctx.meta, spec.director or "")
    if director is None or director.kind is not TableKind.DIRECTOR:
        raise IngestError(f"{spec.director!r} is not a director table of the catalog")
    if not director.index_path:
        raise IngestError(f"director {director.name!r} has no director index")
    dkey = spec.director_key or director.key
    version = old.version + 1 if old else 1
    vroot = version_root(name, version)
    out = ctx.out / vroot
    primary = out / name
    dataset = primary / layout.DATASET
    file_schema = _file_schema(ctx.schema)
    tiling = list(director.partitions)
    h = layout.HEALPIX_COLUMN
    index = ctx.abs(director.index_path)
    cols = ", ".join(f'c."{n}"' for n in file_schema.names[1:])
    joined = (f"""SELECT d.{h} AS {h}, {cols} FROM {read_parquet(ctx.spools)} c
                  LEFT JOIN (SELECT "{director.key}" AS k, min({h}) AS {h}
                             FROM read_parquet({sql_string(index)}) GROUP BY 1) d
                  ON c."{dkey}" = d.k""")
    new_file = ctx.work / "child-new.parquet"
    _write_query(ctx, joined, new_file, file_schema)
    hs = pq.read_table(new_file, columns=[h]).column(0)
    hv = hs.fill_null(-1).to_numpy()
    idx = partitioning.locate(hv, partitioning.starts29(tiling), partitioning.ends29(tiling))
    touched = {(tiling[i].order, tiling[i].pixel) for i in np.unique(idx[idx >= 0])}
    old_dataset = ctx.abs(old.path) / layout.DATASET if old else None
    rewrite = [p for p in (old.partitions if old else ()) if (p.order, p.pixel) in touched]
    sources = [new_file] + [old_dataset / partition_rel(p) for p in rewrite]  # type: ignore[operator]
    new_orphans = ctx.work / "orphans-new.parquet"
    writer = PartitionWriter(dataset, file_schema, tiling, orphans=new_orphans)
    total = ctx.new_rows + sum(p.rows for p in rewrite)
    with ctx.progress("partitioning", total=total) as bar:
        for batch in _sorted(ctx, sources, nulls_last=True):
            writer.write(batch)
            bar.update(batch.num_rows)
    if writer.close() != total:
        raise InternalError(f"{name}: expected {total} rows, wrote {writer.total}")
    crashpoints.reached("build-data")
    files = list(writer.files)
    for p in (old.partitions if old else ()):
        if (p.order, p.pixel) not in touched:
            files.append(_link(old_dataset, dataset, p))  # type: ignore[arg-type]
    old_orphans = ctx.abs(old.path).parent / ORPHANS if old and old.orphan_rows else None
    orphan_rows = (old.orphan_rows if old else 0) + writer.orphans
    if writer.orphans and old_orphans is not None:
        _write_query(ctx, f"SELECT * FROM {read_parquet([old_orphans, new_orphans])}",
                     out / ORPHANS, file_schema)
    elif writer.orphans:
        shutil.move(new_orphans, out / ORPHANS)
    elif old_orphans is not None:
        link_file(old_orphans, out / ORPHANS)
    new_orphans.unlink(missing_ok=True)
    new_file.unlink(missing_ok=True)
    rows = (old.rows if old else 0) + ctx.new_rows
    parts = _catalog(primary, file_schema, files, name, rows, spec.ra or director.ra,
                     spec.dec or director.dec, "source")
    hats_files.write_collection(out, name, margin=None, index=None)
    write_marker(out, name, version, ctx.transaction)
    return TableInfo(
        name=name, kind=TableKind.CHILD, columns=_columns(file_schema),
        column_sql=_column_sql(file_schema), ra=spec.ra, dec=spec.dec, director=director.name,
        director_key=dkey, path=f"{vroot}/{name}", partitions=tuple(parts),
        orphan_rows=orphan_rows, rows=rows, version=version, transaction=ctx.transaction)


# --- replicated ----------------------------------------------------------------------------


def _replicated(ctx: BuildContext, old: TableInfo | None) -> TableInfo:
    name = ctx.spec.name
    version = old.version + 1 if old else 1
    vroot = version_root(name, version)
    out = ctx.out / vroot
    out.mkdir(parents=True, exist_ok=True)
    schema = ctx.schema
    rows = 0
    sources = ([ctx.abs(old.path)] if old else []) + ctx.spools
    with pq.ParquetWriter(out / f"{name}.parquet", schema, **hats_files.write_options(schema)) as w:
        for src in sources:
            for batch in pq.ParquetFile(src).iter_batches(ctx.batch_rows):
                w.write_table(pa.Table.from_batches([batch]).cast(schema),
                              row_group_size=hats_files.ROW_GROUP_ROWS)
                rows += batch.num_rows
    write_marker(out, name, version, ctx.transaction)
    return TableInfo(name=name, kind=TableKind.REPLICATED, columns=_columns(schema, hidden=False),
                     column_sql=_column_sql(schema, hidden=False),
                     path=f"{vroot}/{name}.parquet", rows=rows, version=version,
                     transaction=ctx.transaction)


# --- small pieces ---------------------------------------------------------------------------


def _sorted(ctx: BuildContext, files: list[Path], *, nulls_last: bool = False,
            ) -> Iterator[pa.RecordBatch]:
    """The rows of the Parquet ``files`` (one schema), sorted by ``_healpix_29`` by
    DuckDB."""
    h = layout.HEALPIX_COLUMN
    nulls = " NULLS LAST" if nulls_last else ""
    with private_duckdb(ctx.work, ctx.memory_limit) as con:
        reader = con.sql(f"SELECT * FROM {read_parquet(files)} "
                         f"ORDER BY {h}{nulls}").to_arrow_reader(ctx.batch_rows)
        yield from reader


def _region_rows(sources: list[Path], between: tuple[int, int], schema: pa.Schema,
                 batch_rows: int, rows: int, max_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of ``sources`` (director spools and partition files) whose
    ``_healpix_29`` is in the half-open range ``between`` (``rows`` of them), with
    ``schema``, sorted by ``_healpix_29``. Every batch of a spool and every partition
    file is sorted, so the region is a slice of each; the slices are merged by one
    stable sort in memory, at most about ``max_rows`` rows at a time: a larger region
    (one large partition) is taken in consecutive ranges of ``_healpix_29``."""
    for part in _ranges(sources, between, rows, max_rows):
        merged = _merged(sources, part, schema)
        if merged is not None:
            yield from merged.to_batches(max_chunksize=batch_rows)


#: A region is never taken in ranges of fewer rows than this (a range costs one look at
#: every source).
MIN_RANGE_ROWS = 16_384


def _ranges(sources: list[Path], between: tuple[int, int], rows: int, max_rows: int
            ) -> list[tuple[int, int]]:
    """``between`` cut into consecutive ranges of about ``max_rows`` rows of ``sources``
    each (not fewer than ``MIN_RANGE_ROWS``), from the ``_healpix_29`` values alone."""
    per = max(max_rows, MIN_RANGE_ROWS)
    if rows <= per:
        return [between]
    h = []
    for path in sources:
        if path.name == DIRECTOR_SPOOL:
            h += [b.column(0).to_numpy() for b in
                  read_spool(path, between, columns=[layout.HEALPIX_COLUMN])]
        else:
            h.append(_file_rows(path, between, [layout.HEALPIX_COLUMN]).column(0).to_numpy())
    values = np.sort(np.concatenate(h)) if h else np.zeros(0, np.int64)
    k = -(-len(values) // per)
    cuts = np.unique(values[np.arange(1, k) * len(values) // k]) if k > 1 else []
    edges = [between[0], *(int(c) for c in cuts), between[1]]
    return [(a, b) for a, b in itertools.pairwise(edges) if a < b]


def _file_rows(path: Path, between: tuple[int, int], columns: list[str] | None = None
               ) -> pa.Table:
    """The rows of a Parquet file whose ``_healpix_29`` is in the half-open ``between``."""
    return pq.read_table(path, columns=columns,
                         filters=[(layout.HEALPIX_COLUMN, ">=", between[0]),
                                  (layout.HEALPIX_COLUMN, "<", between[1])])


def _merged(sources: list[Path], between: tuple[int, int], schema: pa.Schema
            ) -> pa.Table | None:
    """``_region_rows``' rows in one table. Each spool's slices are copied out of its
    mapping, which is released at once: the system maps whole blocks of a file around
    the bytes read, so a mapping kept would count two to three times the rows taken
    in the process's memory. (A spool with one slice keeps it mapped until the sort
    copies it, a moment later.)"""
    pieces: list[pa.RecordBatch] = []
    for path in sources:
        if path.name == DIRECTOR_SPOOL:
            slices = list(read_spool(path, between))
            if slices:
                pieces.extend(pa.Table.from_batches(slices).combine_chunks().to_batches())
            del slices
            continue
        pieces.extend(_file_rows(path, between).to_batches())
    pieces = [b.cast(schema) for b in pieces if b.num_rows]
    if not pieces:
        return None
    h = np.concatenate([b.column(0).to_numpy() for b in pieces])
    order = np.argsort(h, kind="stable")  # a merge of sorted runs
    return pa.Table.from_batches(pieces, schema=schema).take(pa.array(order))


@dataclass(frozen=True)
class _Cut:
    """What ``_cut_by_region`` wrote."""

    files: list[WrittenFile]
    written: list[Partition]  # with their row counts, in tiling order
    total: int
    index_spools: list[Path]  # (key, Norder, Npix, _healpix_29) of the rows written


#: A region's rows may take this share of its thread's part of the memory limit: while
#: they are sorted they are held twice (as read, and sorted).
REGION_MEMORY_SHARE = 1 / 3


def _cut_by_region(ctx: BuildContext, sources: list[Path], rows: int, parts: list[Partition],
                   dataset: Path, schema: pa.Schema, margins: MarginCollector,
                   bar: Progress) -> _Cut:
    """Write the rows of ``sources`` (spools and old partition files) into the files of
    ``parts`` (tiling order) under ``dataset``, and offer them to ``margins``.

    One global sort would spill to disk once the rows outgrow the memory limit. The
    partitions are cut instead into runs of consecutive partitions (*regions*) whose
    rows fit in memory, and the regions are sorted and written in parallel (the memory
    limit shared between them). A region takes from each source only its own rows, a
    partition too large for one region in several ranges (``_region_rows``).
    """
    key = ctx.spec.key
    threads = max(1, min(cpus(), MAX_REGION_THREADS))
    limit = memory_bytes(ctx.memory_limit) // threads
    row_bytes = max(1, sum(f.stat().st_size for f in sources) // max(1, rows))
    max_rows = max(1, int(limit * REGION_MEMORY_SHARE) // row_bytes)
    regions = _regions(parts, max_rows)
    threads = min(threads, len(regions)) or 1
    lock = threading.Lock()

    def cut(i: int, region: list[Partition]) -> tuple[PartitionWriter, Path]:
        spool = ctx.work / f"index-new-{i:05d}.parquet"
        writer = PartitionWriter(dataset, schema, region, index_key=key, index_spool=spool)
        between = (region[0].range29[0], region[-1].range29[1])
        for batch in _region_rows(sources, between, schema, ctx.batch_rows,
                                  sum(p.rows for p in region), max_rows):
            table, h, _ = writer.write(batch)
            with lock:
                margins.feed(table, h)
                bar.update(batch.num_rows)
        writer.close()
        return writer, spool

    with ThreadPoolExecutor(threads, thread_name_prefix="skyshard-region") as pool:
        done = list(pool.map(cut, range(len(regions)), regions))
    return _Cut(files=[f for w, _ in done for f in w.files],
                written=[p for w, _ in done for p in w.written],
                total=sum(w.total for w, _ in done),
                index_spools=[s for w, s in done if s.exists()])


#: Regions sorted and written at once (at most one per CPU).
MAX_REGION_THREADS = 4


def _regions(parts: list[Partition], max_rows: int) -> list[list[Partition]]:
    """``parts`` cut into runs of consecutive partitions of at most ``max_rows`` rows
    (a partition larger than that is a run of its own).

    >>> ps = [Partition(1, i, n) for i, n in enumerate([5, 5, 5, 20, 1])]
    >>> [[p.pixel for p in r] for r in _regions(ps, 10)]
    [[0, 1], [2], [3], [4]]
    """
    out: list[list[Partition]] = []
    size = 0
    for p in parts:
        if out and size + p.rows <= max_rows:
            out[-1].append(p)
            size += p.rows
        else:
            out.append([p])
            size = p.rows
    return out


def _write_query(ctx: BuildContext, sql: str, path: Path, schema: pa.Schema) -> int:
    """Write the rows of a DuckDB query to ``path`` with ``schema`` (Arrow field
    metadata kept, which DuckDB's own COPY would drop); returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with private_duckdb(ctx.work, ctx.memory_limit) as con, \
            pq.ParquetWriter(path, schema, **hats_files.write_options(schema)) as w:
        cols = ", ".join(f'"{n}"' for n in schema.names)
        for batch in con.sql(f"SELECT {cols} FROM ({sql})").to_arrow_reader(ctx.batch_rows):
            w.write_table(pa.Table.from_batches([batch]).cast(schema))
            rows += batch.num_rows
    return rows


def _link(old_dataset: Path, dataset: Path, p: Partition) -> WrittenFile:
    rel = partition_rel(p)
    link_file(old_dataset / rel, dataset / rel)
    return WrittenFile(p, rel, pq.read_metadata(dataset / rel))


def _catalog(primary: Path, schema: pa.Schema, files: list[WrittenFile], name: str, rows: int,
             ra: str | None, dec: str | None, kind: str) -> list[Partition]:
    parts = sorted((f.partition for f in files), key=lambda p: p.range29[0])
    if sum(p.rows for p in parts) > rows:
        raise InternalError(f"{name}: partitions hold more rows than the table")
    props = hats_files.object_properties(name, rows, ra or "", dec or "", parts, kind=kind)
    return write_catalog_files(primary, schema, files, props)


def _margin_catalog(margin_dir: Path, schema: pa.Schema, files: list[WrittenFile], table: str,
                    spec: TableSpec) -> list[Partition]:
    parts = sorted((f.partition for f in files), key=lambda p: p.range29[0])
    props = hats_files.object_properties(margin_dir.name, sum(p.rows for p in parts),
                                         spec.ra or "", spec.dec or "", parts, kind="margin")
    props["hats_primary_table_url"] = table
    props["hats_margin_threshold"] = f"{spec.margin_arcsec:g}"
    return write_catalog_files(margin_dir, schema, files, props)


def _file_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(layout.HEALPIX_COLUMN, pa.int64(), nullable=True), *schema])


def _columns(schema: pa.Schema, hidden: bool = True) -> tuple[tuple[str, str], ...]:
    fields = list(schema)[1:] if hidden else list(schema)
    return tuple((f.name, str(f.type)) for f in fields)


def _column_sql(schema: pa.Schema, hidden: bool = True) -> tuple[tuple[str, bool], ...]:
    fields = list(schema)[1:] if hidden else list(schema)
    return tuple(((f.metadata or {}).get(b"mysql_type", b"").decode(), f.nullable) for f in fields)
