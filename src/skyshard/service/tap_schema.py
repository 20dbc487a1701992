"""TAP's description of the catalog: TAP_SCHEMA, built from the catalog description.

``TapMetadata`` holds the schemas, tables, columns and foreign keys that ``/tables``
(VODataService) and the queryable ``TAP_SCHEMA.schemas / tables / columns / keys /
key_columns`` both show, so the two never disagree. The catalog's tables are in one
schema named like the database (``cat.Object``); TAP_SCHEMA describes itself too.

Units, UCDs and descriptions come from the tables' roles: a director's position columns
are ``deg`` with ``pos.eq.ra;meta.main`` / ``pos.eq.dec;meta.main``, its key
``meta.id;meta.main``; a child's director key is a foreign key to the director.

``TapSchemaDb`` answers ADQL over TAP_SCHEMA in a private in-memory DuckDB holding only
those five tables: no catalog, no file, external access off, configuration locked.

>>> from skyshard.catalog.model import CatalogMeta, TableInfo, TableKind
>>> obj = TableInfo("Object", TableKind.DIRECTOR, (("objectId", "int64"), ("ra", "double")),
...                 ra="ra", key="objectId")
>>> md = TapMetadata(CatalogMeta("cat", {"Object": obj}), "cat")
>>> [(c.name, c.datatype, c.ucd) for c in md.table("cat.Object").columns]
[('objectId', 'long', 'meta.id;meta.main'), ('ra', 'double', 'pos.eq.ra;meta.main')]
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from sqlglot import exp

from skyshard.catalog.model import CatalogMeta, TableInfo, TableKind
from skyshard.errors import ForbiddenQueryError, SqlError, UnknownNameError
from skyshard.service.votable import FieldMeta, vo_type

SCHEMA = "TAP_SCHEMA"
_REGULAR = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: ADQL 2.1's reserved words (SQL-92's and ADQL's own): names that must be delimited
RESERVED = frozenset("""
ABS ACOS AREA ASIN ATAN ATAN2 BIT_AND BIT_NOT BIT_OR BIT_XOR BOX CEILING CENTROID
CIRCLE CONTAINS COORD1 COORD2 COORDSYS COS COT DEGREES DISTANCE EXP FLOOR ILIKE
INTERSECTS IN_UNIT LOG LOG10 MOD PI POINT POLYGON POWER RADIANS REGION RAND ROUND SIN
SQRT TOP TAN TRUNCATE ABSOLUTE ACTION ADD ALL ALLOCATE ALTER AND ANY ARE AS ASC
ASSERTION AT AUTHORIZATION AVG BEGIN BETWEEN BIT BIT_LENGTH BOTH BY CASCADE CASCADED
CASE CAST CATALOG CHAR CHARACTER CHAR_LENGTH CHARACTER_LENGTH CHECK CLOSE COALESCE
COLLATE COLLATION COLUMN COMMIT CONNECT CONNECTION CONSTRAINT CONSTRAINTS CONTINUE
CONVERT CORRESPONDING COUNT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
CURRENT_TIMESTAMP CURRENT_USER CURSOR DATE DAY DEALLOCATE DECIMAL DECLARE DEFAULT
DEFERRABLE DEFERRED DELETE DESC DESCRIBE DESCRIPTOR DIAGNOSTICS DISCONNECT DISTINCT
DOMAIN DOUBLE DROP ELSE END END-EXEC ESCAPE EXCEPT EXCEPTION EXEC EXECUTE EXISTS
EXTERNAL EXTRACT FALSE FETCH FIRST FLOAT FOR FOREIGN FOUND FROM FULL GET GLOBAL GO GOTO
GRANT GROUP HAVING HOUR IDENTITY IMMEDIATE IN INDICATOR INITIALLY INNER INPUT
INSENSITIVE INSERT INT INTEGER INTERSECT INTERVAL INTO IS ISOLATION JOIN KEY LANGUAGE
LAST LEADING LEFT LEVEL LIKE LOCAL LOWER MATCH MAX MIN MINUTE MODULE MONTH NAMES
NATIONAL NATURAL NCHAR NEXT NO NOT NULL NULLIF NUMERIC OCTET_LENGTH OF OFFSET ON ONLY
OPEN OPTION OR ORDER OUTER OUTPUT OVERLAPS PAD PARTIAL POSITION PRECISION PREPARE
PRESERVE PRIMARY PRIOR PRIVILEGES PROCEDURE PUBLIC READ REAL REFERENCES RELATIVE
RESTRICT REVOKE RIGHT ROLLBACK ROWS SCHEMA SCROLL SECOND SECTION SELECT SESSION
SESSION_USER SET SIZE SMALLINT SOME SPACE SQL SQLCODE SQLERROR SQLSTATE SUBSTRING SUM
SYSTEM_USER TABLE TEMPORARY THEN TIME TIMESTAMP TIMEZONE_HOUR TIMEZONE_MINUTE TO
TRAILING TRANSACTION TRANSLATE TRANSLATION TRIM TRUE UNION UNIQUE UNKNOWN UPDATE UPPER
USAGE USER USING VALUE VALUES VARCHAR VARYING VIEW WHEN WHENEVER WHERE WITH WORK WRITE
YEAR ZONE
""".split())  # noqa: SIM905


@dataclass(frozen=True)
class ColumnDoc:
    name: str
    datatype: str
    arraysize: str | None = None
    xtype: str | None = None
    description: str | None = None
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    indexed: bool = False
    principal: bool = False
    std: bool = False

    @property
    def size(self) -> int | None:
        """TAP 1.0's ``size``: a fixed arraysize as a number."""
        return int(self.arraysize) if self.arraysize and self.arraysize.isdigit() else None

    @property
    def field_meta(self) -> FieldMeta:
        return FieldMeta(self.unit, self.ucd, self.description)


