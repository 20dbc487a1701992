"""The HTTP API with a plain client (urllib): sync and async queries, results in three
formats, cancellation, authentication, errors, the OpenAPI document."""

from __future__ import annotations

import base64
import csv
import io
import time

import pyarrow.parquet as pq
import pytest

from served import SLOW_SQL, wait_until


def test_version_needs_no_authentication(http):
    status, _, body = http.call("GET", "/meta/version", token=None)
    assert status == 200 and body["kind"] == "skyshard-query-frontend"
    assert body["database"] == "cat" and body["version"]


def test_sync_query(http, served_tables):
    status, _, body = http.call("POST", "/query", {
        "query": "SELECT objectId, ra, rMag, kind, stamp, gMag, NULL AS n FROM Object "
                 "ORDER BY objectId LIMIT 10", "database": "cat"})
    assert status == 200 and body["success"] == 1, body
    assert [(c["column"], c["type"], c["is_binary"]) for c in body["schema"]] == [
        ("objectId", "BIGINT", 0), ("ra", "DOUBLE", 0), ("rMag", "FLOAT", 0),
        ("kind", "VARCHAR", 0), ("stamp", "BLOB", 1), ("gMag", "DOUBLE", 0), ("n", "NULL", 0)]
    want = served_tables["Object"].sort_by("objectId").slice(0, 10).to_pylist()
    assert body["rowCount"] == 10
    for row, w in zip(body["rows"], want):
        assert row[0] == w["objectId"] and row[1] == w["ra"] and row[3] == w["kind"]
        assert bytes.fromhex(row[4]) == w["stamp"]
        assert row[5] == w["gMag"] and row[6] is None


@pytest.mark.parametrize("encoding, decode", [
    ("b64", base64.b64decode), ("array", bytes), ("hex", bytes.fromhex)])
def test_binary_encodings(http, served_tables, encoding, decode):
    status, _, body = http.call("POST", "/query", {
        "query": "SELECT stamp FROM Object ORDER BY objectId LIMIT 3",
        "binary_encoding": encoding})
    assert status == 200, body
    want = served_tables["Object"].sort_by("objectId").column("stamp").to_pylist()[:3]
    assert [decode(r[0]) for r in body["rows"]] == want


