"""A Qserv integration-test case folder, read into tables (with their roles) and queries
(in their Qserv and reference forms).

Layout of a case (``lsst/qserv``, ``data/caseNN``)::

    data/schema/<T>.schema      MySQL CREATE TABLE
    data/ingest/<T>.json        role: is_partitioned, director_table(2), keys, positions
    data/partition/<T>.json     partitioner input: ``in.csv.field`` lists the data columns
    data/<T>.tsv.gz | .csv.gz   mysqldump text of the table
    queries/NNNN[.k]_name.sql   one query each; queries/unsupported_*/ what Qserv refuses

The data files hold the columns of the ``.schema`` file, not the ``chunkId`` and
``subChunkId`` that the ingest JSON schemas add (Qserv's partitioner appends them). The
match table ``RefDeepSrcMatch`` of case03 holds one more column, ``flags``, named by its
partitioner configuration and typed by its ingest JSON: the data columns are the
partitioner's ``in.csv.field`` list when there is one, else the ``.schema`` columns.

Query markup (as Qserv's ``itest.py`` reads it): a line ``-- withQserv <text>`` stands for
``<text>`` on Qserv only; a line ending in ``-- noQserv`` is for the reference database
only; ``-- pragma sortresult`` asks for sorted comparison; ``{DBTAG_A}`` is the database
name followed by a dot.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from skyshard.catalog.mysql_schema import parse_create_table, parse_ingest_json_schema
from skyshard.errors import InputError, SchemaError

__all__ = ["Case", "Query", "Role", "TableSpec", "load_case", "load_cases", "suite_file"]

#: Columns Qserv's partitioner adds; never in the data files.
PARTITIONER_COLUMNS = ("chunkId", "subChunkId")
SUITE_FILE = "integration_tests.yaml"
_DATA_SUFFIXES = (".tsv.gz", ".csv.gz", ".tsv", ".csv")


class Role(enum.Enum):
    """A table's role in Qserv's vocabulary."""

    DIRECTOR = "director"
    CHILD = "child"
    MATCH = "match"
    REPLICATED = "replicated"


@dataclass(frozen=True)
class TableSpec:
    """One table of a case: role, keys, schema and data file (None when absent)."""

    name: str
    role: Role
    schema_text: str
    schema: pa.Schema  # the columns of the data file, in file order
    extra_columns: tuple[str, ...]  # data columns that the .schema file lacks
    data_path: Path | None
    delimiter: str = "\t"
    enclosed_by: str | None = None
    key: str | None = None  # director_key
    ra: str | None = None  # longitude_key
    dec: str | None = None  # latitude_key
    director: str | None = None
    director2: str | None = None
    key2: str | None = None
    unique_keys: bool = True

    @property
    def present(self) -> bool:
        return self.data_path is not None


@dataclass(frozen=True)
class Query:
    """One query file in its two forms. ``{DBTAG_A}`` is replaced by the case's database
    name in the Qserv form, and left for the reference database to fill in."""

    case: str
    name: str  # file name without .sql
    group: str  # "" for runnable queries, else the unsupported_* folder
    path: Path
    qserv_sql: str
    reference_sql: str
    pragmas: dict[str, str | None]

    @property
    def id(self) -> str:
        return "/".join(p for p in (self.case, self.group, self.name) if p)

    @property
    def number(self) -> str:
        """``0001.1`` of ``0001.1_fetchObjectById``."""
        return self.name.split("_", 1)[0]

    @property
    def query_class(self) -> str:
        """``0xxx``..``9xxx`` from the first digit, or the unsupported_* folder."""
        if self.group:
            return self.group
        return f"{self.name[0]}xxx" if self.name[:1].isdigit() else "other"

    @property
    def sort_result(self) -> bool:
        return "sortresult" in self.pragmas

    @property
    def runnable(self) -> bool:
        return not self.group


@dataclass
class Case:
    """A case: its database name, tables in ingest order (directors first), queries."""

    name: str
    root: Path
    database: str
    tables: dict[str, TableSpec]
    queries: list[Query]
    skip_numbers: frozenset[str] = frozenset()
    ignored_files: list[str] = field(default_factory=list)

    @property
    def absent_tables(self) -> list[str]:
        return [t.name for t in self.tables.values() if not t.present]

    def skip_reason(self, query: Query) -> str | None:
        """Why a query is not run: listed in ``skip_numbers``, or it needs a table whose
        data is absent. None if it runs."""
        if query.number in self.skip_numbers:
            return f"in skip_numbers of {SUITE_FILE}"
        needed = [t for t in self.absent_tables if _mentions(query, t)]
        if needed:
            return "needs absent table " + ", ".join(needed)
        return None


# --- the suite file -------------------------------------------------------------------


@dataclass(frozen=True)
class _SuiteEntry:
    data_pattern: str | None
    tables: tuple[str, ...]
    skip_numbers: frozenset[str]


def suite_file(cases_dir: Path) -> Path | None:
    path = cases_dir / SUITE_FILE
    return path if path.is_file() else None


def _suite_entries(path: Path) -> dict[str, _SuiteEntry]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {exc}", path=str(path),
                         line=mark.line + 1 if mark is not None else None) from None
    entries: dict[str, _SuiteEntry] = {}
    for item in (doc or {}).get("test_cases") or []:
        if not isinstance(item, dict) or "id" not in item:
            raise InputError("a test_cases entry without an id", path=str(path))
        entries[str(item["id"])] = _SuiteEntry(
            data_pattern=item.get("data"),
            tables=tuple(str(t) for t in item.get("tables") or ()),
            skip_numbers=frozenset(str(n) for n in item.get("skip_numbers") or ()),
        )
    return entries


# --- reading a case -------------------------------------------------------------------


def load_cases(cases_dir: str | Path, names: Sequence[str] | None = None) -> list[Case]:
    """The cases ``names`` (default: every ``case*`` folder listed in the suite file, or
    found) under ``cases_dir``."""
    root = Path(cases_dir)
    if not root.is_dir():
        raise InputError("no such folder of Qserv cases", path=str(root))
    suite = suite_file(root)
    entries = _suite_entries(suite) if suite else {}
    if names is None:
        names = sorted(n for n in entries if (root / n).is_dir()) or sorted(
            p.name for p in root.glob("case*") if p.is_dir()
        )
    return [load_case(root / n, entries.get(n)) for n in names]


def load_case(case_dir: str | Path, entry: _SuiteEntry | None = None) -> Case:
    """Read one case folder. Without a suite entry, the one of ``../integration_tests.yaml``
    is used when present; else every ingest JSON is a table and nothing is skipped."""
    root = Path(case_dir)
    if not (root / "data").is_dir() or not (root / "queries").is_dir():
        raise InputError("not a Qserv case folder (needs data/ and queries/)", path=str(root))
    if entry is None:
        suite = suite_file(root.parent)
        entry = _suite_entries(suite).get(root.name) if suite else None
    database = _database_name(root)
    ingest_dir = root / "data" / "ingest"
    names = list(entry.tables) if entry and entry.tables else _ingest_table_names(ingest_dir)
    specs = [_table_spec(root, name, entry.data_pattern if entry else None) for name in names]
    order = {Role.DIRECTOR: 0, Role.CHILD: 1, Role.MATCH: 2, Role.REPLICATED: 3}
    specs.sort(key=lambda t: order[t.role])  # stable: suite order within a role
    queries, ignored = _queries(root, database)
    return Case(
        name=root.name, root=root, database=database, tables={t.name: t for t in specs},
        queries=queries, skip_numbers=entry.skip_numbers if entry else frozenset(),
        ignored_files=ignored,
    )


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
    if not isinstance(doc, dict):
        raise InputError("expected a JSON object", path=str(path), line=1)
    return doc


def _database_name(root: Path) -> str:
    path = root / "data" / "ingest" / "database.json"
    if path.exists():
        name = _read_json(path).get("database")
        if isinstance(name, str) and name:
            return name
    return "q" + root.name


def _ingest_table_names(ingest_dir: Path) -> list[str]:
    names = []
    for path in sorted(ingest_dir.glob("*.json")):
        doc = _read_json(path)
        if isinstance(doc.get("table"), str):
            names.append(doc["table"])
    if not names:
        raise InputError("no table descriptions (data/ingest/<table>.json)", path=str(ingest_dir))
    return names


def _data_file(root: Path, table: str, pattern: str | None) -> Path | None:
    if pattern:
        path = root / pattern.format(table_name=table)
        return path if path.exists() else None
    for suffix in _DATA_SUFFIXES:
        path = root / "data" / f"{table}{suffix}"
        if path.exists():
            return path
    return None


def _role(doc: dict) -> Role:
    if not doc.get("is_partitioned"):
        return Role.REPLICATED
    if doc.get("director_table2"):
        return Role.MATCH
    if doc.get("director_table"):
        return Role.CHILD
    return Role.DIRECTOR


def _table_spec(root: Path, name: str, pattern: str | None) -> TableSpec:
    ingest_path = root / "data" / "ingest" / f"{name}.json"
    doc = _read_json(ingest_path)
    schema_path = root / "data" / "schema" / f"{name}.schema"
    if not schema_path.exists():
        raise InputError(f"table {name} has no schema file", path=str(schema_path))
    schema_text = schema_path.read_text(encoding="latin-1")
    parsed = parse_create_table(schema_text, path=str(schema_path))
    schema, extra = _data_schema(root, name, parsed.schema, doc, ingest_path)
    data = _data_file(root, name, pattern)
    delimiter = doc.get("fields_terminated_by") or (
        "," if data is not None and ".csv" in data.name else "\t"
    )
    role = _role(doc)
    for key in ("director_key", "longitude_key", "latitude_key", "director_key2"):
        column = doc.get(key)
        if column and role is not Role.REPLICATED and column not in schema.names:
            raise InputError(f"{key} {column!r} is not a column of {name}", path=str(ingest_path))
    return TableSpec(
        name=name, role=role, schema_text=schema_text, schema=schema, extra_columns=extra,
        data_path=data, delimiter=delimiter, enclosed_by=doc.get("fields_enclosed_by") or None,
        key=doc.get("director_key") or None, ra=doc.get("longitude_key") or None,
        dec=doc.get("latitude_key") or None, director=doc.get("director_table") or None,
        director2=doc.get("director_table2") or None, key2=doc.get("director_key2") or None,
        unique_keys=bool(doc.get("unique_primary_key", 1)),
    )


def _data_schema(root: Path, name: str, schema: pa.Schema, doc: dict,
                 ingest_path: Path) -> tuple[pa.Schema, tuple[str, ...]]:
    """The data file's columns: the partitioner's field list if any, else the schema's."""
    partition = root / "data" / "partition" / f"{name}.json"
    fields = None
    if partition.exists():
        fields = _read_json(partition).get("in", {}).get("csv", {}).get("field")
    if not fields or list(fields) == schema.names:
        return schema, ()
    try:
        typed = parse_ingest_json_schema(doc.get("schema") or [])
    except SchemaError as exc:
        raise InputError(exc.reason, path=str(ingest_path), column=exc.column) from None
    out: list[pa.Field] = []
    extra: list[str] = []
    for column in fields:
        if column in schema.names:
            out.append(schema.field(column))
        elif column in typed.names and column not in PARTITIONER_COLUMNS:
            out.append(typed.field(column))
            extra.append(column)
        else:
            raise InputError(f"data column {column!r} is typed neither by the .schema file "
                             "nor by the ingest JSON", path=str(partition))
    return pa.schema(out), tuple(extra)


