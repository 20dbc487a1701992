"""Output column names are what MySQL gives: aliases, column names, and any other
expression's text as the user typed it."""

from __future__ import annotations

import pytest

from skyshard.sql.names import select_texts


@pytest.mark.parametrize(("sql", "names"), [
    ("SELECT count(*), stddev(gMag), Max(decl) FROM Object",
     ["count(*)", "stddev(gMag)", "Max(decl)"]),
    ("select objectId, ra+1, ra  +  2 from Object limit 1", ["objectId", "ra+1", "ra  +  2"]),
    ("SELECT COUNT(*) AS n, o.decl FROM Object o GROUP BY o.decl", ["n", "decl"]),
    ("SELECT DISTINCT FLOOR(decl) FROM Object", ["FLOOR(decl)"]),
    ("SELECT median(gMag) FROM Object", ["median(gMag)"]),
    ("SET @lim = 10; SELECT @lim, ra FROM Object LIMIT 1", ["@lim", "ra"]),
    ("SELECT ra, decl FROM Object WHERE objectId = 1 INTO @a, @b; SELECT @a + @b",
     ["@a + @b"]),
])
def test_names_as_typed(sky_db, sql, names):
    assert sky_db.sql(sql).column_names == names


def test_a_star_keeps_the_table_columns_around_typed_names(sky_db):
    got = sky_db.sql("SELECT ra*2, * FROM Object LIMIT 1").column_names
    assert got[0] == "ra*2"
    assert got[1:] == sky_db.sql("SELECT * FROM Object LIMIT 1").column_names


def test_engine_names_never_leak(sky_db):
    got = sky_db.sql("SELECT approx_count_distinct(ra), COUNT(*) FROM Object").column_names
    assert got == ["approx_count_distinct(ra)", "COUNT(*)"]


@pytest.mark.parametrize("sql", [
    "SELECT 1 UNION SELECT 2",
    "SHOW TABLES",
    "SELECT , FROM t",
])
def test_no_names_from_text_it_cannot_match(sql):
    assert select_texts(sql) is None
