"""The embedded database: open a catalog directory and query it with SQL.

>>> import skyshard                                      # doctest: +SKIP
>>> db = skyshard.open("gaia_catalog")                    # doctest: +SKIP
>>> db.sql("SELECT COUNT(*) AS n FROM stars").to_pylist() # doctest: +SKIP
[{'n': 482176}]
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlglot import exp

from skyshard.catalog import hats_source, model
from skyshard.catalog.director_index import DirectorIndex
from skyshard.catalog.model import CatalogMeta, TableInfo
from skyshard.dispatch.executor import Executor
from skyshard.dispatch.local import LocalExecutor
from skyshard.engine.duck import Engine
from skyshard.errors import UserError
from skyshard.sql.analyze import KeyConstraint
from skyshard.sql import metadata
from skyshard.sql.parse import parse
from skyshard.sql.plan import KeyMatch, QueryPlan, plan
from skyshard.storage import layout, leases, remote
from skyshard.storage.remote import RemotePath


class Database:
    """A catalog opened for queries. Thread-safe; one DuckDB per instance.

    ``shared_scans=True`` lets concurrent full scans of a big table share their reads
    (``dispatch.scans``), in this process or on the Dask workers; off by default: it pays
    when the scans read mostly the same columns, and costs a lone scan a little
    (``bench/shared_scans_bench.py``); not with ``fragment_partitions``. ``workers=N``
    runs queries on a new local Dask
    cluster of N processes,
    ``scheduler="tcp://host:8786"`` on an existing Dask cluster (shared storage: every
    worker reads the catalog at the same path); ``close()`` releases it. With
    ``placement="replicas"`` the cluster is shared-nothing: the catalog is copied to the
    workers' own disks, each partition on ``replication`` workers (default 2), and each
    part of a query runs where its partitions are (``dispatch.dask_executor``;
    ``replica_dir``: where a local cluster's workers keep their copies).

    A database follows its catalog: each query first checks whether a newer version was
    published (one ``stat`` of ``skyshard.json``) and, if so, plans against it; queries
    already running finish on the version they started with. The versions being read are
    pinned by a reader lease (``storage.leases``), so garbage collection never removes
    them.

    ``root`` may be a URL (``s3://bucket/prefix/catalog``; ``storage.remote``), read
    through fsspec with ``storage_options`` (credentials, ``endpoint_url``; default: the
    standard environment, e.g. ``AWS_*`` variables), by this process and by every Dask
    worker (shared storage). Such a catalog is read as it was when opened (no reader
    lease, no following: reopen to see a newer upload) and is never written.
    """

    def __init__(self, root: str | os.PathLike, *, fragment_partitions: int | None = None,
                 threads: int | None = None, memory_limit: str | None = None,
                 workers: int | None = None, scheduler: str | None = None,
                 placement: str = "shared", replication: int | None = None,
                 replica_dir: str | os.PathLike | None = None, shared_scans: bool = False,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        if placement != "shared" and workers is None and scheduler is None:
            raise UserError(f"placement={placement!r} needs workers or scheduler (a Dask "
                            "cluster)")
        self.root = remote.catalog_root(root, storage_options)
        options = self.root.storage_options if isinstance(self.root, RemotePath) else None
        self._lock = threading.Lock()
        self._lease: leases.Lease | None = None
        self._reading: dict[_Snapshot, int] = {}
        self._snap = self._load()
        if self._snap.stamp is not None:
            self._lease = leases.Lease(self.root)
            self._lease.pin(_versions(self._snap.meta))
            weakref.finalize(self, self._lease.release)  # a database never closed
        dirs = {str(self.root)}
        for t in self.meta.tables.values():
            for p in (t.path, t.index_path, t.margin_path):
                if p and Path(p).is_absolute():
                    dirs.add(str(Path(p).parent))
        self.engine = Engine(sorted(dirs), threads=threads, memory_limit=memory_limit,
                             storage_options=options)
        self.executor: Executor
        if workers is not None or scheduler is not None:
            try:
                from skyshard.dispatch.dask_executor import DaskExecutor
            except ImportError as exc:
                raise UserError("workers and scheduler need Dask: "
                                "pip install 'dask[distributed]'") from exc
            self.executor = DaskExecutor(self.root, workers=workers, scheduler=scheduler,
                                         fragment_partitions=fragment_partitions,
                                         data_dirs=sorted(dirs), engine=self.engine,
                                         placement=placement, replication=replication,
                                         replica_dir=replica_dir, storage_options=options,
                                         shared_scans=shared_scans)
        else:
            self.executor = LocalExecutor(self.engine, fragment_partitions=fragment_partitions,
                                          threads=threads or 2, shared_scans=shared_scans)

    def close(self) -> None:
        """Release the executor's cluster (a local cluster is stopped) and the reader
        lease; idempotent."""
        close = getattr(self.executor, "close", None)
        if close is not None:
            close()
        if self._lease is not None:
            self._lease.release()

    # --- following the published catalog -------------------------------------------------

    @property
    def meta(self) -> CatalogMeta:
        """The catalog's description, as of the latest published version."""
        return self._current().meta

    def refresh(self) -> bool:
        """Move to a newer published version if there is one; True if it did."""
        before = self._snap
        return self._current() is not before

    def _load(self) -> _Snapshot:
        if isinstance(self.root, RemotePath):
            return _Snapshot(model.load(self.root), None)  # not followed
        meta_file = self.root / layout.CATALOG_META
        if not meta_file.exists():
            return _Snapshot(hats_source.describe(self.root), None)
        stamp = _stamp(meta_file)
        return _Snapshot(model.load(self.root), stamp)

    def _current(self) -> _Snapshot:
        """The snapshot of the newest published version (reloaded when it changed)."""
        snap = self._snap
        if snap.stamp is None or _stamp(self.root / layout.CATALOG_META) in (None, snap.stamp):
            return snap
        with self._lock:
            if _stamp(self.root / layout.CATALOG_META) not in (None, self._snap.stamp):
                self._snap = self._load()
                self._pin()
            return self._snap

    def _pin(self) -> None:
        """Lease the current version and those of queries still running (under the lock)."""
        if self._lease is None:
            return
        versions = _versions(self._snap.meta)
        for old in self._reading:
            versions |= _versions(old.meta)
        self._lease.pin(versions)

    @contextmanager
    def _read(self) -> Iterator[_Snapshot]:
        """The current snapshot, counted as read until the block ends."""
        snap = self._current()
        with self._lock:
            self._reading[snap] = self._reading.get(snap, 0) + 1
        try:
            yield snap
        finally:
            with self._lock:
                self._reading[snap] -= 1
                if not self._reading[snap]:
                    del self._reading[snap]
                    if snap is not self._snap:
                        self._pin()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tables(self) -> dict[str, TableInfo]:
        return dict(self.meta.tables)

    def plan(self, sql: str, tree=None, *, snapshot: _Snapshot | None = None) -> QueryPlan:
        snap = snapshot or self._current()
        return plan(sql, snap.meta, self.root, partial(self._lookup_keys, snap), tree=tree)

    def sql(self, sql: str, *, max_rows: int | None = None, dialect: str = "qserv",
            tree: exp.Expression | None = None) -> pa.Table:
        """Run one SELECT (or SHOW/DESCRIBE); an Arrow table with the user's column names.

        ``dialect`` is ``"qserv"`` (MySQL as Qserv users write it) or ``"adql"`` (ADQL 2.1:
        TOP, CONTAINS/INTERSECTS with POINT, CIRCLE, BOX, POLYGON, DISTANCE, ...).
        ``tree``: ``sql`` parsed already (by ``skyshard.sql.parse.parse`` or
        ``skyshard.sql.adql.parse_adql``), to skip parsing it again.
        """
        if tree is None:
            tree = self._parse(sql, dialect)
        with self._read() as snap:
            if metadata.is_metadata_statement(tree):
                return metadata.answer(tree, snap.meta)
            counted = metadata.stored_count(tree, snap.meta)
            if counted is not None:
                return counted
            return self.executor.run(self.plan(sql, tree, snapshot=snap), max_rows=max_rows)

    def _parse(self, sql: str, dialect: str) -> exp.Expression:
        if dialect == "adql":
            from skyshard.sql.adql import parse_adql

            return parse_adql(sql)
        if dialect == "qserv":
            return parse(sql, metadata=True, run=self.sql)  # run: SELECT ... INTO @v first
        raise UserError(f"unknown dialect {dialect!r} (qserv or adql)")

    def explain(self, sql: str) -> str:
        """The plan in words: partitions chosen and the statements that would run."""
        p = self.plan(sql)
        lines = [f"partitions: {len(p.partitions or [])} of {p.considered}"]
        if p.split is not None:
            some = [(q.order, q.pixel) for q in (p.partitions or [])][:3]
            lines += ["parallel: " + p.parallel_sql(some, orphans=True), "merge: " + p.merge_sql()]
        else:
            lines.append(f"not split ({p.split_refusal}); single statement:")
        lines.append("single: " + p.single_sql())
        return "\n".join(lines)

    def _lookup_keys(self, snap: _Snapshot, info: TableInfo,
                     constraints: list[KeyConstraint]) -> KeyMatch:
        """Partitions holding the given director keys, from the director index; for
        ``=``/``IN``, also the ``_healpix_29`` values of those rows."""
        director = info if info.index_path else snap.meta.table(info.director or info.name)
        if not director.index_path:
            return KeyMatch({(p.order, p.pixel) for p in info.partitions}, None)
        index = self._index(snap, director)
        if index is not None and all(_integral(c) for c in constraints):
            found: set[tuple[int, int]] | None = None
            healpix: set[int] | None = None
            for c in constraints:
                got = (index.partitions_of(c.values) if c.values is not None
                       else index.partitions_between(c.low, c.high))
                found = got if found is None else found & got
                if c.values is not None:
                    h = index.healpix_of(c.values)
                    if h is not None:
                        healpix = h if healpix is None else healpix & h
            return KeyMatch(found or set(), healpix)
        path = Path(director.index_path)
        path = path if path.is_absolute() else self.root / path
        key = director.key
        where = []
        for c in constraints:
            if c.values is not None:
                where.append(f'"{key}" IN ({", ".join(_literal(v) for v in c.values)})')
            else:
                where.append(f'"{key}" BETWEEN {_literal(c.low)} AND {_literal(c.high)}')
        sql = (f"SELECT DISTINCT Norder, Npix FROM read_parquet('{path}') "
               f"WHERE {' AND '.join(where)}")
        rows = self.engine.query(sql).to_pylist()
        return KeyMatch({(int(r["Norder"]), int(r["Npix"])) for r in rows}, None)

    def _index(self, snap: _Snapshot, director: TableInfo) -> DirectorIndex | None:
        with snap.lock:
            if director.name not in snap.indexes:
                path = Path(director.index_path)
                path = path if path.is_absolute() else self.root / path
                snap.indexes[director.name] = DirectorIndex.load(path, director.key)
            return snap.indexes[director.name]


@dataclass(eq=False)
class _Snapshot:
    """One published version of the catalog, as planned against, with its loaded
    director indexes. ``stamp`` identifies ``skyshard.json`` (None: a HATS catalog served
    in place, which has no versions)."""

    meta: CatalogMeta
    stamp: tuple[int, int, int] | None
    indexes: dict[str, DirectorIndex | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def _versions(meta: CatalogMeta) -> set[tuple[str, int]]:
    return {(t.name, t.version) for t in meta.tables.values()}


def _integral(c: KeyConstraint) -> bool:
    values = c.values if c.values is not None else (c.low, c.high)
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _literal(v: object) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def open(path: str | os.PathLike, **options) -> Database:  # noqa: A001 - the public name
    """Open a skyshard catalog directory (or URL: ``s3://bucket/catalog``, with
    ``storage_options=``), or a HATS catalog / collection in place."""
    return Database(path, **options)