@dataclass(frozen=True)
class KeyDoc:
    key_id: str
    from_table: str
    target_table: str
    columns: tuple[tuple[str, str], ...]  # (from_column, target_column)
    description: str | None = None


@dataclass(frozen=True)
class TableDoc:
    schema: str
    name: str  # qualified: schema.table
    description: str | None
    columns: tuple[ColumnDoc, ...]
    rows: int | None = None
    keys: tuple[KeyDoc, ...] = ()  # foreign keys from this table

    def column(self, name: str) -> ColumnDoc | None:
        """A column by its name (delimited or not)."""
        for c in self.columns:
            if unquoted(c.name).lower() == unquoted(name).lower():
                return c
        return None


@dataclass(frozen=True)
class SchemaDoc:
    name: str
    description: str | None
    tables: tuple[TableDoc, ...] = field(default=())


def identifier(name: str) -> str:
    """A name as ADQL writes it: delimited unless a regular identifier that is not a
    reserved word (the catalog is case-insensitive, so case alone needs no quotes).

    >>> identifier("objectId"), identifier("size"), identifier("g-mag")
    ('objectId', '"size"', '"g-mag"')
    """
    if _REGULAR.match(name) and name.upper() not in RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def unquoted(name: str) -> str:
    """A name without its ADQL delimiters."""
    if len(name) > 1 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name


# --- the catalog's metadata ---------------------------------------------------------------


