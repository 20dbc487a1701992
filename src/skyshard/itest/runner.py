"""Run Qserv cases on skyshard and on the reference MariaDB; one verdict per query.

For each case: ingest its tables into a skyshard catalog (directors first) and load them
into the reference database; then for every query run the Qserv form on skyshard and
the reference form on MariaDB and compare (:mod:`skyshard.itest.compare`). Every query
runs twice on skyshard: as one DuckDB statement over the chosen partitions
(``skyshard.open(root)``), and split into one fragment per partition plus a merge
statement (``fragment_partitions=1``, the path a cluster takes); both must agree with
the reference. Directors are cut into small partitions (``max_rows_per_partition``,
default 40) so that queries cross partition boundaries as they cross Qserv's chunks.

The ``unsupported_*`` queries (those Qserv refuses) run the same way; when skyshard
refuses one (or fails), the reference form still runs on MariaDB, to tell a refusal of
a query MariaDB runs (``REFUSED_RUNS``, a shortfall) from one MariaDB cannot run either
(``REFUSED``). Every query starts a new MariaDB session, so that user variables do not
leak from one query to the next.

Roles map as follows: director -> director (``unique_primary_key: 0`` allows duplicate
keys); child -> child of its director by ``director_key``; *match* tables (two
directors) -> replicated, as skyshard has no match tables yet; replicated ->
replicated.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from skyshard.errors import ExternalError, IngestError, SkyshardError, SqlError
from skyshard.itest import compare as cmp
from skyshard.itest.case import Case, Query, Role, query_tables
from skyshard.itest.expected import ExpectedQuery, read_dbbench, read_rows, typed_rows
from skyshard.itest.outcome import Outcome, Status
from skyshard.itest.reference import (
    LoadedTable,
    ReferenceDatabase,
    ReferenceResult,
    ReferenceServer,
)
from skyshard.itest.scisql import rewrite_for_mariadb

__all__ = ["CaseRun", "IngestedTable", "Settings", "SuiteRun", "default_cases_dir", "run_suite"]

DEFAULT_MAX_ROWS_PER_PARTITION = 40
MODES = ("single", "fragments")  # skyshard.open(root), skyshard.open(root, fragment_partitions=1)
#: Typed errors that are a right answer to an unsupported_* query: UnsupportedQueryError,
#: ForbiddenQueryError, and also UnknownNameError and SqlSyntaxError (the folders hold
#: queries on missing tables and columns, and malformed literals).
REFUSALS = (SqlError,)
Echo = Callable[[str], None]


def default_cases_dir() -> Path:
    """``$SKYSHARD_QSERV_TESTDATA``, else the copy in the source tree
    (``tests/data/qserv``, when skyshard runs from a checkout)."""
    env = os.environ.get("SKYSHARD_QSERV_TESTDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "tests" / "data" / "qserv"


@dataclass(frozen=True)
class Settings:
    max_rows_per_partition: int = DEFAULT_MAX_ROWS_PER_PARTITION
    modes: tuple[str, ...] = MODES


@dataclass
class IngestedTable:
    name: str
    role: Role
    stored_as: str  # skyshard's role, with a note for match tables
    rows: int | None = None
    partitions: int | None = None
    error: str = ""
    reference: LoadedTable | None = None


@dataclass
class CaseRun:
    case: Case
    tables: list[IngestedTable] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    expected: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SuiteRun:
    runs: list[CaseRun]
    settings: Settings
    reference_version: str = ""
    reference_start_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def outcomes(self) -> list[Outcome]:
        return [o for r in self.runs for o in (*r.outcomes, *r.expected)]


def run_suite(cases: Sequence[Case], *, reference: ReferenceServer,
              catalog_dir: str | os.PathLike | None = None,
              expected_dir: str | os.PathLike | None = None,
              settings: Settings = Settings(), echo: Echo = print) -> SuiteRun:
    """Run ``cases`` against a started ``reference`` server. ``catalog_dir`` keeps the
    catalogs (one sub-folder per case when there are several); ``expected_dir`` holds
    ``caseNN/dbbench.ini`` folders of stored expected results."""
    t0 = time.monotonic()
    suite = SuiteRun([], settings, reference.version, reference.started_seconds)
    with tempfile.TemporaryDirectory(prefix="skyshard-itest-") as tmp:
        for case in cases:
            if catalog_dir is None:
                root = Path(tmp) / case.name
            else:
                root = Path(catalog_dir) / case.name if len(cases) > 1 else Path(catalog_dir)
            expected = Path(expected_dir) / case.name if expected_dir else None
            suite.runs.append(run_case(case, reference=reference, catalog_root=root,
                                       expected_dir=expected, settings=settings, echo=echo))
    suite.seconds = time.monotonic() - t0
    return suite


def run_case(case: Case, *, reference: ReferenceServer, catalog_root: Path,
             expected_dir: Path | None, settings: Settings, echo: Echo) -> CaseRun:
    import skyshard

    t0 = time.monotonic()
    run = CaseRun(case)
    run.tables = ingest_case(case, catalog_root, settings)
    with tempfile.TemporaryDirectory(prefix="skyshard-itest-load-") as work:
        refdb = reference.load(case, work)
    by_name = {t.name: t for t in refdb.tables}
    for table in run.tables:
        table.reference = by_name.get(table.name)
    try:
        options = {"single": {}, "fragments": {"fragment_partitions": 1}}
        databases = {m: skyshard.open(catalog_root, **options[m]) for m in settings.modes}
        for query in case.queries:
            outcome = run_query(case, query, databases, refdb)
            run.outcomes.append(outcome)
            echo(outcome.line())
        if expected_dir is not None:
            for eq in read_dbbench(expected_dir, case.name):
                outcome = run_expected(case, eq, next(iter(databases.values())))
                run.expected.append(outcome)
                echo(outcome.line())
    finally:
        refdb.close()
        reference.drop(case)
    run.seconds = time.monotonic() - t0
    return run


# --- ingest ---------------------------------------------------------------------------


def ingest_case(case: Case, root: Path, settings: Settings) -> list[IngestedTable]:
    """Ingest every present table (directors first); reuse ``root`` if it already holds
    them all."""
    import skyshard
    from skyshard.catalog import model
    from skyshard.storage import layout

    present = [t for t in case.tables.values() if t.present]
    if (root / layout.CATALOG_META).exists():
        meta = model.load(root)
        if all(t.name in meta.tables for t in present):
            return [_described(t.name, t.role, meta.tables[t.name]) for t in present]
        raise IngestError(f"catalog {root} exists but lacks some of the tables of {case.name}")
    out: list[IngestedTable] = []
    for spec in present:
        opts = skyshard.IngestOptions(progress=False, allow_duplicate_keys=not spec.unique_keys,
                                      max_rows_per_partition=settings.max_rows_per_partition)
        files = [spec.data_path]
        try:
            if spec.role is Role.DIRECTOR:
                info = skyshard.ingest(root, spec.name, files, ra=spec.ra, dec=spec.dec,
                                       key=spec.key, schema=spec.schema, options=opts)
            elif spec.role is Role.CHILD:
                info = skyshard.ingest(root, spec.name, files, director=spec.director,
                                       director_key=spec.key, ra=spec.ra, dec=spec.dec,
                                       schema=spec.schema, options=opts)
            else:
                info = skyshard.ingest(root, spec.name, files, replicated=True,
                                       schema=spec.schema, options=opts)
        except SkyshardError as exc:
            out.append(IngestedTable(spec.name, spec.role, _stored_as(spec.role),
                                     error=f"{type(exc).__name__}: {exc}"))
            continue
        out.append(_described(spec.name, spec.role, info))
    return out


def _stored_as(role: Role) -> str:
    if role is Role.MATCH:
        return "replicated (match tables are not supported yet)"
    return {Role.DIRECTOR: "director", Role.CHILD: "child"}.get(role, "replicated")


def _described(name: str, role: Role, info) -> IngestedTable:
    return IngestedTable(name, role, _stored_as(role), rows=info.rows,
                         partitions=len(info.partitions) if info.is_partitioned else None)


# --- one query ------------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    kind = type(exc).__name__ if isinstance(exc, SkyshardError) else (
        f"{type(exc).__module__}.{type(exc).__name__}")
    message = str(exc).strip().replace("\n", " ")
    return f"{kind}: {message[:400]}"


def _timed(db, sql: str) -> tuple[pa.Table | BaseException, float]:
    t0 = time.monotonic()
    try:
        result: pa.Table | BaseException = db.sql(sql)
    except Exception as exc:  # noqa: BLE001 - every failure is a verdict
        result = exc
    return result, time.monotonic() - t0


def run_query(case: Case, query: Query, databases: dict, refdb: ReferenceDatabase) -> Outcome:
    """The verdict on one query."""
    outcome = Outcome(query.id, case.name, query.query_class, Status.SKIP)
    reason = case.skip_reason(query)
    if reason is not None:
        outcome.detail = reason
        return outcome
    refdb.new_session()
    answers: dict[str, pa.Table] = {}
    for mode, db in databases.items():
        result, seconds = _timed(db, query.qserv_sql)
        if mode == next(iter(databases)):
            outcome.seconds = round(seconds, 4)
        if isinstance(result, BaseException):
            if not query.runnable and isinstance(result, REFUSALS):
                outcome.status, outcome.detail = Status.REFUSED, _error_text(result)
            else:
                outcome.status, outcome.detail = Status.ERROR, _mode(mode, databases) + _error_text(result)
            if not query.runnable:
                _try_reference(outcome, query, refdb)
            return outcome
        answers[mode] = result
    first = next(iter(answers.values()))
    outcome.rows = first.num_rows
    ordering = cmp.ordering_of(query.qserv_sql, first.column_names)
    subset = ordering.limit is not None and not ordering.ordered
    ref_sql = query.reference_sql
    if subset:
        unlimited = cmp.without_limit(ref_sql)
        subset = unlimited is not None
        ref_sql = unlimited or ref_sql
    t0 = time.monotonic()
    try:
        ref = refdb.run(ref_sql)
    except ExternalError as exc:
        outcome.status, outcome.detail = Status.NOREF, f"the reference cannot run it: {exc}"
        if not query.runnable:
            outcome.reference_runs, outcome.reference_detail = False, " ".join(str(exc).split())
        return outcome
    finally:
        outcome.reference_seconds = round(time.monotonic() - t0, 4)
    if not query.runnable:
        outcome.reference_runs = True
        outcome.reference_detail = _rows_in_words(ref) + (" (without its LIMIT)" if subset else "")
    ref_keys = None
    if ordering.ordered and ordering.keys is None and not query.sort_result and not subset:
        ref, ref_keys = _with_keys(refdb, ref_sql, ref)
    for mode, answer in answers.items():
        diff = cmp.compare(answer, ref, ordering, sort=query.sort_result, subset=subset,
                           ref_keys=ref_keys)
        if diff is not None:
            outcome.status, outcome.detail = Status.FAIL, _mode(mode, databases) + diff
            return outcome
    outcome.status = Status.PASS
    outcome.note = _notes(answers, _reference_names(refdb, ref_sql, ref))
    return outcome


def _try_reference(outcome: Outcome, query: Query, refdb: ReferenceDatabase) -> None:
    """For an unsupported_* query skyshard did not answer: whether MariaDB runs its
    reference form. A refusal of a query MariaDB runs is a shortfall (REFUSED_RUNS)."""
    refdb.new_session()
    t0 = time.monotonic()
    try:
        ref = refdb.run(query.reference_sql)
    except ExternalError as exc:
        outcome.reference_runs, outcome.reference_detail = False, " ".join(str(exc).split())
        return
    finally:
        outcome.reference_seconds = round(time.monotonic() - t0, 4)
    outcome.reference_runs = True
    if outcome.status is Status.REFUSED:
        outcome.status = Status.REFUSED_RUNS
    outcome.reference_detail = _rows_in_words(ref)


def _rows_in_words(ref: ReferenceResult) -> str:
    if not ref.columns:
        return "MariaDB runs it (no result set)"
    return f"MariaDB returns {len(ref.rows)} row{'' if len(ref.rows) == 1 else 's'}"


def _reference_names(refdb: ReferenceDatabase, sql: str, ref: ReferenceResult) -> list[str]:
    """MariaDB's column names for the query as written: inlined sciSQL calls rename
    unaliased columns, so ask again without inlining."""
    if rewrite_for_mariadb(sql, inline=True) == rewrite_for_mariadb(sql, inline=False):
        return ref.columns
    try:
        return refdb.column_names(sql)
    except ExternalError:
        return ref.columns


def _notes(answers: dict[str, pa.Table], names: list[str]) -> str:
    """What differs while the values agree: column names, or column types between
    skyshard's execution paths."""
    notes = []
    first = next(iter(answers.values()))
    if list(first.column_names) != list(names):
        differ = [f"{a!r} / {b!r}" for a, b in zip(first.column_names, names) if a != b]
        notes.append("column names differ (skyshard / MariaDB): " + ", ".join(differ))
    types = {mode: [str(f.type) for f in a.schema] for mode, a in answers.items()}
    if len({tuple(t) for t in types.values()}) > 1:
        differ = [f"{first.column_names[i]}: " + " / ".join(f"{t[i]} ({m})" for m, t in types.items())
                  for i in range(first.num_columns) if len({t[i] for t in types.values()}) > 1]
        notes.append("column types differ between execution paths: " + "; ".join(differ))
    return "; ".join(notes)


