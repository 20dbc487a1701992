"""What a statement received over MySQL is, so the session knows who answers it.

- Qserv's commands, recognised in the text: ``SUBMIT <select>``, ``CANCEL <id>``,
  ``KILL [QUERY|CONNECTION] <id>``, ``SELECT * FROM qserv_result(<id>)``,
  ``CALL qserv_result_delete(<id>)``, ``SHOW [FULL] PROCESSLIST``;
- ``information_schema.processlist`` / ``.queries``: the query service's tables;
- what clients send on their own (``SET NAMES``, session variables, ``USE``,
  ``SELECT @@version_comment``, ``SELECT DATABASE()``, ``SHOW DATABASES``,
  ``SHOW VARIABLES``, other ``information_schema`` tables, ``BEGIN``/``COMMIT``): answered
  by the protocol layer from the session, never by DuckDB;
- everything else, unparsed text included, goes to the catalog (``Database.sql``), which
  accepts one read-only query and refuses the rest with a typed error.

>>> classify("SUBMIT SELECT 1").kind, classify("SUBMIT SELECT 1").sql
(<Kind.SUBMIT: 'submit'>, 'SELECT 1')
>>> classify("kill query 12").query_id
12
>>> classify("SELECT @@version_comment LIMIT 1").kind
<Kind.CLIENT: 'client'>
>>> classify("SELECT * FROM read_csv('/etc/passwd')").kind
<Kind.CATALOG: 'catalog'>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import sqlglot
from sqlglot import exp

from skyshard.service.processlist import mentioned


class Kind(Enum):
    CATALOG = "catalog"          # Database.sql, through the query service
    SUBMIT = "submit"            # SUBMIT <select>: asynchronous
    CANCEL = "cancel"            # CANCEL / KILL [QUERY|CONNECTION] <id>
    RESULT = "result"            # SELECT * FROM qserv_result(<id>)
    DELETE_RESULT = "delete"     # CALL qserv_result_delete(<id>)
    PROCESSLIST = "processlist"  # SHOW [FULL] PROCESSLIST
    QUERIES = "queries"          # SELECT ... FROM information_schema.processlist/queries
    SET = "set"                  # SET ...: checked, then kept in the session
    CLIENT = "client"            # answered by the protocol layer from the session


@dataclass(frozen=True)
class Statement:
    kind: Kind
    sql: str
    tree: exp.Expression | None = None
    query_id: int | None = None
    option: str | None = None  # CANCEL, QUERY or CONNECTION (KILL ...); FULL (PROCESSLIST)


_FLAGS = re.IGNORECASE | re.DOTALL
_SUBMIT = re.compile(r"SUBMIT\s+(.+)", _FLAGS)
_CANCEL = re.compile(r"(CANCEL|KILL\s+QUERY|KILL\s+CONNECTION|KILL)\s+(\d+)", _FLAGS)
_RESULT = re.compile(r"SELECT\s+\*\s+FROM\s+qserv_result\s*\(\s*(\d+)\s*\)", _FLAGS)
_DELETE = re.compile(r"CALL\s+qserv_result_delete\s*\(\s*(\d+)\s*\)", _FLAGS)
_PROCESSLIST = re.compile(r"SHOW\s+(FULL\s+)?PROCESSLIST", _FLAGS)

#: Functions the protocol layer answers from the session (mysql-mimic's list).
_SESSION_FUNCTIONS = {"USER", "CURRENT_USER", "SESSION_USER", "SYSTEM_USER", "VERSION",
                      "CURRENT_VERSION", "DATABASE", "SCHEMA", "CURRENT_SCHEMA",
                      "CONNECTION_ID"}
_SESSION_NODES = (exp.SessionParameter, exp.CurrentSchema, exp.CurrentUser, exp.CurrentVersion)
_NEUTRAL_NODES = (exp.Select, exp.Alias, exp.Identifier, exp.Literal, exp.Limit, exp.Paren,
                  exp.Var, exp.TableAlias)


def classify(sql: str) -> Statement:
    text = sql.strip().rstrip(";").strip()
    if m := _SUBMIT.fullmatch(text):
        return Statement(Kind.SUBMIT, m.group(1).strip())
    if m := _CANCEL.fullmatch(text):
        verb = m.group(1).upper().split()
        return Statement(Kind.CANCEL, text, query_id=int(m.group(2)),
                         option=verb[-1] if verb != ["KILL"] else None)
    if m := _RESULT.fullmatch(text):
        return Statement(Kind.RESULT, text, query_id=int(m.group(1)))
    if m := _DELETE.fullmatch(text):
        return Statement(Kind.DELETE_RESULT, text, query_id=int(m.group(1)))
    if m := _PROCESSLIST.fullmatch(text):
        return Statement(Kind.PROCESSLIST, text, option="FULL" if m.group(1) else None)
    try:
        trees = [t for t in sqlglot.parse(text, read="mysql") if t is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return Statement(Kind.CATALOG, sql)
    if len(trees) != 1:
        return Statement(Kind.CATALOG, sql)
    tree = trees[0]
    return Statement(_kind_of(tree), sql, tree)


def _kind_of(tree: exp.Expression) -> Kind:
    if isinstance(tree, exp.Set):
        return Kind.SET
    if isinstance(tree, (exp.Use, exp.Transaction, exp.Commit, exp.Rollback)):
        return Kind.CLIENT
    if isinstance(tree, exp.Show):
        what = tree.name.upper()
        if what == "COLUMNS" or (what == "TABLES" and not tree.args.get("full")):
            return Kind.CATALOG
        return Kind.CLIENT
    if mentioned(tree) is not None:
        return Kind.QUERIES
    dbs = {t.text("db").lower() for t in tree.find_all(exp.Table)}
    if dbs == {"information_schema"}:
        return Kind.CLIENT
    if isinstance(tree, exp.Select) and _session_only(tree):
        return Kind.CLIENT
    return Kind.CATALOG


def _session_only(tree: exp.Select) -> bool:
    """A SELECT without FROM of session values only (``@@x``, ``DATABASE()``...)."""
    if any(tree.args.get(k) for k in tree.arg_types if k not in ("expressions", "limit")):
        return False
    found = False
    for node in tree.walk():
        if isinstance(node, _SESSION_NODES):
            found = True
        elif isinstance(node, exp.Anonymous) and node.name.upper() in _SESSION_FUNCTIONS:
            found = True
        elif not isinstance(node, _NEUTRAL_NODES) and not _inside_session_node(node):
            return False
    return found


def _inside_session_node(node: exp.Expression) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, _SESSION_NODES):
            return True
        parent = parent.parent
    return False
