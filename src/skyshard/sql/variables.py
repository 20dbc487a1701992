"""User variables within one request, evaluated as MySQL evaluates them.

A request is one statement or a script of ``;``-separated statements: every statement
but the last assigns user variables, the last is the SELECT whose rows are returned. A
request that ends with an assignment returns no result set (:class:`NoResult`; MySQL
answers such a statement with OK).

- ``SET @v = <constant expression>``: the expression is written into the statements
  after it. ``SET @v = (SELECT ...)`` runs the sub-query first: one column, at most one
  row (no row is NULL).
- ``SELECT ... INTO @v1, @v2`` (the ``INTO`` after the select list or at the end) runs
  the SELECT first: at most one row, as MySQL requires ("Result consisted of more than
  one row"); no row leaves the variables as they were.
- ``scisql_s2CPolyToBin(ra1, dec1, ...)`` stays the polygon it describes, so that
  ``scisql_s2PtInCPoly(ra, dec, @poly)`` tests against its vertices, whether they were
  written as constants or read from a table by ``SELECT ... INTO``.
- A variable never set is NULL, as in MySQL; ``scisql_s2PtInCPoly(ra, dec, NULL)`` is
  0, as in sciSQL.

Running a statement needs the database (``run``, :meth:`skyshard.Database.sql`); without
it, an assignment that must read tables is refused.

>>> from skyshard.sql.parse import parse
>>> parse("SET @m = 20; SELECT objectId, @m FROM Object WHERE gMag < @m").sql()
'SELECT objectId, 20 AS "@m" FROM Object WHERE gMag < 20'
>>> parse("SELECT objectId FROM Object WHERE gMag < @never_set").sql()
'SELECT objectId FROM Object WHERE gMag < NULL'
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa
from sqlglot import exp

from skyshard.errors import SqlError, UnsupportedQueryError

__all__ = ["NoResult", "Run", "Statement", "resolve"]

#: Runs one statement of the request (``Database.sql``): its rows as an Arrow table.
Run = Callable[[str], pa.Table]

POLYGON = "scisql_s2cpolytobin"
PT_IN_POLYGON = "scisql_s2ptincpoly"


class NoResult(exp.Expression):
    """The answer to a request that only assigned variables: no result set."""

    arg_types: dict = {}


@dataclass(frozen=True)
class Statement:
    """One statement of a request; ``into`` the variables of ``SELECT ... INTO @v``
    (lower case, in order), empty for other statements."""

    tree: exp.Expression
    into: tuple[str, ...] = ()


def resolve(statements: Sequence[Statement], sql: str, run: Run | None) -> exp.Expression:
    """The last statement with the variables' values written in (or :class:`NoResult`
    when it assigns variables too). Statements other than ``SET @v = ...`` and
    ``SELECT ... INTO`` before the last are refused."""
    values: dict[str, exp.Expression] = {}
    *head, last = statements
    for st in head:
        if not (st.into or _assigns_variables(st.tree)):
            raise _not_an_assignment(st.tree, len(statements), sql)
        _assign(st, values, sql, run)
    if last.into or _assigns_variables(last.tree):
        _assign(last, values, sql, run)
        return NoResult()
    return substitute(last.tree, values, sql)


def substitute(tree: exp.Expression, values: dict[str, exp.Expression], sql: str) -> exp.Expression:
    """``tree`` with each ``@v`` replaced by its value (NULL when never set)."""
    if tree.find(exp.Parameter) is None:
        return tree

    def fix(node: exp.Expression) -> exp.Expression:
        if (isinstance(node, exp.Anonymous) and node.name.lower() == PT_IN_POLYGON
                and len(node.expressions) == 3 and isinstance(node.expressions[2], exp.Parameter)):
            value = values.get(node.expressions[2].name.lower(), exp.Null())
            if _is_polygon(value):
                position = [substitute(e, values, sql) for e in node.expressions[:2]]
                return exp.Anonymous(this=node.this, expressions=[
                    *position, *[v.copy() for v in value.expressions]])
            if isinstance(value, exp.Null):
                return exp.Literal.number(0)  # sciSQL: a NULL argument makes the test 0
        if isinstance(node, exp.Parameter):
            value = values.get(node.name.lower(), exp.Null())
            if _is_polygon(value):
                raise UnsupportedQueryError(
                    f"@{node.name} holds a polygon: use it as scisql_s2PtInCPoly(ra, dec, "
                    f"@{node.name})", construct="user variable", sql=sql)
            value = value.copy()
            if not isinstance(value, (exp.Literal, exp.Null, exp.Boolean, exp.Paren)):
                value = exp.Paren(this=value)  # keeps its precedence: @n * 2 with @n = 1 + 1
            if isinstance(node.parent, exp.Select) and node.arg_key == "expressions":
                return exp.alias_(value, f"@{node.name}", quoted=True)  # MySQL's column name
            return value
        return node

    return tree.transform(fix)


# --- assignments ----------------------------------------------------------------------


def _assigns_variables(tree: exp.Expression) -> bool:
    """``SET @a = ..., @b = ...`` (user variables only)."""
    items = tree.expressions if isinstance(tree, exp.Set) else []
    return bool(items) and all(
        isinstance(i, exp.SetItem) and isinstance(i.this, exp.EQ)
        and isinstance(i.this.this, exp.Parameter) for i in items)


def _not_an_assignment(tree: exp.Expression, count: int, sql: str) -> UnsupportedQueryError:
    if isinstance(tree, exp.Command) and str(tree.this).upper() == "CALL":
        target = str(tree.expression.this if tree.expression is not None else "").strip()
        name = target.split("(", 1)[0].strip() or "a procedure"
        suggestion = "skyshard runs no stored procedures"
        if name.lower().endswith("scisql_s2cpolyregion"):
            suggestion = ("select with scisql_s2PtInCPoly(ra, dec, @poly) = 1 alone: the polygon "
                          "chooses the partitions itself, no table of HTM ranges is needed")
        return UnsupportedQueryError(f"CALL {name}() is not supported", construct="CALL",
                                     suggestion=suggestion, sql=sql)
    if isinstance(tree, exp.Set):
        return UnsupportedQueryError(
            "only SET @variable = value is accepted before a SELECT", construct="SET", sql=sql)
    return UnsupportedQueryError(
        f"{count} statements given", construct="multiple statements",
        suggestion="send one SELECT at a time (SET @variable = ... and SELECT ... INTO "
                   "@variable before it are accepted)", sql=sql)


def _assign(st: Statement, values: dict[str, exp.Expression], sql: str, run: Run | None) -> None:
    if st.into:
        _select_into(st, values, sql, run)
        return
    for item in st.tree.expressions:
        eq = item.this
        name = eq.this.name.lower()
        value = substitute(eq.expression, values, sql)
        if isinstance(value, exp.Subquery) or (
                isinstance(value, exp.Paren) and isinstance(value.this, exp.Query)):
            values[name] = _scalar_subquery(value.this, name, sql, run)
            continue
        if any(isinstance(n, (exp.Column, exp.Var, exp.Query)) for n in value.walk()):
            raise UnsupportedQueryError(
                f"the value of @{eq.this.name} reads a table", construct="SET @variable",
                suggestion="give a constant, a sub-query in parentheses, or use "
                           "SELECT ... INTO @variable", sql=sql)
        values[name] = value


def _needs_run(run: Run | None, what: str, sql: str) -> Run:
    if run is None:
        raise UnsupportedQueryError(
            f"{what} runs a query first, which planning alone cannot do",
            construct="SELECT INTO @variable" if what.startswith("SELECT") else "SET @variable",
            suggestion="send the whole request to Database.sql (or a service)", sql=sql)
    return run


def _scalar_subquery(query: exp.Expression, name: str, sql: str, run: Run | None) -> exp.Expression:
    table = _needs_run(run, f"SET @{name} = (SELECT ...)", sql)(query.sql(dialect="mysql"))
    if table.num_columns != 1:
        raise SqlError(f"the sub-query giving @{name} returns {table.num_columns} columns, not 1",
                       sql=sql)
    if table.num_rows > 1:
        raise SqlError(f"the sub-query giving @{name} returns more than one row", sql=sql)
    return literal(table.column(0)[0].as_py() if table.num_rows else None)


def _select_into(st: Statement, values: dict[str, exp.Expression], sql: str,
                 run: Run | None) -> None:
    """Run the SELECT (variables substituted; each polygon item fetched as its vertex
    columns; at most two rows read) and assign its row."""
    select = substitute(st.tree, values, sql)
    if not isinstance(select, exp.Select):
        raise UnsupportedQueryError("INTO @variable is accepted after a plain SELECT only",
                                    construct="SELECT INTO @variable", sql=sql)
    items = select.expressions
    if len(items) != len(st.into):
        raise SqlError(f"SELECT ... INTO gives {len(items)} columns to {len(st.into)} variables",
                       sql=sql)
    columns: list[exp.Expression] = []
    spans: list[tuple[int, int, bool]] = []  # per item: first column, column count, polygon
    for item in items:
        bare = item.this if isinstance(item, exp.Alias) else item
        if isinstance(bare, exp.Anonymous) and bare.name.lower() == POLYGON:
            spans.append((len(columns), len(bare.expressions), True))
            columns += [a.copy() for a in bare.expressions]
        else:
            spans.append((len(columns), 1, False))
            columns.append(bare.copy())
    select.set("expressions", [exp.alias_(c, f"v{i}") for i, c in enumerate(columns)])
    if select.args.get("limit") is None:
        select = select.limit(2)
    table = _needs_run(run, "SELECT ... INTO @variable", sql)(select.sql(dialect="mysql"))
    if table.num_rows > 1:
        raise SqlError("SELECT ... INTO: the result has more than one row (MySQL: \"Result "
                       "consisted of more than one row\")", sql=sql)
    if table.num_rows == 0:
        return  # MySQL warns "No data" and leaves the variables unchanged
    row = [table.column(i)[0].as_py() for i in range(table.num_columns)]
    for name, (start, count, polygon) in zip(st.into, spans):
        part = row[start:start + count]
        if polygon:
            values[name] = exp.Null() if any(v is None for v in part) else exp.Anonymous(
                this="scisql_s2CPolyToBin", expressions=[literal(v) for v in part])
        else:
            values[name] = literal(part[0])


def _is_polygon(value: exp.Expression) -> bool:
    return isinstance(value, exp.Anonymous) and value.name.lower() == POLYGON


def literal(value: object) -> exp.Expression:
    """A SQL constant for a value read from a result (DOUBLE stays DOUBLE).

    >>> [literal(v).sql(dialect="mysql") for v in (None, 3, 2.5, "a'b", True)]
    ['NULL', '3', '2.5e0', "'a''b'", '1']
    """
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Literal.number(int(value))
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return exp.cast(exp.Literal.string(repr(value)), "DOUBLE")
        text = repr(value)
        return exp.Literal.number(text if "e" in text else text + "e0")
    if isinstance(value, Decimal):
        return exp.Literal.number(str(value))
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, bytes):
        return exp.HexString(this=value.hex())
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "DATETIME")
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    raise UnsupportedQueryError(f"a user variable cannot hold a {type(value).__name__}",
                                construct="user variable")
