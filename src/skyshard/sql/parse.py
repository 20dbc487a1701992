"""Parse user SQL into one sqlglot tree, or fail with a typed error.

Only a single read statement gets through: ``SELECT`` (with ``UNION``/``INTERSECT``/
``EXCEPT`` and ``WITH``). Everything else — ``SET``, ``COPY``, ``ATTACH``, ``PRAGMA``,
``INSTALL``, ``CALL``, several statements — is refused here, by statement type, before
anything reaches DuckDB; functions that could reach files, the network or settings are
refused wherever they appear.

>>> parse("SELECT ra FROM Object WHERE objectId = 1").sql()
'SELECT ra FROM Object WHERE objectId = 1'
>>> parse("SELECT ra FROM")
Traceback (most recent call last):
...
skyshard.errors.SqlSyntaxError: unexpected end of query (line 1, column 14)
"""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from skyshard.errors import ForbiddenQueryError, SqlSyntaxError, UnsupportedQueryError
from skyshard.sql.dialect import QservDialect

logging.getLogger("sqlglot").setLevel(logging.ERROR)

#: Functions that read files, reach the network, expose the environment or the engine's
#: internals. Table functions are refused separately (only catalog tables are sources).
FORBIDDEN_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json",
        "read_json_auto", "read_json_objects", "read_ndjson", "read_text", "read_blob",
        "glob", "getenv", "current_setting", "sniff_csv", "parquet_metadata",
        "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata", "query",
        "query_table", "duckdb_settings", "duckdb_extensions", "duckdb_secrets",
        "duckdb_databases", "duckdb_functions", "duckdb_tables", "duckdb_views",
        "duckdb_columns", "duckdb_temporary_files", "duckdb_memory", "pragma_version",
        "pragma_database_size", "pragma_table_info", "pragma_storage_info",
        "enable_profiling", "load_extension", "install_extension", "set_config",
        "read_xlsx", "read_ndjson_objects", "iceberg_scan", "delta_scan", "sqlite_scan",
        "postgres_scan", "mysql_scan", "http_get", "http_post", "system",
    )
)

READ_STATEMENTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)
#: Statements about the catalog itself, answered from its description (sql.metadata).
METADATA_STATEMENTS = (exp.Show, exp.Describe)


def parse(sql: str, *, metadata: bool = False) -> exp.Expression:
    """One read statement as a sqlglot tree (MySQL/Qserv dialect); with ``metadata``,
    ``SHOW``/``DESCRIBE`` statements are accepted too."""
    if not sql or not sql.strip():
        raise SqlSyntaxError("empty query")
    try:
        trees = [t for t in sqlglot.parse(sql, read=QservDialect) if t is not None]
    except ParseError as err:
        if re.search(r"\bINTO\s+@", sql, re.IGNORECASE):
            raise UnsupportedQueryError(
                "SELECT ... INTO @variable is not supported: there are no user variables",
                construct="SELECT INTO @variable", suggestion="write the value inline",
                sql=sql) from None
        raise syntax_error(err, sql) from None
    except TokenError as err:
        raise SqlSyntaxError(f"cannot read the query: {err}", sql=sql) from None
    if len(trees) > 1:
        trees = [_substitute_variables(trees, sql)]
    tree = trees[0]
    if metadata and isinstance(tree, METADATA_STATEMENTS) and not (
            isinstance(tree, exp.Describe) and not isinstance(tree.this, exp.Table)):
        return tree
    if not isinstance(tree, READ_STATEMENTS):
        name = _statement_name(tree)
        raise ForbiddenQueryError(
            f"{name} statements are not allowed: skyshard runs read-only SELECT queries",
            sql=sql)
    if tree.find(exp.Into) is not None:
        raise UnsupportedQueryError(
            "SELECT ... INTO is not supported: results are returned, never stored",
            construct="SELECT INTO", suggestion="write the value inline", sql=sql)
    check_functions(tree, sql)
    variable = tree.find(exp.Parameter)
    if variable is not None:
        raise UnsupportedQueryError(
            f"user variable @{variable.name} is not set", construct="user variable",
            suggestion="SET @variable = value; before the SELECT, in the same request", sql=sql)
    placeholder = tree.find(exp.Placeholder)
    if placeholder is not None:
        raise UnsupportedQueryError(
            f"query parameters ({placeholder.sql()}) are not supported",
            construct="query parameter", suggestion="write the value inline", sql=sql)
    return tree


