"""The scisql functions Qserv users call, as vectorised DuckDB SQL macros.

Semantics follow scisql (https://github.com/smonkewitz/scisql, ``src/udfs``): the
``s2PtIn*`` tests return 1 or 0 (INTEGER), 0 when any argument is NULL, and NULL for
invalid arguments (NaN or infinite values, latitudes outside [-90, 90], bad radii or
axes); ``angSep`` and the photometry functions return NULL when any argument is NULL,
NaN or infinite, when a flux that must be positive is not, or when the result
overflows. Boundaries are inclusive. The one deliberate difference: scisql's ellipse
test also matches the mirror image of the ellipse about the antipode of its centre,
these macros do not (see :class:`~skyshard.sphere.regions.Ellipse`).

Polygons have a variable number of arguments, which macros cannot take: the planner
replaces ``scisql_s2PtInCPoly(ra, dec, ...)`` by :func:`pt_in_polygon_sql`.

>>> import duckdb
>>> con = duckdb.connect()
>>> install(con)
>>> con.execute("SELECT scisql_s2PtInBox(0.5, 0, 359, -1, 1, 1), scisql_angSep(0, 0, 0, 90)"
...             ).fetchone()
(1, 90.0)
"""

from __future__ import annotations

import math

import duckdb

from skyshard.sphere.regions import Box, Circle, Ellipse, Polygon, Region

# Constants of scisql's photometry.h.
_AB_FLUX_SCALE = "3.630780547701013425e-20"  # 10 ** (-48.6 / 2.5)
_FIVE_OVER_2LOG10 = "1.085736204758129569e0"  # 2.5 / ln(10)
_TWO_LOG10_OVER_5 = "0.9210340371976182736e0"  # ln(10) / 2.5


def _double(value: float) -> str:
    """A DOUBLE literal (DuckDB reads plain decimals as DECIMAL) that round-trips."""
    text = repr(float(value))
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    text = text if "e" in text else text + "e0"
    return f"({text})" if text.startswith("-") else text


def _finite(*names: str) -> str:
    return " AND ".join(f"isfinite({n})" for n in names)


def _latitude(name: str) -> str:
    return f"(isfinite({name}) AND {name} >= -90 AND {name} <= 90)"


def _any_null(*names: str) -> str:
    return " OR ".join(f"{n} IS NULL" for n in names)


def _angred(name: str) -> str:
    """scisql_angred: C fmod into [0, 360) (DuckDB's ``%`` on DOUBLE is C fmod)."""
    m = f"(CAST({name} AS DOUBLE) % 360.0e0)"
    return (
        f"(CASE WHEN {m} >= 0 THEN {m} WHEN {m} + 360.0e0 = 360.0e0 THEN 0.0e0 "
        f"ELSE {m} + 360.0e0 END)"
    )


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


# --- spherical geometry ---------------------------------------------------------------

_ANG_SEP = (
    "CREATE OR REPLACE MACRO scisql_angSep(lon1, lat1, lon2, lat2) AS ("
    f"CASE WHEN {_any_null('lon1', 'lat1', 'lon2', 'lat2')} THEN NULL "
    f"WHEN NOT ({_finite('lon1', 'lon2')} AND {_latitude('lat1')} AND {_latitude('lat2')}) "
    "THEN NULL "
    "ELSE degrees(atan2("
    "sqrt(pow(cos(radians(lat2)) * sin(radians(lon2 - lon1)), 2) "
    "+ pow(cos(radians(lat1)) * sin(radians(lat2)) "
    "- sin(radians(lat1)) * cos(radians(lat2)) * cos(radians(lon2 - lon1)), 2)), "
    "sin(radians(lat1)) * sin(radians(lat2)) "
    "+ cos(radians(lat1)) * cos(radians(lat2)) * cos(radians(lon2 - lon1)))) END), "
    "(x1, y1, z1, x2, y2, z2) AS ("
    f"CASE WHEN NOT ({_finite('x1', 'y1', 'z1', 'x2', 'y2', 'z2')}) THEN NULL "
    "ELSE degrees(atan2("
    "sqrt(pow(y1 * z2 - z1 * y2, 2) + pow(z1 * x2 - x1 * z2, 2) + pow(x1 * y2 - y1 * x2, 2)), "
    "x1 * x2 + y1 * y2 + z1 * z2)) END)"
)

