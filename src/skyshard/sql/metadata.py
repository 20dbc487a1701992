"""Statements answered from the catalog description, without reading partitions.

``SHOW TABLES``, ``SHOW [FULL] COLUMNS FROM t [LIKE 'pat']``, ``DESCRIBE t`` (MySQL's
shapes), a request that only assigns user variables (no result set), and
``SELECT COUNT(*) FROM t`` with nothing else, answered from the row counts stored at
ingest (as Qserv answers it from its table statistics).

>>> import sqlglot
>>> is_metadata_statement(sqlglot.parse_one("SHOW TABLES", read="mysql"))
True
"""

from __future__ import annotations

import fnmatch

import pyarrow as pa
from sqlglot import exp

from skyshard.catalog.model import CatalogMeta, TableInfo
from skyshard.errors import CatalogError, UnknownNameError, UnsupportedQueryError
from skyshard.sql.variables import NoResult

_ARROW_TO_MYSQL = {
    "int8": "tinyint(4)", "int16": "smallint(6)", "int32": "int(11)", "int64": "bigint(20)",
    "uint8": "tinyint(3) unsigned", "uint16": "smallint(5) unsigned",
    "uint32": "int(10) unsigned", "uint64": "bigint(20) unsigned",
    "float": "float", "double": "double", "string": "text", "large_string": "longtext",
    "binary": "blob", "large_binary": "longblob", "bool": "tinyint(1)", "date32[day]": "date",
    "timestamp[us]": "datetime",
}


def is_metadata_statement(tree: exp.Expression) -> bool:
    """SHOW, DESCRIBE, or a request that only assigned user variables (answered with no
    result set: a table of no columns)."""
    return isinstance(tree, (exp.Show, exp.Describe, NoResult))


def answer(tree: exp.Expression, catalog: CatalogMeta) -> pa.Table:
    if isinstance(tree, NoResult):
        return pa.table({})
    if isinstance(tree, exp.Describe):
        return columns_of(_table(catalog, tree.this))
    kind = str(tree.this).upper()
    if kind == "TABLES":
        name = f"Tables_in_{catalog.name}"
        return pa.table({name: sorted(catalog.tables)})
    if kind == "COLUMNS":
        like = tree.args.get("like")
        pattern = like.name if isinstance(like, exp.Expression) else None
        return columns_of(_table(catalog, tree.args.get("target")), like=pattern)
    raise UnsupportedQueryError(f"SHOW {kind} is not supported", construct=f"SHOW {kind}",
                                suggestion="SHOW TABLES, SHOW COLUMNS FROM t and DESCRIBE t are")


def _table(catalog: CatalogMeta, target: object) -> TableInfo:
    name = target.name if isinstance(target, exp.Expression) else str(target)
    try:
        return catalog.table(name)
    except CatalogError:
        raise UnknownNameError(
            f"no table {name!r} in catalog {catalog.name!r} "
            f"(tables: {', '.join(sorted(catalog.tables)) or 'none'})", kind="table") from None


def columns_of(info: TableInfo, like: str | None = None) -> pa.Table:
    """MySQL's ``SHOW COLUMNS`` table: Field, Type, Null, Key, Default, Extra."""
    sql = info.column_sql or tuple(("", True) for _ in info.columns)
    rows = []
    for (name, arrow), (mysql, nullable) in zip(info.columns, sql):
        if like is not None and not fnmatch.fnmatchcase(
                name.lower(), like.lower().replace("%", "*").replace("_", "?")):
            continue
        key = "PRI" if name == info.key and info.kind.value == "director" else ""
        rows.append((name, mysql or _ARROW_TO_MYSQL.get(arrow, arrow),
                     "YES" if nullable else "NO", key, None, ""))
    names = ["Field", "Type", "Null", "Key", "Default", "Extra"]
    return pa.table({n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)})


def stored_count(tree: exp.Expression, catalog: CatalogMeta) -> pa.Table | None:
    """``SELECT COUNT(*) [AS n] FROM t`` (nothing else) from the stored row count."""
    if not isinstance(tree, exp.Select):
        return None
    if any(tree.args.get(k) for k in ("where", "group", "having", "joins", "distinct", "order",
                                      "limit", "offset", "with", "qualify")):
        return None
    src = tree.args.get("from_") or tree.args.get("from")
    if src is None or not isinstance(src.this, exp.Table) or len(tree.expressions) != 1:
        return None
    e = tree.expressions[0]
    inner = e.this if isinstance(e, exp.Alias) else e
    if not (isinstance(inner, exp.Count) and isinstance(inner.this, exp.Star)):
        return None
    try:
        info = catalog.table(src.this.name)
    except Exception:
        return None
    name = e.alias if isinstance(e, exp.Alias) else e.sql(dialect="mysql")
    return pa.table({name: pa.array([info.rows], pa.int64())})
