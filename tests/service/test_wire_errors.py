"""Every error has one MySQL code and one HTTP status, from one table."""

from __future__ import annotations

import pytest

from skyshard.errors import (
    CatalogError,
    ForbiddenQueryError,
    InternalError,
    QueryCancelled,
    QueryLimitError,
    SqlError,
    SqlSyntaxError,
    UnknownNameError,
    UnsupportedQueryError,
)
from skyshard.service.errors import (
    SQLSTATES,
    AuthenticationError,
    NotFinishedError,
    QueryTimeoutError,
    ResultGoneError,
    ServerBusyError,
    UnknownDatabaseError,
    UnknownQueryError,
    wire,
)


@pytest.mark.parametrize("exc, code, status", [
    (SqlSyntaxError("bad", line=2, column=5), 1064, 400),
    (UnknownNameError("no column 'x' in Object", line=1, column=8), 1054, 400),
    (UnknownNameError("no table 'T' in catalog 'c' (tables: A)", line=1, column=15), 1146, 400),
    (UnsupportedQueryError("near-neighbour joins"), 1235, 400),
    (ForbiddenQueryError("function read_csv() is not allowed"), 1227, 403),
    (SqlError("Binder Error: x"), 1105, 400),
    (CatalogError("broken"), 1105, 400),
    (AuthenticationError("no"), 1045, 401),
    (UnknownQueryError(5), 1094, 404),
    (UnknownDatabaseError("x", "cat"), 1049, 404),
    (NotFinishedError(5, "EXECUTING"), 1105, 409),
    (ResultGoneError(5), 1146, 410),
    (QueryLimitError("too many rows"), 1104, 413),
    (QueryTimeoutError(3), 3024, 504),
    (QueryCancelled("cancelled"), 1317, 409),
    (ServerBusyError("busy"), 1041, 503),
    (InternalError("bug"), 1105, 500),
    (ValueError("unexpected"), 1105, 500),
])
def test_mapping(exc, code, status):
    w = wire(exc)
    assert (w.mysql_code, w.http_status) == (code, status)
    assert w.message == str(exc) and w.sqlstate == SQLSTATES[code]


def test_sql_errors_keep_their_position():
    body = wire(SqlSyntaxError("unexpected ')'", line=3, column=7)).json()
    assert body == {"error": {"type": "SqlSyntaxError",
                              "message": "unexpected ')' (line 3, column 7)",
                              "line": 3, "column": 7}}
    assert wire(ValueError("x")).json()["error"]["type"] == "InternalError"


def test_the_documented_table_is_the_one_in_force():
    from pathlib import Path

    from skyshard.service.errors import _TABLE

    doc = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ")]
    for cls, code, state, status in _TABLE:
        if cls.__name__ in ("UserError", "ResourceError", "CatalogError"):
            continue  # bases, documented through their subclasses
        if cls.__name__ == "SqlError":
            name = "other `SqlError`"
        else:
            name = f"`{cls.__name__}`"
        assert any(name in r and f"{code} ({state}) | {status} |" in r for r in rows), cls
