"""The HTTP front end: Qserv's query API in JSON (Starlette).

========  ===============================  ==============================================
POST      /query                           run synchronously: schema + rows
POST      /query-async                     submit: ``{"queryId": n}``
GET       /query-async                     this user's queries (history)
GET       /query-async/status/{id}         state, partitions total/done, rows, bytes, times
GET       /query-async/result/{id}         ``?format=json|csv|parquet`` streamed
DELETE    /query-async/result/{id}         delete a result
DELETE    /query-async/{id}                cancel
GET       /meta/version                    no authentication
GET       /openapi.json                    this API, OpenAPI 3.1; no authentication
GET/POST  /tap/...                         IVOA TAP 1.1 (``service.tap``)
*         /ingest/...                      ingest transactions (``service.ingest_api``)
========  ===============================  ==============================================

Authentication: ``Authorization: Bearer <token>``, or HTTP Basic with a MySQL user's
password; 401 without (unless anonymous access is allowed). Errors are
``{"error": {"type", "message", "line", "column"}}`` with the status of
``service.errors``. Bodies follow Qserv's names (``queryId``, ``status``,
``totalChunks``...; a chunk is a partition) and carry ``"success": 1`` on success.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from skyshard import __version__
from skyshard.errors import SkyshardError, UserError
from skyshard.service import openapi
from skyshard.service.columns import mysql_column
from skyshard.service.config import ANONYMOUS, Credentials
from skyshard.service.errors import (
    AuthenticationError,
    UnknownDatabaseError,
    UnknownQueryError,
    Wire,
    wire,
)
from skyshard.service.ingest_api import IngestApi
from skyshard.service.queries import Query, QueryService
from skyshard.service.results import StoredResult
from skyshard.service.tap import TapService
from skyshard.storage.remote import is_url

API_VERSION = 1
_ENCODINGS = ("hex", "b64", "array")
_FORMATS = ("json", "csv", "parquet")
_BATCH = 10_000


def create_app(service: QueryService, credentials: Credentials, *, database: str) -> Starlette:
    """The ASGI application over a query service."""
    api = _Api(service, credentials, database)
    routes = [
        Route("/query", api.query, methods=["POST"]),
        Route("/query-async", api.submit, methods=["POST"]),
        Route("/query-async", api.history, methods=["GET"]),
        Route("/query-async/status/{qid:int}", api.status, methods=["GET"]),
        Route("/query-async/result/{qid:int}", api.result, methods=["GET"]),
        Route("/query-async/result/{qid:int}", api.delete_result, methods=["DELETE"]),
        Route("/query-async/{qid:int}", api.cancel, methods=["DELETE"]),
        Route("/meta/version", api.version, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
    ]
    if not is_url(service.db.root):  # a catalog at a URL is served read-only
        routes += IngestApi(service.db.root, api._user).routes()
    tap = TapService(service, credentials, database, user_of=api._user)
    routes += tap.routes()
    # SkyshardError: answered; any other exception: answered as 500 and logged.
    app = Starlette(routes=routes, exception_handlers={
        HTTPException: _http_error, SkyshardError: _error, Exception: _error})
    app.state.tap = tap
    return app


class _Api:
    def __init__(self, service: QueryService, credentials: Credentials, database: str) -> None:
        self.service = service
        self.credentials = credentials
        self.database = database

    # --- endpoints ------------------------------------------------------------------

    async def version(self, request: Request) -> Response:
        return _json({"success": 1, "kind": "skyshard-query-frontend", "name": "http",
                      "version": __version__, "api_version": API_VERSION,
                      "database": self.database})

    async def openapi(self, request: Request) -> Response:
        return _json(openapi.document(__version__))

    async def query(self, request: Request) -> Response:
        user = self._user(request)
        body = await self._body(request)
        q = self.service.submit(body["query"], user, mode="sync", host=_client(request),
                                timeout_s=body.get("timeout"))
        try:
            await asyncio.wrap_future(q.done)
        except asyncio.CancelledError:  # the client went away
            with contextlib.suppress(UnknownQueryError):
                self.service.cancel(q.id)
            raise
        table = self.service.outcome(q)
        encoding = body.get("binary_encoding", "hex")
        payload = await asyncio.to_thread(_table_json, table, encoding)
        return Response(b'{"success":1,"queryId":%d,%s}' % (q.id, payload),
                        media_type="application/json")

    async def submit(self, request: Request) -> Response:
        user = self._user(request)
        body = await self._body(request)
        q = self.service.submit(body["query"], user, mode="async", host=_client(request),
                                timeout_s=body.get("timeout"))
        return _json({"success": 1, "queryId": q.id})

    async def history(self, request: Request) -> Response:
        user = self._user(request)
        return _json({"success": 1,
                      "queries": [_status(q) for q in self.service.history(user)]})

    async def status(self, request: Request) -> Response:
        q = self.service.get(request.path_params["qid"], self._user(request))
        return _json({"success": 1, **_status(q)})

    async def result(self, request: Request) -> Response:
        user = self._user(request)
        fmt = request.query_params.get("format", "json")
        encoding = request.query_params.get("binary_encoding", "hex")
        if fmt not in _FORMATS:
            raise UserError(f"format must be one of {', '.join(_FORMATS)}, not {fmt!r}")
        _check_encoding(encoding)
        stored = self.service.result(request.path_params["qid"], user)
        if fmt == "parquet":
            return _parquet(stored)
        if fmt == "csv":
            return StreamingResponse(_csv_chunks(stored), media_type="text/csv")
        return StreamingResponse(_json_chunks(stored, encoding), media_type="application/json")

    async def delete_result(self, request: Request) -> Response:
        qid = request.path_params["qid"]
        deleted = self.service.delete_result(qid, self._user(request))
        return _json({"success": 1, "queryId": qid, "deleted": deleted})

    async def cancel(self, request: Request) -> Response:
        q = self.service.cancel(request.path_params["qid"], self._user(request))
        return _json({"success": 1, "queryId": q.id, "status": q.state.value})

    # --- internals ------------------------------------------------------------------

    def _user(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            user = self.credentials.user_of_token(value.strip())
            if user is not None:
                return user
            raise AuthenticationError("invalid bearer token")
        if scheme.lower() == "basic" and value.strip():
            try:
                name, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthenticationError("malformed Basic credentials") from None
            if self.credentials.check_password(name, password):
                return name
            raise AuthenticationError(f"wrong user name or password for {name!r}")
        if header:
            raise AuthenticationError("unsupported Authorization scheme (Bearer or Basic)")
        if self.credentials.allow_anonymous:
            return ANONYMOUS
        raise AuthenticationError("authentication required: Authorization: Bearer <token>")

    async def _body(self, request: Request) -> dict:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise UserError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise UserError('the body must be a JSON object with "query": "<SQL>"')
        database = body.get("database")
        if database and database.lower() != self.database.lower():
            raise UnknownDatabaseError(database, self.database)
        _check_encoding(body.get("binary_encoding", "hex"))
        timeout = body.get("timeout")
        if timeout is not None and not isinstance(timeout, (int, float)):
            raise UserError('"timeout" must be a number of seconds')
        return body


# --- statuses and errors ----------------------------------------------------------------


def _status(q: Query) -> dict:
    error = wire(q.error).json()["error"] if q.error is not None else None
    return {
        "queryId": q.id, "query": q.sql, "user": q.user, "type": q.mode.upper(),
        "status": q.state.value, "error": error,
        "totalChunks": q.partitions_total, "completedChunks": q.partitions_done,
        "collectedRows": q.rows, "collectedBytes": q.bytes, "finalRows": q.rows,
        "queryBeginEpoch": q.submitted, "queryStartEpoch": q.started,
        "queryEndEpoch": q.finished, "lastUpdateEpoch": q.updated,
    }


def _error_response(w: Wire) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="skyshard"'} if w.http_status == 401 else None
    return _json({"success": 0, **w.json()}, status=w.http_status, headers=headers)


async def _error(request: Request, exc: Exception) -> Response:
    return _error_response(wire(exc))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return _error_response(Wire(0, "", exc.status_code, kind, str(exc.detail)))


def _check_encoding(encoding: str) -> None:
    if encoding not in _ENCODINGS:
        raise UserError(f"binary_encoding must be one of {', '.join(_ENCODINGS)}")


def _client(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None


def _json(data: Any, *, status: int = 200, headers: dict | None = None) -> Response:
    return Response(_dumps(data), status_code=status, headers=headers,
                    media_type="application/json")


def _dumps(data: Any) -> bytes:
    return json.dumps(data, default=str, allow_nan=False, separators=(",", ":")).encode()


# --- result bodies ----------------------------------------------------------------------


def _schema_json(schema: pa.Schema) -> list[dict]:
    out = []
    for f in schema:
        c = mysql_column(f)
        out.append({"table": "", "column": f.name, "type": c.type_name,
                    "is_binary": int(c.binary)})
    return out


def _values(column: pa.Array | pa.ChunkedArray, encoding: str) -> list:
    """A column as JSON-ready values: NaN/inf as null, decimals as numbers, binary
    encoded, dates and times in ISO 8601."""
    values = column.to_pylist()
    t = column.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_floating(t):
        return [v if v is None or math.isfinite(v) else None for v in values]
    if pa.types.is_decimal(t):
        return [None if v is None else int(v) if v == v.to_integral_value() else float(v)
                for v in values]
    if mysql_column(pa.field("", t)).binary:
        return [None if v is None else _encode_binary(v, encoding) for v in values]
    if pa.types.is_temporal(t):
        return [None if v is None else v.isoformat() if hasattr(v, "isoformat") else str(v)
                for v in values]
    return values


def _encode_binary(v: bytes, encoding: str) -> Any:
    if encoding == "b64":
        return base64.b64encode(v).decode()
    if encoding == "array":
        return list(v)
    return v.hex()


def _rows_json(batch: pa.RecordBatch, encoding: str) -> list[list]:
    columns = [_values(c, encoding) for c in batch.columns]
    return [list(r) for r in zip(*columns)]


def _table_json(table: pa.Table, encoding: str) -> bytes:
    """``"schema":[...],"rows":[...],"rowCount":n`` (without braces)."""
    rows = [r for b in table.to_batches(max_chunksize=_BATCH) for r in _rows_json(b, encoding)]
    return (b'"schema":' + _dumps(_schema_json(table.schema)) + b',"rows":' + _dumps(rows)
            + b',"rowCount":%d' % table.num_rows)


def _json_chunks(stored: StoredResult, encoding: str) -> Iterator[bytes]:
    yield (b'{"success":1,"queryId":%d,"schema":' % stored.query_id
           + _dumps(_schema_json(stored.schema)) + b',"rowCount":%d,"rows":[' % stored.num_rows)
    first = True
    for batch in stored.batches(_BATCH):
        rows = _rows_json(batch, encoding)
        if rows:
            chunk = _dumps(rows)[1:-1]
            yield chunk if first else b"," + chunk
            first = False
    yield b"]}"


def _csv_chunks(stored: StoredResult) -> Iterator[bytes]:
    header = True
    for batch in stored.batches(_BATCH):
        buf = io.BytesIO()
        pacsv.write_csv(_csv_ready(batch), buf, pacsv.WriteOptions(include_header=header))
        header = False
        yield buf.getvalue()
    if header:  # no rows at all: the header alone
        buf = io.BytesIO()
        empty = pa.RecordBatch.from_pylist([], schema=stored.schema)
        pacsv.write_csv(_csv_ready(empty), buf)
        yield buf.getvalue()


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Binary as hex text, nested values as JSON text, NULL columns as empty strings."""
    arrays, names = [], []
    for f, col in zip(batch.schema, batch.columns):
        t = f.type
        if mysql_column(f).binary:
            col = pa.array([None if v is None else v.hex() for v in col.to_pylist()], pa.string())
        elif pa.types.is_nested(t):
            col = pa.array([None if v is None else json.dumps(v, default=str)
                            for v in col.to_pylist()], pa.string())
        elif pa.types.is_null(t):
            col = pa.array([None] * len(col), pa.string())
        arrays.append(col)
        names.append(f.name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _parquet(stored: StoredResult) -> Response:
    media = "application/vnd.apache.parquet"
    name = f"result_{stored.query_id}.parquet"
    if stored.path is not None:
        return FileResponse(stored.path, media_type=media, filename=name)
    buf = io.BytesIO()
    pq.write_table(stored.table(), buf)
    return Response(buf.getvalue(), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})

