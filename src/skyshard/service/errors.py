"""Errors on the wire: the one place where skyshard errors become MySQL error codes and
HTTP statuses.

Both front ends call ``wire(exc)``; nothing else maps errors. The service adds a few
errors of its own (unknown query id, result not ready, timeout, server busy), all in the
same hierarchy as ``skyshard.errors``.

>>> from skyshard.errors import SqlSyntaxError
>>> w = wire(SqlSyntaxError("unexpected ')'", line=1, column=9))
>>> (w.mysql_code, w.sqlstate, w.http_status, w.type)
(1064, '42000', 400, 'SqlSyntaxError')
>>> wire(QueryTimeoutError(2.0)).mysql_code, wire(QueryTimeoutError(2.0)).http_status
(3024, 504)

TAP answers errors with a DALI error document (a VOTable whose ``QUERY_STATUS`` INFO is
``ERROR``), with the same HTTP status, and UWS jobs carry an error summary whose type is
``transient`` (a limit or an outside failure: retrying may work) or ``fatal``:

>>> b'value="ERROR">unexpected' in votable_error(w)
True
>>> uws_error_type(QueryTimeoutError(2.0)), uws_error_type(SqlSyntaxError("x"))
('transient', 'fatal')
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from skyshard.errors import (
    CatalogError,
    ExternalError,
    ForbiddenQueryError,
    InternalError,
    QueryCancelled,
    QueryLimitError,
    ResourceError,
    SkyshardError,
    SqlError,
    SqlSyntaxError,
    UnknownNameError,
    UnsupportedQueryError,
    UserError,
)

# --- errors of the service itself -----------------------------------------------------


class UnknownQueryError(UserError):
    """No query with this id (or not one of this user's)."""

    def __init__(self, query_id: object) -> None:
        super().__init__(f"unknown or finished query id {query_id}")
        self.query_id = query_id


class ResultGoneError(UserError):
    """The query finished, but its result was deleted or has expired."""

    def __init__(self, query_id: int) -> None:
        super().__init__(f"the result of query {query_id} was deleted or has expired")
        self.query_id = query_id


class NotFinishedError(UserError):
    """The result of a query that is still queued or executing was asked for."""

    def __init__(self, query_id: int, state: str) -> None:
        super().__init__(f"query {query_id} is {state}: its result is not ready yet")
        self.query_id = query_id
        self.state = state


class UnknownDatabaseError(UserError):
    """A database name that is not the served catalog's."""

    def __init__(self, name: str, known: str) -> None:
        super().__init__(f"unknown database {name!r} (this server has {known!r})")
        self.name = name


class AuthenticationError(UserError):
    """Missing or wrong credentials."""


class ConfigError(UserError):
    """A server configuration (file or options) that cannot be used."""


class UnknownResourceError(UserError):
    """A TAP resource that does not exist (a table of ``/tables/{name}``, a job)."""


class UnknownJobError(UnknownResourceError):
    """No TAP (UWS) job with this id, or not one of this user's."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"unknown job {job_id!r}")
        self.job_id = job_id


class JobPhaseError(UserError):
    """A UWS request that the job's phase does not allow (e.g. changing the parameters
    of a job that has started)."""


class QueryTimeoutError(QueryLimitError):
    """The query ran longer than its time limit and was interrupted."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the query exceeded its time limit of {seconds:g} s and was stopped")
        self.seconds = seconds


class ServerBusyError(ResourceError):
    """Too many queries are queued; retry later."""


# --- the mapping ----------------------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """How one error is sent: MySQL code and SQLSTATE, HTTP status, type name, message."""

    mysql_code: int
    sqlstate: str
    http_status: int
    type: str
    message: str
    line: int | None = None
    column: int | None = None

    def json(self) -> dict:
        """The HTTP error body."""
        return {"error": {"type": self.type, "message": self.message,
                          "line": self.line, "column": self.column}}


