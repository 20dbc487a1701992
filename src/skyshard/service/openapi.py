"""The OpenAPI 3.1 document of the HTTP API, written by hand next to it (``http``); a
test checks that every route is described and nothing else is."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    meaning = {
        400: "the query or the request is wrong (syntax, unknown table or column, "
             "unsupported construct, bad parameter)",
        401: "no or wrong credentials",
        403: "the query would reach files, the network or settings",
        404: "unknown (or another user's, or already finished) query id; unknown database",
        409: "the query is not finished yet, or was cancelled",
        410: "the result was deleted or has expired",
        413: "the result has more rows or bytes than allowed",
        500: "a bug in skyshard",
        503: "too many queries queued",
        504: "the query ran past its time limit",
    }
    return {str(s): _json(_ref("Error"), meaning[s]) for s in statuses}


_QUERY_ERRORS = (400, 401, 403, 413, 500, 503, 504)
_ID = {"name": "qid", "in": "path", "required": True, "schema": {"type": "integer"},
       "description": "query id"}
_AUTH: list[dict[str, list]] = [{"bearer": []}, {"basic": []}]


def document(version: str) -> dict[str, Any]:
    """The whole document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "skyshard query API",
            "version": version,
            "description": "Qserv's HTTP query interface: SQL in Qserv's MySQL dialect "
                           "over a spatially partitioned catalog. A chunk is a partition.",
        },
        "security": _AUTH,
        "paths": {
            "/query": {"post": {
                "summary": "Run a query and wait for its result",
                "operationId": "query",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("QueryRequest")}}},
                "responses": {"200": _json(_ref("QueryResult"), "the result"),
                              **_errors(*_QUERY_ERRORS, 404, 409)},
            }},
            "/query-async": {
                "post": {
                    "summary": "Submit a query; poll its status, then fetch its result",
                    "operationId": "submitQuery",
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("QueryRequest")}}},
                    "responses": {"200": _json({
                        "type": "object", "required": ["success", "queryId"],
                        "properties": {"success": {"const": 1},
                                       "queryId": {"type": "integer"}}}, "the query id"),
                        **_errors(400, 401, 404, 503)},
                },
                "get": {
                    "summary": "This user's queries, oldest first",
                    "operationId": "listQueries",
                    "responses": {"200": _json({
                        "type": "object",
                        "properties": {"success": {"const": 1},
                                       "queries": {"type": "array",
                                                   "items": _ref("QueryStatus")}}},
                        "the remembered queries"), **_errors(401)},
                },
            },
            "/query-async/status/{qid}": {"get": {
                "summary": "State, progress and size of a query",
                "operationId": "queryStatus",
                "parameters": [_ID],
                "responses": {"200": _json(_ref("QueryStatus"), "the status"),
                              **_errors(401, 404)},
            }},
            "/query-async/result/{qid}": {
                "get": {
                    "summary": "The result of a completed query, streamed",
                    "operationId": "queryResult",
                    "parameters": [_ID, {
                        "name": "format", "in": "query", "required": False,
                        "schema": {"enum": ["json", "csv", "parquet"], "default": "json"}},
                        _BINARY_PARAM],
                    "responses": {
                        "200": {"description": "the result", "content": {
                            "application/json": {"schema": _ref("QueryResult")},
                            "text/csv": {"schema": {"type": "string"}},
                            "application/vnd.apache.parquet": {
                                "schema": {"type": "string", "format": "binary"}}}},
                        **_errors(*_QUERY_ERRORS, 404, 409, 410)},
                },
                "delete": {
                    "summary": "Delete the result of a query",
                    "operationId": "deleteResult",
                    "parameters": [_ID],
                    "responses": {"200": _json({
                        "type": "object",
                        "properties": {"success": {"const": 1}, "queryId": {"type": "integer"},
                                       "deleted": {"type": "boolean"}}}, "deleted or not"),
                        **_errors(401, 404)},
                },
            },
            "/query-async/{qid}": {"delete": {
                "summary": "Cancel a queued or executing query",
                "operationId": "cancelQuery",
                "parameters": [_ID],
                "responses": {"200": _json({
                    "type": "object",
                    "properties": {"success": {"const": 1}, "queryId": {"type": "integer"},
                                   "status": {"const": "CANCELLED"}}}, "cancelled"),
                    **_errors(401, 404)},
            }},
            "/meta/version": {"get": {
                "summary": "Server kind and version",
                "operationId": "version",
                "security": [],
                "responses": {"200": _json({
                    "type": "object",
                    "properties": {"success": {"const": 1}, "kind": {"type": "string"},
                                   "name": {"type": "string"}, "version": {"type": "string"},
                                   "api_version": {"type": "integer"},
                                   "database": {"type": "string"}}}, "the version")},
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "a MySQL user of this server and its password"},
            },
            "schemas": _SCHEMAS,
        },
    }