def test_async_query_status_and_results(http, served_tables):
    sql = "SELECT objectId, kind, stamp FROM Object ORDER BY objectId"
    status, _, body = http.call("POST", "/query-async", {"query": sql})
    assert status == 200, body
    qid = body["queryId"]
    st = http.wait(qid)
    assert st["status"] == "COMPLETED" and st["error"] is None and st["query"] == sql
    assert st["collectedRows"] == st["finalRows"] == 300 and st["collectedBytes"] > 4096
    assert st["totalChunks"] == st["completedChunks"] > 1
    assert st["queryBeginEpoch"] <= st["queryStartEpoch"] <= st["queryEndEpoch"]
    want = served_tables["Object"].sort_by("objectId")

    status, _, body = http.call("GET", f"/query-async/result/{qid}")
    assert status == 200 and body["rowCount"] == 300 and len(body["rows"]) == 300
    assert [r[0] for r in body["rows"]] == want.column("objectId").to_pylist()

    status, hdrs, raw = http.call("GET", f"/query-async/result/{qid}?format=csv")
    assert status == 200 and hdrs["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(raw.decode())))
    assert rows[0] == ["objectId", "kind", "stamp"] and len(rows) == 301
    assert bytes.fromhex(rows[1][2]) == want.column("stamp")[0].as_py()

    status, _, raw = http.call("GET", f"/query-async/result/{qid}?format=parquet")
    assert status == 200
    table = pq.read_table(io.BytesIO(raw))
    assert table.equals(want.select(["objectId", "kind", "stamp"]))

    status, _, body = http.call("DELETE", f"/query-async/result/{qid}")
    assert status == 200 and body["deleted"] is True
    status, _, body = http.call("GET", f"/query-async/result/{qid}")
    assert status == 410 and body["error"]["type"] == "ResultGoneError"


def test_results_spill_to_parquet_above_the_memory_budget(http, server):
    _, _, small = http.call("POST", "/query-async", {"query": "SELECT filterId FROM Filter"})
    _, _, big = http.call("POST", "/query-async", {"query": "SELECT * FROM Source LIMIT 400"})
    for body in (small, big):
        assert http.wait(body["queryId"])["status"] == "COMPLETED"
    assert not server.service.results.get(small["queryId"]).spilled
    stored = server.service.results.get(big["queryId"])
    assert stored.spilled and stored.path.exists()
    status, _, body = http.call("GET", f"/query-async/result/{big['queryId']}")
    assert status == 200 and len(body["rows"]) == 400
    http.call("DELETE", f"/query-async/result/{big['queryId']}")
    assert not stored.path.exists()


def test_cancel_an_executing_query(http, server):
    _, _, body = http.call("POST", "/query-async", {"query": SLOW_SQL})
    qid = body["queryId"]
    wait_until(lambda: http.call("GET", f"/query-async/status/{qid}")[2]["status"]
               == "EXECUTING")
    start = time.monotonic()
    status, _, body = http.call("DELETE", f"/query-async/{qid}")
    assert status == 200 and body["status"] == "CANCELLED"
    st = http.wait(qid)
    assert st["status"] == "CANCELLED" and st["error"]["type"] == "QueryCancelled"
    assert server.service.get(qid)._worker_done.wait(5), "DuckDB was not interrupted"
    assert time.monotonic() - start < 5
    status, _, body = http.call("GET", f"/query-async/result/{qid}")
    assert status == 409 and body["error"]["type"] == "QueryCancelled"
    status, _, body = http.call("DELETE", f"/query-async/{qid}")
    assert status == 404  # already finished


def test_result_of_an_unfinished_query(http):
    _, _, body = http.call("POST", "/query-async", {"query": SLOW_SQL})
    qid = body["queryId"]
    status, _, err = http.call("GET", f"/query-async/result/{qid}")
    assert status == 409 and err["error"]["type"] == "NotFinishedError"
    http.call("DELETE", f"/query-async/{qid}")


def test_history(http):
    _, _, body = http.call("POST", "/query", {"query": "SELECT COUNT(*) AS n FROM Filter"})
    status, _, listing = http.call("GET", "/query-async")
    assert status == 200
    mine = {q["queryId"]: q for q in listing["queries"]}
    assert mine[body["queryId"]]["type"] == "SYNC"
    assert all(q["user"] == "alice" for q in listing["queries"])


@pytest.mark.parametrize("body, status, kind, line", [
    ({"query": "SELECT objectId\nFROM Object\nWHERE nope = 1"}, 400, "UnknownNameError", 3),
    ({"query": "SELECT * FROM Object WHERE ("}, 400, "SqlSyntaxError", 1),
    ({"query": "SELECT * FROM read_csv('/etc/passwd')"}, 403, "ForbiddenQueryError", None),
    ({"query": "SELECT * FROM Object WHERE ra < 1 OR qserv_areaspec_box(0, 0, 1, 1)"}, 400,
     "UnsupportedQueryError", None),
    ({"query": "SELECT * FROM Source"}, 413, "QueryLimitError", None),
    ({"query": SLOW_SQL, "timeout": 0.3}, 504, "QueryTimeoutError", None),
    ({"query": "SELECT 1", "database": "other"}, 404, "UnknownDatabaseError", None),
    ({"query": "SELECT 1", "binary_encoding": "base32"}, 400, "UserError", None),
    ({"sql": "SELECT 1"}, 400, "UserError", None),
])
def test_errors(http, body, status, kind, line):
    got, _, err = http.call("POST", "/query", body)
    assert got == status, err
    assert err["success"] == 0 and err["error"]["type"] == kind, err
    assert err["error"]["message"]
    assert err["error"]["line"] == line


def test_authentication(http):
    status, hdrs, err = http.call("POST", "/query", {"query": "SELECT 1"}, token=None)
    assert status == 401 and hdrs["www-authenticate"].startswith("Bearer")
    assert err["error"]["type"] == "AuthenticationError"
    assert http.call("POST", "/query", {"query": "SELECT 1"}, token="forged")[0] == 401
    assert http.call("GET", "/query-async", token=None, basic=("alice", "no"))[0] == 401
    assert http.call("GET", "/query-async", token=None, basic=("alice", "secret"))[0] == 200


def test_unknown_and_other_users_ids_are_404(http):
    assert http.call("GET", "/query-async/status/999999")[0] == 404
    _, _, body = http.call("POST", "/query-async", {"query": "SELECT 1"}, token="tok-bob")
    qid = body["queryId"]
    http.wait(qid, token="tok-bob")
    status, _, err = http.call("GET", f"/query-async/status/{qid}")
    assert status == 404 and err["error"]["type"] == "UnknownQueryError"
    assert http.call("GET", f"/query-async/result/{qid}")[0] == 404
    assert http.call("GET", f"/query-async/result/{qid}", token="tok-bob")[0] == 200
    assert http.call("GET", "/nowhere")[0] == 404


def test_openapi_describes_every_route(http, server):
    status, _, doc = http.call("GET", "/openapi.json", token=None)
    assert status == 200 and doc["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in server.app.routes:
        path = route.path.replace("{qid:int}", "{qid}")
        served |= {(path, m) for m in route.methods if m != "HEAD"}
    assert described == served
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["responses"]["200"] and op["summary"] and op["operationId"]
            for p in op.get("parameters", []):
                assert "{" + p["name"] + "}" in path or p["in"] == "query"
    refs = {r.split("/")[-1] for r in _refs(doc)}
    assert refs <= set(doc["components"]["schemas"])


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_a_bug_is_a_500_with_its_message(http, server, monkeypatch):
    def broken(sql, **kwargs):
        raise ZeroDivisionError("division by zero in a planner")

    monkeypatch.setattr(server.db, "sql", broken)
    status, _, err = http.call("POST", "/query", {"query": "SELECT 1"})
    assert status == 500 and err["error"]["type"] == "InternalError"
    assert "ZeroDivisionError: division by zero" in err["error"]["message"]
