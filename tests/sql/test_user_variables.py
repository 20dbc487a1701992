"""User variables in a request (SET @v, SELECT ... INTO @v), as MySQL evaluates them;
malformed numbers; CALL. (tests/test_oracle.py compares the same scripts with the
unpartitioned oracle.)"""

from __future__ import annotations

import pytest

from skyshard.errors import SqlError, SqlSyntaxError, UnsupportedQueryError
from skyshard.sql.parse import parse, statements
from skyshard.sql.variables import NoResult, literal


def _count(db, sql: str) -> int:
    return db.sql(sql).column(0)[0].as_py()


def test_select_into_then_use(sky_db):
    want = _count(sky_db, "SELECT COUNT(*) FROM Object WHERE gMag > 24.5")
    into_at_end = sky_db.sql("SELECT MIN(gMag) FROM Object WHERE gMag > 24.5 INTO @m;\n"
                             "SELECT COUNT(*) AS n FROM Object WHERE gMag >= @m")
    assert into_at_end.to_pylist() == [{"n": want}] and want > 0
    before_from = sky_db.sql("SELECT MIN(gMag), MAX(gMag) INTO @lo, @hi FROM Object WHERE gMag > 24.5; "
                             "SELECT COUNT(*) FROM Object WHERE gMag BETWEEN @lo AND @hi")
    assert before_from.column(0)[0].as_py() == want


def test_polygon_read_from_a_table(sky_db):
    """``SELECT scisql_s2CPolyToBin(<columns>) ... INTO @poly`` keeps the polygon: its
    vertices are read, then tested against as if written inline (Qserv's 0016/0017)."""
    inline = _count(sky_db, "SELECT COUNT(*) FROM Object WHERE qserv_areaspec_poly(44, 9, 46, 9, 45, 11)")
    got = _count(sky_db, "SELECT scisql_s2CPolyToBin(43 + filterId, 9, 46, 9, 45, 11) FROM Filter "
                         "WHERE filterName = 'g' INTO @poly;\n"
                         "SELECT COUNT(*) FROM Object WHERE scisql_s2PtInCPoly(ra, decl, @poly) = 1")
    assert got == inline and inline > 0


def test_a_request_that_only_assigns_has_no_result_set(sky_db):
    got = sky_db.sql("SELECT scisql_s2CPolyToBin(44, 9, 46, 9, 45, 11) FROM Filter "
                     "WHERE filterId = 2 INTO @poly")
    assert got.num_columns == 0 and got.num_rows == 0
    assert sky_db.sql("SET @a = 1").num_columns == 0
    with pytest.raises(SqlError, match="more than one row"):
        sky_db.sql("SELECT filterId FROM Filter INTO @f")  # MySQL: error 1172


def test_no_row_leaves_a_variable_unchanged(sky_db):
    got = sky_db.sql("SET @f = 3; SELECT filterId FROM Filter WHERE filterId > 100 INTO @f; "
                     "SELECT filterName FROM Filter WHERE filterId = @f")
    assert got.to_pylist() == [{"filterName": "i"}]


def test_a_variable_never_set_is_null(sky_db):
    assert sky_db.sql("SELECT @nope, filterId FROM Filter WHERE filterId = 0").to_pylist() == \
        [{"@nope": None, "filterId": 0}]
    assert _count(sky_db, "SELECT COUNT(*) FROM Object WHERE gMag < @nope") == 0
    # sciSQL: a NULL polygon makes scisql_s2PtInCPoly 0 (Qserv's 0017 run alone)
    assert _count(sky_db, "SELECT COUNT(*) FROM Object WHERE scisql_s2PtInCPoly(ra, decl, @poly) = 1") == 0


def test_set_from_a_sub_query(sky_db):
    got = sky_db.sql("SET @m = (SELECT MAX(filterId) FROM Filter); "
                     "SELECT filterName FROM Filter WHERE filterId = @m")
    assert got.to_pylist() == [{"filterName": "y"}]
    with pytest.raises(SqlError, match="more than one row"):
        sky_db.sql("SET @m = (SELECT filterId FROM Filter); SELECT @m")


@pytest.mark.parametrize("sql,error,construct,words", [
    ("SELECT filterId, filterName FROM Filter WHERE filterId = 1 INTO @f", SqlError, None,
     "2 columns to 1 variables"),
    ("SET @p = scisql_s2CPolyToBin(0, 0, 1, 0, 1, 1);\nCALL scisql.scisql_s2CPolyRegion(@p, 20);\n"
     "SELECT COUNT(*) FROM Object WHERE scisql_s2PtInCPoly(ra, decl, @p) = 1", UnsupportedQueryError,
     "CALL", "CALL scisql.scisql_s2CPolyRegion() is not supported; select with scisql_s2PtInCPoly"),
    ("SELECT COUNT(*) FROM Object WHERE ra BETWEEN 35 AND 35 .1", SqlSyntaxError, None,
     "malformed number '35 .1': a number has no spaces inside (line 1, column 53)"),
    ("SELECT COUNT(*)\nFROM Object WHERE qserv_areaspec_box(35, 6, 35. 1, 6.0001)", SqlSyntaxError, None,
     "malformed number '35. 1'"),
    ("SELECT objectId FROM Object JOIN Source USING (objectId)\n qserv_areaspec_box(1, 3, 2, 4)",
     SqlSyntaxError, None, "near 'qserv_areaspec_box' (line 2"),
])
def test_refusals_name_the_construct(sky_db, sql, error, construct, words):
    with pytest.raises(error) as info:
        sky_db.sql(sql)
    assert words in str(info.value)
    if construct is not None:
        assert info.value.construct == construct


def test_planning_alone_cannot_run_an_assignment(sky_db):
    with pytest.raises(UnsupportedQueryError) as info:
        sky_db.explain("SELECT MAX(ra) FROM Object INTO @m; SELECT @m")
    assert info.value.construct == "SELECT INTO @variable"
    assert isinstance(parse("SET @m = 1; SET @n = @m + 1"), NoResult)
    assert parse("SET @m = 1; SET @n = @m + 1; SELECT @n * 2, @m").sql(dialect="mysql") == \
        "SELECT (1 + 1) * 2, 1 AS `@m`"


def test_statements_and_literals():
    got = [(s.tree.sql(dialect="mysql"), s.into) for s in statements(
        "SELECT a, b INTO @x, @Y FROM t; ; SELECT (SELECT c FROM u) FROM t WHERE d = 'INTO @z' INTO @z")]
    assert got == [("SELECT a, b FROM t", ("x", "y")),
                   ("SELECT (SELECT c FROM u) FROM t WHERE d = 'INTO @z'", ("z",))]
    assert [literal(v).sql(dialect="duckdb") for v in (None, -3, 0.1, float("inf"), b"\x0a")] == \
        ["NULL", "-3", "0.1e0", "CAST('inf' AS DOUBLE)", "UNHEX('0a')"]
