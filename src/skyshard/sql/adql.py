"""ADQL 2.1 as a sqlglot dialect, translated into the same tree the Qserv dialect gives.

Geometry becomes the scisql functions the planner already understands, so partition
pruning and the exact per-row predicates apply to ADQL cones as to Qserv ones::

    CONTAINS(POINT(f, ra, dec), CIRCLE(f, ra0, dec0, r)) = 1   ->  scisql_s2PtInCircle(ra, dec, ra0, dec0, r) = 1
    CONTAINS(POINT(...), BOX(f, ra0, dec0, w, h)) = 1           ->  scisql_s2PtInBox(ra, dec, ra0-w/2, dec0-h/2, ra0+w/2, dec0+h/2) = 1
    CONTAINS(POINT(...), POLYGON(f, ra1, dec1, ...)) = 1        ->  scisql_s2PtInCPoly(ra, dec, ra1, dec1, ...) = 1
    INTERSECTS(region, POINT(...)) / INTERSECTS(POINT, region)  ->  as CONTAINS
    DISTANCE(POINT(f, a, b), POINT(f, c, d)), DISTANCE(a, b, c, d) -> scisql_angSep(a, b, c, d)
    COORD1(POINT(f, a, b)) -> a;  COORD2(...) -> b;  AREA(CIRCLE/BOX/POLYGON of constants) -> deg^2
    TOP n -> LIMIT n

A BOX is a box in longitude and latitude (width along RA, height along Dec), as most TAP
services implement it. Only ICRS (or an empty frame) is accepted.

>>> to_qserv_sql("SELECT TOP 5 id FROM t WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 10, 20, 0.5))")
'SELECT id FROM t WHERE 1 = SCISQL_S2PTINCIRCLE(ra, `dec`, 10, 20, 0.5) LIMIT 5'
"""

from __future__ import annotations

import math

import sqlglot
from sqlglot import exp
from sqlglot.dialects.tsql import TSQL
from sqlglot.errors import ParseError, TokenError

from skyshard.errors import SqlSyntaxError, UnsupportedQueryError
from skyshard.sql.parse import READ_STATEMENTS, check_functions, syntax_error

REGIONS = {"circle", "box", "polygon"}
FRAMES = {"", "icrs", "icrs geocenter", "icrs topocenter"}


class ADQL(TSQL):
    """ADQL 2.1 (``TOP``, double-quoted identifiers, geometry functions); registered
    with sqlglot as ``adql``."""


def parse_adql(sql: str) -> exp.Expression:
    """An ADQL query as a tree in the Qserv dialect's terms (geometry translated)."""
    if not sql or not sql.strip():
        raise SqlSyntaxError("empty query")
    try:
        trees = [t for t in sqlglot.parse(sql, read=ADQL) if t is not None]
    except ParseError as err:
        raise syntax_error(err, sql) from None
    except TokenError as err:
        raise SqlSyntaxError(f"cannot read the query: {err}", sql=sql) from None
    if len(trees) != 1 or not isinstance(trees[0], READ_STATEMENTS):
        raise UnsupportedQueryError("ADQL allows one SELECT statement", construct="statement",
                                    sql=sql)
    tree = trees[0]
    check_functions(tree, sql)
    return translate(tree, sql)


def to_qserv_sql(sql: str) -> str:
    """The translated query as MySQL/Qserv text (for logs and tests)."""
    return parse_adql(sql).sql(dialect="mysql")


def translate(tree: exp.Expression, sql: str = "") -> exp.Expression:
    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Contains) or _is(node, "contains"):
            a, b = _two_args(node)
            return _contains(a, b, sql)
        if _is(node, "intersects"):
            a, b = _two_args(node)
            if _is(a, "point"):
                a, b = b, a
            if not _is(b, "point"):
                raise UnsupportedQueryError("INTERSECTS of two regions is not supported",
                                            construct="INTERSECTS", sql=sql,
                                            suggestion="INTERSECTS(region, POINT(...)) is")
            return _contains(b, a, sql)
        if _is(node, "distance"):
            args = node.expressions
            if len(args) == 2 and all(_is(x, "point") for x in args):
                (a, b), (c, d) = _point(args[0], sql), _point(args[1], sql)
                return _fn("scisql_angSep", a, b, c, d)
            if len(args) == 4:
                return _fn("scisql_angSep", *args)
            raise UnsupportedQueryError("DISTANCE takes two POINTs or four numbers",
                                        construct="DISTANCE", sql=sql)
        if _is(node, "coord1") or _is(node, "coord2"):
            (arg,) = node.expressions or [None]
            if not _is(arg, "point"):
                raise UnsupportedQueryError(f"{node.name}() needs a POINT(...) argument",
                                            construct=node.name.upper(), sql=sql)
            return _point(arg, sql)[0 if node.name.lower() == "coord1" else 1]
        if _is(node, "area"):
            (arg,) = node.expressions or [None]
            return exp.Literal.number(repr(_area(arg, sql)))
        if _is(node, "point") or _is(node, "circle") or _is(node, "box") or _is(node, "polygon"):
            raise UnsupportedQueryError(
                f"{node.name.upper()} can only be used inside CONTAINS, INTERSECTS, DISTANCE, "
                "COORD1/COORD2 or AREA", construct=node.name.upper(), sql=sql)
        return node

    return tree.transform(fix, copy=True)


# --- pieces -------------------------------------------------------------------------------