class TapMetadata:
    """Schemas, tables, columns and keys of the served catalog, and of TAP_SCHEMA."""

    def __init__(self, catalog: CatalogMeta, database: str) -> None:
        self.database = database
        tables = [_table_doc(info, database, catalog)
                  for info in sorted(catalog.tables.values(), key=lambda t: t.name.lower())]
        self.schemas = (
            SchemaDoc(database, f"the tables of catalog {catalog.name!r}", tuple(tables)),
            SchemaDoc(SCHEMA, "TAP's description of this service's tables",
                      _tap_schema_docs()),
        )
        self._by_name = {t.name.lower(): t for s in self.schemas for t in s.tables}

    @property
    def tables(self) -> list[TableDoc]:
        return [t for s in self.schemas for t in s.tables]

    @property
    def keys(self) -> list[KeyDoc]:
        return [k for t in self.tables for k in t.keys]

    def table(self, name: str) -> TableDoc:
        """A table by its qualified name (or its bare name, in the catalog's schema)."""
        found = self._by_name.get(name.lower()) or self._by_name.get(
            f"{identifier(self.database)}.{name}".lower())
        if found is None:
            raise UnknownNameError(f"no table {name!r}", kind="table")
        return found

    def field_meta(self, tree: exp.Expression) -> dict[str, FieldMeta]:
        """Units, UCDs and descriptions of a query's output columns that are plain
        columns of the tables it reads (by output name)."""
        by_alias: dict[str, TableDoc] = {}
        for node in tree.find_all(exp.Table):
            qualified = f"{node.db}.{node.name}" if node.db else node.name
            try:
                by_alias[node.alias_or_name.lower()] = self.table(qualified)
            except UnknownNameError:
                continue
        if not by_alias or not isinstance(tree, exp.Select):
            return {}
        docs = list(by_alias.values())
        out: dict[str, FieldMeta] = {}
        for e in tree.expressions:
            inner = e.this if isinstance(e, exp.Alias) else e
            qualifier = inner.table.lower() if isinstance(inner, exp.Column) else ""
            scope = [by_alias[qualifier]] if qualifier in by_alias else docs
            if isinstance(inner, exp.Star) or (isinstance(inner, exp.Column)
                                               and isinstance(inner.this, exp.Star)):
                for doc in scope:
                    for c in doc.columns:
                        out.setdefault(unquoted(c.name), c.field_meta)
            elif isinstance(inner, exp.Column):
                found = [doc.column(inner.name) for doc in scope]
                known = [c for c in found if c is not None]
                if len(known) == 1:
                    out[e.alias_or_name] = known[0].field_meta
        return out

    def arrow_tables(self) -> dict[str, pa.Table]:
        """The five TAP_SCHEMA tables."""
        schemas = [(s.name, None, s.description, i) for i, s in enumerate(self.schemas)]
        tables, columns = [], []
        for ti, t in enumerate(self.tables):
            tables.append((t.schema, t.name, "table", None, t.description, ti))
            for ci, c in enumerate(t.columns):
                columns.append((t.name, c.name, c.datatype, c.arraysize, c.xtype, c.size,
                                c.description, c.utype, c.unit, c.ucd, int(c.indexed),
                                int(c.principal), int(c.std), ci))
        keys = [(k.key_id, k.from_table, k.target_table, k.description, None) for k in self.keys]
        key_columns = [(k.key_id, a, b) for k in self.keys for a, b in k.columns]
        return {name: _arrow(name, rows) for name, rows in (
            ("schemas", schemas), ("tables", tables), ("columns", columns), ("keys", keys),
            ("key_columns", key_columns))}


def _table_doc(info: TableInfo, schema: str, catalog: CatalogMeta) -> TableDoc:
    prefix = identifier(schema)
    name = f"{prefix}.{identifier(info.name)}"
    columns = tuple(_column_doc(info, c, t) for c, t in info.columns)
    keys: tuple[KeyDoc, ...] = ()
    if info.kind is TableKind.CHILD and info.director and info.director_key:
        director = catalog.tables.get(info.director)
        if director is not None and director.key:
            keys = (KeyDoc(f"{info.name}_{director.name}", name,
                           f"{prefix}.{identifier(director.name)}",
                           ((identifier(info.director_key), identifier(director.key)),),
                           f"each {info.name} row belongs to one {director.name} row"),)
    if info.kind is TableKind.DIRECTOR:
        where = f"{len(info.partitions)} HEALPix partitions" if info.partitions else "partitions"
        text = (f"director table: {info.rows:,} rows in {where} by position "
                f"({info.ra}, {info.dec}), unique key {info.key}")
    elif info.kind is TableKind.CHILD:
        text = (f"child table: {info.rows:,} rows, each stored with its {info.director} row "
                f"(by {info.director_key})")
    else:
        text = f"replicated table: {info.rows:,} rows, joinable with any table"
    return TableDoc(schema, name, text, columns, info.rows, keys)


def _column_doc(info: TableInfo, name: str, arrow: str) -> ColumnDoc:
    t = vo_type(arrow_type(arrow))
    extra: dict = {}
    director = info.kind is TableKind.DIRECTOR
    if director and name == info.ra:
        extra = {"unit": "deg", "ucd": "pos.eq.ra;meta.main", "indexed": True,
                 "principal": True,
                 "description": "right ascension (ICRS); the table is partitioned by it"}
    elif director and name == info.dec:
        extra = {"unit": "deg", "ucd": "pos.eq.dec;meta.main", "indexed": True,
                 "principal": True,
                 "description": "declination (ICRS); the table is partitioned by it"}
    elif director and name == info.key:
        extra = {"ucd": "meta.id;meta.main", "indexed": True, "principal": True,
                 "description": "unique identifier of the row (the director key, indexed)"}
    elif info.kind is TableKind.CHILD and name == info.director_key:
        extra = {"ucd": "meta.id", "indexed": True, "principal": True,
                 "description": f"identifier of the {info.director} row this row belongs to"}
    return ColumnDoc(identifier(name), t.datatype, t.arraysize, t.xtype, **extra)


