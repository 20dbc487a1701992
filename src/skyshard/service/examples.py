"""The DALI examples document of the TAP service (``/examples``): XHTML with RDFa.

The queries are real: a cone around a real row of the first director table, the same
cone with ADQL 2.1's DISTANCE, a lookup of that row by its director key, its join with a
child table, a count over a replicated table, and a TAP_SCHEMA query. ``sample`` reads the
row's key and position once (one ``LIMIT 1`` query on the catalog).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from skyshard.catalog.model import CatalogMeta, TableInfo, TableKind
from skyshard.service.tap_schema import identifier

MEDIA_TYPE = "application/xhtml+xml"
VOCAB = "http://www.ivoa.net/rdf/examples#"


@dataclass(frozen=True)
class Example:
    id: str
    name: str
    text: str
    query: str
    tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    """A row of a director table: its key and position."""

    table: TableInfo
    key: Any
    ra: float
    dec: float


def sample(db: Any, catalog: CatalogMeta) -> Sample | None:
    """The first row of the first director table (None if there is none or it fails)."""
    for info in sorted(catalog.tables.values(), key=lambda t: t.name.lower()):
        if info.kind is TableKind.DIRECTOR and info.key and info.ra and info.dec:
            sql = (f"SELECT `{info.key}` AS k, `{info.ra}` AS ra, `{info.dec}` AS dec "
                   f"FROM `{info.name}` LIMIT 1")
            try:
                rows = db.sql(sql).to_pylist()
            except Exception:  # noqa: BLE001 - examples are a courtesy
                return None
            if rows and rows[0]["ra"] is not None and rows[0]["dec"] is not None:
                r = rows[0]
                return Sample(info, r["k"], float(r["ra"]), float(r["dec"]))
            return None
    return None


def examples(catalog: CatalogMeta, database: str, found: Sample | None) -> list[Example]:
    schema = identifier(database)

    def name(info: TableInfo) -> str:
        return f"{schema}.{identifier(info.name)}"

    out: list[Example] = []
    if found is not None:
        t, q = found.table, found
        table = name(t)
        ra, dec, key = identifier(t.ra or "ra"), identifier(t.dec or "dec"), identifier(t.key or "")
        value = repr(q.key) if not isinstance(q.key, str) else "'" + q.key.replace("'", "''") + "'"
        out.append(Example(
            "cone", "Cone search",
            f"Rows of {t.name} within 0.1 degree of a position; only the partitions that "
            "the circle touches are read.",
            f"SELECT TOP 100 * FROM {table}\nWHERE 1 = CONTAINS(POINT('ICRS', {ra}, {dec}),\n"
            f"                   CIRCLE('ICRS', {q.ra:.6f}, {q.dec:.6f}, 0.1))",
            (table,)))
        out.append(Example(
            "distance", "Cone search with DISTANCE",
            "The same cone in ADQL 2.1's preferred form, nearest first.",
            f"SELECT TOP 100 {key}, {ra}, {dec},\n"
            f"       DISTANCE(POINT('ICRS', {ra}, {dec}), POINT('ICRS', {q.ra:.6f}, {q.dec:.6f}))"
            f" AS dist\nFROM {table}\n"
            f"WHERE DISTANCE(POINT('ICRS', {ra}, {dec}), POINT('ICRS', {q.ra:.6f}, {q.dec:.6f}))"
            " < 0.1\nORDER BY dist", (table,)))
        out.append(Example(
            "id-lookup", "Lookup by identifier",
            f"One {t.name} row by its key, found through the director index.",
            f"SELECT * FROM {table} WHERE {key} = {value}", (table,)))
        children = [c for c in catalog.tables.values()
                    if c.kind is TableKind.CHILD and c.director == t.name and c.director_key]
        if children:
            c = min(children, key=lambda c: c.name.lower())
            child = name(c)
            own = [f"s.{identifier(n)}" for n in c.column_names if n != c.director_key][:6]
            out.append(Example(
                "join", f"An {t.name} row with its {c.name} rows",
                "Director and child rows live in the same partition, so this join is local.",
                f"SELECT TOP 1000 {', '.join([f'o.{key}', f'o.{ra}', f'o.{dec}', *own])}\n"
                f"FROM {table} AS o\n"
                f"JOIN {child} AS s ON s.{identifier(c.director_key or '')} = o.{key}\n"
                f"WHERE o.{key} = {value}", (table, child)))
    replicated = [t for t in catalog.tables.values() if t.kind is TableKind.REPLICATED]
    if replicated:
        r = min(replicated, key=lambda t: t.name.lower())
        out.append(Example("replicated", f"The {r.name} table",
                           "A small table stored whole, joinable with any other.",
                           f"SELECT TOP 100 * FROM {name(r)}", (name(r),)))
    if found is not None:
        described = name(found.table)
        out.append(Example(
            "columns", f"The columns of {found.table.name}",
            "Names, types, units and UCDs, from TAP_SCHEMA.",
            "SELECT column_name, datatype, arraysize, unit, ucd, description\n"
            f"FROM TAP_SCHEMA.columns WHERE table_name = '{described}'\nORDER BY column_index",
            ("TAP_SCHEMA.columns",)))
    else:
        out.append(Example("tables", "The tables of this service",
                           "Every table and its description, from TAP_SCHEMA.",
                           "SELECT table_name, description FROM TAP_SCHEMA.tables",
                           ("TAP_SCHEMA.tables",)))
    return out


def document(items: list[Example], title: str) -> bytes:
    """The XHTML document."""
    body = []
    for e in items:
        tables = ", ".join(f'<span property="table">{escape(t)}</span>' for t in e.tables)
        body.append(
            f'<div typeof="example" id="{e.id}" resource="#{e.id}">\n'
            f'<h2 property="name">{escape(e.name)}</h2>\n'
            f"<p>{escape(e.text)}" + (f" Tables: {tables}." if tables else "") + "</p>\n"
            f'<pre class="dali-example-query" property="query">{escape(e.query)}</pre>\n'
            "</div>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en">\n'
            f"<head><title>{escape(title)}</title></head>\n"
            f'<body vocab="{VOCAB}">\n<h1>{escape(title)}</h1>\n'
            + "\n".join(body) + "\n</body>\n</html>\n").encode()