_PT_IN_CIRCLE = (
    "CREATE OR REPLACE MACRO scisql_s2PtInCircle(lon, lat, centerLon, centerLat, radius) AS ("
    f"CASE WHEN {_any_null('lon', 'lat', 'centerLon', 'centerLat', 'radius')} THEN 0 "
    f"WHEN NOT ({_finite('lon', 'centerLon', 'radius')} AND {_latitude('lat')} "
    f"AND {_latitude('centerLat')} AND radius >= 0 AND radius <= 180) THEN NULL "
    "WHEN abs(lat - centerLat) > radius THEN 0 "
    "WHEN least(4.0e0 * ("
    "pow(sin(radians(lon - centerLon) * 0.5e0), 2) "
    "* (pow(cos(radians(lat + centerLat) * 0.5e0), 2) "
    "- pow(sin(radians(lat - centerLat) * 0.5e0), 2)) "
    "+ pow(sin(radians(lat - centerLat) * 0.5e0), 2)), 4.0e0) "
    "<= 4.0e0 * pow(sin(radians(radius) * 0.5e0), 2) THEN 1 ELSE 0 END)"
)

_LON, _LON_MIN, _LON_MAX = _angred("lon"), _angred("lonMin"), _angred("lonMax")

_PT_IN_BOX = (
    "CREATE OR REPLACE MACRO scisql_s2PtInBox(lon, lat, lonMin, latMin, lonMax, latMax) AS ("
    f"CASE WHEN {_any_null('lon', 'lat', 'lonMin', 'latMin', 'lonMax', 'latMax')} THEN 0 "
    f"WHEN NOT ({_finite('lon', 'lonMin', 'lonMax')} AND {_latitude('lat')} "
    f"AND {_latitude('latMin')} AND {_latitude('latMax')}) THEN NULL "
    "WHEN lonMax < lonMin AND (lonMax < 0 OR lonMin > 360) THEN NULL "
    "WHEN latMin > latMax OR lat < latMin OR lat > latMax THEN 0 "
    "WHEN lonMax - lonMin >= 360 THEN 1 "
    f"WHEN {_LON_MIN} <= {_LON_MAX} THEN {_flag(f'{_LON} >= {_LON_MIN} AND {_LON} <= {_LON_MAX}')} "
    f"ELSE {_flag(f'{_LON} >= {_LON_MIN} OR {_LON} <= {_LON_MAX}')} END)"
)

# Orthographic coordinates of the point in the (north, east) frame at the centre,
# rotated by the position angle (scisql's s2PtInEllipse), plus the hemisphere test.
_XNE = (
    "(cos(radians(centerLat)) * sin(radians(lat)) "
    "- sin(radians(centerLat)) * cos(radians(lat)) * cos(radians(lon - centerLon)))"
)
_YNE = "(cos(radians(lat)) * sin(radians(lon - centerLon)))"
_X = f"(sin(radians(positionAngle)) * {_YNE} + cos(radians(positionAngle)) * {_XNE})"
_Y = f"(cos(radians(positionAngle)) * {_YNE} - sin(radians(positionAngle)) * {_XNE})"
_A2 = "pow(radians(semiMajorAxisAngle / 3600.0e0), 2)"
_B2 = "pow(radians(semiMinorAxisAngle / 3600.0e0), 2)"

