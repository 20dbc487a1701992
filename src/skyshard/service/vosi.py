"""VOSI documents of the TAP service: capabilities (with TAPRegExt), availability, tables.

``capabilities`` declares TAP 1.1 at the service's base URL, ADQL 2.0/2.1 with the
geometry this service translates (POINT, CIRCLE, BOX, POLYGON, CONTAINS, INTERSECTS,
DISTANCE, COORD1/2, AREA) and its optional features (OFFSET, LOWER/UPPER, ILIKE,
CAST, WITH, UNION/INTERSECT/EXCEPT; COALESCE works too, but its feature type is unknown to
current validators, so it is not declared), the output formats, and the limits, which
are the query service's: rows (``outputLimit``), time (``executionDuration``) and the
lifetime of results (``retentionPeriod``). Without anonymous TAP access each interface
names HTTP Basic (and bearer tokens) as its security method.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from skyshard.service.tap_query import FORMATS
from skyshard.service.tap_schema import TableDoc, TapMetadata
from skyshard.service.uws import iso

XML = '<?xml version="1.0" encoding="UTF-8"?>\n'
_VR = "http://www.ivoa.net/xml/VOResource/v1.0"
_VS = "http://www.ivoa.net/xml/VODataService/v1.1"
_TR = "http://www.ivoa.net/xml/TAPRegExt/v1.0"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"

_GEOMETRY = ("POINT", "CIRCLE", "BOX", "POLYGON", "CONTAINS", "INTERSECTS", "DISTANCE",
             "COORD1", "COORD2", "AREA")
_FEATURES = (  # (type fragment, form, description)
    ("adql-offset", "OFFSET", "skip rows before returning the result (after ORDER BY)"),
    ("adql-string", "LOWER", "lower-case a string"),
    ("adql-string", "UPPER", "upper-case a string"),
    ("adql-string", "ILIKE", "case-insensitive LIKE"),
    ("adql-common-table", "WITH", "common table expressions"),
    ("adql-sets", "UNION", "union of two queries"),
    ("adql-sets", "INTERSECT", "intersection of two queries"),
    ("adql-sets", "EXCEPT", "difference of two queries"),
    ("adql-type", "CAST", "convert a value to another type"),
)
_FORMAT_IDS = {"votable": "ivo://ivoa.net/std/TAPRegExt#output-votable-binary2"}
SECURITY = ("ivo://ivoa.net/sso#BasicAA", "ivo://ivoa.net/sso#token")


def _interface(url: str, use: str, *, tap: bool = False, secured: bool) -> str:
    attrs = ' role="std" version="1.1"' if tap else ""
    security = "".join(f'<securityMethod standardID="{s}"/>' for s in SECURITY) if secured \
        else ""
    return (f'<interface xsi:type="vs:ParamHTTP"{attrs}>'
            f"<accessURL use={quoteattr(use)}>{escape(url)}</accessURL>{security}</interface>")


def capabilities(base: str, *, max_rows: int, timeout_s: float, retention_s: float,
                 anonymous: bool) -> bytes:
    """``/capabilities``: TAP (TableAccess) and the VOSI and DALI endpoints beside it."""
    secured = not anonymous
    geometry = "".join(f"<feature><form>{g}</form></feature>" for g in _GEOMETRY)
    by_type: dict[str, list[str]] = {}
    for kind, form, text in _FEATURES:
        by_type.setdefault(kind, []).append(
            f"<feature><form>{form}</form><description>{escape(text)}</description></feature>")
    features = "".join(
        f'<languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-{kind}">'
        f"{''.join(items)}</languageFeatures>" for kind, items in by_type.items())
    formats = []
    for f in FORMATS:
        ivo_id = f' ivo-id="{_FORMAT_IDS[f.name]}"' if f.name in _FORMAT_IDS else ""
        formats.append(f"<outputFormat{ivo_id}><mime>{escape(f.media_type)}</mime>"
                       f"<alias>{f.name}</alias></outputFormat>")
    timeout, retention = int(timeout_s), int(retention_s)
    tap = (
        '<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
        + _interface(base, "base", tap=True, secured=secured)
        + "<language><name>ADQL</name>"
        '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>'
        '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.1">2.1</version>'
        "<description>ADQL 2.1, translated to the catalog's spatially partitioned SQL: "
        "CONTAINS/INTERSECTS with POINT and CIRCLE, BOX or POLYGON, and DISTANCE choose "
        "the partitions read</description>"
        '<languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-adqlgeo">'
        f"{geometry}</languageFeatures>{features}</language>"
        + "".join(formats)
        + f"<retentionPeriod><default>{retention}</default><hard>{retention}</hard>"
        "</retentionPeriod>"
        f"<executionDuration><default>{timeout}</default><hard>{timeout}</hard>"
        "</executionDuration>"
        f'<outputLimit><default unit="row">{max_rows}</default>'
        f'<hard unit="row">{max_rows}</hard></outputLimit>'
        "</capability>")
    others = [
        ("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/capabilities", False),
        ("ivo://ivoa.net/std/VOSI#availability", f"{base}/availability", False),
        ("ivo://ivoa.net/std/VOSI#tables-1.1", f"{base}/tables", secured),
        ("ivo://ivoa.net/std/DALI#examples", f"{base}/examples", secured),
    ]
    rest = "".join(f'<capability standardID="{sid}">'
                   f"{_interface(url, 'full', secured=sec)}</capability>"
                   for sid, url, sec in others)
    return (XML + '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"'
            f' xmlns:xsi="{_XSI}" xmlns:vr="{_VR}" xmlns:vs="{_VS}" xmlns:tr="{_TR}">\n'
            + tap + "\n" + rest + "\n</vosi:capabilities>\n").encode()


def availability(up_since: float, *, available: bool = True, note: str = "") -> bytes:
    """``/availability``."""
    text = note or ("the service is accepting queries" if available else "not available")
    return (XML + '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
            f"<vosi:available>{'true' if available else 'false'}</vosi:available>"
            f"<vosi:upSince>{iso(up_since)}</vosi:upSince>"
            f"<vosi:note>{escape(text)}</vosi:note></vosi:availability>\n").encode()


def _table_xml(t: TableDoc, *, detail: bool = True, tag: str = "table",
               namespaces: str = "") -> str:
    parts = [f'<{tag}{namespaces} type="output">', f"<name>{escape(t.name)}</name>"]
    if t.description:
        parts.append(f"<description>{escape(t.description)}</description>")
    if t.rows is not None:
        parts.append(f"<nrows>{t.rows}</nrows>")
    if detail:
        for c in t.columns:
            parts.append("<column>" + f"<name>{escape(c.name)}</name>")
            if c.description:
                parts.append(f"<description>{escape(c.description)}</description>")
            if c.unit:
                parts.append(f"<unit>{escape(c.unit)}</unit>")
            if c.ucd:
                parts.append(f"<ucd>{escape(c.ucd)}</ucd>")
            attrs = f" arraysize={quoteattr(c.arraysize)}" if c.arraysize else ""
            if c.xtype:
                attrs += f" extendedType={quoteattr(c.xtype)}"
            parts.append(f'<dataType xsi:type="vs:VOTableType"{attrs}>{c.datatype}</dataType>')
            if c.indexed:
                parts.append("<flag>indexed</flag>")
            if c.principal:
                parts.append("<flag>principal</flag>")
            parts.append("</column>")
        for k in t.keys:
            parts.append(f"<foreignKey><targetTable>{escape(k.target_table)}</targetTable>")
            for a, b in k.columns:
                parts.append(f"<fkColumn><fromColumn>{escape(a)}</fromColumn>"
                             f"<targetColumn>{escape(b)}</targetColumn></fkColumn>")
            if k.description:
                parts.append(f"<description>{escape(k.description)}</description>")
            parts.append("</foreignKey>")
    parts.append(f"</{tag}>")
    return "".join(parts)


def tableset(metadata: TapMetadata, *, detail: bool = True) -> bytes:
    """``/tables``: a VOSI tableset (VODataService); ``detail=False`` leaves out columns."""
    schemas = []
    for s in metadata.schemas:
        tables = "\n".join(_table_xml(t, detail=detail) for t in s.tables)
        description = f"<description>{escape(s.description)}</description>" if s.description \
            else ""
        schemas.append(f"<schema><name>{escape(s.name)}</name>{description}\n{tables}\n"
                       "</schema>")
    return (XML + '<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
            f'xmlns:vs="{_VS}" xmlns:xsi="{_XSI}">\n' + "\n".join(schemas)
            + "\n</vosi:tableset>\n").encode()


def table(t: TableDoc) -> bytes:
    """``/tables/{name}``: one table (VOSI-tables 1.1)."""
    namespaces = (' xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
                  f'xmlns:vs="{_VS}" xmlns:xsi="{_XSI}"')
    return (XML + _table_xml(t, tag="vosi:table", namespaces=namespaces) + "\n").encode()
