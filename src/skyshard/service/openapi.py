"""The OpenAPI 3.1 document of the HTTP API, written by hand next to it (``http``, and
``tap`` for IVOA TAP under ``/tap``); a test checks that every route is described and
nothing else is."""

from __future__ import annotations

from typing import Any

from skyshard.service import ingest_api


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
            **_tap_paths(),
            **ingest_api.openapi_paths(),
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


# --- IVOA TAP (``tap``) -------------------------------------------------------------------

_VOTABLE = "application/x-votable+xml"
_XML = "text/xml"
_TEXT = "text/plain"
#: TAP takes the API's credentials, or none when the server runs with ``anonymous_tap``
_TAP_AUTH: list[dict[str, list]] = [{"bearer": []}, {"basic": []}, {}]
_JOB = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "UWS job id"}


def _doc(media: str, description: str, schema: dict | None = None) -> dict:
    return {"description": description,
            "content": {media: {"schema": schema or {"type": "string"}}}}


def _tap_errors(*statuses: int) -> dict:
    meaning = {400: "bad parameters or ADQL (the message gives line and column)",
               401: "no or wrong credentials (without anonymous TAP)",
               403: "the query would reach files, the network or settings",
               404: "unknown job or table (or another user's job)",
               409: "the job's phase does not allow this",
               410: "the result was deleted or has expired",
               413: "the result has more bytes than allowed",
               500: "a bug in skyshard", 503: "too many queries queued",
               504: "the query ran past its time limit"}
    return {str(s): _doc(_VOTABLE, "DALI error document (QUERY_STATUS=ERROR): " + meaning[s])
            for s in statuses}


def _tap_param(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False,
            "schema": schema or {"type": "string"}, "description": description}


_TAP_QUERY_PARAMS = [
    _tap_param("LANG", "ADQL (any version, e.g. ADQL-2.1); ADQL when absent"),
    _tap_param("QUERY", "the ADQL query"),
    _tap_param("MAXREC", "rows at most (default and most: the server's row limit); "
               "a longer result is cut and flagged QUERY_STATUS=OVERFLOW",
               {"type": "integer", "minimum": 0}),
    _tap_param("RESPONSEFORMAT", "votable (BINARY2, default), csv, tsv, json, parquet, "
               "or their MIME types; FORMAT is a synonym"),
    _tap_param("RUNID", "a label kept with the job"),
]
_TAP_RESULT = {"description": "the result in RESPONSEFORMAT", "content": {
    _VOTABLE: {"schema": {"type": "string"}},
    "text/csv": {"schema": {"type": "string"}},
    "text/tab-separated-values": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object", "properties": {
        "metadata": {"type": "array", "items": {"type": "object"}},
        "data": {"type": "array", "items": {"type": "array"}},
        "overflow": {"type": "boolean"}}}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}}
_FORM = {"required": False, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}}
_REDIRECT = {"description": "See Other: the job (or, after a delete, the job list)",
             "headers": {"Location": {"schema": {"type": "string"}}}}
_JOB_DOC = _doc(_XML, "the UWS job document (clients follow the 303 to it)")


def _op(op_id: str, summary: str, responses: dict, *, params: list | None = None,
        body: bool = False, security: list | None = None) -> dict:
    out: dict[str, Any] = {"summary": summary, "operationId": op_id, "tags": ["TAP"],
                           "security": _TAP_AUTH if security is None else security,
                           "responses": responses}
    if params:
        out["parameters"] = params
    if body:
        out["requestBody"] = _FORM
    return out


def _job_text(op: str, what: str, param: str | None = None) -> dict:
    """GET (text) and, with ``param``, POST of one job property."""
    ops = {"get": _op(f"get{op}", f"The job's {what}", {
        "200": _doc(_TEXT, what), **_tap_errors(401, 404)}, params=[_JOB])}
    if param:
        ops["post"] = _op(f"set{op}", f"Change the job's {what} ({param}), while PENDING", {
            "303": _REDIRECT, "200": _JOB_DOC, **_tap_errors(400, 401, 404, 409)},
            params=[_JOB], body=True)
    return ops


