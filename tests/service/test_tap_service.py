"""TAP with pyvo against a server in this process: sync and async queries, MAXREC and
overflow, every RESPONSEFORMAT, TAP_SCHEMA, error documents, VOSI and DALI documents,
authentication on and off."""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest
import requests
from served import TOKENS, start_server

pyvo = pytest.importorskip("pyvo")

NS = {"vosi": "http://www.ivoa.net/xml/VOSICapabilities/v1.0",
      "avail": "http://www.ivoa.net/xml/VOSIAvailability/v1.0",
      "tables": "http://www.ivoa.net/xml/VOSITables/v1.0",
      "xhtml": "http://www.w3.org/1999/xhtml"}


@pytest.fixture(scope="module")
def tap_server(served_catalog, tmp_path_factory):
    """A server whose TAP answers without credentials."""
    srv = start_server(served_catalog, tmp_path_factory.mktemp("tap-results"),
                       anonymous_tap=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tap_url(tap_server) -> str:
    return f"http://127.0.0.1:{tap_server.http_port}/tap"


@pytest.fixture(scope="module")
def tap(tap_url):
    return pyvo.dal.TAPService(tap_url)


def _sync(url: str, query: str, **params) -> requests.Response:
    return requests.get(url + "/sync", params={"LANG": "ADQL", "QUERY": query, **params},
                        timeout=30)


# --- synchronous ---------------------------------------------------------------------------


def test_sync_query_with_units_and_ucds(tap, served_tables):
    result = tap.search("SELECT TOP 5 objectId, ra, decl, kind, nEpochs, stamp "
                        "FROM cat.Object ORDER BY objectId")
    table = result.to_table()
    want = served_tables["Object"].sort_by("objectId").slice(0, 5)
    assert table["objectId"].tolist() == want.column("objectId").to_pylist()
    assert table["ra"].tolist() == want.column("ra").to_pylist()
    assert table["kind"].tolist() == want.column("kind").to_pylist()
    assert [bytes(list(v)) for v in table["stamp"]] == want.column("stamp").to_pylist()
    assert str(table["ra"].unit) == "deg" and str(table["decl"].unit) == "deg"
    fields = {f.name: f for f in result.fielddescs}
    assert fields["ra"].ucd == "pos.eq.ra;meta.main"
    assert fields["decl"].ucd == "pos.eq.dec;meta.main"
    assert fields["objectId"].ucd == "meta.id;meta.main"
    assert (fields["objectId"].datatype, fields["nEpochs"].datatype) == ("long", "int")
    assert result.query_status == "OK"


def test_sync_post_and_adql_geometry(tap, served_tables):
    obj = served_tables["Object"].to_pylist()
    centre = obj[0]
    result = tap.search(
        "SELECT objectId, DISTANCE(POINT('ICRS', ra, decl), "
        f"POINT('ICRS', {centre['ra']}, {centre['decl']})) AS d FROM cat.Object "
        f"WHERE 1 = CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', {centre['ra']}, "
        f"{centre['decl']}, 20)) ORDER BY d")
    got = result.to_table()
    assert got["objectId"][0] == centre["objectId"] and got["d"][0] == pytest.approx(0)
    assert all(d <= 20 for d in got["d"])


def test_join_of_director_and_child(tap):
    result = tap.search("SELECT o.objectId, s.sourceId, s.psfFlux FROM cat.Object AS o "
                        "JOIN cat.Source AS s ON s.objectId = o.objectId WHERE o.objectId = 14")
    assert sorted(result.to_table()["sourceId"].tolist()) == [4, 5, 6]


@pytest.mark.parametrize("query, maxrec, rows, status", [
    ("SELECT objectId FROM cat.Object", 7, 7, "OVERFLOW"),
    ("SELECT TOP 5 objectId FROM cat.Object", 10, 5, "OK"),
    ("SELECT TOP 50 objectId FROM cat.Object", 10, 10, "OVERFLOW"),
    ("SELECT objectId FROM cat.Object WHERE objectId <= 21", 3, 3, "OK"),
    ("SELECT sourceId FROM cat.Source", None, 500, "OVERFLOW"),  # the server's 500 rows
    ("SELECT table_name FROM TAP_SCHEMA.tables", 2, 2, "OVERFLOW"),
])
def test_maxrec_and_overflow(tap, query, maxrec, rows, status):
    result = tap.search(query, maxrec=maxrec)
    assert len(result) == rows and result.query_status == status


def test_maxrec_zero_keeps_the_columns(tap_url):
    vot = _votable(_sync(tap_url, "SELECT objectId, kind FROM cat.Object", MAXREC=0))
    table = vot.get_first_table()
    assert [f.name for f in table.fields] == ["objectId", "kind"] and len(table.array) == 0
    assert [i.value for i in vot.resources[0].infos if i.name == "QUERY_STATUS"] == [
        "OK", "OVERFLOW"]


def _votable(resp: requests.Response):
    from astropy.io.votable import parse

    assert resp.status_code == 200, resp.text
    return parse(io.BytesIO(resp.content))


@pytest.mark.parametrize("fmt, media", [
    ("votable", "application/x-votable+xml"),
    ("application/x-votable+xml", "application/x-votable+xml"),
    ("csv", "text/csv"), ("text/csv", "text/csv"),
    ("tsv", "text/tab-separated-values"),
    ("json", "application/json"), ("parquet", "application/vnd.apache.parquet"),
])
def test_response_formats(tap_url, served_tables, fmt, media):
    query = "SELECT TOP 4 objectId, gMag, kind, stamp FROM cat.Object ORDER BY objectId"
    resp = _sync(tap_url, query, RESPONSEFORMAT=fmt, MAXREC=3)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith(media)
    assert resp.headers["x-query-status"] == "OVERFLOW"
    want = served_tables["Object"].sort_by("objectId").slice(0, 3).to_pylist()
    ids = [w["objectId"] for w in want]
    if media.startswith("application/x-votable"):
        got = _votable(resp).get_first_table().array
        assert got["objectId"].tolist() == ids
    elif media == "text/csv":
        rows = list(csv.reader(io.StringIO(resp.text)))
        assert rows[0] == ["objectId", "gMag", "kind", "stamp"]
        assert [int(r[0]) for r in rows[1:]] == ids
        assert bytes.fromhex(rows[1][3]) == want[0]["stamp"]
    elif media == "text/tab-separated-values":
        rows = [line.split("\t") for line in resp.text.splitlines()]
        assert rows[0] == ["objectId", "gMag", "kind", "stamp"] and len(rows) == 4
        assert [int(r[0]) for r in rows[1:]] == ids and rows[1][2] == want[0]["kind"]
    elif media == "application/json":
        doc = resp.json()
        assert [m["name"] for m in doc["metadata"]] == ["objectId", "gMag", "kind", "stamp"]
        assert doc["metadata"][0]["datatype"] == "long" and doc["overflow"] is True
        assert [r[0] for r in doc["data"]] == ids
        assert doc["data"][0][1] == want[0]["gMag"] and doc["data"][0][2] == want[0]["kind"]
    else:
        table = pq.read_table(io.BytesIO(resp.content))
        assert table.column("objectId").to_pylist() == ids
        assert table.schema.metadata[b"IVOA.QUERY_STATUS"] == b"OVERFLOW"


def test_unknown_response_format(tap_url):
    resp = _sync(tap_url, "SELECT TOP 1 objectId FROM cat.Object", RESPONSEFORMAT="fits")
    assert resp.status_code == 400 and b"RESPONSEFORMAT" in resp.content


# --- TAP_SCHEMA ---------------------------------------------------------------------------


def test_tap_schema_describes_the_catalog(tap):
    tables = {r["table_name"]: r for r in tap.search(
        "SELECT schema_name, table_name, table_type FROM TAP_SCHEMA.tables").to_table()}
    assert {"cat.Object", "cat.Source", "cat.Filter", "TAP_SCHEMA.schemas",
            "TAP_SCHEMA.tables", "TAP_SCHEMA.columns", "TAP_SCHEMA.keys",
            "TAP_SCHEMA.key_columns"} == set(tables)
    assert tables["cat.Object"]["schema_name"] == "cat"
    cols = tap.search("SELECT column_name, datatype, arraysize, unit, ucd, indexed, principal "
                      "FROM TAP_SCHEMA.columns WHERE table_name = 'cat.Object' "
                      "ORDER BY column_index").to_table()
    by_name = {r["column_name"]: r for r in cols}
    assert list(cols["column_name"])[:3] == ["objectId", "ra", "decl"]
    assert (by_name["ra"]["unit"], by_name["ra"]["ucd"]) == ("deg", "pos.eq.ra;meta.main")
    assert by_name["decl"]["ucd"] == "pos.eq.dec;meta.main"
    assert by_name["objectId"]["ucd"] == "meta.id;meta.main"
    assert by_name["objectId"]["indexed"] == 1 and by_name["kind"]["indexed"] == 0
    assert (by_name["stamp"]["datatype"], by_name["stamp"]["arraysize"]) == ("unsignedByte", "*")
    assert (by_name["flags"]["datatype"], by_name["rMag"]["datatype"]) == ("short", "float")


def test_tap_schema_keys_join_and_size(tap):
    keys = tap.search("SELECT k.key_id, k.from_table, k.target_table, c.from_column, "
                      "c.target_column FROM TAP_SCHEMA.keys AS k "
                      "JOIN TAP_SCHEMA.key_columns AS c ON c.key_id = k.key_id "
                      "WHERE k.from_table = 'cat.Source'").to_table()
    assert [tuple(r) for r in keys] == [
        ("Source_Object", "cat.Source", "cat.Object", "objectId", "objectId")]
    own = tap.search("SELECT COUNT(*) AS n FROM TAP_SCHEMA.keys "
                     "WHERE from_table LIKE 'TAP_SCHEMA.%'").to_table()
    assert own["n"][0] == 5
    sizes = tap.search('SELECT "size", principal, std FROM TAP_SCHEMA.columns').to_table()
    assert len(sizes) > 20 and set(sizes["principal"]) <= {0, 1}


@pytest.mark.parametrize("query, kind", [
    ("SELECT * FROM TAP_SCHEMA.nope", "UnknownNameError"),
    ("SELECT t.table_name FROM TAP_SCHEMA.tables AS t JOIN cat.Object AS o ON 1 = 1",
     "SqlError"),
    ("SELECT * FROM TAP_SCHEMA.tables WHERE getenv('HOME') = ''", "ForbiddenQueryError"),
    ("SELECT * FROM read_csv('/etc/passwd')", "ForbiddenQueryError"),
])
def test_tap_schema_refusals(tap_url, query, kind):
    resp = _sync(tap_url, query)
    assert resp.status_code in (400, 403)
    info = _error_info(resp)
    assert info["error_type"] == kind, info


def _error_info(resp: requests.Response) -> dict:
    """INFO name -> value (or text) of an error document."""
    root = ET.fromstring(resp.content)
    out = {}
    for info in root.iter("{http://www.ivoa.net/xml/VOTable/v1.3}INFO"):
        out[info.get("name")] = info.get("value")
        if info.get("name") == "QUERY_STATUS":
            out["message"] = info.text
    assert out["QUERY_STATUS"] == "ERROR"
    return out


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("query, status, where", [
    ("SELECT objectId\nFROM cat.Object\nWHERE nope = 1", 400, "(line 3, column 7)"),
    ("SELECT objectId\nFROM cat.Nope", 400, "(line 2, column"),
    ("SELECT objectId FROM cat.Object WHERE (", 400, "(line 1, column"),
])
def test_error_documents_give_line_and_column(tap, tap_url, query, status, where):
    resp = _sync(tap_url, query)
    assert resp.status_code == status
    assert where in _error_info(resp)["message"]
    with pytest.raises(pyvo.dal.DALQueryError, match=r"line \d+, column \d+"):
        tap.search(query)


@pytest.mark.parametrize("params, message", [
    ({"LANG": "SQL", "QUERY": "SELECT 1"}, "LANG"),
    ({"LANG": "ADQL"}, "QUERY"),
    ({"LANG": "ADQL", "QUERY": "SELECT 1", "MAXREC": "-1"}, "MAXREC"),
    ({"LANG": "ADQL", "QUERY": "SELECT 1", "REQUEST": "getCapabilities"}, "REQUEST"),
])
def test_bad_parameters(tap_url, params, message):
    resp = requests.post(tap_url + "/sync", data=params, timeout=30)
    assert resp.status_code == 400 and message in _error_info(resp)["message"]


def test_tap_1_0_parameters_are_accepted(tap_url):
    resp = requests.post(tap_url + "/sync", timeout=30, data={
        "REQUEST": "doQuery", "VERSION": "1.0", "LANG": "ADQL-2.0", "FORMAT": "csv",
        "QUERY": "SELECT TOP 2 filterName FROM cat.Filter ORDER BY filterId",
        "spurious": "ignored"})
    assert resp.status_code == 200 and resp.text.split() == ['"filterName"', '"u"', '"g"']


def test_multipart_form(tap_url):
    resp = requests.post(tap_url + "/sync", timeout=30, files={
        "LANG": (None, "ADQL"), "RESPONSEFORMAT": (None, "json"),
        "QUERY": (None, "SELECT COUNT(*) AS n FROM cat.Filter")})
    assert resp.status_code == 200 and resp.json()["data"] == [[6]]


# --- asynchronous, with pyvo --------------------------------------------------------------


def test_async_job_with_pyvo(tap, served_tables):
    job = tap.submit_job("SELECT sourceId, objectId FROM cat.Source ORDER BY sourceId",
                         maxrec=100)
    assert job.phase == "PENDING"
    job.run()
    job.wait(timeout=20)
    assert job.phase == "COMPLETED"
    result = job.fetch_result()
    assert len(result) == 100 and result.query_status == "OVERFLOW"
    assert result.to_table()["sourceId"].tolist() == list(range(1, 101))
    job.delete()


def test_run_async_on_tap_schema_and_catalog(tap):
    assert len(tap.run_async("SELECT * FROM TAP_SCHEMA.schemas")) == 2
    assert len(tap.run_async("SELECT filterId FROM cat.Filter")) == 6


def test_async_error_is_raised_by_pyvo(tap):
    with pytest.raises(pyvo.dal.DALQueryError, match="line 1, column"):
        tap.run_async("SELECT nope FROM cat.Object")


# --- VOSI and DALI ------------------------------------------------------------------------


def test_capabilities_and_availability_are_public(tap_url, server):
    url = f"http://127.0.0.1:{server.http_port}/tap"  # a server that wants credentials
    caps = requests.get(url + "/capabilities", timeout=30)
    assert caps.status_code == 200 and caps.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(caps.content)
    ids = [c.get("standardID") for c in root.findall("capability")]
    assert ids[0] == "ivo://ivoa.net/std/TAP" and "ivo://ivoa.net/std/VOSI#tables-1.1" in ids
    tap_cap = root.find("capability")
    assert tap_cap.find("interface/accessURL").text == url
    assert tap_cap.find("interface/securityMethod") is not None
    assert tap_cap.find("outputLimit/hard").text == "500"
    forms = [f.text for f in tap_cap.iter("form")]
    assert {"CIRCLE", "CONTAINS", "DISTANCE", "OFFSET"} <= set(forms)
    avail = requests.get(url + "/availability", timeout=30)
    assert ET.fromstring(avail.content).find("avail:available", NS).text == "true"
    anonymous = ET.fromstring(requests.get(tap_url + "/capabilities", timeout=30).content)
    assert anonymous.find("capability/interface/securityMethod") is None


def test_tables_with_pyvo(tap):
    tables = tap.tables
    obj = tables["cat.Object"]
    columns = {c.name: c for c in obj.columns}
    assert columns["ra"].unit == "deg" and columns["ra"].ucd == "pos.eq.ra;meta.main"
    assert columns["objectId"].datatype.content == "long"
    assert "indexed" in columns["objectId"].flags
    source = tables["cat.Source"]
    assert source.foreignkeys[0].targettable == "cat.Object"
    assert "TAP_SCHEMA.columns" in list(tables.keys())


def test_one_table_and_minimal_detail(tap_url):
    resp = requests.get(tap_url + "/tables/cat.Object", timeout=30)
    assert resp.status_code == 200
    root = ET.fromstring(resp.content)
    assert root.tag == f"{{{NS['tables']}}}table" and root.find("name").text == "cat.Object"
    assert requests.get(tap_url + "/tables/cat.Nope", timeout=30).status_code == 404
    brief = ET.fromstring(requests.get(tap_url + "/tables?detail=min", timeout=30).content)
    assert not list(brief.iter("column")) and len(list(brief.iter("table"))) == 8


def test_examples_are_real_queries(tap):
    examples = {e["QUERY"] if isinstance(e, dict) else e.query: e for e in tap.examples}
    assert len(examples) >= 5
    rows = {}
    for query in examples:
        rows[query] = len(tap.search(query))
    cone = next(q for q in examples if "CIRCLE" in q)
    lookup = next(q for q in examples if "WHERE objectId =" in q)
    join = next(q for q in examples if "JOIN" in q)
    assert rows[cone] >= 1 and rows[lookup] == 1 and rows[join] == 3


def test_openapi_documents_tap(http):
    _, _, doc = http.call("GET", "/openapi.json", token=None)
    assert doc["paths"]["/tap/sync"]["get"]["operationId"] == "tapSync"
    assert doc["paths"]["/tap/capabilities"]["get"]["security"] == []


# --- authentication -----------------------------------------------------------------------


def test_tap_wants_credentials_without_anonymous_tap(server):
    url = f"http://127.0.0.1:{server.http_port}/tap"
    query = {"LANG": "ADQL", "QUERY": "SELECT TOP 1 filterId FROM cat.Filter"}
    resp = requests.get(url + "/sync", params=query, timeout=30)
    assert resp.status_code == 401 and "WWW-Authenticate" in resp.headers
    assert _error_info(resp)["error_type"] == "AuthenticationError"
    assert requests.get(url + "/tables", timeout=30).status_code == 401
    assert requests.get(url + "/async", timeout=30).status_code == 401
    ok = requests.get(url + "/sync", params=query, timeout=30,
                      headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    assert ok.status_code == 200
    assert requests.get(url + "/sync", params=query, auth=("bob", "hunter2"),
                        timeout=30).status_code == 200
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKENS['alice']}"
    service = pyvo.dal.TAPService(url, session=session)
    assert len(service.search("SELECT filterId FROM cat.Filter")) == 6
    assert len(service.run_async("SELECT filterId FROM cat.Filter")) == 6


def test_anonymous_tap_still_checks_given_credentials(tap_url, tap_server):
    query = {"LANG": "ADQL", "QUERY": "SELECT TOP 1 filterId FROM cat.Filter"}
    assert requests.get(tap_url + "/sync", params=query, timeout=30).status_code == 200
    bad = requests.get(tap_url + "/sync", params=query, timeout=30,
                       headers={"Authorization": "Bearer forged"})
    assert bad.status_code == 401
    # the rest of the HTTP API still wants credentials
    base = tap_url.rsplit("/tap", 1)[0]
    assert requests.get(base + "/query-async", timeout=30).status_code == 401


def test_anonymous_tap_alone_needs_no_users(served_catalog, tmp_path):
    from skyshard.service import config
    from skyshard.service.errors import ConfigError

    cfg = config.load(None, catalog=served_catalog, anonymous_tap=True)
    assert cfg.credentials.anonymous_tap and not cfg.credentials.allow_anonymous
    assert "anonymous TAP" in cfg.describe()
    with pytest.raises(ConfigError, match="no users or tokens"):
        config.load(None, catalog=served_catalog)
    path = tmp_path / "tap.toml"
    path.write_text(f'catalog = "{served_catalog}"\nanonymous_tap = true\n')
    assert config.load(path).credentials.anonymous_tap


def test_sync_query_url_encoding(tap_url):
    query = "SELECT filterName FROM cat.Filter WHERE filterName IN ('u', 'g') ORDER BY filterId"
    resp = requests.get(tap_url + "/sync?" + urllib.parse.urlencode(
        {"lang": "adql", "query": query, "responseformat": "json"}), timeout=30)
    assert json.loads(resp.content)["data"] == [["u"], ["g"]]