_PT_IN_ELLIPSE = (
    "CREATE OR REPLACE MACRO scisql_s2PtInEllipse(lon, lat, centerLon, centerLat, "
    "semiMajorAxisAngle, semiMinorAxisAngle, positionAngle) AS ("
    f"CASE WHEN {_any_null('lon', 'lat', 'centerLon', 'centerLat')} "
    f"OR {_any_null('semiMajorAxisAngle', 'semiMinorAxisAngle', 'positionAngle')} THEN 0 "
    f"WHEN NOT ({_finite('lon')} AND {_latitude('lat')}) THEN NULL "
    "WHEN NOT isfinite(positionAngle) OR isnan(semiMajorAxisAngle) "
    "OR isnan(semiMinorAxisAngle) THEN NULL "
    "WHEN semiMinorAxisAngle < 0 OR semiMinorAxisAngle > semiMajorAxisAngle "
    "OR semiMajorAxisAngle > 36000 THEN NULL "
    f"WHEN NOT ({_finite('centerLon')} AND {_latitude('centerLat')}) THEN NULL "
    "WHEN semiMinorAxisAngle = 0 THEN 0 "
    "WHEN abs(lat - centerLat) "
    "> degrees(asin(radians(semiMajorAxisAngle / 3600.0e0))) + 1.0e-9 THEN 0 "
    "WHEN sin(radians(lat)) * sin(radians(centerLat)) "
    "+ cos(radians(lat)) * cos(radians(centerLat)) * cos(radians(lon - centerLon)) <= 0 THEN 0 "
    f"WHEN {_X} * {_X} * {_B2} + {_Y} * {_Y} * {_A2} <= {_A2} * {_B2} THEN 1 ELSE 0 END)"
)


# --- photometry -----------------------------------------------------------------------


def _photometry(name: str, params: str, conditions: str, expression: str) -> str:
    names = [p.strip() for p in params.split(",")]
    checks = " AND ".join([_finite(*names), conditions] if conditions else [_finite(*names)])
    return (
        f"CREATE OR REPLACE MACRO scisql_{name}({params}) AS ("
        f"CASE WHEN {checks} THEN (CASE WHEN isfinite({expression}) THEN {expression} END) END)"
    )


def _ab_to_flux(mag: str) -> str:
    return f"pow(10.0e0, -0.4e0 * ({mag} + 48.6e0))"


def _ab_to_njy(mag: str) -> str:
    return f"pow(10.0e0, -0.4e0 * ({mag} - 31.4e0))"


def _dn_to_flux(dn: str, fm0: str) -> str:
    return f"({_AB_FLUX_SCALE} * {dn} / {fm0})"


def _dn_to_flux_sigma(dn: str, dn_sigma: str, fm0: str, fm0_sigma: str) -> str:
    return (
        f"({_AB_FLUX_SCALE} * sqrt(pow({dn} * {fm0_sigma}, 2) + pow({dn_sigma} * {fm0}, 2)) "
        f"/ ({fm0} * {fm0}))"
    )


def _flux_to_dn_sigma(flux: str, flux_sigma: str, fm0: str, fm0_sigma: str) -> str:
    return f"(sqrt(pow({flux} * {fm0_sigma}, 2) + pow({fm0} * {flux_sigma}, 2)) / {_AB_FLUX_SCALE})"