_TYPE_FORMS = (
    (re.compile(r"^timestamp\[(\w+)(, tz=.*)?\]$"), lambda m: pa.timestamp(m[1])),
    (re.compile(r"^decimal(128|256)?\(\d+, ?\d+\)$"), lambda m: pa.float64()),
    (re.compile(r"^fixed_size_binary\[(\d+)\]$"), lambda m: pa.binary(int(m[1]))),
    (re.compile(r"^(large_)?list<\w+: (.+)>$"), lambda m: pa.list_(arrow_type(m[2]))),
    (re.compile(r"^fixed_size_list<\w+: (.+)>\[(\d+)\]$"),
     lambda m: pa.list_(arrow_type(m[1]), int(m[2]))),
    (re.compile(r"^dictionary<values=(\w+), .*>$"), lambda m: arrow_type(m[1])),
)


def arrow_type(text: str) -> pa.DataType:
    """An Arrow type from its string form (as the catalog stores it); text if unknown."""
    try:
        return pa.type_for_alias(text)
    except (ValueError, KeyError):
        pass
    for pattern, make in _TYPE_FORMS:
        m = pattern.match(text.strip())
        if m:
            return make(m)
    return pa.string()


# --- TAP_SCHEMA's own description ---------------------------------------------------------

_S = "char"  # text columns of TAP_SCHEMA are char arraysize *


def _c(name: str, description: str, datatype: str = _S, *, principal: bool = False) -> ColumnDoc:
    return ColumnDoc(name, datatype, "*" if datatype == _S else None, None, description,
                     principal=principal, std=True)


_TAP_COLUMNS: dict[str, tuple[ColumnDoc, ...]] = {
    "schemas": (
        _c("schema_name", "schema name, for reference to TAP_SCHEMA.schemas", principal=True),
        _c("utype", "lists the utypes of schemas"),
        _c("description", "describes schemas"),
        _c("schema_index", "recommended sort order when listing schemas", "int"),
    ),
    "tables": (
        _c("schema_name", "the schema name from TAP_SCHEMA.schemas", principal=True),
        _c("table_name", "the fully qualified table name", principal=True),
        _c("table_type", "one of: table, view", principal=True),
        _c("utype", "lists the utype of tables"),
        _c("description", "describes tables"),
        _c("table_index", "recommended sort order when listing tables", "int"),
    ),
    "columns": (
        _c("table_name", "the table this column belongs to", principal=True),
        _c("column_name", "the column name", principal=True),
        _c("datatype", "an IVOA defined data type (VOTable)", principal=True),
        _c("arraysize", "length of variable length datatypes"),
        _c("xtype", "a DALI or custom extended type annotation"),
        _c('"size"', "deprecated: use arraysize (size is an ADQL reserved word)", "int"),
        _c("description", "describes the columns"),
        _c("utype", "lists the utypes of columns"),
        _c("unit", "lists the unit used for column values"),
        _c("ucd", "lists the UCDs of columns"),
        _c("indexed", "an indexed column; 1 means 1, 0 means 0", "int", principal=True),
        _c("principal", "a principal column; 1 means 1, 0 means 0", "int", principal=True),
        _c("std", "a standard column; 1 means 1, 0 means 0", "int", principal=True),
        _c("column_index", "recommended sort order when listing columns", "int"),
    ),
    "keys": (
        _c("key_id", "unique key identifier", principal=True),
        _c("from_table", "fully qualified table name", principal=True),
        _c("target_table", "fully qualified table name", principal=True),
        _c("description", "description of this key"),
        _c("utype", "utype of this key"),
    ),
    "key_columns": (
        _c("key_id", "unique key identifier", principal=True),
        _c("from_column", "key column name in the from_table", principal=True),
        _c("target_column", "key column name in the target_table", principal=True),
    ),
}

