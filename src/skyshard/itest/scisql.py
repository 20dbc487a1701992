"""The sciSQL functions that Qserv's reference queries call, as MariaDB stored functions.

Qserv's reference database has sciSQL's C UDFs loaded; a plain MariaDB does not. These
definitions follow sciSQL's algorithms (``src/geometry.c``, ``src/udfs/*.c``): the
haversine-style chord distance for ``angSep`` and the circle test, the
north/east-basis test for ellipses (axes in arcseconds, position angle in degrees east
of north), edge-plane normals ``(v_i + v_i+1) x (v_i+1 - v_i)`` for convex polygons
(either orientation), and sciSQL's NULL rules: a NULL argument makes the ``s2PtIn*``
tests 0 and ``angSep`` NULL; a latitude outside [-90, 90] makes them NULL.

Stored functions cannot take a variable number of arguments, so a polygon given vertex
by vertex, ``scisql_s2PtInCPoly(ra, dec, v1ra, v1dec, ...)``, is rewritten to pass its
vertices as one ``JSON_ARRAY(...)``; ``scisql_s2CPolyToBin(...)`` becomes that same JSON
array (our stand-in for sciSQL's binary polygon, which only these two functions read).
``scisql_fluxToAbMag`` and ``scisql_angSep`` are inlined as expressions for speed.
"""

from __future__ import annotations

import re

__all__ = ["FUNCTIONS", "rewrite_for_mariadb"]

_FLUX_TO_AB_MAG = """
CREATE FUNCTION scisql_fluxToAbMag(flux DOUBLE) RETURNS DOUBLE DETERMINISTIC NO SQL
RETURN -2.5 * LOG10(flux) - 48.6
"""

_ANG_SEP = """
CREATE FUNCTION scisql_angSep(lon1 DOUBLE, lat1 DOUBLE, lon2 DOUBLE, lat2 DOUBLE)
RETURNS DOUBLE DETERMINISTIC NO SQL
BEGIN
  DECLARE x, y, z, d2, sep DOUBLE;
  IF lon1 IS NULL OR lat1 IS NULL OR lon2 IS NULL OR lat2 IS NULL
     OR lat1 < -90 OR lat1 > 90 OR lat2 < -90 OR lat2 > 90 THEN
    RETURN NULL;
  END IF;
  SET x = SIN((lon1 - lon2) * PI() / 180 * 0.5);
  SET y = SIN((lat1 - lat2) * PI() / 180 * 0.5);
  SET z = COS((lat1 + lat2) * PI() / 180 * 0.5);
  SET d2 = 4.0 * (x * x * (z * z - y * y) + y * y);
  SET d2 = LEAST(GREATEST(d2, 0.0), 4.0);
  SET sep = 2.0 * (180 / PI()) * ASIN(SQRT(d2 * 0.25));
  RETURN LEAST(sep, 180.0);
END
"""

_PT_IN_BOX = """
CREATE FUNCTION scisql_s2PtInBox(lon DOUBLE, lat DOUBLE, lonMin DOUBLE, latMin DOUBLE,
                                 lonMax DOUBLE, latMax DOUBLE)
RETURNS INT DETERMINISTIC NO SQL
BEGIN
  IF lon IS NULL OR lat IS NULL OR lonMin IS NULL OR latMin IS NULL
     OR lonMax IS NULL OR latMax IS NULL THEN
    RETURN 0;
  END IF;
  IF lat < -90 OR lat > 90 OR latMin < -90 OR latMin > 90 OR latMax < -90 OR latMax > 90 THEN
    RETURN NULL;
  END IF;
  IF lonMax < lonMin AND (lonMax < 0 OR lonMin > 360) THEN
    RETURN NULL;
  END IF;
  IF latMin > latMax OR lat < latMin OR lat > latMax THEN
    RETURN 0;
  END IF;
  IF lonMax - lonMin >= 360 THEN
    RETURN 1;
  END IF;
  SET lon = scisql_angRed(lon), lonMin = scisql_angRed(lonMin), lonMax = scisql_angRed(lonMax);
  IF lonMin <= lonMax THEN
    RETURN lon >= lonMin AND lon <= lonMax;
  END IF;
  RETURN lon >= lonMin OR lon <= lonMax;
END
"""

_ANG_RED = """
CREATE FUNCTION scisql_angRed(angle DOUBLE) RETURNS DOUBLE DETERMINISTIC NO SQL
BEGIN
  DECLARE a DOUBLE DEFAULT MOD(angle, 360.0);
  IF a < 0 THEN
    SET a = a + 360.0;
    IF a = 360.0 THEN SET a = 0.0; END IF;
  END IF;
  RETURN a;
END
"""

_PT_IN_CIRCLE = """
CREATE FUNCTION scisql_s2PtInCircle(lon DOUBLE, lat DOUBLE, cenLon DOUBLE, cenLat DOUBLE,
                                    radius DOUBLE)
RETURNS INT DETERMINISTIC NO SQL
BEGIN
  IF lon IS NULL OR lat IS NULL OR cenLon IS NULL OR cenLat IS NULL OR radius IS NULL THEN
    RETURN 0;
  END IF;
  IF lat < -90 OR lat > 90 OR cenLat < -90 OR cenLat > 90 OR radius < 0 OR radius > 180 THEN
    RETURN NULL;
  END IF;
  IF ABS(lat - cenLat) > radius THEN
    RETURN 0;
  END IF;
  RETURN scisql_angSep(lon, lat, cenLon, cenLat) <= radius;
END
"""