# (class, MySQL code, SQLSTATE, HTTP status): the first class the error is an instance of
# wins, so subclasses come before their bases.
_TABLE: tuple[tuple[type[BaseException], int, str, int], ...] = (
    (SqlSyntaxError, 1064, "42000", 400),            # ER_PARSE_ERROR
    (UnsupportedQueryError, 1235, "42000", 400),     # ER_NOT_SUPPORTED_YET
    (ForbiddenQueryError, 1227, "42000", 403),       # ER_SPECIFIC_ACCESS_DENIED_ERROR
    (UnknownNameError, 1054, "42S22", 400),          # ER_BAD_FIELD_ERROR (tables below)
    (SqlError, 1105, "HY000", 400),                  # ER_UNKNOWN_ERROR
    (AuthenticationError, 1045, "28000", 401),       # ER_ACCESS_DENIED_ERROR
    (UnknownQueryError, 1094, "HY000", 404),         # ER_NO_SUCH_THREAD
    (UnknownResourceError, 1094, "HY000", 404),
    (JobPhaseError, 1105, "HY000", 409),
    (ResultGoneError, 1146, "42S02", 410),           # as Qserv: the result table is gone
    (NotFinishedError, 1105, "HY000", 409),
    (UnknownDatabaseError, 1049, "42000", 404),      # ER_BAD_DB_ERROR
    (CatalogError, 1105, "HY000", 400),
    (UserError, 1105, "HY000", 400),
    (QueryTimeoutError, 3024, "HY000", 504),         # ER_QUERY_TIMEOUT
    (QueryCancelled, 1317, "70100", 409),            # ER_QUERY_INTERRUPTED
    (QueryLimitError, 1104, "42000", 413),           # ER_TOO_BIG_SELECT
    (ServerBusyError, 1041, "HY000", 503),           # ER_OUT_OF_RESOURCES
    (ResourceError, 1041, "HY000", 503),
    (ExternalError, 1105, "HY000", 502),
    (InternalError, 1105, "HY000", 500),
)

_UNKNOWN_TABLE = (1146, "42S02")                     # ER_NO_SUCH_TABLE


def wire(exc: BaseException) -> Wire:
    """The wire form of any exception; anything not a ``SkyshardError`` is internal."""
    message = str(exc) or type(exc).__name__
    line = getattr(exc, "line", None) if isinstance(exc, SqlError) else None
    column = getattr(exc, "column", None) if isinstance(exc, SqlError) else None
    for cls, code, state, status in _TABLE:
        if isinstance(exc, cls):
            if isinstance(exc, UnknownNameError) and _names_a_table(exc):
                code, state = _UNKNOWN_TABLE
            return Wire(code, state, status, type(exc).__name__, message, line, column)
    name = type(exc).__name__ if isinstance(exc, SkyshardError) else "InternalError"
    return Wire(1105, "HY000", 500, name, message, line, column)


def _names_a_table(exc: UnknownNameError) -> bool:
    """An unknown table (1146) rather than an unknown column (1054)."""
    kind = getattr(exc, "kind", None)
    if kind is not None:
        return kind == "table"
    return exc.reason.startswith("no table ") and " in catalog " in exc.reason


def votable_error(w: Wire) -> bytes:
    """The DALI error document of a TAP request: ``QUERY_STATUS=ERROR`` and the message."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            '<RESOURCE type="results">\n'
            f'<INFO name="QUERY_STATUS" value="ERROR">{escape(w.message)}</INFO>\n'
            f'<INFO name="error_type" value="{escape(w.type)}"/>\n'
            "</RESOURCE>\n</VOTABLE>\n").encode()


def uws_error_type(exc: BaseException) -> str:
    """UWS's ``errorSummary`` type: ``transient`` when a retry may succeed."""
    return "transient" if isinstance(exc, (ResourceError, ExternalError)) else "fatal"


#: SQLSTATE of every MySQL code used above, for the protocol's error packet.
SQLSTATES: dict[int, str] = {code: state for _, code, state, _ in _TABLE} | {
    _UNKNOWN_TABLE[0]: _UNKNOWN_TABLE[1]}

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "JobPhaseError",
    "NotFinishedError",
    "QueryTimeoutError",
    "ResultGoneError",
    "SQLSTATES",
    "ServerBusyError",
    "UnknownDatabaseError",
    "UnknownJobError",
    "UnknownQueryError",
    "UnknownResourceError",
    "Wire",
    "uws_error_type",
    "votable_error",
    "wire",
]
