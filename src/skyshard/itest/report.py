"""The conformance report: Markdown for people (``docs/qserv-conformance.md``), JSON for
programs."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from skyshard.itest.outcome import STATUSES, Outcome, Status, beyond_qserv, tally, tally_text
from skyshard.itest.runner import SuiteRun

__all__ = ["markdown", "summary_lines", "to_json", "write_report"]

_CLASS_NAMES = {
    "0xxx": "simple selects, lookups by key",
    "1xxx": "spatial restrictors, photometry, operators",
    "2xxx": "full scans",
    "3xxx": "selects, joins, ORDER BY / LIMIT",
    "8xxx": "syntax corner cases",
    "9xxx": "case-insensitive UDFs, director-key comparisons",
    "count": "row counts of every table",
}


def write_report(suite: SuiteRun, path: str | os.PathLike, command: str) -> None:
    """Markdown, or JSON when ``path`` ends in ``.json``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() == ".json":
        target.write_text(json.dumps(to_json(suite, command), indent=1) + "\n", encoding="utf-8")
    else:
        target.write_text(markdown(suite, command), encoding="utf-8")


def summary_lines(suite: SuiteRun) -> list[str]:
    lines = []
    for run in suite.runs:
        lines.append(f"{run.case.name}: {tally_text(tally(run.outcomes))}"
                     + (f"; expected results: {tally_text(tally(run.expected))}" if run.expected else ""))
    main = [o for r in suite.runs for o in r.outcomes]
    expected = [o for r in suite.runs for o in r.expected]
    lines.append(f"all: {tally_text(tally(main))}"
                 + (f"; expected results: {tally_text(tally(expected))}" if expected else "")
                 + f" ({suite.seconds:.0f} s)")
    if any(not o.runnable for o in main):
        lines.append("beyond Qserv: " + beyond_qserv(main).sentence())
    return lines


def to_json(suite: SuiteRun, command: str) -> dict:
    return {
        "command": command,
        "reference": suite.reference_version,
        "settings": {"max_rows_per_partition": suite.settings.max_rows_per_partition,
                     "execution_paths": list(suite.settings.modes)},
        "seconds": round(suite.seconds, 1),
        "beyond_qserv": _beyond_json([o for r in suite.runs for o in r.outcomes]),
        "cases": [
            {
                "case": run.case.name,
                "tables": [
                    {"name": t.name, "role": t.role.value, "stored_as": t.stored_as, "rows": t.rows,
                     "partitions": t.partitions, "error": t.error,
                     "reference_rows": t.reference.rows if t.reference else None,
                     "reference_warnings": t.reference.warnings if t.reference else []}
                    for t in run.tables
                ],
                "absent_tables": run.case.absent_tables,
                "counts": {s.value: n for s, n in tally(run.outcomes).items()},
                "expected_counts": {s.value: n for s, n in tally(run.expected).items()},
                "outcomes": [o.to_json() for o in run.outcomes],
                "expected": [o.to_json() for o in run.expected],
            }
            for run in suite.runs
        ],
    }


def _beyond_json(outcomes: list[Outcome]) -> dict:
    figure = beyond_qserv(outcomes)
    return {"criterion": figure.sentence(), "correct": figure.correct,
            "mariadb_runs": figure.runs, "percent": round(figure.percent, 1)}


# --- Markdown -------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(_cell(str(c)) for c in cells) + " |"


def _counts_table(groups: dict[str, list[Outcome]], first: str, describe: dict[str, str] | None = None) -> list[str]:
    statuses = [s for s in STATUSES if any(o.status is s for g in groups.values() for o in g)]
    head = [first, *(["what"] if describe else []), "queries", *(s.label for s in statuses)]
    lines = [_row(head), _row(["---"] * len(head))]
    total: Counter = Counter()
    for name, outcomes in groups.items():
        counts = tally(outcomes)
        total.update(counts)
        extra = [describe.get(name, "")] if describe else []
        lines.append(_row([name, *extra, len(outcomes), *(counts[s] or "" for s in statuses)]))
    extra = [""] if describe else []
    lines.append(_row(["**all**", *extra, sum(total.values()), *(total[s] or "" for s in statuses)]))
    return lines


def _listing(outcomes: Iterable[Outcome]) -> list[str]:
    return [f"- `{o.id}` **{o.status.value}**: {o.detail}" for o in outcomes]