# --- queries --------------------------------------------------------------------------


def _queries(root: Path, database: str) -> tuple[list[Query], list[str]]:
    qdir = root / "queries"
    queries: list[Query] = []
    ignored: list[str] = []
    folders = [("", qdir)] + [(p.name, p) for p in sorted(qdir.glob("unsupported_*")) if p.is_dir()]
    for group, folder in folders:
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                continue
            if path.suffix != ".sql":
                if not path.name.upper().startswith("README"):
                    ignored.append(str(path.relative_to(root)))
                continue
            queries.append(read_query(path, case=root.name, group=group, database=database))
    return queries, ignored


_PRAGMA = re.compile(r"^--\s*pragma\s+(.*)$", re.IGNORECASE)


def read_query(path: Path, *, case: str, group: str = "", database: str = "") -> Query:
    """Both forms of a query file (lines kept, so line comments stay harmless)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    qserv: list[str] = []
    reference: list[str] = []
    pragmas: dict[str, str | None] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- withQserv"):
            qserv.append(stripped[len("-- withQserv"):].strip())
        elif stripped.endswith("-- noQserv"):
            reference.append(stripped[: -len("-- noQserv")].rstrip())
        elif (m := _PRAGMA.match(stripped)) is not None:
            for word in m.group(1).split():
                key, _, value = word.partition("=")
                pragmas[key] = value or None
        elif stripped.startswith("--") or not stripped:
            continue
        else:
            qserv.append(line.rstrip())
            reference.append(line.rstrip())
    tag = f"{database}." if database else ""
    return Query(
        case=case, name=path.stem, group=group, path=path,
        qserv_sql=_finish("\n".join(qserv)).replace("{DBTAG_A}", tag),
        reference_sql=_finish("\n".join(reference)),
        pragmas=pragmas,
    )


def _finish(sql: str) -> str:
    """Without trailing semicolons and spaces, and without a leading ``USE db;``."""
    sql = re.sub(r"^\s*USE\s+\S+\s*;", "", sql, flags=re.IGNORECASE)
    return sql.strip().rstrip(";").rstrip()


def split_statements(sql: str) -> list[str]:
    """Statements separated by ``;`` outside quotes and comments."""
    out: list[str] = []
    start, i, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            i = j + 1
            continue
        if sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == ";":
            out.append(sql[start:i])
            start = i + 1
        i += 1
    out.append(sql[start:])
    return [s.strip() for s in out if s.strip()]


def _mentions(query: Query, table: str) -> bool:
    pattern = re.compile(rf"(?<![\w$]){re.escape(table)}(?![\w$])", re.IGNORECASE)
    return any(pattern.search(_without_comments(s)) for s in (query.qserv_sql, query.reference_sql))


def _without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL)


def query_tables(query: Query, names: Iterable[str]) -> list[str]:
    """The names among ``names`` that the query mentions."""
    return [n for n in names if _mentions(query, n)]
