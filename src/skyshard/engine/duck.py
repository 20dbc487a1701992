"""The query engine's DuckDB: one locked-down database per catalog per process.

Lock-down order matters (DuckDB refuses the first two settings once external access is
off): allow only the catalog's directories, turn external access off, lock the
configuration. Then user SQL cannot read other files, reach the network, install or load
extensions, or change a setting; each query gets a cursor (cheap) on the shared database
(a new database costs ~33 ms).

A data directory may be a URL (``s3://bucket/catalog``, see ``storage.remote``): its
fsspec file system (built from ``storage_options``) is registered with the database
before the lock-down, and the URL prefix is the allowed directory, so user SQL can read
below it and nowhere else on that store (other buckets or prefixes are refused like any
other path). Failures to read files (a missing partition, a store that stopped
answering) are ``ExternalError``.

>>> import tempfile
>>> eng = Engine([tempfile.gettempdir()])
>>> eng.query("SELECT scisql_angSep(0, 0, 0, 1) AS d").column("d").to_pylist()
[1.0]
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from skyshard.errors import ExternalError, ForbiddenQueryError, QueryLimitError, SqlError
from skyshard.storage import remote

_LOCKDOWN_TEMPLATE = (
    # Published partition files never change: keep their footers in memory.
    "SET parquet_metadata_cache=true",
    "SET allowed_directories=[{dirs}]",
    "SET enable_external_access=false",
    "SET lock_configuration=true",
)


class Engine:
    """A DuckDB database that can only read below ``data_dirs``."""

    def __init__(self, data_dirs: Sequence[str | os.PathLike], *, threads: int | None = None,
                 memory_limit: str | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        config = {
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            "allow_community_extensions": False,
        }
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._db = duckdb.connect(config=config)
        from skyshard.engine.macros import install

        install(self._db)
        allowed = []
        urls: dict[str, list[str]] = {}  # protocol -> URL data dirs
        for d in data_dirs:
            if remote.is_url(str(d)):
                url = remote.RemotePath(str(d)).url
                urls.setdefault(url.split("://", 1)[0], []).append(url)
                allowed.append(url + "/")
            else:
                allowed.append(os.path.join(os.path.abspath(d), ""))
        for protocol, prefixes in urls.items():
            self._db.register_filesystem(
                remote.engine_filesystem(protocol, storage_options, prefixes))
        dirs = ", ".join(_quote(d) for d in allowed)
        for stmt in _LOCKDOWN_TEMPLATE:
            self._db.execute(stmt.format(dirs=dirs))
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._db.cursor()

    def query(self, sql: str, *, max_rows: int | None = None,
              tables: dict[str, pa.Table] | None = None,
              cursor: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        """Run one statement the planner built; Arrow table out.

        ``tables`` are Arrow tables visible by name to this statement only (partial
        results for a merge). ``cursor``: one of this engine's cursors to run on (so
        that the caller can interrupt it); closed at the end, like the engine's own.
        """
        cur = cursor if cursor is not None else self.cursor()
        try:
            for name, t in (tables or {}).items():
                cur.register(name, t)
            rel = cur.sql(sql)
            if rel is None:
                raise ForbiddenQueryError("only SELECT statements are run")
            if max_rows is not None:
                reader = rel.to_arrow_reader(65_536)
                batches, n = [], 0
                for b in reader:
                    n += b.num_rows
                    if n > max_rows:
                        raise QueryLimitError(f"result exceeds the limit of {max_rows} rows")
                    batches.append(b)
                return pa.Table.from_batches(batches, schema=reader.schema)
            return rel.to_arrow_table()
        except duckdb.PermissionException as exc:
            raise ForbiddenQueryError(f"not allowed: {_first_line(exc)}") from exc
        except duckdb.IOException as exc:  # HTTPException too
            raise ExternalError(f"cannot read the catalog's files: {_first_line(exc)}") from exc
        except (duckdb.BinderException, duckdb.CatalogException, duckdb.ParserException,
                duckdb.ConversionException, duckdb.InvalidInputException,
                duckdb.OutOfRangeException, duckdb.NotImplementedException) as exc:
            raise SqlError(_first_line(exc)) from exc
        except duckdb.Error as exc:
            if type(exc) is not duckdb.Error:
                raise
            # A Python exception in a file system (fsspec, object storage) reaches us as
            # the base class, with the Python traceback as its message.
            raise ExternalError(f"cannot read the catalog's files: {_last_line(exc)}") from exc
        finally:
            cur.close()


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _last_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
