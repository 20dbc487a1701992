"""Ingest over HTTP: transactions on the served catalog (``storage.transactions``).

========  ===============================  ==============================================
POST      /ingest/trans                    begin: ``{"table", role...}`` -> status
GET       /ingest/trans                    open transactions
GET       /ingest/trans/{tid}              status: state, contributions, rows, bytes,
                                           progress of the work running now
POST      /ingest/trans/{tid}/file         add a contribution: ``{"url": "https://..."}``,
                                           or the file's bytes as the body with
                                           ``?name=FILE`` (the format follows its suffix)
PUT       /ingest/trans/{tid}              commit (``?abort=1``: abort; ``?publish=0``:
                                           build only, PREPARED)
PUT       /ingest/publish                  ``{"transactions": [...]}``: publish PREPARED
                                           transactions at once
POST      /ingest/gc                       recovery and garbage collection (``?grace=S``)
========  ===============================  ==============================================

Every request needs an authenticated user (never anonymous). Contributions come by URL
(``http``/``https`` only: no server-side paths) or by value. Work runs in threads, so a
long commit does not hold up queries; ``GET /ingest/trans/{tid}`` from another request
shows its progress. A running server keeps serving the catalog version it opened:
restart it to serve what was published.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from skyshard.errors import UserError
from skyshard.service.config import ANONYMOUS
from skyshard.service.errors import AuthenticationError, UnknownResourceError
from skyshard.storage import transactions
from skyshard.storage.options import IngestOptions

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_URL_SCHEMES = ("http", "https")


class IngestApi:
    """The ``/ingest`` routes over the catalog at ``root``; ``user_of(request)`` names
    the authenticated user (raising when the credentials are wrong)."""

    def __init__(self, root: Path, user_of: Callable[[Request], str]) -> None:
        self.root = Path(root)
        self.user_of = user_of

    def routes(self) -> list[Route]:
        return [
            Route("/ingest/trans", self.begin, methods=["POST"]),
            Route("/ingest/trans", self.list, methods=["GET"]),
            Route("/ingest/trans/{tid}", self.status, methods=["GET"]),
            Route("/ingest/trans/{tid}", self.finish, methods=["PUT"]),
            Route("/ingest/trans/{tid}/file", self.add, methods=["POST"]),
            Route("/ingest/publish", self.publish, methods=["PUT"]),
            Route("/ingest/gc", self.gc, methods=["POST"]),
        ]

    # --- endpoints ------------------------------------------------------------------

    async def begin(self, request: Request) -> Response:
        self._user(request)
        body = await _json_body(request)
        table = body.get("table")
        if not isinstance(table, str) or not table:
            raise UserError('the body must name the table: {"table": "Object", ...}')
        try:
            opts = IngestOptions(**{k: body[k] for k in _OPTION_KEYS if k in body},
                                 progress=False)
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad ingest option: {exc}") from None
        schema = body.get("schema")
        if schema is not None:
            from skyshard.catalog.mysql_schema import parse_create_table

            if not isinstance(schema, str):
                raise UserError('"schema" must be the text of a MySQL CREATE TABLE')
            schema = parse_create_table(schema, path="schema").schema
        role = {k: body.get(k) for k in ("ra", "dec", "key", "director", "director_key")}
        st = await asyncio.to_thread(
            transactions.begin, self.root, table, schema=schema,
            replicated=bool(body.get("replicated")), options=opts, **role)
        return _ok(st)

    async def list(self, request: Request) -> Response:
        self._user(request)
        found = await asyncio.to_thread(transactions.list_transactions, self.root)
        return _json({"success": 1, "transactions": [s.to_json() for s in found]})

    async def status(self, request: Request) -> Response:
        self._user(request)
        st = await asyncio.to_thread(self._call, transactions.status, _tid(request))
        return _ok(st)

    async def add(self, request: Request) -> Response:
        self._user(request)
        tid = _tid(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            body = await _json_body(request)
            url = body.get("url")
            if not isinstance(url, str) or urllib.parse.urlparse(url).scheme not in _URL_SCHEMES:
                raise UserError('give {"url": "http(s)://..."}, or send the file itself '
                                "as the body with ?name=FILE")
            name = body.get("name")
            adding = await asyncio.to_thread(self._call, self._reserve, tid)
            await self._fill(adding, lambda: adding.read(url, name=name, display=url))
        else:
            name = request.query_params.get("name", "")
            if not _NAME.match(name):
                raise UserError("?name=FILE (letters, digits, '.', '_', '-') must name the "
                                "uploaded file; its suffix gives the format (.csv, .tsv, "
                                ".parquet, .fits, .vot ...)")
            adding = await asyncio.to_thread(self._call, self._reserve, tid)

            async def upload() -> None:
                target = adding.input_dir / name
                out = await asyncio.to_thread(target.open, "wb")
                try:
                    async for chunk in request.stream():
                        await asyncio.to_thread(out.write, chunk)
                finally:
                    out.close()
                await asyncio.to_thread(adding.read, str(target), name=name,
                                        display=f"upload {name}")

            await self._fill_async(adding, upload)
        st = await asyncio.to_thread(transactions.status, self.root, tid)
        return _json({"success": 1, "contribution": adding.result.to_json() if adding.result
                      else None, "transaction": st.to_json()})

    async def finish(self, request: Request) -> Response:
        self._user(request)
        tid = _tid(request)
        if _flag(request, "abort", False):
            await asyncio.to_thread(self._call, transactions.abort, tid)
            return _json({"success": 1, "transaction": {"id": tid, "state": "ABORTED"}})
        st = await asyncio.to_thread(self._call, transactions.commit, tid,
                                     publish=_flag(request, "publish", True), show_progress=False)
        return _ok(st)

    async def publish(self, request: Request) -> Response:
        self._user(request)
        body = await _json_body(request)
        ids = body.get("transactions")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise UserError('give {"transactions": ["<id>", ...]}')
        done = await asyncio.to_thread(self._call, transactions.publish, ids)
        return _json({"success": 1, "transactions": [s.to_json() for s in done]})

    async def gc(self, request: Request) -> Response:
        self._user(request)
        grace = request.query_params.get("grace")
        try:
            grace_s = None if grace is None else float(grace)
        except ValueError:
            raise UserError("?grace= takes a number of seconds") from None
        if grace_s is not None and grace_s < 0:
            raise UserError("?grace= must not be negative")
        removed = await asyncio.to_thread(transactions.collect_garbage, self.root, grace_s=grace_s)
        return _json({"success": 1, "removed": removed})

    # --- internals ------------------------------------------------------------------

    def _user(self, request: Request) -> str:
        user = self.user_of(request)
        if user == ANONYMOUS:
            raise AuthenticationError("ingest needs an authenticated user")
        return user

    def _call(self, fn: Callable[..., Any], tid: str, *args: Any, **kwargs: Any) -> Any:
        """``fn(root, tid, ...)``, an unknown transaction answered with 404."""
        try:
            return fn(self.root, tid, *args, **kwargs)
        except transactions.UnknownTransactionError as exc:
            raise UnknownResourceError(str(exc)) from None

    def _reserve(self, root: Path, tid: str) -> transactions.Adding:
        adding = transactions.adding(root, tid, show_progress=False)
        adding.__enter__()
        return adding

    async def _fill(self, adding: transactions.Adding, work: Callable[[], None]) -> None:
        async def run() -> None:
            await asyncio.to_thread(work)

        await self._fill_async(adding, run)

    async def _fill_async(self, adding: transactions.Adding, work) -> None:
        """Run ``work``, then record the contribution (or drop it on error)."""
        try:
            await work()
        except BaseException as exc:
            await asyncio.to_thread(adding.__exit__, type(exc), exc, None)
            raise
        await asyncio.to_thread(adding.__exit__, None, None, None)


_OPTION_KEYS = ("max_rows_per_partition", "max_order", "margin_arcsec",
                "allow_duplicate_keys", "batch_rows", "gc_grace_s")


def _tid(request: Request) -> str:
    return request.path_params["tid"]


def _flag(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise UserError(f"?{name}= takes 0 or 1")


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise UserError(f"the request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise UserError("the body must be a JSON object")
    return body


def _ok(st: transactions.Status) -> Response:
    return _json({"success": 1, "transaction": st.to_json()})


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, default=str, allow_nan=False, separators=(",", ":")),
                    status_code=status, media_type="application/json")


# --- OpenAPI ---------------------------------------------------------------------------------

_ERROR = {"$ref": "#/components/schemas/Error"}
_TID = {"name": "tid", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "transaction id"}
_CONTRIBUTION = {
    "type": "object",
    "properties": {"number": {"type": "integer"}, "source": {"type": "string"},
                   "format": {"type": "string"}, "rows": {"type": "integer"},
                   "bytes": {"type": "integer"}},
}
_TRANSACTION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "table": {"type": "string"},
        "kind": {"enum": ["director", "child", "replicated"]},
        "state": {"enum": ["OPEN", "COMMITTING", "PREPARED", "PUBLISHED"]},
        "created": {"type": ["number", "null"]}, "updated": {"type": ["number", "null"]},
        "contributions": {"type": "integer"}, "rows": {"type": "integer"},
        "bytes": {"type": "integer"}, "files": {"type": "array", "items": _CONTRIBUTION},
        "running": {"type": "array", "items": {
            "type": "object", "description": "progress of work running now",
            "properties": {"phase": {"type": "string"}, "rows": {"type": "integer"},
                           "bytes": {"type": "integer"}, "total_rows": {"type": ["integer", "null"]}}}},
        "note": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
        "published": {"type": "object", "additionalProperties": {"type": "integer"},
                      "description": "table -> version published"},
    },
}


def _answer(schema: dict, description: str, *errors: int) -> dict:
    meaning = {400: "bad request, bad input data (file, line, column) or a state that does "
                    "not allow it", 401: "no or wrong credentials; anonymous", 404: "unknown "
               "transaction", 500: "a bug in skyshard", 502: "a URL could not be fetched"}
    out = {"200": {"description": description,
                   "content": {"application/json": {"schema": schema}}}}
    for e in errors:
        out[str(e)] = {"description": meaning[e],
                       "content": {"application/json": {"schema": _ERROR}}}
    return out


def _one(description: str, *errors: int) -> dict:
    return _answer({"type": "object", "properties": {"success": {"const": 1},
                                                     "transaction": _TRANSACTION}},
                   description, *errors)


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of the routes above."""
    return {
        "/ingest/trans": {
            "post": {
                "summary": "Begin an ingest transaction into a table (created if new)",
                "operationId": "ingestBegin",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["table"],
                    "properties": {
                        "table": {"type": "string"},
                        "ra": {"type": "string"}, "dec": {"type": "string"},
                        "key": {"type": "string", "description": "a director's unique key"},
                        "director": {"type": "string"}, "director_key": {"type": "string"},
                        "replicated": {"type": "boolean"},
                        "schema": {"type": "string", "description": "MySQL CREATE TABLE"},
                        "max_rows_per_partition": {"type": "integer"},
                        "max_order": {"type": "integer"},
                        "margin_arcsec": {"type": "number"},
                        "allow_duplicate_keys": {"type": "boolean"},
                        "batch_rows": {"type": "integer"},
                        "gc_grace_s": {"type": "number"}}}}}},
                "responses": _one("the new transaction", 400, 401, 500),
            },
            "get": {
                "summary": "Open transactions of the catalog",
                "operationId": "ingestList",
                "responses": _answer({"type": "object", "properties": {
                    "success": {"const": 1},
                    "transactions": {"type": "array", "items": _TRANSACTION}}},
                    "the transactions", 401),
            },
        },
        "/ingest/trans/{tid}": {
            "get": {
                "summary": "State, contributions, rows, bytes and progress of a transaction",
                "operationId": "ingestStatus",
                "parameters": [_TID],
                "responses": _one("the status", 401, 404),
            },
            "put": {
                "summary": "Commit (build and publish atomically) or abort a transaction",
                "operationId": "ingestFinish",
                "parameters": [_TID,
                               {"name": "abort", "in": "query", "required": False,
                                "schema": {"enum": ["0", "1"], "default": "0"}},
                               {"name": "publish", "in": "query", "required": False,
                                "schema": {"enum": ["0", "1"], "default": "1"},
                                "description": "0: build only (PREPARED)"}],
                "responses": _one("committed (or aborted)", 400, 401, 404, 500),
            },
        },
        "/ingest/trans/{tid}/file": {"post": {
            "summary": "Add a contribution: a URL to fetch, or the file itself",
            "operationId": "ingestAdd",
            "parameters": [_TID, {"name": "name", "in": "query", "required": False,
                                  "schema": {"type": "string"},
                                  "description": "file name of an uploaded body (format "
                                                 "from its suffix)"}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "object", "required": ["url"],
                                                "properties": {"url": {"type": "string"},
                                                               "name": {"type": "string"}}}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": _answer({"type": "object", "properties": {
                "success": {"const": 1}, "contribution": _CONTRIBUTION,
                "transaction": _TRANSACTION}}, "the recorded contribution",
                400, 401, 404, 500, 502),
        }},
        "/ingest/publish": {"put": {
            "summary": "Publish PREPARED transactions together, atomically",
            "operationId": "ingestPublish",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["transactions"],
                "properties": {"transactions": {"type": "array",
                                                "items": {"type": "string"}}}}}}},
            "responses": _answer({"type": "object", "properties": {
                "success": {"const": 1},
                "transactions": {"type": "array", "items": _TRANSACTION}}},
                "published", 400, 401, 404, 500),
        }},
        "/ingest/gc": {"post": {
            "summary": "Clean what killed ingests left; remove superseded table versions",
            "operationId": "ingestGc",
            "parameters": [{"name": "grace", "in": "query", "required": False,
                            "schema": {"type": "number"},
                            "description": "seconds a superseded version is kept (3600)"}],
            "responses": _answer({"type": "object", "properties": {
                "success": {"const": 1},
                "removed": {"type": "array", "items": {"type": "string"}}}},
                "what was removed", 400, 401),
        }},
    }