def _with_keys(refdb: ReferenceDatabase, sql: str,
               plain: ReferenceResult) -> tuple[ReferenceResult, list[tuple] | None]:
    """The reference answer with the ORDER BY key of each row, when the keys are not
    output columns; the plain answer if the query cannot be extended."""
    keyed = cmp.with_order_keys(sql)
    if keyed is None:
        return plain, None
    text, n = keyed
    try:
        ref = refdb.run(text)
    except ExternalError:
        return plain, None
    width = len(ref.columns) - n
    trimmed = ReferenceResult(ref.columns[:width], ref.types[:width], [r[:width] for r in ref.rows],
                              ref.scales[:width] if ref.scales else None)
    return trimmed, [r[width:] for r in ref.rows]


def _mode(mode: str, databases: dict) -> str:
    """A prefix naming the execution path, when it is not the first one."""
    return "" if mode == next(iter(databases)) else f"[{mode} path] "


def run_expected(case: Case, eq: ExpectedQuery, db) -> Outcome:
    """skyshard's answer to a dbbench query against its stored expected result."""
    outcome = Outcome(eq.id, case.name, eq.query_class, Status.SKIP)
    pseudo = Query(case.name, eq.name, "", eq.result_path, eq.sql, eq.sql, {})
    absent = query_tables(pseudo, case.absent_tables)
    if absent:
        outcome.detail = "needs absent table " + ", ".join(absent)
        return outcome
    result, seconds = _timed(db, eq.sql)
    outcome.seconds = round(seconds, 4)
    if isinstance(result, BaseException):
        outcome.status, outcome.detail = Status.ERROR, _error_text(result)
        return outcome
    outcome.rows = result.num_rows
    try:
        raw = read_rows(eq.result_path)
    except SkyshardError as exc:
        outcome.status, outcome.detail = Status.FAIL, f"expected result unreadable: {exc}"
        return outcome
    widths = {len(r) for r in raw}
    if widths and widths != {result.num_columns}:
        outcome.status = Status.FAIL
        outcome.detail = (f"skyshard returned {result.num_columns} columns, the expected result "
                          f"has {sorted(widths)}")
        return outcome
    ordering = cmp.ordering_of(eq.sql, result.column_names)
    rows = typed_rows(raw, result.schema)
    types = [cmp.FIELD_FLOAT if pa.types.is_float32(f.type) else None for f in result.schema]
    expected = ReferenceResult(result.column_names, types, rows)
    diff = cmp.compare(result, expected, ordering)
    if diff is not None and ordering.limit is not None and not ordering.ordered \
            and result.num_rows == len(rows):
        outcome.status = Status.PASS
        outcome.note = "LIMIT without ORDER BY: the choice of rows is not checked here"
        return outcome
    outcome.status, outcome.detail = (Status.PASS, "") if diff is None else (Status.FAIL, diff)
    return outcome

