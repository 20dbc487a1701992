from __future__ import annotations

import pytest

from skyshard.errors import ForbiddenQueryError, UnsupportedQueryError


def test_show_tables(sky_db, sky_root):
    got = sky_db.sql("SHOW TABLES")
    assert got.column_names == [f"Tables_in_{sky_root.name}"]
    assert got.column(0).to_pylist() == ["Filter", "Object", "Source"]


def test_show_columns_and_describe(sky_db):
    cols = sky_db.sql("SHOW COLUMNS FROM Object")
    assert cols.column_names == ["Field", "Type", "Null", "Key", "Default", "Extra"]
    assert cols.column("Field").to_pylist() == list(sky_db.tables["Object"].column_names)
    assert cols.column("Key").to_pylist()[0] == "PRI"
    assert sky_db.sql("DESCRIBE Filter").column("Field").to_pylist() == ["filterId", "filterName", "photClam"]
    like = sky_db.sql("SHOW COLUMNS FROM Object LIKE 'g%'").column("Field").to_pylist()
    assert like == ["gMag", "gFlux"]


def test_count_star_from_stored_counts(sky_db, sky_tables):
    assert sky_db.sql("SELECT COUNT(*) FROM Source").to_pylist() == [{"COUNT(*)": sky_tables["Source"].num_rows}]
    assert sky_db.sql("select count(*) as n from Object").to_pylist() == [{"n": 6000}]
    # Anything more than a bare COUNT(*) runs the query.
    assert sky_db.plan("SELECT COUNT(*) FROM Object WHERE gMag > 20").partitions


def test_other_statements_refused(sky_db):
    with pytest.raises(UnsupportedQueryError, match="SHOW DATABASES"):
        sky_db.sql("SHOW DATABASES")
    with pytest.raises(ForbiddenQueryError):
        sky_db.sql("DESCRIBE SELECT 1")


def test_set_variables_then_select(sky_db):
    """A script of SET @v = constant statements then a SELECT, as Qserv's tests write it."""
    poly = "359.5, -5.0, 0.05, -5.0, 0.05, 3.5, 359.5, 3.5"
    want = sky_db.sql(f"SELECT COUNT(*) FROM Object WHERE scisql_s2PtInCPoly(ra, decl, {poly}) = 1")
    got = sky_db.sql(f"SET @poly = scisql_s2CPolyToBin({poly});\n"
                     "SELECT COUNT(*) FROM Object WHERE scisql_s2PtInCPoly(ra, decl, @poly) = 1;")
    assert got.to_pylist() == want.to_pylist() and want.column(0)[0].as_py() > 0
    assert sky_db.sql("SET @m = 20; SELECT COUNT(*) FROM Object WHERE gMag < @m").to_pylist() == \
        sky_db.sql("SELECT COUNT(*) FROM Object WHERE gMag < 20").to_pylist()


@pytest.mark.parametrize("sql,construct", [
    ("SELECT 1; SELECT 2", "multiple statements"),
    ("SET @p = 1; COPY Object TO 'x'; SELECT 1", "multiple statements"),
    ("SET @v = ra; SELECT @v", "SET @variable"),
    ("SET @p = scisql_s2CPolyToBin(0, 0, 1, 0, 1, 1); SELECT @p", "user variable"),
])
def test_scripts_refused(sky_db, sql, construct):
    with pytest.raises(UnsupportedQueryError) as info:
        sky_db.sql(sql)
    assert info.value.construct == construct
