"""The Qserv dialect (MySQL as Qserv's users write it) and its rendering to DuckDB.

MySQL semantics are kept where MySQL and DuckDB differ: ``STDDEV``/``VARIANCE``/``STD``
are population statistics, NULLs sort first ascending, ``||``/``&&`` are logical, ``/``
of integers is not integer division and ``x / 0`` is NULL, ``DIV`` truncates towards
zero and yields an integer, ``MOD``/``%`` keep the dividend's sign, ``LIKE`` ignores case
and applies to numbers as text. (``=`` on strings stays case-sensitive, unlike MySQL's
default ``_ci`` collations.)

>>> to_duckdb(sqlglot.parse_one("SELECT a DIV 2, a || b FROM t ORDER BY a", read=QservDialect))
'SELECT CAST(TRUNC(a / NULLIF(2, 0)) AS BIGINT), a OR b FROM t ORDER BY a NULLS FIRST'
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.dialects.mysql import MySQL


class QservDialect(MySQL):
    """MySQL as Qserv accepts it; registered with sqlglot as ``qservdialect``."""


class _DuckDBOut(DuckDB):
    class Generator(DuckDB.Generator):
        TRANSFORMS = {
            **DuckDB.Generator.TRANSFORMS,
            exp.IntDiv: lambda self, e: (
                f"CAST(TRUNC({self.sql(e, 'this')} / NULLIF({self.sql(e, 'expression')}, 0))"
                " AS BIGINT)"
            ),

        }


def to_duckdb(tree: exp.Expression, *, copy: bool = True) -> str:
    """Render a tree parsed in the Qserv dialect as DuckDB SQL (``copy=False``: the
    caller's own copy, which the rewrites may change)."""
    return _DuckDBOut().generate(_mysql_semantics(tree.copy() if copy else tree), copy=False)


_TWO64 = "18446744073709551616"


def _unsigned(e: exp.Expression) -> exp.Expression:
    """``e`` as MySQL's unsigned 64-bit view of it (two's complement), as HUGEINT."""
    h = exp.cast(e, "HUGEINT", dialect="duckdb")
    return sqlglot.parse_one(f"((({h.sql('duckdb')}) % {_TWO64} + {_TWO64}) % {_TWO64})",
                             read="duckdb")


def _mysql_semantics(tree: exp.Expression) -> exp.Expression:
    """Tree rewrites for what the generator cannot express alone.

    - MySQL's default collations make LIKE ignore case, and LIKE reads numbers as text:
      ``x LIKE p`` becomes ``CAST(x AS VARCHAR) ILIKE p`` (NOT and ESCAPE kept around it).
    - ``NAME_CONST(name, value)`` is its value; ``_charset'text'`` introducers and
      ``COLLATE`` clauses are dropped.
    - MySQL's bit operators work on unsigned 64-bit integers: ``-99 << 1`` is
      18446744073709551418, ``-1 >> 60`` is 15; the results are BIGINT UNSIGNED.
    """

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "name_const" \
                and len(node.expressions) == 2:
            return fix(node.expressions[1])  # NAME_CONST(name, value) is its value
        if isinstance(node, (exp.Introducer, exp.Collate)):
            # _latin1'text' marks a character set, COLLATE a collation: the value stays
            inner = node.expression if isinstance(node, exp.Introducer) else node.this
            return fix(inner)
        if isinstance(node, exp.Like):
            return exp.ILike(this=exp.cast(node.this, "VARCHAR"), expression=node.expression,
                             negate=node.args.get("negate"))
        if isinstance(node, exp.BitwiseLeftShift):
            shifted = exp.Mod(this=exp.Mul(this=exp.Paren(this=_unsigned(node.this)),
                                           expression=exp.Paren(this=exp.BitwiseLeftShift(
                                               this=exp.cast(exp.Literal.number(1), "HUGEINT", dialect="duckdb"),
                                               expression=node.expression))),
                              expression=exp.Literal.number(_TWO64))
            return exp.cast(exp.Paren(this=shifted), "UBIGINT", dialect="duckdb")
        if isinstance(node, exp.BitwiseRightShift):
            return exp.cast(exp.Paren(this=exp.BitwiseRightShift(
                this=exp.Paren(this=_unsigned(node.this)), expression=node.expression)), "UBIGINT", dialect="duckdb")
        if isinstance(node, (exp.BitwiseAnd, exp.BitwiseOr, exp.BitwiseXor)):
            op = type(node)(this=exp.Paren(this=_unsigned(node.this)),
                            expression=exp.Paren(this=_unsigned(node.expression)))
            return exp.cast(exp.Paren(this=op), "UBIGINT", dialect="duckdb")
        if isinstance(node, exp.BitwiseNot):
            return exp.cast(exp.Paren(this=_unsigned(exp.BitwiseNot(this=node.this))), "UBIGINT", dialect="duckdb")
        return node

    return tree.transform(fix, copy=False)
