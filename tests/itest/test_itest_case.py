"""Reading Qserv case folders: query markup, roles, data columns, skip reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyshard.errors import InputError
from skyshard.itest.case import Role, load_case, load_cases, read_query, split_statements
from skyshard.itest.runner import default_cases_dir
from skyshard.itest.scisql import rewrite_for_mariadb

QSERV = default_cases_dir()  # $SKYSHARD_QSERV_TESTDATA, else tests/data/qserv


@pytest.fixture
def qserv() -> Path:
    if not (QSERV / "case01").is_dir():
        pytest.skip(f"Qserv test data not found at {QSERV} (set SKYSHARD_QSERV_TESTDATA)")
    return QSERV


def test_query_forms_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "1002_cone.sql"
    path.write_text(
        "-- Cone search\n"
        "-- pragma sortresult noheader\n"
        "SELECT COUNT(*) FROM {DBTAG_A}Object\n"
        "WHERE ra_PS BETWEEN 0.1 AND 4  -- noQserv\n"
        "  AND decl_PS BETWEEN -6 AND 6 -- noQserv\n"
        "-- withQserv WHERE qserv_areaspec_box(0.1, -6, 4, 6)\n"
        "  AND zFlux_PS > 0;\n"
    )
    q = read_query(path, case="case01", database="qcase01")
    assert q.qserv_sql == ("SELECT COUNT(*) FROM qcase01.Object\n"
                           "WHERE qserv_areaspec_box(0.1, -6, 4, 6)\n  AND zFlux_PS > 0")
    assert q.reference_sql == ("SELECT COUNT(*) FROM {DBTAG_A}Object\nWHERE ra_PS BETWEEN 0.1 AND 4\n"
                               "AND decl_PS BETWEEN -6 AND 6\n  AND zFlux_PS > 0")
    assert q.sort_result and "noheader" in q.pragmas
    assert (q.id, q.number, q.query_class) == ("case01/1002_cone", "1002", "1xxx")


def test_split_statements_respects_quotes_and_comments() -> None:
    sql = "SET @a = ';'; -- x; y\nSELECT 'a;b', `c;d` FROM t;"
    assert split_statements(sql) == ["SET @a = ';'", "-- x; y\nSELECT 'a;b', `c;d` FROM t"]


def test_polygon_and_inlined_scisql_rewrites() -> None:
    sql = "SELECT scisql_angSep(ra, decl, 1, 2) FROM t WHERE scisql_s2PtInCPoly(ra, decl, 0, 0, 1, 0, 0, 1) = 1"
    out = rewrite_for_mariadb(sql)
    assert "scisql_angSep" not in out and "ASIN(SQRT(" in out
    assert "scisql_s2PtInCPoly(ra, decl, JSON_ARRAY(0, 0, 1, 0, 0, 1))" in out
    kept = rewrite_for_mariadb(sql, inline=False)
    assert kept.startswith("SELECT scisql_angSep(ra, decl, 1, 2) FROM t")


def test_malformed_ingest_json_names_file_and_line(tmp_path: Path) -> None:
    case = tmp_path / "case99"
    for sub in ("data/ingest", "data/schema", "queries"):
        (case / sub).mkdir(parents=True)
    (case / "data/ingest/T.json").write_text('{"table": "T",\n "is_partitioned": 0,,}')
    with pytest.raises(InputError) as err:
        load_case(case)
    assert err.value.path.endswith("T.json") and err.value.line == 2


def test_case_without_suite_file(tmp_path: Path) -> None:
    case = tmp_path / "case99"
    for sub in ("data/ingest", "data/schema", "queries"):
        (case / sub).mkdir(parents=True)
    (case / "data/ingest/T.json").write_text(json.dumps({"table": "T", "is_partitioned": 0}))
    (case / "data/schema/T.schema").write_text("CREATE TABLE `T` (`a` int(11) NOT NULL);")
    (case / "data/T.tsv").write_text("1\n2\n")
    (case / "queries/0001_a.sql").write_text("SELECT a FROM T")
    loaded = load_case(case)
    assert [t.name for t in loaded.tables.values()] == ["T"]
    assert loaded.tables["T"].role is Role.REPLICATED and loaded.tables["T"].delimiter == "\t"
    assert [q.id for q in loaded.queries] == ["case99/0001_a"]


def test_the_four_cases(qserv: Path) -> None:
    cases = {c.name: c for c in load_cases(qserv)}
    assert sorted(cases) == ["case01", "case02", "case03", "case04"]
    runnable = {n: sum(q.runnable for q in c.queries) for n, c in cases.items()}
    unsupported = {n: sum(not q.runnable for q in c.queries) for n, c in cases.items()}
    assert runnable == {"case01": 78, "case02": 38, "case03": 55, "case04": 6}
    assert unsupported == {"case01": 29, "case02": 28, "case03": 18, "case04": 0}
    c3 = cases["case03"]
    roles = {t.name: t.role for t in c3.tables.values()}
    assert roles["RefObject"] is roles["RunDeepSource"] is Role.DIRECTOR
    assert roles["RunDeepForcedSource"] is Role.CHILD and roles["RefDeepSrcMatch"] is Role.MATCH
    assert list(c3.tables)[:2] == ["RefObject", "RunDeepSource"]  # directors first
    match = c3.tables["RefDeepSrcMatch"]
    assert match.extra_columns == ("flags",) and match.schema.names[-1] == "flags"
    assert "chunkId" not in match.schema.names
    assert c3.absent_tables == ["RunDeepForcedSource"]
    dup = cases["case04"].tables["DeepSourceDupKeys"]
    assert dup.role is Role.DIRECTOR and not dup.unique_keys
    assert cases["case04"].tables["DeepCoadd"].enclosed_by == '"'
    assert cases["case04"].ignored_files == ["queries/0020_showColumnsFromDeepForcedSource"]
    reasons = {q.id: cases[q.case].skip_reason(q) for c in cases.values() for q in c.queries}
    assert reasons["case01/2100_groupByChunkId"] == "in skip_numbers of integration_tests.yaml"
    assert reasons["case03/0040_selectCountFromRunDeepForcedSource"] == "needs absent table RunDeepForcedSource"
    assert reasons["case04/0003_SourcesForGivenExposure"] == \
        "needs absent table DeepForcedSource, Science_Ccd_Exposure"
    assert reasons["case01/0001.1_fetchObjectById"] is None
