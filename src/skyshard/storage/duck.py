"""The private DuckDB of ingest work (sorting child spools and the director index, key
checks, joins with the director index):
never the query engine's locked-down database.

>>> sql_string("it's")
"'it''s'"
>>> sql_list(["a.parquet", "b.parquet"])
"['a.parquet', 'b.parquet']"
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb


def sql_string(value: str | os.PathLike) -> str:
    """A SQL string literal."""
    return "'" + os.fspath(value).replace("'", "''") + "'"


def sql_list(values: Sequence[str | os.PathLike]) -> str:
    """A DuckDB list literal of strings (file lists for ``read_parquet``)."""
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


def read_parquet(files: Sequence[str | os.PathLike]) -> str:
    """``read_parquet([...])`` over ``files`` (which must share one schema)."""
    return f"read_parquet({sql_list(files)})"


@contextlib.contextmanager
def private_duckdb(work: Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh in-memory DuckDB spilling to ``work/duckdb-tmp``."""
    con = duckdb.connect(config={"memory_limit": memory_limit,
                                 "temp_directory": str(work / "duckdb-tmp"),
                                 "preserve_insertion_order": False})
    try:
        yield con
    finally:
        con.close()