_BINARY_PARAM = {"name": "binary_encoding", "in": "query", "required": False,
                 "schema": {"enum": ["hex", "b64", "array"], "default": "hex"},
                 "description": "how binary values are written in JSON"}

_EPOCH = {"type": ["number", "null"], "description": "seconds since 1970-01-01 UTC"}

_SCHEMAS: dict[str, Any] = {
    "QueryRequest": {
        "type": "object", "required": ["query"],
        "properties": {
            "query": {"type": "string", "description": "one SELECT in Qserv's MySQL dialect"},
            "database": {"type": "string", "description": "must be the served catalog's"},
            "binary_encoding": {"enum": ["hex", "b64", "array"], "default": "hex"},
            "timeout": {"type": "number",
                        "description": "seconds; only lowers the server's limit"},
        },
    },
    "Column": {
        "type": "object",
        "properties": {"table": {"type": "string"}, "column": {"type": "string"},
                       "type": {"type": "string", "description": "MySQL type name"},
                       "is_binary": {"enum": [0, 1]}},
    },
    "QueryResult": {
        "type": "object", "required": ["success", "schema", "rows"],
        "properties": {
            "success": {"const": 1},
            "queryId": {"type": "integer"},
            "schema": {"type": "array", "items": _ref("Column")},
            "rowCount": {"type": "integer"},
            "rows": {"type": "array", "items": {"type": "array"},
                     "description": "JSON values; NaN and infinities as null"},
        },
    },
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {
            "success": {"const": 0},
            "error": _ref("ErrorDetail"),
        },
    },
    "ErrorDetail": {
        "type": "object", "required": ["type", "message"], "properties": {
            "type": {"type": "string", "description": "the error class, e.g. "
                     "SqlSyntaxError, UnknownNameError, ForbiddenQueryError"},
            "message": {"type": "string"},
            "line": {"type": ["integer", "null"], "description": "of the SQL, from 1"},
            "column": {"type": ["integer", "null"], "description": "of the SQL, from 1"},
        },
    },
    "QueryStatus": {
        "type": "object",
        "properties": {
            "success": {"const": 1},
            "queryId": {"type": "integer"},
            "query": {"type": "string"},
            "user": {"type": "string"},
            "type": {"enum": ["SYNC", "ASYNC"]},
            "status": {"enum": ["QUEUED", "EXECUTING", "COMPLETED", "FAILED", "CANCELLED"]},
            "error": {"oneOf": [{"type": "null"}, _ref("ErrorDetail")]},
            "totalChunks": {"type": ["integer", "null"], "description": "partitions to read"},
            "completedChunks": {"type": "integer", "description": "partitions done"},
            "collectedRows": {"type": ["integer", "null"]},
            "collectedBytes": {"type": ["integer", "null"]},
            "finalRows": {"type": ["integer", "null"]},
            "queryBeginEpoch": _EPOCH,
            "queryStartEpoch": _EPOCH,
            "queryEndEpoch": _EPOCH,
            "lastUpdateEpoch": _EPOCH,
        },
    },
}