def _tap_paths() -> dict[str, Any]:
    query_errors = _tap_errors(400, 401, 403, 413, 500, 503, 504)
    sync = {"200": _TAP_RESULT, **query_errors}
    return {
        "/tap/sync": {
            "get": _op("tapSync", "Run an ADQL query and return its result", sync,
                       params=_TAP_QUERY_PARAMS),
            "post": _op("tapSyncPost", "Run an ADQL query (form parameters)", sync,
                        body=True),
        },
        "/tap/async": {
            "get": _op("tapJobs", "This user's UWS jobs", {
                "200": _doc(_XML, "uws:jobs"), **_tap_errors(400, 401)}, params=[
                _tap_param("PHASE", "only jobs in this phase (repeatable)"),
                _tap_param("AFTER", "only jobs created after this ISO 8601 time"),
                _tap_param("LAST", "only the newest n jobs", {"type": "integer"})]),
            "post": _op("tapCreateJob", "Create a job (PENDING; PHASE=RUN starts it)", {
                "303": _REDIRECT, "200": _JOB_DOC, **_tap_errors(400, 401)}, body=True),
        },
        "/tap/async/{job_id}": {
            "get": _op("tapJob", "The job; WAIT=n blocks until its phase changes", {
                "200": _doc(_XML, "uws:job"), **_tap_errors(400, 401, 404)}, params=[
                _JOB, _tap_param("WAIT", "seconds to wait at most (-1: the longest, 60)",
                                 {"type": "number"}),
                _tap_param("PHASE", "wait only while the job is in this phase")]),
            "post": _op("tapPostJob", "ACTION=DELETE, PHASE=RUN|ABORT, or new parameters", {
                "303": _REDIRECT, "200": _JOB_DOC, **_tap_errors(400, 401, 404, 409)},
                params=[_JOB], body=True),
            "delete": _op("tapDeleteJob", "Abort and delete the job and its result", {
                "303": _REDIRECT, "200": _doc(_XML, "uws:jobs (following the 303)"),
                **_tap_errors(401, 404)}, params=[_JOB]),
        },
        "/tap/async/{job_id}/phase": {
            "get": _op("tapPhase", "The job's phase", {
                "200": _doc(_TEXT, "PENDING, QUEUED, EXECUTING, COMPLETED, ERROR, ABORTED"),
                **_tap_errors(401, 404)}, params=[_JOB]),
            "post": _op("tapSetPhase", "PHASE=RUN starts the job, PHASE=ABORT stops it", {
                "303": _REDIRECT, "200": _JOB_DOC, **_tap_errors(400, 401, 404)},
                params=[_JOB], body=True),
        },
        "/tap/async/{job_id}/executionduration": _job_text(
            "ExecutionDuration", "execution duration in seconds", "EXECUTIONDURATION"),
        "/tap/async/{job_id}/destruction": _job_text(
            "Destruction", "destruction time (ISO 8601)", "DESTRUCTION"),
        "/tap/async/{job_id}/quote": _job_text("Quote", "expected end (ISO 8601)"),
        "/tap/async/{job_id}/owner": _job_text("Owner", "owner"),
        "/tap/async/{job_id}/parameters": {
            "get": _op("tapParameters", "The job's parameters", {
                "200": _doc(_XML, "uws:parameters"), **_tap_errors(401, 404)},
                params=[_JOB]),
            "post": _op("tapSetParameters", "Change parameters, while PENDING", {
                "303": _REDIRECT, "200": _JOB_DOC, **_tap_errors(400, 401, 404, 409)},
                params=[_JOB], body=True),
        },
        "/tap/async/{job_id}/error": {"get": _op("tapJobError", "Why the job failed", {
            "200": _doc(_VOTABLE, "DALI error document"), **_tap_errors(401, 404, 409)},
            params=[_JOB])},
        "/tap/async/{job_id}/results": {"get": _op("tapResults", "The job's results", {
            "200": _doc(_XML, "uws:results"), **_tap_errors(401, 404)}, params=[_JOB])},
        "/tap/async/{job_id}/results/result": {"get": _op(
            "tapResult", "The job's result, in its RESPONSEFORMAT", {
                "200": _TAP_RESULT, **_tap_errors(*sorted({400, 401, 404, 409, 410,
                                                           413, 500, 503, 504}))},
            params=[_JOB])},
        "/tap/capabilities": {"get": _op("tapCapabilities", "VOSI capabilities (TAPRegExt)", {
            "200": _doc(_XML, "vosi:capabilities")}, security=[])},
        "/tap/availability": {"get": _op("tapAvailability", "VOSI availability", {
            "200": _doc(_XML, "vosi:availability")}, security=[])},
        "/tap/tables": {"get": _op("tapTables", "VOSI tables (VODataService)", {
            "200": _doc(_XML, "vosi:tableset"), **_tap_errors(401)}, params=[
            _tap_param("detail", "min: tables without their columns")])},
        "/tap/tables/{table_name}": {"get": _op("tapTable", "One table (VOSI tables 1.1)", {
            "200": _doc(_XML, "vosi:table"), **_tap_errors(401, 404)}, params=[
            {"name": "table_name", "in": "path", "required": True,
             "schema": {"type": "string"}, "description": "qualified name, e.g. cat.Object"}])},
        "/tap/examples": {"get": _op("tapExamples", "DALI examples: real ADQL queries", {
            "200": _doc("application/xhtml+xml", "XHTML with RDFa"), **_tap_errors(401)})},
    }