_PHOTOMETRY = (
    _photometry("fluxToAbMag", "flux", "flux > 0", "-2.5e0 * log10(flux) - 48.6e0"),
    _photometry(
        "fluxToAbMagSigma",
        "flux, fluxSigma",
        "flux > 0 AND fluxSigma >= 0",
        f"{_FIVE_OVER_2LOG10} * fluxSigma / flux",
    ),
    _photometry("abMagToFlux", "mag", "", _ab_to_flux("mag")),
    _photometry(
        "abMagToFluxSigma",
        "mag, magSigma",
        "magSigma >= 0",
        f"magSigma * {_ab_to_flux('mag')} * {_TWO_LOG10_OVER_5}",
    ),
    _photometry("nanojanskyToAbMag", "flux", "flux > 0", "-2.5e0 * log10(flux) + 31.4e0"),
    _photometry(
        "nanojanskyToAbMagSigma",
        "flux, fluxSigma",
        "flux > 0 AND fluxSigma >= 0",
        f"{_FIVE_OVER_2LOG10} * fluxSigma / flux",
    ),
    _photometry("abMagToNanojansky", "mag", "", _ab_to_njy("mag")),
    _photometry(
        "abMagToNanojanskySigma",
        "mag, magSigma",
        "magSigma >= 0",
        f"magSigma * {_ab_to_njy('mag')} * {_TWO_LOG10_OVER_5}",
    ),
    _photometry("dnToFlux", "dn, fluxMag0", "fluxMag0 > 0", _dn_to_flux("dn", "fluxMag0")),
    _photometry(
        "dnToFluxSigma",
        "dn, dnSigma, fluxMag0, fluxMag0Sigma",
        "dnSigma >= 0 AND fluxMag0 > 0 AND fluxMag0Sigma >= 0",
        _dn_to_flux_sigma("dn", "dnSigma", "fluxMag0", "fluxMag0Sigma"),
    ),
    _photometry(
        "dnToAbMag",
        "dn, fluxMag0",
        "dn > 0 AND fluxMag0 > 0",
        f"-2.5e0 * log10({_dn_to_flux('dn', 'fluxMag0')}) - 48.6e0",
    ),
    _photometry(
        "dnToAbMagSigma",
        "dn, dnSigma, fluxMag0, fluxMag0Sigma",
        "dn > 0 AND dnSigma >= 0 AND fluxMag0 > 0 AND fluxMag0Sigma >= 0",
        f"{_FIVE_OVER_2LOG10} * {_dn_to_flux_sigma('dn', 'dnSigma', 'fluxMag0', 'fluxMag0Sigma')} "
        f"/ {_dn_to_flux('dn', 'fluxMag0')}",
    ),
    _photometry(
        "fluxToDn", "flux, fluxMag0", "fluxMag0 > 0", f"(flux * fluxMag0 / {_AB_FLUX_SCALE})"
    ),
    _photometry(
        "fluxToDnSigma",
        "flux, fluxSigma, fluxMag0, fluxMag0Sigma",
        "fluxSigma >= 0 AND fluxMag0 > 0 AND fluxMag0Sigma >= 0",
        _flux_to_dn_sigma("flux", "fluxSigma", "fluxMag0", "fluxMag0Sigma"),
    ),
    _photometry(
        "abMagToDn",
        "mag, fluxMag0",
        "fluxMag0 > 0",
        f"({_ab_to_flux('mag')} * fluxMag0 / {_AB_FLUX_SCALE})",
    ),
    _photometry(
        "abMagToDnSigma",
        "mag, magSigma, fluxMag0, fluxMag0Sigma",
        "magSigma >= 0 AND fluxMag0 > 0 AND fluxMag0Sigma >= 0",
        _flux_to_dn_sigma(
            _ab_to_flux("mag"),
            f"(magSigma * {_ab_to_flux('mag')} * {_TWO_LOG10_OVER_5})",
            "fluxMag0",
            "fluxMag0Sigma",
        ),
    ),
)

#: ``CREATE OR REPLACE MACRO`` statements of every scisql function skyshard provides.
MACROS: tuple[str, ...] = (_ANG_SEP, _PT_IN_CIRCLE, _PT_IN_BOX, _PT_IN_ELLIPSE, *_PHOTOMETRY)


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or replace) the scisql macros in the connection's default catalog."""
    for statement in MACROS:
        con.execute(statement)


# --- expressions built per query ------------------------------------------------------


