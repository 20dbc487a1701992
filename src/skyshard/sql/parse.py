"""Parse user SQL into one sqlglot tree, or fail with a typed error.

Only a single read statement gets through: ``SELECT`` (with ``UNION``/``INTERSECT``/
``EXCEPT`` and ``WITH``), possibly after statements that assign user variables
(:mod:`skyshard.sql.variables`). Everything else — other ``SET``s, ``COPY``, ``ATTACH``,
``PRAGMA``, ``INSTALL``, ``CALL``, several SELECTs — is refused here, by statement type,
before anything reaches DuckDB; functions that could reach files, the network or
settings are refused wherever they appear.

>>> parse("SELECT ra FROM Object WHERE objectId = 1").sql()
'SELECT ra FROM Object WHERE objectId = 1'
>>> parse("SELECT ra FROM")
Traceback (most recent call last):
...
skyshard.errors.SqlSyntaxError: unexpected end of query (line 1, column 14)
"""

from __future__ import annotations

import logging

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from skyshard.errors import ForbiddenQueryError, SqlSyntaxError, UnsupportedQueryError
from skyshard.sql.dialect import QservDialect
from skyshard.sql.variables import NoResult, Run, Statement, resolve

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


def parse(sql: str, *, metadata: bool = False, run: Run | None = None) -> exp.Expression:
    """One read statement as a sqlglot tree (MySQL/Qserv dialect); with ``metadata``,
    ``SHOW``/``DESCRIBE`` statements are accepted too.

    The text may be a script that assigns user variables first (``SET @v = ...``,
    ``SELECT ... INTO @v``; see :mod:`skyshard.sql.variables`): their values are written
    into the last statement. ``run`` runs the assignments that read tables; a script
    that ends with an assignment gives :class:`~skyshard.sql.variables.NoResult`.
    """
    if not sql or not sql.strip():
        raise SqlSyntaxError("empty query")
    tree = resolve(statements(sql), sql, run)
    if isinstance(tree, NoResult):
        return tree
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
            "SELECT ... INTO is not supported here: results are returned, never stored",
            construct="SELECT INTO", suggestion="INTO @variable is accepted at the top level "
            "of a SELECT; else write the value inline", sql=sql)
    check_functions(tree, sql)
    placeholder = tree.find(exp.Placeholder)
    if placeholder is not None:
        raise UnsupportedQueryError(
            f"query parameters ({placeholder.sql()}) are not supported",
            construct="query parameter", suggestion="write the value inline", sql=sql)
    return tree


def statements(sql: str) -> list[Statement]:
    """The ``;``-separated statements of ``sql``, parsed, each with the variables of its
    ``INTO @v, ...`` (taken out of the statement: sqlglot reads no trailing INTO).

    >>> [(s.tree.sql(), s.into) for s in statements("SELECT MAX(ra) FROM t INTO @m; SELECT @m")]
    [('SELECT MAX(ra) FROM t', ('m',)), ('SELECT @m', ())]
    """
    dialect = QservDialect()
    try:
        tokens = dialect.tokenize(sql)
    except TokenError as err:
        raise SqlSyntaxError(f"cannot read the query: {err}", sql=sql) from None
    _check_numbers(tokens, sql)
    chunks: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type is TokenType.SEMICOLON:
            chunks.append([])
        else:
            chunks[-1].append(token)
    out: list[Statement] = []
    for chunk in (c for c in chunks if c):
        kept, into = _without_into(chunk)
        try:
            trees = [t for t in dialect.parser().parse(kept, sql) if t is not None]
        except ParseError as err:
            raise syntax_error(err, sql) from None
        out += [Statement(tree, into) for tree in trees]
    if not out:
        raise SqlSyntaxError("empty query")
    return out


def _without_into(tokens: list[Token]) -> tuple[list[Token], tuple[str, ...]]:
    """The tokens without a top-level ``INTO @a, @b`` (after the select list or at the
    end), and the variables' names in lower case."""
    depth = 0
    for i, token in enumerate(tokens):
        if token.token_type is TokenType.L_PAREN:
            depth += 1
        elif token.token_type is TokenType.R_PAREN:
            depth -= 1
        elif token.token_type is TokenType.INTO and depth == 0:
            names: list[str] = []
            j = i + 1
            while (j + 1 < len(tokens) and tokens[j].token_type is TokenType.PARAMETER
                   and tokens[j + 1].start == tokens[j].end + 1):
                names.append(tokens[j + 1].text.lower())
                j += 2
                if j + 1 < len(tokens) and tokens[j].token_type is TokenType.COMMA \
                        and tokens[j + 1].token_type is TokenType.PARAMETER:
                    j += 1
                    continue
                break
            if names:
                return tokens[:i] + tokens[j:], tuple(names)
    return tokens, ()


def _check_numbers(tokens: list[Token], sql: str) -> None:
    """Refuse malformed numbers (``35 .1``, ``35. 1``, ``1.2.3``): MySQL reads two
    numbers there and fails; sqlglot would read ``35 .1`` as a qualified name."""
    for i, a in enumerate(tokens[:-1]):
        if a.token_type is not TokenType.NUMBER:
            continue
        b = tokens[i + 1]
        end = None
        if b.token_type is TokenType.NUMBER:
            end = b.end
        elif (b.token_type is TokenType.DOT and i + 2 < len(tokens)
              and tokens[i + 2].token_type is TokenType.NUMBER
              and tokens[i + 2].start == b.end + 1):
            end = tokens[i + 2].end
        if end is not None:
            text = sql[a.start:end + 1]
            why = ": a number has no spaces inside" if any(c.isspace() for c in text) else ""
            raise SqlSyntaxError(f"malformed number {text!r}{why}", line=a.line,
                                 column=a.col - (a.end - a.start), sql=sql)


def syntax_error(err: ParseError, sql: str) -> SqlSyntaxError:
    """sqlglot's first parse error as a SqlSyntaxError with its line and column, and the
    text it stopped at."""
    first = err.errors[0] if err.errors else {}
    description = first.get("description") or str(err)
    if "SENTINEL" in description:
        description = "unexpected end of query"
    else:
        near = (first.get("highlight") or "").strip()
        if near:
            description += f" near {near[:40]!r}"
    return SqlSyntaxError(description, line=first.get("line"), column=first.get("col"), sql=sql)


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