def markdown(suite: SuiteRun, command: str) -> str:
    main = [o for r in suite.runs for o in r.outcomes]
    expected = [o for r in suite.runs for o in r.expected]
    out: list[str] = [
        "# Qserv conformance",
        "",
        "<!-- Generated; do not edit. -->",
        f"Generated by `{command}` (the cases are read from `$SKYSHARD_QSERV_TESTDATA`, by "
        "default `tests/data/qserv` in the source tree).",
        "",
        "Qserv's own integration-test cases (lsst/qserv `data/case01`..`case04`) run on skyshard "
        "and, as in Qserv's `itest`, on a real MariaDB loaded with the same files "
        f"({suite.reference_version}). Each query's Qserv form (`-- withQserv` lines) runs on "
        "skyshard, its reference form (`-- noQserv` lines) on MariaDB, and the answers are "
        "compared.",
        "",
        "## Summary",
        "",
    ]
    by_case: dict[str, list[Outcome]] = defaultdict(list)
    for o in main:
        by_case[o.case + ("" if o.runnable else " (unsupported_*)")].append(o)
    out += _counts_table(dict(sorted(by_case.items())), "case")
    out += ["", "Statuses: **pass** same answer as MariaDB; **fail** a different answer; **error** "
            "skyshard raised; **skip** not run (Qserv's skip list, or a table whose data is "
            "absent); **refused (MariaDB runs it)** an `unsupported_*` query refused with a typed "
            "SQL error although MariaDB runs its reference form; **refused (MariaDB fails too)** "
            "an `unsupported_*` query refused with a typed SQL error, and MariaDB cannot run it "
            "either; **noref** skyshard answered but MariaDB cannot run the query, so the answer "
            "is unchecked.", ""]
    out += _beyond_qserv(main)
    classes: dict[str, list[Outcome]] = defaultdict(list)
    for o in main:
        classes[o.query_class].append(o)
    out += ["## By query class", ""]
    out += _counts_table(dict(sorted(classes.items())), "class", _CLASS_NAMES)
    out += [""]

    bad = [o for o in main if o.status in (Status.FAIL, Status.ERROR)]
    out += ["## Failures and errors", "",
            "The first difference of each failing query (rows counted from 1, after sorting "
            "when the comparison is unordered), or skyshard's error. `[fragments path]` marks a "
            "difference found only when the query runs split into one fragment per partition "
            "plus a merge.", ""]
    out += _listing(bad) or ["None."]
    noref = [o for o in main if o.status is Status.NOREF]
    if noref:
        out += ["", "### Answered, but unchecked", ""] + _listing(noref)
    skipped = [o for o in main if o.status is Status.SKIP]
    out += ["", "## Not run", ""] + (_listing(skipped) or ["None."])
    ignored = [f for r in suite.runs for f in r.case.ignored_files]
    if ignored:
        out += ["", "Not query files (no `.sql` suffix; Qserv's `itest` ignores them too): "
                + ", ".join(f"`{f}`" for f in ignored) + "."]
    refused = [o for o in main if o.status in (Status.REFUSED, Status.REFUSED_RUNS)]
    if refused:
        out += ["", "## Refused queries", "",
                "Every `unsupported_*` query that skyshard refuses, with its error, and what "
                "MariaDB does with the reference form (the ones skyshard answers are compared "
                "with MariaDB like the others).", ""]
        out += [f"- `{o.id}` **{o.status.label}**: {o.detail} — *{_reference_words(o)}*"
                for o in refused]
    if expected:
        out += ["", "## Stored expected results", "",
                "lsst-dm/qserv-ingest keeps the results Qserv gave for case01 and case03 "
                "(`dbbench.ini` and `dbbench-expected/*.csv`); skyshard's answers to the same "
                "queries are checked against them, numbers within their printed precision.", ""]
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for o in expected:
            groups[o.case].append(o)
        out += _counts_table(dict(sorted(groups.items())), "case")
        bad_expected = [o for o in expected if o.status is not Status.PASS]
        out += [""] + (_listing(bad_expected) or ["All agree."])
    notes = [o for o in (*main, *expected) if o.note]
    if notes:
        out += ["", "## Notes on passing queries", ""]
        out += [f"- `{o.id}`: {o.note}" for o in notes]
    out += ["", "## Tables", ""]
    for run in suite.runs:
        out += [f"### {run.case.name} (database `{run.case.database}`)", "",
                _row(["table", "Qserv role", "stored by skyshard as", "rows", "partitions",
                      "rows in MariaDB", "load warnings"]), _row(["---"] * 7)]
        for t in run.tables:
            ref = t.reference
            out.append(_row([t.name, t.role.value, t.error or t.stored_as,
                             t.rows if t.rows is not None else "", t.partitions or "",
                             ref.rows if ref else "", "; ".join(ref.warnings) if ref else ""]))
        if run.case.absent_tables:
            out += ["", "Absent (data not available): "
                    + ", ".join(f"`{t}`" for t in run.case.absent_tables) + "."]
        out += [""]
    out += ["## How the comparison is made", ""] + _method(suite)
    return "\n".join(out).rstrip() + "\n"


