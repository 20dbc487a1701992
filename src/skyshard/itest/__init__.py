"""Qserv conformance: run Qserv's own integration-test cases on skyshard and on a real
MariaDB, and compare the answers.

    case       a Qserv case folder: tables and their roles, queries in their two forms
    scisql     the sciSQL functions the reference queries call, as MariaDB stored functions
    reference  a private MariaDB server (or an existing one) loaded with a case's tables
    compare    skyshard's Arrow answer against the reference rows (tolerances, order)
    bulk_compare  the same, column-wise, for answers of many rows
    expected   the stored expected results of lsst-dm/qserv-ingest (``dbbench``)
    outcome    the verdict on one query
    runner     ingest, run, compare; one line per query
    report     the Markdown (and JSON) report

``skyshard itest CASE_DIR`` and ``skyshard itest --all`` are the command-line front ends.
"""
