"""Who answers a statement received over MySQL."""

from __future__ import annotations

import pytest

from skyshard.service.statements import Kind, classify


@pytest.mark.parametrize("sql, kind, query_id, option", [
    ("SUBMIT SELECT * FROM Object", Kind.SUBMIT, None, None),
    ("submit\nSELECT 1;", Kind.SUBMIT, None, None),
    ("SELECT * FROM qserv_result(42)", Kind.RESULT, 42, None),
    ("select * from QSERV_RESULT( 42 );", Kind.RESULT, 42, None),
    ("CALL qserv_result_delete(42)", Kind.DELETE_RESULT, 42, None),
    ("KILL 7", Kind.CANCEL, 7, None),
    ("KILL QUERY 7", Kind.CANCEL, 7, "QUERY"),
    ("KILL CONNECTION 7", Kind.CANCEL, 7, "CONNECTION"),
    ("CANCEL 7", Kind.CANCEL, 7, "CANCEL"),
    ("SHOW PROCESSLIST", Kind.PROCESSLIST, None, None),
    ("SHOW FULL PROCESSLIST", Kind.PROCESSLIST, None, "FULL"),
    ("SELECT * FROM information_schema.processlist WHERE id = 3", Kind.QUERIES, None, None),
    ("SELECT STATUS FROM INFORMATION_SCHEMA.QUERIES", Kind.QUERIES, None, None),
    ("SELECT table_name FROM information_schema.tables", Kind.CLIENT, None, None),
    ("SELECT @@version_comment LIMIT 1", Kind.CLIENT, None, None),
    ("SELECT DATABASE()", Kind.CLIENT, None, None),
    ("SELECT USER(), CONNECTION_ID()", Kind.CLIENT, None, None),
    ("SHOW DATABASES", Kind.CLIENT, None, None),
    ("SHOW VARIABLES LIKE 'sql_mode'", Kind.CLIENT, None, None),
    ("SHOW FULL TABLES", Kind.CLIENT, None, None),
    ("USE cat", Kind.CLIENT, None, None),
    ("SET NAMES utf8mb4", Kind.SET, None, None),
    ("SET threads = 1", Kind.SET, None, None),
    ("SHOW TABLES", Kind.CATALOG, None, None),
    ("SHOW COLUMNS FROM Object", Kind.CATALOG, None, None),
    ("DESCRIBE Object", Kind.CATALOG, None, None),
    ("SELECT 1", Kind.CATALOG, None, None),
    ("SELECT @@version_comment, getenv('HOME')", Kind.CATALOG, None, None),
    ("SELECT * FROM Object WHERE qserv_areaspec_circle(1, 2, 3)", Kind.CATALOG, None, None),
    ("COPY Object TO '/tmp/x'", Kind.CATALOG, None, None),
    ("EXPORT DATABASE '/tmp/x'", Kind.CATALOG, None, None),
    ("SELECT 1; SELECT 2", Kind.CATALOG, None, None),
    ("SELEC garbage (", Kind.CATALOG, None, None),
])
def test_classify(sql, kind, query_id, option):
    st = classify(sql)
    assert (st.kind, st.query_id, st.option) == (kind, query_id, option)


def test_submit_keeps_the_inner_query():
    assert classify("SUBMIT  SELECT a\nFROM b ;").sql == "SELECT a\nFROM b"