_TAP_KEYS = (  # key_id, from table, target table, (from column, target column)
    ("schemas_tables", "tables", "schemas", ("schema_name", "schema_name")),
    ("tables_columns", "columns", "tables", ("table_name", "table_name")),
    ("tables_keys_from", "keys", "tables", ("from_table", "table_name")),
    ("tables_keys_target", "keys", "tables", ("target_table", "table_name")),
    ("keys_key_columns", "key_columns", "keys", ("key_id", "key_id")),
)

_TAP_DESCRIPTIONS = {
    "schemas": "description of schemas in this tableset",
    "tables": "description of tables in this tableset",
    "columns": "description of columns in this tableset",
    "keys": "description of foreign keys in this tableset",
    "key_columns": "description of foreign key columns in this tableset",
}


def _tap_schema_docs() -> tuple[TableDoc, ...]:
    docs = []
    for name, columns in _TAP_COLUMNS.items():
        keys = tuple(KeyDoc(key_id, f"{SCHEMA}.{name}", f"{SCHEMA}.{target}", (cols,))
                     for key_id, source, target, cols in _TAP_KEYS if source == name)
        docs.append(TableDoc(SCHEMA, f"{SCHEMA}.{name}", _TAP_DESCRIPTIONS[name], columns,
                             keys=keys))
    return tuple(docs)


def _arrow(name: str, rows: list[tuple]) -> pa.Table:
    columns = _TAP_COLUMNS[name]
    fields = [pa.field(unquoted(c.name), pa.int32() if c.datatype == "int" else pa.string())
              for c in columns]
    data = [pa.array([r[i] for r in rows], f.type) for i, f in enumerate(fields)]
    return pa.Table.from_arrays(data, schema=pa.schema(fields))


# --- answering queries on TAP_SCHEMA ------------------------------------------------------


def reads_tap_schema(tree: exp.Expression) -> bool:
    """Whether a query reads any TAP_SCHEMA table."""
    return any(t.db.lower() == SCHEMA.lower() for t in tree.find_all(exp.Table))


class TapSchemaDb:
    """The five TAP_SCHEMA tables in a locked in-memory DuckDB. Thread-safe."""

    def __init__(self, metadata: TapMetadata) -> None:
        self._db = duckdb.connect(":memory:", config={
            "autoload_known_extensions": False, "autoinstall_known_extensions": False,
            "allow_community_extensions": False})
        self._db.execute(f"CREATE SCHEMA {SCHEMA}")
        for name, table in metadata.arrow_tables().items():
            self._db.register("_incoming", table)
            self._db.execute(f'CREATE TABLE {SCHEMA}."{name}" AS SELECT * FROM _incoming')
            self._db.unregister("_incoming")
        self._db.execute("SET enable_external_access=false")
        self._db.execute("SET lock_configuration=true")
        self._lock = threading.Lock()
        self.names = frozenset(_TAP_COLUMNS)

    def check(self, tree: exp.Expression, sql: str) -> None:
        """Only TAP_SCHEMA's tables (and the query's own CTEs) may be read."""
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        for t in tree.find_all(exp.Table):
            if t.db.lower() == SCHEMA.lower():
                if t.name.lower() not in self.names:
                    raise UnknownNameError(f"no table {t.name!r} in {SCHEMA} (tables: "
                                           f"{', '.join(sorted(self.names))})", kind="table",
                                           sql=sql)
            elif t.db or t.name.lower() not in ctes:
                raise SqlError(f"{t.sql()} cannot be read in the same query as {SCHEMA}; "
                               f"query {SCHEMA} and the catalog separately", sql=sql)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._db.cursor()

    def run(self, tree: exp.Expression, cursor: duckdb.DuckDBPyConnection) -> pa.Table:
        """The rows of a checked query, on a cursor of this database (interruptible)."""
        text = tree.sql(dialect="duckdb")
        try:
            rel = cursor.sql(text)
            if rel is None:
                raise ForbiddenQueryError("only SELECT statements are run")
            return rel.to_arrow_table()
        except duckdb.PermissionException as exc:
            raise ForbiddenQueryError(f"not allowed: {_first_line(exc)}") from exc
        except (duckdb.BinderException, duckdb.CatalogException, duckdb.ParserException,
                duckdb.ConversionException, duckdb.InvalidInputException,
                duckdb.OutOfRangeException, duckdb.NotImplementedException) as exc:
            raise SqlError(_first_line(exc)) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

