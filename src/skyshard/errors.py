"""One error hierarchy, classified by who is at fault.

``UserError``      the request is wrong: fix the query, the input file or the arguments.
``ResourceError``  a limit was hit (time, rows, memory): retry with a smaller request.
``ExternalError``  something outside skyshard failed (disk, network, a worker).
``InternalError``  a bug in skyshard: please report it.

Every error carries structured fields besides its message, so front ends can map them
to wire codes in one place without parsing strings.

>>> err = SqlSyntaxError("unexpected token ')'", line=1, column=17, sql="SELECT a FROM t)")
>>> err.line, err.column
(1, 17)
>>> isinstance(err, UserError)
True
"""

from __future__ import annotations

from collections.abc import Sequence


class SkyshardError(Exception):
    """Base of every error skyshard raises on purpose."""

    fault = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UserError(SkyshardError):
    """The request is wrong; the message says what to change."""

    fault = "user"


class ResourceError(SkyshardError):
    """A configured limit was exceeded."""

    fault = "resources"


class ExternalError(SkyshardError):
    """A dependency outside skyshard failed (file system, network, worker)."""

    fault = "external"


class InternalError(SkyshardError):
    """A bug: an invariant of skyshard does not hold."""

    fault = "internal"


# --- SQL ------------------------------------------------------------------------------


class SqlError(UserError):
    """A query that cannot be run as written."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        sql: str | None = None,
    ) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(message + where)
        self.reason = message
        self.line = line
        self.column = column
        self.sql = sql


class SqlSyntaxError(SqlError):
    """The text does not parse."""


class UnknownNameError(SqlError):
    """A table or column that does not exist in the catalog; ``kind`` says which."""

    def __init__(self, message: str, *, kind: str | None = None, line: int | None = None,
                 column: int | None = None, sql: str | None = None) -> None:
        super().__init__(message, line=line, column=column, sql=sql)
        self.kind = kind


class UnsupportedQueryError(SqlError):
    """Valid SQL that skyshard does not evaluate (yet); the message names the construct
    and, where there is one, what to write instead."""

    def __init__(
        self,
        message: str,
        *,
        construct: str | None = None,
        suggestion: str | None = None,
        tables: Sequence[str] = (),
        line: int | None = None,
        column: int | None = None,
        sql: str | None = None,
    ) -> None:
        full = message if not suggestion else f"{message}; {suggestion}"
        super().__init__(full, line=line, column=column, sql=sql)
        self.construct = construct
        self.suggestion = suggestion
        self.tables = tuple(tables)


class ForbiddenQueryError(SqlError):
    """A statement or function that could reach the file system, the network or the
    settings: never run, whatever the user's rights."""


# --- data and catalogs ----------------------------------------------------------------


class InputError(UserError):
    """Bad input data: names the file, and where known the line and column."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        parts = [p for p in (path, f"line {line}" if line is not None else None) if p]
        if column is not None:
            parts.append(f"column {column!r}")
        where = ": ".join([", ".join(parts)]) if parts else ""
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message
        self.path = path
        self.line = line
        self.column = column


class SchemaError(InputError):
    """A schema file (MySQL ``CREATE TABLE``) that cannot be read or mapped to Arrow."""


class CatalogError(UserError):
    """A catalog directory that is missing, malformed, or lacks a named table."""


class IngestError(UserError):
    """An ingest request that contradicts the catalog (roles, keys, existing tables)."""


class QueryLimitError(ResourceError):
    """A query exceeded a configured limit (rows, bytes, time)."""


class QueryCancelled(ResourceError):
    """The query was cancelled before it finished."""


__all__ = [
    "CatalogError",
    "ExternalError",
    "ForbiddenQueryError",
    "IngestError",
    "InputError",
    "InternalError",
    "QueryCancelled",
    "QueryLimitError",
    "ResourceError",
    "SchemaError",
    "SkyshardError",
    "SqlError",
    "SqlSyntaxError",
    "UnknownNameError",
    "UnsupportedQueryError",
    "UserError",
]
