"""One TAP query: its parameters, its ADQL made ready to run, and runs on TAP_SCHEMA.

``Params`` reads a request's parameters (query string, then an urlencoded or multipart
body; names are case-insensitive, as TAP says). ``TapQuery.from_params`` checks them:
``LANG=ADQL`` (any version; ADQL when absent), ``QUERY``, ``MAXREC`` (at most the
server's row limit, which is also the default), ``RESPONSEFORMAT`` (or ``FORMAT``);
``REQUEST=doQuery`` of TAP 1.0 is accepted, other parameters are ignored, ``UPLOAD``
is refused.

``prepare`` parses the ADQL and puts MAXREC into the query: a query that may return more
rows than MAXREC gets ``LIMIT MAXREC+1`` so that one row too many says the result
overflowed (at the server's row limit itself, a full result counts as overflowed). A
query on TAP_SCHEMA runs in ``TapSchemaDb`` (``LocalRun``); any other goes to the query
service as the equivalent Qserv SQL, so ADQL cones prune partitions as Qserv ones do.

>>> p = Params([("lang", "ADQL"), ("QUERY", "SELECT TOP 5 ra FROM Object"), ("maxrec", "2")])
>>> q = TapQuery.from_params(p, hard_limit=100)
>>> q.maxrec, q.format.name
(2, 'votable')
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

import duckdb
import pyarrow as pa
from sqlglot import exp

from skyshard.errors import (
    QueryCancelled,
    SkyshardError,
    UnsupportedQueryError,
    UserError,
)
from skyshard.service.errors import QueryTimeoutError
from skyshard.service.queries import State, partitions_read
from skyshard.service.tap_schema import TapMetadata, TapSchemaDb, reads_tap_schema
from skyshard.service.votable import FieldMeta
from skyshard.sql.adql import parse_adql

# --- parameters ---------------------------------------------------------------------------


class Params:
    """Request parameters: names case-insensitive, values as sent, in order."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self.items = [(k, v) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.upper()
        for k, v in self.items:
            if k.upper() == name:
                return v
        return default

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def upper(self) -> dict[str, str]:
        """First value of each parameter, by upper-case name."""
        out: dict[str, str] = {}
        for k, v in self.items:
            out.setdefault(k.upper(), v)
        return out


async def read_params(request) -> Params:
    """The parameters of a Starlette request: query string, then the form body."""
    items = list(request.query_params.multi_items())
    if request.method in ("POST", "PUT"):
        body = await request.body()
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            items += _multipart(ctype, body)
        elif body:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"the request body is not UTF-8: {exc}") from None
            items += urllib.parse.parse_qsl(text, keep_blank_values=True)
    return Params(items)


def _multipart(ctype: str, body: bytes) -> list[tuple[str, str]]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise UserError("malformed multipart/form-data body")
    out = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        if part.get_filename() is not None:
            raise UserError("table uploads (UPLOAD) are not supported by this service")
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        out.append((str(name), raw.decode(part.get_content_charset() or "utf-8")))
    return out


# --- output formats -----------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFormat:
    name: str
    media_type: str
    aliases: tuple[str, ...]


FORMATS = (
    OutputFormat("votable", "application/x-votable+xml",
                 ("votable", "application/x-votable+xml", "text/xml", "application/xml",
                  "votable/b2", "vot")),
    OutputFormat("csv", "text/csv;header=present", ("csv", "text/csv")),
    OutputFormat("tsv", "text/tab-separated-values", ("tsv", "text/tab-separated-values")),
    OutputFormat("json", "application/json", ("json", "application/json")),
    OutputFormat("parquet", "application/vnd.apache.parquet",
                 ("parquet", "application/vnd.apache.parquet", "application/x-parquet")),
)


def output_format(value: str | None) -> OutputFormat:
    """The format named by RESPONSEFORMAT (a short name or a MIME type; VOTable if none)."""
    if value is None or not value.strip():
        return FORMATS[0]
    wanted = value.strip().lower()
    base = wanted.split(";")[0].strip()
    for f in FORMATS:
        if wanted in f.aliases or base in f.aliases:
            return f
    names = ", ".join(a for f in FORMATS for a in f.aliases[:2])
    raise UserError(f"unsupported RESPONSEFORMAT {value!r} (supported: {names})")


# --- the query ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TapQuery:
    """What one TAP query asks for."""

    adql: str
    maxrec: int
    format: OutputFormat
    hard_limit: int

    @classmethod
    def from_params(cls, params: Params, *, hard_limit: int) -> TapQuery:
        lang = (params.get("LANG") or "ADQL").strip()
        if lang.upper().split("-")[0] != "ADQL":
            raise UserError(f"unsupported LANG {lang!r}: this service takes LANG=ADQL")
        request = params.get("REQUEST")
        if request is not None and request.strip().lower() not in ("doquery", ""):
            raise UserError(f"unsupported REQUEST {request!r} (TAP 1.0's doQuery, or none)")
        if params.get("UPLOAD"):
            raise UserError("table uploads (UPLOAD) are not supported by this service")
        adql = params.get("QUERY")
        if adql is None or not adql.strip():
            raise UserError("missing QUERY parameter: the ADQL query to run")
        maxrec = hard_limit
        text = params.get("MAXREC")
        if text is not None and text.strip():
            try:
                maxrec = int(text.strip())
            except ValueError:
                raise UserError(f"MAXREC must be a non-negative integer, not {text!r}") from None
            if maxrec < 0:
                raise UserError(f"MAXREC must be a non-negative integer, not {text!r}")
        fmt = output_format(params.get("RESPONSEFORMAT") or params.get("FORMAT"))
        return cls(adql, min(maxrec, hard_limit), fmt, hard_limit)


