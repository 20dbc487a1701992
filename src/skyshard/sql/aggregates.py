"""Which function calls are aggregates, in DuckDB's own terms.

sqlglot knows many aggregates as ``exp.AggFunc`` nodes, but parses the others
(``quantile_cont``, ``product``, ``entropy``, ...) as ``exp.Anonymous`` and a few as plain
functions (``LIST``). A call is an aggregate when it is an ``AggFunc`` or when DuckDB,
which runs it, lists its name as an aggregate function, or as a macro whose body calls
one (``geomean``, ``weighted_avg``, ``json_group_array``). The names come from the
catalog of a fresh in-memory DuckDB, read once per process.

>>> import sqlglot
>>> node = sqlglot.parse_one("SELECT quantile_cont(ra, 0.5)", read="mysql").expressions[0]
>>> is_aggregate(node), function_name(node)
(True, 'quantile_cont')
>>> is_aggregate(sqlglot.parse_one("SELECT sqrt(ra)", read="mysql").expressions[0])
False
"""

from __future__ import annotations

import functools
import re

from sqlglot import exp

from skyshard.sql.dialect import to_duckdb

#: A call at the start of rendered SQL: its (possibly quoted) function name.
_HEAD = re.compile(r'\s*"?([A-Za-z_][A-Za-z0-9_]*)"?\s*\(')
#: A call anywhere in a macro body.
_CALL = re.compile(r'"?([A-Za-z_][A-Za-z0-9_]*)"?\s*\(')
_STRING = re.compile(r"'(?:[^']|'')*'")


@functools.cache
def aggregate_names() -> frozenset[str]:
    """Lower-case names of DuckDB's aggregate functions and aggregate macros."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        rows = con.execute("SELECT function_name, function_type, macro_definition "
                           "FROM duckdb_functions() "
                           "WHERE function_type IN ('aggregate', 'macro')").fetchall()
    finally:
        con.close()
    names = {name.lower() for name, kind, _ in rows if kind == "aggregate"}
    macros: dict[str, set[str]] = {}
    for name, kind, body in rows:
        if kind == "macro" and body:
            calls = {c.lower() for c in _CALL.findall(_STRING.sub("''", body))}
            macros.setdefault(name.lower(), set()).update(calls)
    grown = True
    while grown:  # a macro calling an aggregate macro is one too
        found = {m for m, calls in macros.items() if m not in names and calls & names}
        names |= found
        grown = bool(found)
    return frozenset(names)


def function_name(node: exp.Func) -> str:
    """The lower-case name DuckDB sees for the call ``node`` (its head once rendered)."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    try:
        m = _HEAD.match(to_duckdb(node))
    except Exception:  # noqa: BLE001 - a node the generator cannot render alone
        m = None
    if m is not None:
        return m.group(1).lower()
    return node.sql_name().lower()


def is_aggregate(node: exp.Expression) -> bool:
    """Whether ``node`` is an aggregate call (not looking inside it)."""
    if isinstance(node, exp.AggFunc):
        return True
    if not isinstance(node, exp.Func):
        return False
    names = aggregate_names()
    if function_name(node) in names:
        return True
    return not isinstance(node, exp.Anonymous) and any(
        n.lower() in names for n in type(node).sql_names())


def find_aggregate(e: exp.Expression) -> exp.Func | None:
    """The first aggregate call in ``e`` (``e`` itself included), or None."""
    for node in e.walk():
        if is_aggregate(node):
            return node
    return None


__all__ = ["aggregate_names", "find_aggregate", "function_name", "is_aggregate"]
