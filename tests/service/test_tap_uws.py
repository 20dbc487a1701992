"""TAP's asynchronous jobs (UWS 1.1) with a plain HTTP client: creation and 303s, phases,
RUN and ABORT (of a queued and of a running job, whose DuckDB statement stops),
WAIT, execution duration, destruction, quote, parameters, errors, results, DELETE,
job lists and their filters, ownership."""

from __future__ import annotations

import io
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
import requests
from astropy.io.votable import parse
from served import SLOW_SQL, TOKENS, start_server, wait_until

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
XLINK = "{http://www.w3.org/1999/xlink}"
SLOW_ADQL = SLOW_SQL.replace("FROM Filter", "FROM cat.Filter").replace(", Filter", ", cat.Filter")


@pytest.fixture(scope="module")
def tap_server(served_catalog, tmp_path_factory):
    srv = start_server(served_catalog, tmp_path_factory.mktemp("uws-results"),
                       anonymous_tap=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def url(tap_server) -> str:
    return f"http://127.0.0.1:{tap_server.http_port}/tap"


def _create(url: str, query: str, **params) -> str:
    resp = requests.post(url + "/async", data={"LANG": "ADQL", "QUERY": query, **params},
                         allow_redirects=False, timeout=30)
    assert resp.status_code == 303, resp.text
    location = resp.headers["location"]
    assert location.startswith(url + "/async/")
    return location


def _job(job_url: str, **params) -> ET.Element:
    resp = requests.get(job_url, params=params, timeout=90)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/xml")
    return ET.fromstring(resp.content)


def _text(job: ET.Element, name: str) -> str | None:
    el = job.find(UWS + name)
    return None if el is None else el.text


def _post(job_url: str, path: str = "", **data) -> requests.Response:
    return requests.post(job_url + path, data=data, allow_redirects=False, timeout=30)


def _wait_final(job_url: str) -> ET.Element:
    job = _job(job_url)
    deadline = time.monotonic() + 20
    while _text(job, "phase") in ("PENDING", "QUEUED", "EXECUTING"):
        assert time.monotonic() < deadline
        job = _job(job_url, WAIT=5)
    return job


def test_job_document_and_its_resources(url):
    job_url = _create(url, "SELECT TOP 3 objectId FROM cat.Object ORDER BY objectId",
                      RUNID="run-1", MAXREC="2", REQUEST="doQuery")
    job = _job(job_url)
    assert job.tag == UWS + "job" and job.get("version") == "1.1"
    job_id = job_url.rsplit("/", 1)[1]
    assert _text(job, "jobId") == job_id and _text(job, "runId") == "run-1"
    assert _text(job, "ownerId") == "anonymous" and _text(job, "phase") == "PENDING"
    assert _text(job, "executionDuration") == "30"
    assert job.find(UWS + "startTime").get("{http://www.w3.org/2001/XMLSchema-instance}nil")
    params = {p.get("id"): p.text for p in job.find(UWS + "parameters")}
    assert params["QUERY"].startswith("SELECT TOP 3") and params["MAXREC"] == "2"
    assert params["REQUEST"] == "doQuery" and params["LANG"] == "ADQL"
    assert list(job.find(UWS + "results")) == []

    phase = requests.get(job_url + "/phase", timeout=30)
    assert phase.text == "PENDING" and phase.headers["content-type"].startswith("text/plain")
    assert requests.get(job_url + "/owner", timeout=30).text == "anonymous"
    destruction = requests.get(job_url + "/destruction", timeout=30).text
    assert destruction == _text(job, "destruction") and destruction.endswith("Z")
    datetime.fromisoformat(requests.get(job_url + "/quote", timeout=30).text[:-1])
    assert requests.get(job_url + "/executionduration", timeout=30).text == "30"


def test_run_wait_and_results(url):
    job_url = _create(url, "SELECT TOP 3 objectId FROM cat.Object ORDER BY objectId",
                      MAXREC="2")
    assert _post(job_url, "/phase", PHASE="RUN").headers["location"] == job_url
    job = _wait_final(job_url)
    assert _text(job, "phase") == "COMPLETED"
    start, end = _text(job, "startTime"), _text(job, "endTime")
    assert start <= end
    result = job.find(UWS + "results/" + UWS + "result")
    assert result.get("id") == "result"
    href = result.get(XLINK + "href")
    assert href == job_url + "/results/result"
    results = ET.fromstring(requests.get(job_url + "/results", timeout=30).content)
    assert results.find(UWS + "result").get(XLINK + "href") == href
    resp = requests.get(href, timeout=30)
    vot = parse(io.BytesIO(resp.content))
    assert vot.get_first_table().array["objectId"].tolist() == [7, 14]
    assert [i.value for i in vot.resources[0].infos if i.name == "QUERY_STATUS"] == [
        "OK", "OVERFLOW"]
    # a second read gives the same (the result stays until the job is destroyed)
    assert requests.get(href, timeout=30).content == resp.content
    # parameters, duration: only while PENDING
    assert _post(job_url, "/parameters", QUERY="SELECT 1").status_code == 409
    assert _post(job_url, "/executionduration", EXECUTIONDURATION="5").status_code == 409
    assert _post(job_url, "/phase", PHASE="RUN").status_code == 303  # no change
    assert _text(_job(job_url), "phase") == "COMPLETED"


def test_create_and_run_at_once_with_a_spilled_result(url, tap_server, served_tables):
    job_url = _create(url, "SELECT sourceId, psfFlux FROM cat.Source ORDER BY sourceId",
                      PHASE="RUN", RESPONSEFORMAT="csv", MAXREC="400")
    assert _text(_wait_final(job_url), "phase") == "COMPLETED"
    job = tap_server.app.state.tap.jobs.get(job_url.rsplit("/", 1)[1], "anonymous")
    assert tap_server.service.results.get(job.run.id).spilled  # above 4 kB: Parquet
    resp = requests.get(job_url + "/results/result", timeout=30)
    assert resp.headers["content-type"].startswith("text/csv")
    lines = resp.text.splitlines()
    assert lines[0] == '"sourceId","psfFlux"' and len(lines) == 401
    assert resp.headers["x-query-status"] == "OVERFLOW"


def test_parameters_change_while_pending(url):
    job_url = _create(url, "SELECT TOP 1 filterId FROM cat.Filter", RUNID="a")
    resp = _post(job_url, "/parameters", QUERY="SELECT filterName FROM cat.Filter",
                 runId="b", RESPONSEFORMAT="json")
    assert resp.status_code == 303 and resp.headers["location"] == job_url
    params = ET.fromstring(requests.get(job_url + "/parameters", timeout=30).content)
    values = {p.get("id"): p.text for p in params}
    assert values["QUERY"] == "SELECT filterName FROM cat.Filter" and values["RUNID"] == "b"
    assert _text(_job(job_url), "runId") == "b"
    _post(job_url, PHASE="RUN")  # POST to the job itself works too
    _wait_final(job_url)
    data = requests.get(job_url + "/results/result", timeout=30).json()["data"]
    assert sorted(r[0] for r in data) == list("giruyz")


def test_execution_duration_and_destruction(url):
    job_url = _create(url, "SELECT 1 AS one")
    assert _post(job_url, "/executionduration", EXECUTIONDURATION="5").status_code == 303
    assert requests.get(job_url + "/executionduration", timeout=30).text == "5"
    _post(job_url, "/executionduration", EXECUTIONDURATION="0")  # unlimited: the limit
    assert _text(_job(job_url), "executionDuration") == "30"
    _post(job_url, "/executionduration", EXECUTIONDURATION="9999")
    assert _text(_job(job_url), "executionDuration") == "30"
    assert _post(job_url, "/executionduration", EXECUTIONDURATION="soon").status_code == 400

    soon = datetime.now(UTC) + timedelta(minutes=10)
    assert _post(job_url, "/destruction", DESTRUCTION=soon.isoformat()).status_code == 303
    got = datetime.fromisoformat(requests.get(job_url + "/destruction", timeout=30).text[:-1])
    assert abs(got.replace(tzinfo=UTC) - soon) < timedelta(seconds=1)
    far = datetime.now(UTC) + timedelta(days=30)  # beyond the results' lifetime
    _post(job_url, "/destruction", DESTRUCTION=far.isoformat())
    got = datetime.fromisoformat(_text(_job(job_url), "destruction")[:-1])
    assert got.replace(tzinfo=UTC) < far - timedelta(days=29)
    assert _post(job_url, "/destruction", DESTRUCTION="tomorrow").status_code == 400


def test_destroyed_jobs_disappear_with_their_results(url, tap_server):
    job_url = _create(url, "SELECT sourceId FROM cat.Source", PHASE="RUN")
    _wait_final(job_url)
    job = tap_server.app.state.tap.jobs.get(job_url.rsplit("/", 1)[1], "anonymous")
    assert tap_server.service.results.get(job.run.id) is not None
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert _post(job_url, "/destruction", DESTRUCTION=past.isoformat()).status_code == 303
    assert requests.get(job_url, timeout=30).status_code == 404
    assert tap_server.service.results.get(job.run.id) is None


def test_abort_a_pending_job(url):
    job_url = _create(url, "SELECT 1 AS one")
    assert _post(job_url, "/phase", PHASE="ABORT").status_code == 303
    job = _job(job_url)
    assert _text(job, "phase") == "ABORTED" and _text(job, "endTime")
    _post(job_url, "/phase", PHASE="RUN")  # an aborted job stays aborted
    assert _text(_job(job_url), "phase") == "ABORTED"
    assert _post(job_url, "/phase", PHASE="SUSPEND").status_code == 400


def test_abort_stops_the_running_query(url, tap_server):
    job_url = _create(url, SLOW_ADQL, PHASE="RUN", EXECUTIONDURATION="20")
    job_id = job_url.rsplit("/", 1)[1]
    wait_until(lambda: requests.get(job_url + "/phase", timeout=30).text == "EXECUTING")
    run = tap_server.app.state.tap.jobs.get(job_id, "anonymous").run
    assert tap_server.service.get(run.id).state.value == "EXECUTING"
    start = time.monotonic()
    assert _post(job_url, "/phase", PHASE="ABORT").status_code == 303
    job = _job(job_url)
    assert _text(job, "phase") == "ABORTED"
    assert tap_server.service.get(run.id)._worker_done.wait(5), "DuckDB was not interrupted"
    assert time.monotonic() - start < 5
    error = requests.get(job_url + "/error", timeout=30)
    assert b"cancelled" in error.content
    assert requests.get(job_url + "/results/result", timeout=30).status_code == 409


def test_execution_duration_stops_a_job(url):
    job_url = _create(url, SLOW_ADQL, EXECUTIONDURATION="1")
    _post(job_url, "/phase", PHASE="RUN")
    job = _wait_final(job_url)
    assert _text(job, "phase") == "ERROR"
    summary = job.find(UWS + "errorSummary")
    assert summary.get("type") == "transient" and "time limit" in summary.find(
        UWS + "message").text


def test_wait_blocks_until_the_phase_changes(url):
    job_url = _create(url, "SELECT 1 AS one")
    start = time.monotonic()
    assert _text(_job(job_url, WAIT="0.5"), "phase") == "PENDING"
    assert time.monotonic() - start >= 0.45
    start = time.monotonic()  # not in the given phase: at once
    assert _text(_job(job_url, WAIT="30", PHASE="EXECUTING"), "phase") == "PENDING"
    assert time.monotonic() - start < 5

    slow_url = _create(url, SLOW_ADQL, PHASE="RUN")
    wait_until(lambda: requests.get(slow_url + "/phase", timeout=30).text == "EXECUTING")
    start = time.monotonic()
    assert _text(_job(slow_url, WAIT="0.3", PHASE="EXECUTING"), "phase") == "EXECUTING"
    assert time.monotonic() - start >= 0.25
    _post(slow_url, "/phase", PHASE="ABORT")
    assert _text(_job(slow_url, WAIT="-1"), "phase") == "ABORTED"  # final: at once
    assert requests.get(slow_url, params={"WAIT": "x"}, timeout=30).status_code == 400


def test_error_job(url):
    job_url = _create(url, "SELECT objectId\nFROM cat.Object\nWHERE nope > 1", PHASE="RUN")
    job = _wait_final(job_url)
    assert _text(job, "phase") == "ERROR"
    summary = job.find(UWS + "errorSummary")
    assert summary.get("type") == "fatal" and summary.get("hasDetail") == "true"
    assert "line 3, column 7" in summary.find(UWS + "message").text
    error = requests.get(job_url + "/error", timeout=30)
    assert error.status_code == 200
    assert error.headers["content-type"].startswith("application/x-votable+xml")
    info = next(i for i in parse(io.BytesIO(error.content)).resources[0].infos
                if i.name == "QUERY_STATUS")
    assert info.value == "ERROR" and "line 3, column 7" in info.content
    assert requests.get(job_url + "/results/result", timeout=30).status_code == 400

    bad = _create(url, "SELECT 1", LANG="SQL", PHASE="RUN")
    assert "LANG" in _job(bad).find(UWS + "errorSummary/" + UWS + "message").text
    fine = _create(url, "SELECT 1 AS one")
    assert requests.get(fine + "/error", timeout=30).status_code == 409


def test_delete_and_job_lists(url):
    first = _create(url, "SELECT 1 AS one", RUNID="list-a")
    second = _create(url, "SELECT 2 AS two", PHASE="RUN")
    _wait_final(second)
    jobs = ET.fromstring(requests.get(url + "/async", timeout=30).content)
    assert jobs.tag == UWS + "jobs" and jobs.get("version") == "1.1"
    refs = {r.get("id"): r for r in jobs.findall(UWS + "jobref")}
    first_id, second_id = first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]
    assert refs[first_id].get(XLINK + "href") == first
    assert refs[first_id].find(UWS + "phase").text == "PENDING"
    assert refs[first_id].find(UWS + "runId").text == "list-a"

    def listed(**params) -> set[str]:
        doc = ET.fromstring(requests.get(url + "/async", params=params, timeout=30).content)
        return {r.get("id") for r in doc.findall(UWS + "jobref")}

    assert first_id in listed(PHASE="PENDING") and second_id not in listed(PHASE="PENDING")
    assert second_id in listed(PHASE="COMPLETED")
    assert listed(LAST="1") == {second_id}
    assert listed(AFTER="2999-01-01T00:00:00Z") == set()

    resp = requests.delete(first, allow_redirects=False, timeout=30)
    assert resp.status_code == 303 and resp.headers["location"] == url + "/async"
    assert requests.get(first, timeout=30).status_code == 404
    resp = _post(second, ACTION="DELETE")
    assert resp.status_code == 303 and requests.get(second, timeout=30).status_code == 404
    assert first_id not in listed() and second_id not in listed()


def test_jobs_belong_to_their_owner(server):
    url = f"http://127.0.0.1:{server.http_port}/tap"
    alice = {"Authorization": f"Bearer {TOKENS['alice']}"}
    resp = requests.post(url + "/async", headers=alice, allow_redirects=False, timeout=30,
                         data={"LANG": "ADQL", "QUERY": "SELECT 1 AS one"})
    job_url = resp.headers["location"]
    job = ET.fromstring(requests.get(job_url, headers=alice, timeout=30).content)
    assert _text(job, "ownerId") == "alice"
    bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
    assert requests.get(job_url, headers=bob, timeout=30).status_code == 404
    assert requests.delete(job_url, headers=bob, timeout=30).status_code == 404
    assert requests.get(job_url, timeout=30).status_code == 401
    listing = ET.fromstring(requests.get(url + "/async", headers=bob, timeout=30).content)
    assert job_url.rsplit("/", 1)[1] not in {r.get("id") for r in listing}
    requests.delete(job_url, headers=alice, timeout=30)