def syntax_error(err: ParseError, sql: str) -> SqlSyntaxError:
    """sqlglot's first parse error as a SqlSyntaxError with its line and column."""
    first = err.errors[0] if err.errors else {}
    description = first.get("description") or str(err)
    if "SENTINEL" in description:
        description = "unexpected end of query"
    return SqlSyntaxError(description, line=first.get("line"), column=first.get("col"), sql=sql)


def _substitute_variables(trees: list[exp.Expression], sql: str) -> exp.Expression:
    """``SET @v = <constant>; ... SELECT ...``: the variables' values written into the
    SELECT, as MySQL would evaluate them. A polygon made by ``scisql_s2CPolyToBin(...)``
    becomes the vertices of ``scisql_s2PtInCPoly(ra, dec, @v)``. Anything else in a
    script is refused."""
    values: dict[str, exp.Expression] = {}
    for stmt in trees[:-1]:
        items = stmt.expressions if isinstance(stmt, exp.Set) else []
        if not items:
            raise UnsupportedQueryError(
                f"{len(trees)} statements given", construct="multiple statements",
                suggestion="send one SELECT at a time (SET @variable = constant before it is "
                           "accepted)", sql=sql)
        for item in items:
            eq = item.this
            if not (isinstance(eq, exp.EQ) and isinstance(eq.this, exp.Parameter)):
                raise UnsupportedQueryError("only SET @variable = value is accepted before a "
                                            "SELECT", construct="SET", sql=sql)
            value = eq.expression
            if any(isinstance(n, (exp.Column, exp.Select)) for n in value.walk()):
                raise UnsupportedQueryError(
                    "a user variable's value must be a constant", construct="SET @variable",
                    sql=sql)
            values[eq.this.name.lower()] = value
    select = trees[-1]
    if not isinstance(select, READ_STATEMENTS):
        raise UnsupportedQueryError("a script must end with a SELECT", construct="script",
                                    sql=sql)

    def fix(node: exp.Expression) -> exp.Expression:
        if (isinstance(node, exp.Anonymous) and node.name.lower() == "scisql_s2ptincpoly"
                and len(node.expressions) == 3 and isinstance(node.expressions[2], exp.Parameter)):
            value = values.get(node.expressions[2].name.lower())
            if isinstance(value, exp.Anonymous) and value.name.lower() == "scisql_s2cpolytobin":
                return exp.Anonymous(this=node.this, expressions=[
                    node.expressions[0], node.expressions[1], *[v.copy() for v in value.expressions]])
        if isinstance(node, exp.Parameter):
            value = values.get(node.name.lower())
            if value is None:
                raise UnsupportedQueryError(f"user variable @{node.name} is not set",
                                            construct="user variable", sql=sql)
            if isinstance(value, exp.Anonymous) and value.name.lower() == "scisql_s2cpolytobin":
                raise UnsupportedQueryError(
                    f"@{node.name} holds a polygon: use it as scisql_s2PtInCPoly(ra, dec, "
                    f"@{node.name})", construct="user variable", sql=sql)
            return value.copy()
        return node

    return select.transform(fix)


def check_functions(tree: exp.Expression, sql: str | None = None) -> None:
    """Refuse forbidden functions and any table function, wherever they appear."""
    for node in tree.find_all(exp.Func):
        name = _function_name(node)
        if name in FORBIDDEN_FUNCTIONS:
            raise ForbiddenQueryError(f"function {name}() is not allowed", sql=sql)
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise ForbiddenQueryError(
                f"table functions are not allowed ({table.this.sql()}); "
                "query the catalog's tables by name", sql=sql)
        if table.this.quoted and ("/" in table.name or "." in table.name):
            raise ForbiddenQueryError(
                f"{table.name!r} is not a table of the catalog; files cannot be queried", sql=sql)


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower() if hasattr(node, "sql_name") else type(node).__name__.lower()


def _statement_name(tree: exp.Expression) -> str:
    if isinstance(tree, exp.Command):
        return str(tree.this).upper()
    if isinstance(tree, exp.Alias):  # ``ATTACH 'x'`` and ``INSTALL x`` parse as aliases
        return str(tree.this.sql()).split()[0].upper() or "this"
    return type(tree).__name__.upper()