_MYSQL_SYNTAX = ("You have an error in your SQL syntax; check the manual that corresponds to "
                 "your MariaDB server version for the right syntax to use")


def _reference_words(o: Outcome) -> str:
    """What MariaDB does with the reference form, in a few words."""
    if o.reference_runs:
        return o.reference_detail or "MariaDB runs it"
    text = o.reference_detail.removeprefix("MariaDB ").replace(_MYSQL_SYNTAX, "syntax error")
    return "MariaDB: " + (text[:200] + ("..." if len(text) > 200 else "") or "cannot run it")


def _beyond_qserv(main: list[Outcome]) -> list[str]:
    """The criterion for the queries Qserv refuses, as a computed figure."""
    unsupported = [o for o in main if not o.runnable]
    if not unsupported:
        return []
    figure = beyond_qserv(unsupported)
    ran = [o for o in unsupported if o.reference_runs]
    counts = tally(ran)
    out = ["## Beyond Qserv: the `unsupported_*` queries", "",
           "Qserv refuses the queries of its `unsupported_*` folders. skyshard must answer "
           "correctly those whose reference form MariaDB runs, and refuse every other one "
           "with an error naming the construct.", "",
           f"**{figure.sentence()}.**", ""]
    if ran:
        out += ["Of those MariaDB runs: " + tally_text(counts) + ".", ""]
        out += [_row(["query", "skyshard", "MariaDB"]), _row(["---"] * 3)]
        out += [_row([f"`{o.id}`", o.status.label + (f": {o.detail}" if o.detail else ""),
                      o.reference_detail]) for o in ran]
        out += [""]
    cannot = [o for o in unsupported if o.reference_runs is False]
    if cannot:
        out += [f"MariaDB cannot run the other {len(cannot)}: skyshard "
                + tally_text(tally(cannot)) + " (each refusal is listed with its error under "
                "*Refused queries*).", ""]
    skipped = [o for o in unsupported if o.reference_runs is None and o.status is Status.SKIP]
    if skipped:
        out += [f"Not run: {len(skipped)} (" + ", ".join(f"`{o.id}`" for o in skipped) + ").", ""]
    return out


def _method(suite: SuiteRun) -> list[str]:
    return [
        "- **Data**: the `.schema` DDL creates each table on MariaDB (MyISAM, latin1) and gives "
        "skyshard its column types; the data files are loaded as they are (`LOAD DATA LOCAL "
        "INFILE` on MariaDB). They hold no `chunkId`/`subChunkId` columns (Qserv's partitioner "
        "adds those; the ingest JSON schemas list them). case03 `RefDeepSrcMatch` holds one more "
        "column than its `.schema`, `flags` (named by its partitioner configuration, typed by "
        "its ingest JSON), added on both sides.",
        "- **Roles**: directors are ingested as skyshard directors (`unique_primary_key: 0` "
        "allows duplicate keys), children as children of their director; *match* tables "
        "(`RefDeepSrcMatch`, two directors) as **replicated** tables for now, since skyshard has "
        "no match tables; replicated tables as replicated. Directors are cut into partitions of "
        f"at most {suite.settings.max_rows_per_partition} rows so that queries cross partition "
        "boundaries as they cross Qserv's chunks.",
        "- **Two execution paths**: every query runs as one DuckDB statement over the chosen "
        "partitions, and split into one fragment per partition plus a merge statement; both "
        "must agree with MariaDB.",
        "- **sciSQL on MariaDB**: the reference queries call sciSQL UDFs; they are provided as "
        "stored functions following sciSQL's algorithms (`scisql_fluxToAbMag` and "
        "`scisql_angSep` inlined as expressions), see `src/skyshard/itest/scisql.py`.",
        "- **Values**: integers, strings, bytes exactly; DOUBLE within a relative 1e-9; FLOAT "
        "and DECIMAL as MariaDB prints them (FLOAT with 6 significant digits, DECIMAL with its "
        "scale), within half a unit of the last digit; BIT as the integer of its bytes.",
        "- **Order**: with `ORDER BY`, in order (ties on the ORDER BY keys in any order); "
        "without, as multisets (`-- pragma sortresult` asks for that too); `LIMIT` without "
        "`ORDER BY`: skyshard's rows must be as many as the limit allows and all found in "
        "MariaDB's answer without the limit.",
        "- Queries are skipped only when Qserv's `integration_tests.yaml` lists their number in "
        "`skip_numbers`, or when they read a table whose data file is absent.",
    ]
