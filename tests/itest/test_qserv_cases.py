"""Qserv's integration-test cases against a real MariaDB: the conformance suite.

The suite runs once (about a minute). Every query that does not pass must be listed in
``known_failures.txt`` with a reason, and every entry there must still fail: the list
can only shrink. Fix a failure, then remove its line. Of the ``unsupported_*`` queries
(those Qserv refuses) whose reference form MariaDB runs, at least 75% must return
correct results.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from skyshard.itest.case import load_cases
from skyshard.itest.outcome import Outcome, Status, beyond_qserv
from skyshard.itest.reference import ReferenceServer, mariadb_available
from skyshard.itest.runner import SuiteRun, default_cases_dir, run_suite

KNOWN_FAILURES = Path(__file__).with_name("known_failures.txt")
#: Of the unsupported_* queries whose reference form MariaDB runs, the share that must
#: return correct results (the rest may be refused, with an error naming the construct).
MIN_BEYOND_QSERV_PERCENT = 75
SKIP_REASONS = ("in skip_numbers of integration_tests.yaml", "needs absent table ")


@pytest.fixture(scope="module")
def suite() -> SuiteRun:
    cases_dir = default_cases_dir()  # $SKYSHARD_QSERV_TESTDATA, else ../shared/testdata/qserv
    if not (cases_dir / "case01").is_dir():
        pytest.skip(f"Qserv test data not found at {cases_dir} (set SKYSHARD_QSERV_TESTDATA)")
    if not mariadb_available():
        pytest.skip("mariadb-server is not installed; .ci/run installs it")
    if importlib.util.find_spec("pymysql") is None:
        pytest.skip("PyMySQL is not installed (pip install -e '.[test]')")
    cases = load_cases(cases_dir, ["case01", "case02", "case03", "case04"])
    expected = cases_dir / "expected"
    with ReferenceServer() as reference:
        return run_suite(cases, reference=reference, expected_dir=expected if expected.is_dir() else None,
                         echo=lambda line: None)


def known_failures() -> dict[str, str]:
    """``id: reason`` lines; blank lines and ``#`` comments are ignored."""
    entries: dict[str, str] = {}
    for number, line in enumerate(KNOWN_FAILURES.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        query, sep, reason = text.partition(": ")
        assert sep and reason.strip(), f"{KNOWN_FAILURES.name}:{number}: expected 'case/query: reason'"
        assert query not in entries, f"{KNOWN_FAILURES.name}:{number}: {query} is listed twice"
        entries[query] = reason
    return entries


def _show(outcomes: list[Outcome]) -> str:
    return "\n".join("  " + o.line()[:300] for o in outcomes)


def test_qserv_conformance(suite: SuiteRun) -> None:
    """One test, so that parallel workers do not each run the suite."""
    outcomes = suite.outcomes
    by_id = {o.id: o for o in outcomes}
    assert len(by_id) == len(outcomes), "two queries share an id"
    known = known_failures()
    problems: list[str] = []

    unlisted = [o for o in outcomes if o.bad and o.id not in known]
    if unlisted:
        problems.append("failing queries not in known_failures.txt (fix them, or list them with "
                        "a diagnosis):\n" + _show(unlisted))
    stale = [q for q in known if q in by_id and not by_id[q].bad]
    if stale:
        problems.append("known_failures.txt lists queries that no longer fail; remove them:\n"
                        + "\n".join(f"  {by_id[q].line()}" for q in stale))
    unknown = [q for q in known if q not in by_id]
    if unknown:
        problems.append("known_failures.txt lists queries that do not exist: " + ", ".join(unknown))
    odd_skips = [o for o in outcomes if o.status is Status.SKIP and not o.detail.startswith(SKIP_REASONS)]
    if odd_skips:
        problems.append("queries skipped for another reason than the skip list or an absent "
                        "table:\n" + _show(odd_skips))
    refused_runnable = [o for o in outcomes if o.runnable and o.status in (Status.REFUSED, Status.REFUSED_RUNS)]
    if refused_runnable:
        problems.append("runnable queries counted as refused:\n" + _show(refused_runnable))
    unclassified = [o for o in outcomes if not o.runnable and o.status is not Status.SKIP
                    and o.reference_runs is None]
    if unclassified:
        problems.append("unsupported queries not tried on MariaDB:\n" + _show(unclassified))
    figure = beyond_qserv(outcomes)
    if figure.runs < 25 or figure.percent < MIN_BEYOND_QSERV_PERCENT:
        problems.append(f"beyond Qserv: {figure.sentence()}; at least "
                        f"{MIN_BEYOND_QSERV_PERCENT}% of at least 25 are required")
    problems += _data_problems(suite)
    assert not problems, "\n\n".join(problems)


def _data_problems(suite: SuiteRun) -> list[str]:
    """Every case ran, every present table loaded on both sides with the same rows."""
    problems = []
    passed = {run.case.name: sum(o.status is Status.PASS for o in run.outcomes) for run in suite.runs}
    if sorted(passed) != ["case01", "case02", "case03", "case04"] or not all(passed.values()):
        problems.append(f"passing queries per case: {passed}")
    absent = {run.case.name: run.case.absent_tables for run in suite.runs}
    if absent != {"case01": [], "case02": [], "case03": ["RunDeepForcedSource"],
                  "case04": ["DeepForcedSource", "Science_Ccd_Exposure"]}:
        problems.append(f"absent tables: {absent}")
    for run in suite.runs:
        for table in run.tables:
            ref = table.reference.rows if table.reference else None
            if table.error or table.rows != ref:
                problems.append(f"{run.case.name}.{table.name}: {table.error or ''} skyshard "
                                f"{table.rows} rows, MariaDB {ref}")
    return problems
