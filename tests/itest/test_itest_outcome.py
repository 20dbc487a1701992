"""Verdicts on unsupported_* queries: is the reference form tried, how they are counted,
and how the report states the criterion. No MariaDB needed: the reference is a stub."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from skyshard.errors import ExternalError, UnsupportedQueryError
from skyshard.itest.case import Case, Query
from skyshard.itest.outcome import Outcome, Status, beyond_qserv
from skyshard.itest.reference import ReferenceResult
from skyshard.itest.report import markdown, to_json
from skyshard.itest.runner import CaseRun, Settings, SuiteRun, run_query


class StubReference:
    """Answers one fixed way; counts the sessions started."""

    def __init__(self, answer: ReferenceResult | ExternalError) -> None:
        self.answer = answer
        self.sessions = 0
        self.ran: list[str] = []

    def new_session(self) -> None:
        self.sessions += 1

    def run(self, sql: str) -> ReferenceResult:
        self.ran.append(sql)
        if isinstance(self.answer, ExternalError):
            raise self.answer
        return self.answer

    def column_names(self, sql: str) -> list[str]:
        return self.answer.columns


class StubDatabase:
    def __init__(self, answer: pa.Table | Exception) -> None:
        self.answer = answer

    def sql(self, sql: str) -> pa.Table:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _case(*queries: Query) -> Case:
    return Case(name="caseX", root=Path("caseX"), database="qcaseX", tables={}, queries=list(queries))


def _query(name: str, group: str = "unsupported_syntax", sql: str = "SELECT a FROM t") -> Query:
    return Query("caseX", name, group, Path(f"{name}.sql"), sql, sql, {})


REFUSAL = UnsupportedQueryError("CALL x() is not supported", construct="CALL",
                                suggestion="write the SELECT alone")
ONE_ROW = ReferenceResult(["a"], [3], [(1,)])


def _verdict(answer: pa.Table | Exception, reference: ReferenceResult | ExternalError,
             query: Query | None = None) -> tuple[Outcome, StubReference]:
    query = query or _query("0001_q")
    ref = StubReference(reference)
    dbs = {"single": StubDatabase(answer), "fragments": StubDatabase(answer)}
    return run_query(_case(query), query, dbs, ref), ref


def test_a_refusal_is_checked_against_what_mariadb_does() -> None:
    runs, ref = _verdict(REFUSAL, ONE_ROW)
    assert (runs.status, runs.reference_runs) == (Status.REFUSED_RUNS, True)
    assert runs.reference_detail == "MariaDB returns 1 row" and runs.bad
    assert "CALL x() is not supported; write the SELECT alone" in runs.detail
    assert ref.ran == ["SELECT a FROM t"] and ref.sessions >= 1

    fails, _ = _verdict(REFUSAL, ExternalError("MariaDB error 1146: Table 't' doesn't\nexist"))
    assert (fails.status, fails.reference_runs) == (Status.REFUSED, False)
    assert fails.reference_detail == "MariaDB error 1146: Table 't' doesn't exist" and not fails.bad


def test_answers_are_compared_and_classified() -> None:
    same, _ = _verdict(pa.table({"a": [1]}), ONE_ROW)
    assert (same.status, same.reference_runs, same.reference_detail) == (
        Status.PASS, True, "MariaDB returns 1 row")
    other, _ = _verdict(pa.table({"a": [2]}), ONE_ROW)
    assert (other.status, other.reference_runs) == (Status.FAIL, True)
    noref, _ = _verdict(pa.table({"a": [2]}), ExternalError("MariaDB error 1305: no function"))
    assert (noref.status, noref.reference_runs) == (Status.NOREF, False) and not noref.bad


def test_no_result_set_on_both_sides_is_the_same_answer() -> None:
    """``SELECT ... INTO @v`` alone: MariaDB sends no rows, skyshard a table of no columns."""
    out, _ = _verdict(pa.table({}), ReferenceResult([], [], [], []))
    assert (out.status, out.reference_detail) == (Status.PASS, "MariaDB runs it (no result set)")


def test_runnable_queries_are_not_classified() -> None:
    out, ref = _verdict(REFUSAL, ONE_ROW, _query("0001_q", group=""))
    assert (out.status, out.reference_runs) == (Status.ERROR, None) and ref.ran == []


def _outcome(name: str, status: Status, runs: bool | None, detail: str = "",
             reference: str = "") -> Outcome:
    return Outcome(f"caseX/unsupported_syntax/{name}", "caseX", "unsupported_syntax", status,
                   detail=detail, reference_runs=runs, reference_detail=reference)


OUTCOMES = [
    _outcome("1_a", Status.PASS, True, reference="MariaDB returns 3 rows"),
    _outcome("2_b", Status.PASS, True, reference="MariaDB returns 0 rows"),
    _outcome("3_c", Status.FAIL, True, "skyshard returned 1 rows, the reference 2"),
    _outcome("4_d", Status.REFUSED_RUNS, True, "UnsupportedQueryError: CALL x() is not supported",
             "MariaDB returns 5 rows"),
    _outcome("5_e", Status.REFUSED, False, "SqlSyntaxError: malformed number '35 .1'",
             "MariaDB error 1064: You have an error in your SQL syntax; check the manual that "
             "corresponds to your MariaDB server version for the right syntax to use near '.1'"),
    _outcome("6_f", Status.NOREF, False, "the reference cannot run it", "MariaDB error 1305"),
    Outcome("caseX/0001_runnable", "caseX", "0xxx", Status.PASS),
]


def test_the_figure_counts_what_mariadb_runs() -> None:
    figure = beyond_qserv(OUTCOMES)
    assert (figure.correct, figure.runs) == (2, 4)
    assert figure.sentence() == "2 of 4 unsupported queries that MariaDB runs return correct results (50.0%)"
    assert beyond_qserv([]).percent == 0.0


def test_the_report_states_the_figure_and_every_refusal() -> None:
    suite = SuiteRun([CaseRun(_case(), outcomes=OUTCOMES)], Settings(), reference_version="MariaDB x")
    text = markdown(suite, "skyshard itest --all")
    assert "**2 of 4 unsupported queries that MariaDB runs return correct results (50.0%).**" in text
    assert ("- `caseX/unsupported_syntax/4_d` **refused (MariaDB runs it)**: UnsupportedQueryError: "
            "CALL x() is not supported — *MariaDB returns 5 rows*") in text
    assert ("- `caseX/unsupported_syntax/5_e` **refused (MariaDB fails too)**: SqlSyntaxError: "
            "malformed number '35 .1' — *MariaDB: error 1064: syntax error near '.1'*") in text
    assert "| `caseX/unsupported_syntax/3_c` | fail: skyshard returned 1 rows, the reference 2 |" in text
    doc = to_json(suite, "skyshard itest --all")
    assert doc["beyond_qserv"] == {
        "criterion": "2 of 4 unsupported queries that MariaDB runs return correct results (50.0%)",
        "correct": 2, "mariadb_runs": 4, "percent": 50.0}