def pt_in_polygon_sql(ra_sql: str, dec_sql: str, polygon: Polygon) -> str:
    """SQL for ``scisql_s2PtInCPoly(ra, dec, <polygon vertices>)``: 1, 0, or NULL as
    scisql, with the edge normals computed here. Each edge test is
    ``cos(dec) * |n_xy| * cos(ra - atan2(n_y, n_x)) + n_z * sin(dec) >= 0``.

    >>> sql = pt_in_polygon_sql("ra", "dec", Polygon(((0, 0), (10, 0), (0, 10))))
    >>> duckdb.sql(f"SELECT {sql} FROM (VALUES (1.0, 1.0), (20.0, 1.0)) t(ra, dec)").fetchall()
    [(1,), (0,)]
    """
    ra, dec = f"({ra_sql})", f"({dec_sql})"
    edges = []
    for nx, ny, nz in polygon.edge_normals:
        scale, phase = math.hypot(nx, ny), math.atan2(ny, nx)
        edges.append(
            f"cos(radians({dec})) * cos(radians({ra}) - {_double(phase)}) * {_double(scale)} "
            f"+ {_double(nz)} * sin(radians({dec})) >= 0"
        )
    return (
        f"(CASE WHEN {ra} IS NULL OR {dec} IS NULL THEN 0 "
        f"WHEN NOT (isfinite({ra}) AND {_latitude(dec)}) THEN NULL "
        f"WHEN {' AND '.join(edges)} THEN 1 ELSE 0 END)"
    )


def bbox_prefilter_sql(ra_sql: str, dec_sql: str, region: Region) -> str:
    """A conservative box test on the raw columns, for Parquet row-group pruning; AND it
    before the exact predicate. Assumes RA values in [0, 360], as catalogs store them.

    >>> bbox_prefilter_sql("ra", "dec", Box(10.0, -1.0, 20.0, 1.0))
    '((dec) BETWEEN (-1.0e0) AND 1.0e0 AND ((ra) BETWEEN 10.0e0 AND 20.0e0))'
    """
    bounds = region.lonlat_bounds()
    if bounds.empty:
        return "FALSE"
    ra, dec = f"({ra_sql})", f"({dec_sql})"
    dec_test = f"{dec} BETWEEN {_double(bounds.dec_min_deg)} AND {_double(bounds.dec_max_deg)}"
    if bounds.full_ra:
        return f"({dec_test})"
    ra_tests = " OR ".join(
        f"{ra} BETWEEN {_double(lo)} AND {_double(hi)}" for lo, hi in bounds.ra_ranges_deg
    )
    return f"({dec_test} AND ({ra_tests}))"


def region_predicate_sql(ra_sql: str, dec_sql: str, region: Region) -> str:
    """The exact scisql test of ``region`` as SQL returning 1/0 (macros installed).

    >>> region_predicate_sql("ra", "dec", Circle(1.5, 3.0, 1.0))
    'scisql_s2PtInCircle(ra, dec, 1.5e0, 3.0e0, 1.0e0)'
    """
    if isinstance(region, Polygon):
        return pt_in_polygon_sql(ra_sql, dec_sql, region)
    if isinstance(region, Circle):
        name, args = "scisql_s2PtInCircle", (region.ra_deg, region.dec_deg, region.radius_deg)
    elif isinstance(region, Box):
        name = "scisql_s2PtInBox"
        args = (region.ra_min_deg, region.dec_min_deg, region.ra_max_deg, region.dec_max_deg)
    elif isinstance(region, Ellipse):
        name = "scisql_s2PtInEllipse"
        args = (
            region.ra_deg,
            region.dec_deg,
            region.semi_major_arcsec,
            region.semi_minor_arcsec,
            region.pos_angle_deg,
        )
    else:
        raise TypeError(f"not a region: {region!r}")
    return f"{name}({ra_sql}, {dec_sql}, {', '.join(_double(a) for a in args)})"


__all__ = ["MACROS", "bbox_prefilter_sql", "install", "pt_in_polygon_sql", "region_predicate_sql"]