_PT_IN_ELLIPSE = """
CREATE FUNCTION scisql_s2PtInEllipse(lon DOUBLE, lat DOUBLE, cenLon DOUBLE, cenLat DOUBLE,
                                     semiMajor DOUBLE, semiMinor DOUBLE, posAng DOUBLE)
RETURNS INT DETERMINISTIC NO SQL
BEGIN
  DECLARE vx, vy, vz, xne, yne, x, y, sinLon, cosLon, sinLat, cosLat, pa, m, mm DOUBLE;
  IF lon IS NULL OR lat IS NULL OR cenLon IS NULL OR cenLat IS NULL OR semiMajor IS NULL
     OR semiMinor IS NULL OR posAng IS NULL THEN
    RETURN 0;
  END IF;
  IF lat < -90 OR lat > 90 OR cenLat < -90 OR cenLat > 90 OR semiMinor < 0
     OR semiMinor > semiMajor OR semiMajor > 36000 THEN
    RETURN NULL;
  END IF;
  SET vx = COS(lon * PI() / 180) * COS(lat * PI() / 180);
  SET vy = SIN(lon * PI() / 180) * COS(lat * PI() / 180);
  SET vz = SIN(lat * PI() / 180);
  SET sinLon = SIN(cenLon * PI() / 180), cosLon = COS(cenLon * PI() / 180);
  SET sinLat = SIN(cenLat * PI() / 180), cosLat = COS(cenLat * PI() / 180);
  SET pa = posAng * PI() / 180;
  SET xne = cosLat * vz - sinLat * (sinLon * vy + cosLon * vx);
  SET yne = cosLon * vy - sinLon * vx;
  SET x = SIN(pa) * yne + COS(pa) * xne;
  SET y = COS(pa) * yne - SIN(pa) * xne;
  SET m = semiMinor * PI() / 180 / 3600, mm = semiMajor * PI() / 180 / 3600;
  RETURN x * x / (mm * mm) + y * y / (m * m) <= 1.0;
END
"""

_PT_IN_CPOLY = """
CREATE FUNCTION scisql_s2PtInCPoly(lon DOUBLE, lat DOUBLE, verts LONGTEXT)
RETURNS INT DETERMINISTIC NO SQL
BEGIN
  DECLARE n, i, j INT;
  DECLARE px, py, pz, sx, sy, sz, ax, ay, az, bx, by_, bz, ex, ey, ez, s, vlon, vlat DOUBLE;
  IF lon IS NULL OR lat IS NULL OR verts IS NULL THEN
    RETURN 0;
  END IF;
  IF lat < -90 OR lat > 90 THEN
    RETURN NULL;
  END IF;
  SET n = JSON_LENGTH(verts) DIV 2;
  IF n < 3 OR n > 20 OR JSON_LENGTH(verts) <> 2 * n THEN
    RETURN NULL;
  END IF;
  SET px = COS(lon * PI() / 180) * COS(lat * PI() / 180);
  SET py = SIN(lon * PI() / 180) * COS(lat * PI() / 180);
  SET pz = SIN(lat * PI() / 180);
  -- orientation: sign of (sum of vertices) . (first edge plane normal)
  SET sx = 0, sy = 0, sz = 0, i = 0;
  WHILE i < n DO
    SET vlon = JSON_VALUE(verts, CONCAT('$[', 2 * i, ']')) * PI() / 180;
    SET vlat = JSON_VALUE(verts, CONCAT('$[', 2 * i + 1, ']')) * PI() / 180;
    IF vlat IS NULL OR vlon IS NULL OR ABS(vlat) > PI() / 2 THEN RETURN NULL; END IF;
    SET sx = sx + COS(vlon) * COS(vlat), sy = sy + SIN(vlon) * COS(vlat), sz = sz + SIN(vlat);
    SET i = i + 1;
  END WHILE;
  SET s = 0, i = 0;
  WHILE i < n DO
    SET j = (i + 1) MOD n;
    SET vlon = JSON_VALUE(verts, CONCAT('$[', 2 * i, ']')) * PI() / 180;
    SET vlat = JSON_VALUE(verts, CONCAT('$[', 2 * i + 1, ']')) * PI() / 180;
    SET ax = COS(vlon) * COS(vlat), ay = SIN(vlon) * COS(vlat), az = SIN(vlat);
    SET vlon = JSON_VALUE(verts, CONCAT('$[', 2 * j, ']')) * PI() / 180;
    SET vlat = JSON_VALUE(verts, CONCAT('$[', 2 * j + 1, ']')) * PI() / 180;
    SET bx = COS(vlon) * COS(vlat), by_ = SIN(vlon) * COS(vlat), bz = SIN(vlat);
    -- (a + b) x (b - a), as sciSQL's scisql_v3_rcross
    SET ex = (by_ + ay) * (bz - az) - (bz + az) * (by_ - ay);
    SET ey = (bz + az) * (bx - ax) - (bx + ax) * (bz - az);
    SET ez = (bx + ax) * (by_ - ay) - (by_ + ay) * (bx - ax);
    IF i = 0 THEN
      SET s = IF(sx * ex + sy * ey + sz * ez < 0, -1, 1);
    END IF;
    IF s * (px * ex + py * ey + pz * ez) < 0 THEN
      RETURN 0;
    END IF;
    SET i = i + 1;
  END WHILE;
  RETURN 1;
END
"""