@dataclass
class Prepared:
    """A parsed, limited query and how to read its result."""

    tree: exp.Expression
    local: TapSchemaDb | None      # where a TAP_SCHEMA query runs; None: the catalog
    maxrec: int
    exact: bool                    # the query asks one row more than MAXREC
    fields: dict[str, FieldMeta] = field(default_factory=dict)
    partitions: int | None = None  # read by the catalog query (from the plan), if known

    @property
    def sql(self) -> str:
        """The query as Qserv SQL, for the query service."""
        return self.tree.sql(dialect="mysql")

    def overflow(self, rows: int) -> bool:
        return rows > self.maxrec or (not self.exact and rows >= self.maxrec > 0)


def prepare(query: TapQuery, metadata: TapMetadata, schema_db: TapSchemaDb, *,
            plan: Callable[[str, exp.Expression], object] | None = None) -> Prepared:
    """Parse the ADQL, check what it reads, and apply MAXREC.

    ``plan(adql, tree)`` (the catalog's planner) checks a catalog query's tables and
    columns on the ADQL tree, so that errors give the line and column in the ADQL text
    (the query service runs the equivalent Qserv SQL, one line long)."""
    tree = parse_adql(query.adql)
    local = schema_db if reads_tap_schema(tree) else None
    if local is not None:
        local.check(tree, query.adql)
    partitions = None
    if local is None and plan is not None:
        partitions = partitions_read(plan(query.adql, tree))  # the planner copies it
    fetch = query.maxrec + 1 if query.maxrec < query.hard_limit else query.hard_limit
    limit = tree.args.get("limit")
    given = _integer(limit.expression) if isinstance(limit, exp.Limit) else None
    if limit is not None and given is None:
        raise UnsupportedQueryError("TOP takes an unsigned integer", construct="TOP",
                                    sql=query.adql)
    exact = True  # the query itself returns at most MAXREC rows, or asks one more
    if given is None or given > query.maxrec:
        tree.set("limit", exp.Limit(expression=exp.Literal.number(fetch)))
        exact = fetch > query.maxrec
    return Prepared(tree, local, query.maxrec, exact, metadata.field_meta(tree), partitions)


def _integer(node: exp.Expression | None) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(node.this)
        except ValueError:
            return None
    return None


# --- runs on TAP_SCHEMA -------------------------------------------------------------------


class LocalRun:
    """A query on TAP_SCHEMA in a thread of its own, shaped like a service ``Query``:
    ``state``, ``started``, ``finished``, ``error``, ``rows``, ``done``; cancellable and
    stopped at its time limit (its DuckDB statement is interrupted)."""

    def __init__(self, schema_db: TapSchemaDb, tree: exp.Expression, timeout_s: float) -> None:
        self.state = State.QUEUED
        self.submitted = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.error: SkyshardError | None = None
        self.rows: int | None = None
        self.table: pa.Table | None = None
        self.done: Future = Future()
        self._lock = threading.Lock()
        self._cursor = schema_db.cursor()
        self._timer = threading.Timer(timeout_s, self._stop,
                                      args=(State.FAILED, QueryTimeoutError(timeout_s)))
        self._timer.daemon = True
        thread = threading.Thread(target=self._work, args=(schema_db, tree), daemon=True,
                                  name="skyshard-tap-schema")
        self._timer.start()
        thread.start()

    def _work(self, schema_db: TapSchemaDb, tree: exp.Expression) -> None:
        with self._lock:
            if self.state.final:  # cancelled or timed out before it started
                self._cursor.close()
                return
            self.state, self.started = State.EXECUTING, time.time()
        table: pa.Table | None = None
        error: SkyshardError | None = None
        try:
            table = schema_db.run(tree, self._cursor)
        except duckdb.InterruptException:
            error = QueryCancelled("the query was interrupted")
        except SkyshardError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - any failure is the query's error
            error = UserError(f"{type(exc).__name__}: {exc}")
        finally:
            self._timer.cancel()
            self._cursor.close()
        if table is not None:
            self._finish(State.COMPLETED, None, table)
        else:
            self._finish(State.FAILED, error, None)

    def _finish(self, state: State, error: SkyshardError | None, table: pa.Table | None) -> bool:
        with self._lock:
            if self.state.final:
                return False
            self.state, self.error, self.table = state, error, table
            self.rows = table.num_rows if table is not None else None
            self.finished = time.time()
        self.done.set_result(None)
        return True

    def _stop(self, state: State, error: SkyshardError) -> bool:
        stopped = self._finish(state, error, None)
        if stopped:
            try:
                self._cursor.interrupt()
            except duckdb.Error:
                pass
        return stopped

    def cancel(self) -> bool:
        """Stop the query; False if it had finished already."""
        return self._stop(State.CANCELLED, QueryCancelled("the query was cancelled"))

    def outcome(self) -> pa.Table:
        if self.state is State.COMPLETED and self.table is not None:
            return self.table
        raise self.error or QueryCancelled("the query did not complete")
