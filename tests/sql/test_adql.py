"""ADQL queries return what the equivalent Qserv-dialect queries return, with pruning."""

from __future__ import annotations

import pytest

from same_rows import assert_same_rows
from skyshard.errors import SqlSyntaxError, UnsupportedQueryError

PAIRS = [
    ("SELECT TOP 5 objectId, gMag FROM Object ORDER BY gMag DESC, objectId",
     "SELECT objectId, gMag FROM Object ORDER BY gMag DESC, objectId LIMIT 5"),
    ("SELECT objectId FROM Object WHERE 1 = CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 45, 10, 0.5))",
     "SELECT objectId FROM Object WHERE scisql_s2PtInCircle(ra, decl, 45, 10, 0.5) = 1"),
    ("SELECT COUNT(*) FROM Object WHERE CONTAINS(POINT('ICRS', ra, decl), BOX('ICRS', 0, 0, 4, 2)) = 1",
     "SELECT COUNT(*) FROM Object WHERE scisql_s2PtInBox(ra, decl, 358, -1, 2, 1) = 1"),
    ("SELECT COUNT(*) FROM Object WHERE INTERSECTS(POLYGON('ICRS', 44, 9, 46, 9, 45, 11), POINT('ICRS', ra, decl)) = 1",
     "SELECT COUNT(*) FROM Object WHERE scisql_s2PtInCPoly(ra, decl, 44, 9, 46, 9, 45, 11) = 1"),
    ("SELECT objectId, DISTANCE(POINT('ICRS', ra, decl), POINT('ICRS', 45, 10)) AS d FROM Object "
     "WHERE DISTANCE(ra, decl, 45, 10) < 0.2 ORDER BY d",
     "SELECT objectId, scisql_angSep(ra, decl, 45, 10) AS d FROM Object "
     "WHERE scisql_angSep(ra, decl, 45, 10) < 0.2 ORDER BY d"),
    ('SELECT "kind", COUNT(*) AS n FROM Object GROUP BY "kind" ORDER BY n DESC OFFSET 1',
     "SELECT kind, COUNT(*) AS n FROM Object GROUP BY kind ORDER BY n DESC LIMIT 100 OFFSET 1"),
]


@pytest.mark.parametrize("adql,qserv", PAIRS)
def test_same_answer(sky_db, adql, qserv):
    got = sky_db.sql(adql, dialect="adql")
    want = sky_db.sql(qserv)
    assert_same_rows(got, want, ordered=" ORDER BY " in qserv)
    assert want.num_rows > 0


def test_adql_cone_prunes_partitions(sky_db):
    from skyshard.sql.adql import parse_adql

    sql = "SELECT * FROM Object WHERE 1 = CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 45, 10, 0.05))"
    p = sky_db.plan(sql, parse_adql(sql))
    assert 1 <= len(p.chosen["object"]) <= 4 < p.considered


@pytest.mark.parametrize("adql,construct", [
    ("SELECT POINT('ICRS', ra, decl) FROM Object", "POINT"),
    ("SELECT * FROM Object WHERE CONTAINS(POINT('GALACTIC', ra, decl), CIRCLE('GALACTIC', 1, 2, 3)) = 1", "POINT"),
    ("SELECT * FROM Object WHERE INTERSECTS(CIRCLE('ICRS', 1, 2, 3), BOX('ICRS', 1, 2, 3, 4)) = 1", "INTERSECTS"),
])
def test_unsupported_named(sky_db, adql, construct):
    with pytest.raises(UnsupportedQueryError) as info:
        sky_db.sql(adql, dialect="adql")
    assert info.value.construct == construct


def test_syntax_error_position(sky_db):
    with pytest.raises(SqlSyntaxError) as info:
        sky_db.sql("SELECT TOP FROM Object", dialect="adql")
    assert info.value.line == 1
