"""Queries as tables: ``SHOW [FULL] PROCESSLIST``, ``information_schema.processlist``
(queued and executing queries) and ``information_schema.queries`` (the history).

The columns follow MySQL's process list, then Qserv's additions (``TYPE``, ``SUBMITTED``,
``UPDATED``, ``CHUNKS`` = partitions to read, ``CHUNKS_COMP`` = partitions done). A
``SELECT`` over these tables (``WHERE id = 5``, ``ORDER BY``, ``COUNT(*)``...) runs in
sqlglot's Python executor over the rows built here, never in the catalog's DuckDB.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlglot import exp
from sqlglot.executor import Table, execute

from skyshard.errors import SqlError
from skyshard.service.queries import Query

_PROCESS = [
    ("ID", pa.int64()), ("USER", pa.string()), ("HOST", pa.string()), ("DB", pa.string()),
    ("COMMAND", pa.string()), ("TIME", pa.int64()), ("STATE", pa.string()),
    ("INFO", pa.string()), ("TYPE", pa.string()), ("SUBMITTED", pa.timestamp("us")),
    ("UPDATED", pa.timestamp("us")), ("CHUNKS", pa.int64()), ("CHUNKS_COMP", pa.int64()),
]
_HISTORY = [
    ("ID", pa.int64()), ("USER", pa.string()), ("TYPE", pa.string()),
    ("STATUS", pa.string()), ("SUBMITTED", pa.timestamp("us")),
    ("STARTED", pa.timestamp("us")), ("ENDED", pa.timestamp("us")),
    ("DURATION", pa.float64()), ("CHUNKS", pa.int64()), ("CHUNKS_COMP", pa.int64()),
    ("ROWS", pa.int64()), ("BYTES", pa.int64()), ("ERROR_TYPE", pa.string()),
    ("ERROR", pa.string()), ("QUERY", pa.string()),
]
_SHOW = ["Id", "User", "Host", "db", "Command", "Time", "State", "Info", "Chunks",
         "Chunks_comp"]

_SQL_TYPES = {pa.int64(): "BIGINT", pa.string(): "VARCHAR", pa.float64(): "DOUBLE",
              pa.timestamp("us"): "DATETIME"}

#: information_schema tables answered here (lower-case names).
TABLES = {"processlist": _PROCESS, "queries": _HISTORY}


def _ts(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t) if t is not None else None


def process_row(q: Query, database: str, now: float) -> tuple:
    return (q.id, q.user, q.host or "", database, "Query" if q.mode == "sync" else "Async",
            int(q.seconds(now)), q.state.value, q.sql, q.mode.upper(), _ts(q.submitted),
            _ts(q.updated), q.partitions_total, q.partitions_done)


def history_row(q: Query, now: float) -> tuple:
    return (q.id, q.user, q.mode.upper(), q.state.value, _ts(q.submitted), _ts(q.started),
            _ts(q.finished), round(q.seconds(now), 6), q.partitions_total, q.partitions_done,
            q.rows, q.bytes, q.error_type, q.error_message, q.sql)


def show_processlist(active: Sequence[Query], database: str, *, full: bool) -> pa.Table:
    """MySQL's ``SHOW [FULL] PROCESSLIST`` (``Info`` cut to 100 characters unless FULL)."""
    now = time.time()
    rows = []
    for q in active:
        r = list(process_row(q, database, now))
        if not full and r[7] is not None:
            r[7] = r[7][:100]
        rows.append(r[:8] + r[11:13])
    types = [t for _, t in _PROCESS[:8]] + [pa.int64(), pa.int64()]
    return _table(_SHOW, types, rows)


def information_schema(tree: exp.Expression, active: Sequence[Query],
                       history: Sequence[Query], database: str) -> pa.Table:
    """Run a SELECT over ``information_schema.processlist`` / ``.queries``."""
    now = time.time()
    data = {
        "processlist": [process_row(q, database, now) for q in active],
        "queries": [history_row(q, now) for q in history],
    }
    tables = {"information_schema": {
        name: Table(tuple(c.lower() for c, _ in TABLES[name]), data[name]) for name in TABLES}}
    schema = {"information_schema": {
        name: {c.lower(): _SQL_TYPES[t] for c, t in TABLES[name]} for name in TABLES}}
    tree = tree.transform(_lower_table_names)
    try:
        result = execute(tree, schema=schema, tables=tables)
    except Exception as exc:  # sqlglot's executor raises plain errors
        raise SqlError(f"cannot evaluate this query on information_schema: {exc}") from exc
    names = _output_names(tree, result.columns)
    types = _output_types(names, result.rows)
    return _table(names, types, [list(r) for r in result.rows])


def mentioned(tree: exp.Expression) -> str | None:
    """The information_schema table of ours a statement reads, if any."""
    for t in tree.find_all(exp.Table):
        if t.text("db").lower() == "information_schema" and t.name.lower() in TABLES:
            return t.name.lower()
    return None


def _lower_table_names(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Table) and node.text("db").lower() == "information_schema":
        return exp.table_(node.name.lower(), db="information_schema", alias=node.alias or None)
    return node


def _output_names(tree: exp.Expression, columns: Sequence[str]) -> list[str]:
    known = {c.lower(): c for cols in TABLES.values() for c, _ in cols}
    projections = tree.expressions if isinstance(tree, exp.Select) else []
    star = any(isinstance(p, exp.Star) or (isinstance(p, exp.Column) and p.is_star)
               for p in projections)
    if projections and not star and len(projections) == len(columns):
        return [p.alias or (known.get(p.name.lower(), p.name) if isinstance(p, exp.Column)
                            else p.sql(dialect="mysql")) for p in projections]
    return [known.get(c.lower(), c) for c in columns]


def _output_types(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[pa.DataType]:
    declared = {c: t for cols in TABLES.values() for c, t in cols}
    types = []
    for i, name in enumerate(names):
        if name in declared:
            types.append(declared[name])
            continue
        values = [r[i] for r in rows if r[i] is not None]
        types.append(pa.array(values).type if values else pa.int64())
    return types


def _table(names: Sequence[str], types: Sequence[pa.DataType], rows: list) -> pa.Table:
    columns = [pa.array([r[i] for r in rows], type=t) for i, t in enumerate(types)]
    return pa.Table.from_arrays(columns, names=list(names))
