"""The embedded database: open a catalog directory and query it with SQL.

>>> import skyshard                                      # doctest: +SKIP
>>> db = skyshard.open("gaia_catalog")                    # doctest: +SKIP
>>> db.sql("SELECT COUNT(*) AS n FROM stars").to_pylist() # doctest: +SKIP
[{'n': 482176}]
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow as pa

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
from skyshard.storage import layout


class Database:
    """A catalog opened for queries. Thread-safe; one DuckDB per instance.

    ``workers=N`` runs queries on a new local Dask cluster of N processes,
    ``scheduler="tcp://host:8786"`` on an existing Dask cluster (shared storage: every
    worker reads the catalog at the same path); ``close()`` releases it.
    """

    def __init__(self, root: str | os.PathLike, *, fragment_partitions: int | None = None,
                 threads: int | None = None, memory_limit: str | None = None,
                 workers: int | None = None, scheduler: str | None = None) -> None:
        self.root = Path(root).resolve()
        if (self.root / layout.CATALOG_META).exists():
            self.meta: CatalogMeta = model.load(self.root)
        else:
            self.meta = hats_source.describe(self.root)
        dirs = {str(self.root)}
        for t in self.meta.tables.values():
            for p in (t.path, t.index_path, t.margin_path):
                if p and Path(p).is_absolute():
                    dirs.add(str(Path(p).parent))
        self.engine = Engine(sorted(dirs), threads=threads, memory_limit=memory_limit)
        self._indexes: dict[str, DirectorIndex | None] = {}
        self._lock = threading.Lock()
        self.executor: Executor
        if workers is not None or scheduler is not None:
            try:
                from skyshard.dispatch.dask_executor import DaskExecutor
            except ImportError as exc:
                raise UserError("workers and scheduler need Dask: "
                                "pip install 'dask[distributed]'") from exc
            self.executor = DaskExecutor(self.root, workers=workers, scheduler=scheduler,
                                         fragment_partitions=fragment_partitions,
                                         data_dirs=sorted(dirs), engine=self.engine)
        else:
            self.executor = LocalExecutor(self.engine, fragment_partitions=fragment_partitions,
                                          threads=threads or 2)

    def close(self) -> None:
        """Release the executor's cluster (a local cluster is stopped); idempotent."""
        close = getattr(self.executor, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tables(self) -> dict[str, TableInfo]:
        return dict(self.meta.tables)

    def plan(self, sql: str, tree=None) -> QueryPlan:
        return plan(sql, self.meta, self.root, self._lookup_keys, tree=tree)

    def sql(self, sql: str, *, max_rows: int | None = None, dialect: str = "qserv") -> pa.Table:
        """Run one SELECT (or SHOW/DESCRIBE); an Arrow table with the user's column names.

        ``dialect`` is ``"qserv"`` (MySQL as Qserv users write it) or ``"adql"`` (ADQL 2.1:
        TOP, CONTAINS/INTERSECTS with POINT, CIRCLE, BOX, POLYGON, DISTANCE, ...).
        """
        if dialect == "adql":
            from skyshard.sql.adql import parse_adql

            tree = parse_adql(sql)
        elif dialect == "qserv":
            tree = parse(sql, metadata=True)
        else:
            raise UserError(f"unknown dialect {dialect!r} (qserv or adql)")
        if metadata.is_metadata_statement(tree):
            return metadata.answer(tree, self.meta)
        counted = metadata.stored_count(tree, self.meta)
        if counted is not None:
            return counted
        return self.executor.run(self.plan(sql, tree), max_rows=max_rows)

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

    def _lookup_keys(self, info: TableInfo, constraints: list[KeyConstraint]) -> KeyMatch:
        """Partitions holding the given director keys, from the director index; for
        ``=``/``IN``, also the ``_healpix_29`` values of those rows."""
        director = info if info.index_path else self.meta.table(info.director or info.name)
        if not director.index_path:
            return KeyMatch({(p.order, p.pixel) for p in info.partitions}, None)
        index = self._index(director)
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

    def _index(self, director: TableInfo) -> DirectorIndex | None:
        with self._lock:
            if director.name not in self._indexes:
                path = Path(director.index_path)
                path = path if path.is_absolute() else self.root / path
                self._indexes[director.name] = DirectorIndex.load(path, director.key)
            return self._indexes[director.name]


def _integral(c: KeyConstraint) -> bool:
    values = c.values if c.values is not None else (c.low, c.high)
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _literal(v: object) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def open(path: str | os.PathLike, **options) -> Database:  # noqa: A001 - the public name
    """Open a skyshard catalog directory, or a HATS catalog / collection in place."""
    return Database(path, **options)
