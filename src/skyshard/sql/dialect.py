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


def to_duckdb(tree: exp.Expression) -> str:
    """Render a tree parsed in the Qserv dialect as DuckDB SQL."""
    return _DuckDBOut().generate(_mysql_like(tree.copy()), copy=False)


def _mysql_like(tree: exp.Expression) -> exp.Expression:
    """MySQL's default collations make LIKE ignore case, and LIKE reads numbers as text:
    ``x LIKE p`` becomes ``CAST(x AS VARCHAR) ILIKE p`` (NOT and ESCAPE kept around it)."""

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Like):
            return exp.ILike(this=exp.cast(node.this, "VARCHAR"), expression=node.expression,
                             negate=node.args.get("negate"))
        return node

    return tree.transform(fix, copy=False)