def _is(node: exp.Expression | None, name: str) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() == name


def _fn(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=[a.copy() for a in args])


def _two_args(node: exp.Expression) -> tuple[exp.Expression, exp.Expression]:
    if isinstance(node, exp.Contains):
        return node.this, node.expression
    if len(node.expressions) != 2:
        raise UnsupportedQueryError(f"{node.name.upper()} takes two arguments",
                                    construct=node.name.upper())
    return node.expressions[0], node.expressions[1]


def _frame_and_args(node: exp.Anonymous, n: int, sql: str) -> list[exp.Expression]:
    """Arguments after an optional coordinate-system string, checked to be ICRS."""
    args = list(node.expressions)
    if args and isinstance(args[0], exp.Literal) and args[0].is_string:
        frame = args.pop(0).this.strip().lower()
        if frame not in FRAMES:
            raise UnsupportedQueryError(f"coordinate system {frame!r} is not supported",
                                        construct=node.name.upper(), sql=sql,
                                        suggestion="use 'ICRS'")
    elif args and isinstance(args[0], exp.Null):
        args.pop(0)
    if n >= 0 and len(args) != n:
        raise UnsupportedQueryError(f"{node.name.upper()} takes {n} coordinates, got {len(args)}",
                                    construct=node.name.upper(), sql=sql)
    return args


def _point(node: exp.Expression, sql: str) -> list[exp.Expression]:
    if not _is(node, "point"):
        raise UnsupportedQueryError("expected POINT(...)", construct="POINT", sql=sql)
    return _frame_and_args(node, 2, sql)


def _contains(point: exp.Expression, region: exp.Expression, sql: str) -> exp.Expression:
    if not _is(point, "point"):
        raise UnsupportedQueryError("CONTAINS needs a POINT as its first argument",
                                    construct="CONTAINS", sql=sql,
                                    suggestion="point-in-region tests are supported; "
                                               "region-in-region is not")
    ra, dec = _point(point, sql)
    if _is(region, "circle"):
        c = _frame_and_args(region, 3, sql)
        return _fn("scisql_s2PtInCircle", ra, dec, *c)
    if _is(region, "box"):
        ra0, dec0, w, h = (_number(x, "BOX", sql) for x in _frame_and_args(region, 4, sql))
        lo_ra = (ra0 - w / 2) % 360.0 if w < 360 else 0.0
        hi_ra = (ra0 + w / 2) % 360.0 if w < 360 else 360.0
        corners = (lo_ra, max(-90.0, dec0 - h / 2), hi_ra, min(90.0, dec0 + h / 2))
        return _fn("scisql_s2PtInBox", ra, dec, *(_literal(v) for v in corners))
    if _is(region, "polygon"):
        v = _frame_and_args(region, -1, sql)
        if len(v) < 6 or len(v) % 2:
            raise UnsupportedQueryError("POLYGON takes at least 3 vertices", construct="POLYGON",
                                        sql=sql)
        return _fn("scisql_s2PtInCPoly", ra, dec, *v)
    raise UnsupportedQueryError("CONTAINS needs CIRCLE, BOX or POLYGON as its second argument",
                                construct="CONTAINS", sql=sql)


def _number(node: exp.Expression, what: str, sql: str) -> float:
    from skyshard.sql.analyze import _const

    v = _const(node)
    if v is None:
        raise UnsupportedQueryError(f"{what} coordinates must be numeric constants",
                                    construct=what, sql=sql)
    return v


def _literal(v: float) -> exp.Expression:
    lit = exp.Literal.number(repr(abs(v)))
    return exp.Neg(this=lit) if v < 0 else lit


def _area(node: exp.Expression | None, sql: str) -> float:
    """Area in square degrees of a constant region."""
    sq = (180 / math.pi) ** 2
    if _is(node, "circle"):
        r = math.radians(_number(_frame_and_args(node, 3, sql)[2], "CIRCLE", sql))
        return 2 * math.pi * (1 - math.cos(r)) * sq
    if _is(node, "box"):
        _, dec0, w, h = (_number(x, "BOX", sql) for x in _frame_and_args(node, 4, sql))
        lo, hi = math.radians(max(-90, dec0 - h / 2)), math.radians(min(90, dec0 + h / 2))
        return math.radians(min(w, 360)) * (math.sin(hi) - math.sin(lo)) * sq
    if _is(node, "polygon"):
        from skyshard.sphere.regions import Polygon

        v = [_number(x, "POLYGON", sql) for x in _frame_and_args(node, -1, sql)]
        return _spherical_polygon_area(Polygon(tuple(zip(v[0::2], v[1::2])))) * sq
    raise UnsupportedQueryError("AREA takes a CIRCLE, BOX or POLYGON of constants",
                                construct="AREA", sql=sql)


def _spherical_polygon_area(poly) -> float:
    """Steradians, by the sum of the turning angles (Girard)."""
    import numpy as np

    v = poly.vertex_vectors
    n = len(v)
    total = 0.0
    for i in range(n):
        a, b, c = v[i - 1], v[i], v[(i + 1) % n]
        t1, t2 = np.cross(np.cross(b, a), b), np.cross(np.cross(b, c), b)
        total += math.atan2(float(np.dot(np.cross(t1, t2), b)), float(np.dot(t1, t2)))
    excess = abs(abs(total) - (n - 2) * math.pi)
    return min(excess, 4 * math.pi - excess)