#: In creation order (``scisql_angRed`` and ``scisql_angSep`` are used by others).
FUNCTIONS: tuple[str, ...] = (
    _FLUX_TO_AB_MAG, _ANG_RED, _ANG_SEP, _PT_IN_BOX, _PT_IN_CIRCLE, _PT_IN_ELLIPSE, _PT_IN_CPOLY,
)

_CALL = re.compile(
    r"\b(scisql_s2PtInCPoly|scisql_s2CPolyToBin|scisql_fluxToAbMag|scisql_angSep)\s*\(",
    re.IGNORECASE,
)


_INLINED = ("scisql_fluxtoabmag", "scisql_angsep")


def _ang_sep(lon1: str, lat1: str, lon2: str, lat2: str) -> str:
    """``scisql_angSep`` as one expression (the stored function's formula)."""
    x = f"SIN(({lon1} - {lon2}) * PI() / 360)"
    y = f"SIN(({lat1} - {lat2}) * PI() / 360)"
    z = f"COS(({lat1} + {lat2}) * PI() / 360)"
    d2 = f"LEAST(GREATEST(4.0 * ({x} * {x} * ({z} * {z} - {y} * {y}) + {y} * {y}), 0.0), 4.0)"
    return (f"(CASE WHEN ABS({lat1}) > 90 OR ABS({lat2}) > 90 THEN NULL "
            f"ELSE LEAST(2.0 * (180 / PI()) * ASIN(SQRT({d2} * 0.25)), 180.0) END)")


def rewrite_for_mariadb(sql: str, *, inline: bool = True) -> str:
    """The reference form as MariaDB can run it: ``scisql_fluxToAbMag`` and
    ``scisql_angSep`` inlined (a stored function costs about 2 us a call, too slow for
    the self-joins of the unsupported queries), polygons given vertex by vertex passed
    as one ``JSON_ARRAY``. ``inline=False`` keeps the stored functions (and so the
    column names MySQL gives to unaliased calls).

    >>> rewrite_for_mariadb("WHERE scisql_s2PtInCPoly(ra, decl, 1, 2, 3, 4, 5, 6) = 1")
    'WHERE scisql_s2PtInCPoly(ra, decl, JSON_ARRAY(1, 2, 3, 4, 5, 6)) = 1'
    >>> rewrite_for_mariadb("SET @p = scisql_s2CPolyToBin(1, 2, 3, 4, 5, 6)")
    'SET @p = JSON_ARRAY(1, 2, 3, 4, 5, 6)'
    >>> rewrite_for_mariadb("SELECT scisql_fluxToAbMag(gFlux_PS)")
    'SELECT (-2.5 * LOG10((gFlux_PS)) - 48.6)'
    """
    out: list[str] = []
    pos = 0
    for m in _CALL.finditer(sql):
        if m.start() < pos:
            continue
        args, end = _arguments(sql, m.end())
        if args is None or (not inline and m.group(1).lower() in _INLINED):
            continue
        out.append(sql[pos : m.start()])
        inner = [rewrite_for_mariadb(a.strip(), inline=inline) for a in args]
        name = m.group(1).lower()
        if name == "scisql_s2cpolytobin":
            out.append(f"JSON_ARRAY({', '.join(inner)})")
        elif name == "scisql_fluxtoabmag" and len(inner) == 1 and inline:
            out.append(f"(-2.5 * LOG10(({inner[0]})) - 48.6)")
        elif name == "scisql_angsep" and len(inner) == 4 and inline:
            out.append(_ang_sep(*(f"({a})" for a in inner)))
        elif name == "scisql_s2ptincpoly" and len(inner) > 3:
            out.append(f"{m.group(1)}({inner[0]}, {inner[1]}, JSON_ARRAY({', '.join(inner[2:])}))")
        else:
            out.append(f"{m.group(1)}({', '.join(inner)})")
        pos = end
    out.append(sql[pos:])
    return "".join(out)
def _arguments(sql: str, start: int) -> tuple[list[str] | None, int]:
    """Top-level comma-separated arguments from ``start`` (after ``(``) to the matching
    ``)``, and the index after it."""
    depth, args, begin, i = 0, [], start, start
    while i < len(sql):
        c = sql[i]
        if c in "'\"":
            j = sql.find(c, i + 1)
            i = len(sql) if j < 0 else j + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                args.append(sql[begin:i])
                return args, i + 1
            depth -= 1
        elif c == "," and depth == 0:
            args.append(sql[begin:i])
            begin = i + 1
        i += 1
    return None, start
