"""Sky regions with scisql semantics: circle, lon/lat box, ellipse and convex polygon.

Angles are degrees everywhere, except the ellipse axes, which are arcseconds as in
``scisql_s2PtInEllipse``. Boundaries are inclusive, as in scisql. Each region has

* ``contains(ra_deg, dec_deg)``: exact numpy membership test, the reference that the
  SQL macros of :mod:`skyshard.engine.macros` must agree with;
* ``bounding_circle()``: a circle containing the region (conservative);
* ``lonlat_bounds()``: a dec range and RA ranges containing the region (conservative),
  used to build Parquet-prunable prefilters.

>>> Circle(10.0, 20.0, 1.0).contains(np.array([10.5, 12.0]), np.array([20.0, 20.0]))
array([ True, False])
>>> Box(359.0, -1.0, 1.0, 1.0).contains(np.array([0.5, 180.0]), np.array([0.0, 0.0]))
array([ True, False])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeAlias

import numpy as np

from skyshard.errors import UserError

#: Margin (degrees) added by the conservative bounds to absorb floating-point rounding.
BOUNDS_PAD_DEG = 1e-8

#: scisql rejects ellipses whose semi-major axis exceeds 10 degrees.
MAX_SEMI_MAJOR_ARCSEC = 36000.0

_FULL_RA: tuple[tuple[float, float], ...] = ((0.0, 360.0),)
_EDGE_EPS = 1e-14  # normals shorter than this mean coincident or antipodal vertices
_CORNER_TOL = 1e-12  # tolerance of the half-space tests that find polygon corners
_FLAT_TOL = 1e-12  # radians (2e-7 arcsec): vertices this close to one great circle are flat


class RegionError(UserError):
    """Invalid region parameters; ``argument`` names the offending argument."""

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


# --- scalar validation ----------------------------------------------------------------


def _finite(name: str, value: object, argument: str | None = None) -> float:
    argument = argument or name
    if isinstance(value, bool):
        raise RegionError(f"{name} must be a number, not {value!r}", argument=argument)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RegionError(f"{name} must be a number, not {value!r}", argument=argument) from None
    if not math.isfinite(number):
        raise RegionError(f"{name} must be finite, not {number!r}", argument=argument)
    return number


def _latitude(name: str, value: object, argument: str | None = None) -> float:
    number = _finite(name, value, argument)
    if not -90.0 <= number <= 90.0:
        raise RegionError(
            f"{name} must lie in [-90, 90], not {number!r}", argument=argument or name
        )
    return number


# --- vector helpers -------------------------------------------------------------------


def reduce_ra_deg(ra_deg: float | np.ndarray) -> np.ndarray:
    """RA range-reduced to [0, 360) exactly as scisql does (C ``fmod``).

    >>> reduce_ra_deg(np.array([-10.0, 360.0, 725.0])).tolist()
    [350.0, 0.0, 5.0]
    """
    angle = np.fmod(np.asarray(ra_deg, dtype=np.float64), 360.0)
    angle = np.where(angle < 0.0, angle + 360.0, angle)
    return np.where(angle == 360.0, 0.0, angle)


def unit_vectors(ra_deg: float | np.ndarray, dec_deg: float | np.ndarray) -> np.ndarray:
    """Unit vectors, shape ``(..., 3)``, of positions in degrees.

    >>> unit_vectors(90.0, 0.0).round(12).tolist()
    [0.0, 1.0, 0.0]
    """
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def lonlat_deg(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of vectors of any norm, RA in [0, 360).

    >>> [v.tolist() for v in lonlat_deg(np.array([0.0, -2.0, 0.0]))]
    [270.0, 0.0]
    """
    v = np.asarray(vectors, dtype=np.float64)
    ra = reduce_ra_deg(np.degrees(np.arctan2(v[..., 1], v[..., 0])))
    dec = np.degrees(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    return ra, dec


def angular_separation_deg(
    ra1_deg: float | np.ndarray,
    dec1_deg: float | np.ndarray,
    ra2_deg: float | np.ndarray,
    dec2_deg: float | np.ndarray,
) -> np.ndarray:
    """Angular distance in degrees (Vincenty's formula, accurate at all separations).

    >>> float(angular_separation_deg(0.0, 0.0, 0.0, 90.0))
    90.0
    """
    dra = np.radians(np.asarray(ra2_deg, dtype=np.float64) - ra1_deg)
    d1 = np.radians(np.asarray(dec1_deg, dtype=np.float64))
    d2 = np.radians(np.asarray(dec2_deg, dtype=np.float64))
    num = np.hypot(
        np.cos(d2) * np.sin(dra),
        np.cos(d1) * np.sin(d2) - np.sin(d1) * np.cos(d2) * np.cos(dra),
    )
    den = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den))


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _points(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays of the points and the mask of valid ones (finite, |dec| <= 90)."""
    ra, dec = np.broadcast_arrays(
        np.asarray(ra_deg, dtype=np.float64), np.asarray(dec_deg, dtype=np.float64)
    )
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(ra) & np.isfinite(dec) & (dec >= -90.0) & (dec <= 90.0)
    return ra, dec, valid


def _ra_interval(start_deg: float, width_deg: float) -> tuple[tuple[float, float], ...]:
    """RA ranges within [0, 360] covering ``[start, start + width]`` modulo 360."""
    if width_deg >= 360.0:
        return _FULL_RA
    start = float(reduce_ra_deg(start_deg))
    end = start + width_deg
    if end <= 360.0:
        return ((start, end),)
    return ((0.0, end - 360.0), (start, 360.0))


def _merge_ra(ranges: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


@dataclass(frozen=True)
class LonLatBounds:
    """A dec range and RA ranges (closed, within [0, 360], sorted, disjoint) that
    contain a region; no RA range means the region is empty.

    >>> Box(350.0, -1.0, 10.0, 1.0).lonlat_bounds().ra_ranges_deg
    ((0.0, 10.0), (350.0, 360.0))
    """

    dec_min_deg: float
    dec_max_deg: float
    ra_ranges_deg: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dec_min_deg", max(-90.0, float(self.dec_min_deg)))
        object.__setattr__(self, "dec_max_deg", min(90.0, float(self.dec_max_deg)))
        clipped = [(max(0.0, lo), min(360.0, hi)) for lo, hi in self.ra_ranges_deg]
        object.__setattr__(self, "ra_ranges_deg", _merge_ra(clipped))

    @property
    def full_ra(self) -> bool:
        return self.ra_ranges_deg == _FULL_RA

    @property
    def empty(self) -> bool:
        return not self.ra_ranges_deg


# --- circle ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Circle:
    """Points within ``radius_deg`` of the centre, boundary included
    (``scisql_s2PtInCircle``, ``qserv_areaspec_circle``).

    >>> Circle(-10.0, 0.0, 2.0).ra_deg
    350.0
    """

    ra_deg: float
    dec_deg: float
    radius_deg: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "ra_deg", float(reduce_ra_deg(_finite("ra_deg", self.ra_deg))))
        object.__setattr__(self, "dec_deg", _latitude("dec_deg", self.dec_deg))
        radius = _finite("radius_deg", self.radius_deg)
        if not 0.0 < radius <= 180.0:
            raise RegionError(
                f"radius_deg must lie in (0, 180], not {radius!r}", argument="radius_deg"
            )
        object.__setattr__(self, "radius_deg", radius)

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
        """scisql's test: squared chord length (haversine form) against the radius."""
        ra, dec, valid = _points(ra_deg, dec_deg)
        with np.errstate(invalid="ignore"):
            x = np.sin(np.radians(ra - self.ra_deg) * 0.5) ** 2
            y = np.sin(np.radians(dec - self.dec_deg) * 0.5) ** 2
            z = np.cos(np.radians(dec + self.dec_deg) * 0.5) ** 2
            chord2 = np.clip(4.0 * (x * (z - y) + y), 0.0, 4.0)
            limit = 4.0 * math.sin(math.radians(self.radius_deg) * 0.5) ** 2
            near = np.abs(dec - self.dec_deg) <= self.radius_deg
            return valid & near & (chord2 <= limit)

    def bounding_circle(self) -> Circle:
        return self

    def lonlat_bounds(self) -> LonLatBounds:
        """Exact extent of the circle grown by :data:`BOUNDS_PAD_DEG`."""
        radius = min(self.radius_deg + BOUNDS_PAD_DEG, 180.0)
        lo, hi = self.dec_deg - radius, self.dec_deg + radius
        if lo <= -90.0 or hi >= 90.0:
            return LonLatBounds(lo, hi, _FULL_RA)
        dec = abs(self.dec_deg) + BOUNDS_PAD_DEG
        ratio = math.sin(math.radians(radius)) / math.cos(math.radians(dec))
        if ratio >= 1.0:
            return LonLatBounds(lo, hi, _FULL_RA)
        half = math.degrees(math.asin(ratio)) + BOUNDS_PAD_DEG
        return LonLatBounds(lo, hi, _ra_interval(self.ra_deg - half, 2.0 * half))


# --- box ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """Longitude/latitude box, boundary included (``scisql_s2PtInBox``,
    ``qserv_areaspec_box``).

    ``ra_min_deg > ra_max_deg`` is a box across RA 0/360 and needs both in [0, 360];
    otherwise the two are range-reduced, and a width of 360 or more spans all RAs.

    >>> Box(350.0, -1.0, 370.0, 1.0)
    Box(ra_min_deg=350.0, dec_min_deg=-1.0, ra_max_deg=10.0, dec_max_deg=1.0)
    >>> Box(-5.0, 0.0, 400.0, 1.0).full_ra
    True
    """

    ra_min_deg: float
    dec_min_deg: float
    ra_max_deg: float
    dec_max_deg: float

    def __post_init__(self) -> None:
        ra_min = _finite("ra_min_deg", self.ra_min_deg)
        ra_max = _finite("ra_max_deg", self.ra_max_deg)
        dec_min = _latitude("dec_min_deg", self.dec_min_deg)
        dec_max = _latitude("dec_max_deg", self.dec_max_deg)
        if dec_min > dec_max:
            raise RegionError(
                f"dec_min_deg ({dec_min!r}) must not exceed dec_max_deg ({dec_max!r})",
                argument="dec_min_deg",
            )
        if ra_max < ra_min and (ra_max < 0.0 or ra_min > 360.0):
            raise RegionError(
                f"ra_min_deg ({ra_min!r}) > ra_max_deg ({ra_max!r}) denotes a box across "
                "RA 0/360 and needs both in [0, 360]",
                argument="ra_min_deg",
            )
        if ra_max - ra_min >= 360.0:
            ra_min, ra_max = 0.0, 360.0
        else:
            ra_min, ra_max = float(reduce_ra_deg(ra_min)), float(reduce_ra_deg(ra_max))
        object.__setattr__(self, "ra_min_deg", ra_min)
        object.__setattr__(self, "ra_max_deg", ra_max)
        object.__setattr__(self, "dec_min_deg", dec_min)
        object.__setattr__(self, "dec_max_deg", dec_max)

    @property
    def full_ra(self) -> bool:
        return self.ra_max_deg - self.ra_min_deg >= 360.0

    @property
    def wraps(self) -> bool:
        """True for a box across RA 0/360."""
        return self.ra_min_deg > self.ra_max_deg

    @property
    def width_deg(self) -> float:
        width = self.ra_max_deg - self.ra_min_deg
        return width + 360.0 if width < 0.0 else width

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
        ra, dec, valid = _points(ra_deg, dec_deg)
        with np.errstate(invalid="ignore"):
            inside = valid & (dec >= self.dec_min_deg) & (dec <= self.dec_max_deg)
            if self.full_ra:
                return inside
            lon = reduce_ra_deg(ra)
            if self.wraps:
                return inside & ((lon >= self.ra_min_deg) | (lon <= self.ra_max_deg))
            return inside & (lon >= self.ra_min_deg) & (lon <= self.ra_max_deg)

    def bounding_circle(self) -> Circle:
        """Smallest of: the polar caps bounding the dec range, and (for boxes narrower
        than 180 degrees) the circle about the box centre through its farthest corner."""
        candidates = [
            (0.0, 90.0, 90.0 - self.dec_min_deg),
            (0.0, -90.0, 90.0 + self.dec_max_deg),
        ]
        width = self.width_deg
        if not self.full_ra and width < 180.0:
            ra_mid = self.ra_min_deg + 0.5 * width
            dec_mid = 0.5 * (self.dec_min_deg + self.dec_max_deg)
            corners_ra = np.array([self.ra_min_deg, self.ra_max_deg] * 2)
            corners_dec = np.array([self.dec_min_deg] * 2 + [self.dec_max_deg] * 2)
            reach = angular_separation_deg(ra_mid, dec_mid, corners_ra, corners_dec).max()
            candidates.append((ra_mid, dec_mid, float(reach)))
        ra, dec, radius = min(candidates, key=lambda c: c[2])
        return Circle(ra, dec, min(radius + BOUNDS_PAD_DEG, 180.0))

    def lonlat_bounds(self) -> LonLatBounds:
        """Exact: the box is its own lon/lat bounds."""
        if self.full_ra:
            ranges = _FULL_RA
        elif self.wraps:
            ranges = ((self.ra_min_deg, 360.0), (0.0, self.ra_max_deg))
        else:
            ranges = ((self.ra_min_deg, self.ra_max_deg),)
        return LonLatBounds(self.dec_min_deg, self.dec_max_deg, ranges)


# --- ellipse --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ellipse:
    """scisql's spherical ellipse (``scisql_s2PtInEllipse``, ``qserv_areaspec_ellipse``).

    A point is inside when its orthographic projection onto the plane tangent at the
    centre, in axes rotated by ``pos_angle_deg`` east of north (from north towards
    increasing RA) for the major axis, satisfies ``(x/a)**2 + (y/b)**2 <= 1`` with ``a``
    and ``b`` the semi-axes in radians. Unlike scisql, points in the hemisphere opposite
    the centre are outside (scisql also matches the mirror image about the antipode).

    >>> e = Ellipse(0.0, 0.0, 3600.0, 360.0, 90.0)  # major axis along RA
    >>> e.contains(np.array([0.9, 0.0]), np.array([0.0, 0.9])).tolist()
    [True, False]
    """

    ra_deg: float
    dec_deg: float
    semi_major_arcsec: float
    semi_minor_arcsec: float
    pos_angle_deg: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "ra_deg", float(reduce_ra_deg(_finite("ra_deg", self.ra_deg))))
        object.__setattr__(self, "dec_deg", _latitude("dec_deg", self.dec_deg))
        major = _finite("semi_major_arcsec", self.semi_major_arcsec)
        minor = _finite("semi_minor_arcsec", self.semi_minor_arcsec)
        if not 0.0 < major <= MAX_SEMI_MAJOR_ARCSEC:
            raise RegionError(
                f"semi_major_arcsec must lie in (0, {MAX_SEMI_MAJOR_ARCSEC:g}], not {major!r}",
                argument="semi_major_arcsec",
            )
        if not 0.0 < minor <= major:
            raise RegionError(
                f"semi_minor_arcsec must lie in (0, semi_major_arcsec={major!r}], not {minor!r}",
                argument="semi_minor_arcsec",
            )
        object.__setattr__(self, "semi_major_arcsec", major)
        object.__setattr__(self, "semi_minor_arcsec", minor)
        object.__setattr__(self, "pos_angle_deg", _finite("pos_angle_deg", self.pos_angle_deg))

    @property
    def semi_major_rad(self) -> float:
        return math.radians(self.semi_major_arcsec / 3600.0)

    @property
    def semi_minor_rad(self) -> float:
        return math.radians(self.semi_minor_arcsec / 3600.0)

    def frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit vectors of the centre, the major-axis and the minor-axis directions."""
        ra, dec = math.radians(self.ra_deg), math.radians(self.dec_deg)
        centre = unit_vectors(self.ra_deg, self.dec_deg)
        sin_dec, cos_dec = math.sin(dec), math.cos(dec)
        north = np.array([-sin_dec * math.cos(ra), -sin_dec * math.sin(ra), cos_dec])
        east = np.array([-math.sin(ra), math.cos(ra), 0.0])
        pa = math.radians(self.pos_angle_deg)
        major = math.cos(pa) * north + math.sin(pa) * east
        minor = math.cos(pa) * east - math.sin(pa) * north
        return centre, major, minor

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
        ra, dec, valid = _points(ra_deg, dec_deg)
        centre, major, minor = self.frame()
        with np.errstate(invalid="ignore"):
            v = unit_vectors(ra, dec)
            x, y = v @ major, v @ minor
            a2, b2 = self.semi_major_rad**2, self.semi_minor_rad**2
            return valid & (v @ centre > 0.0) & (x * x * b2 + y * y * a2 <= a2 * b2)

    def bounding_circle(self) -> Circle:
        """The ellipse lies within ``asin(a)`` of its centre (orthographic distance)."""
        radius = math.degrees(math.asin(min(self.semi_major_rad, 1.0)))
        return Circle(self.ra_deg, self.dec_deg, radius + BOUNDS_PAD_DEG)

    def lonlat_bounds(self) -> LonLatBounds:
        return self.bounding_circle().lonlat_bounds()


# --- polygon --------------------------------------------------------------------------


def _same_point(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a == b or (a[1] == b[1] and abs(a[1]) == 90.0)


@dataclass(frozen=True)
class Polygon:
    """Spherical polygon with great-circle edges (``scisql_s2PtInCPoly``,
    ``qserv_areaspec_poly``); vertices ``((ra_deg, dec_deg), ...)`` in either winding.

    As in scisql, the region is the intersection of the half-spaces bounded by the edge
    planes, oriented so that the sum of the vertices is inside. For a convex polygon that
    is the polygon; scisql does not check convexity, and neither does this class, so
    that queries written for Qserv give the same rows (a self-intersecting "bowtie"
    selects nothing). Repeated consecutive vertices (e.g. a closing vertex equal to the
    first) are dropped.

    >>> Polygon.from_flat([1.0, 3.0, 1.5, 2.0, 2.0, 4.0]).contains(
    ...     np.array([1.5, 1.0]), np.array([3.0, 4.0])).tolist()
    [True, False]
    """

    vertices: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        try:
            raw = list(self.vertices)
        except TypeError:
            raise RegionError(
                "vertices must be a sequence of (ra, dec) pairs", argument="vertices"
            ) from None
        pairs: list[tuple[float, float]] = []
        for index, vertex in enumerate(raw):
            try:
                ra, dec = vertex
            except (TypeError, ValueError):
                raise RegionError(
                    f"vertices[{index}] must be an (ra, dec) pair, not {vertex!r}",
                    argument="vertices",
                ) from None
            pair = (
                float(reduce_ra_deg(_finite(f"vertices[{index}] ra", ra, "vertices"))),
                _latitude(f"vertices[{index}] dec", dec, "vertices"),
            )
            if not pairs or not _same_point(pairs[-1], pair):
                pairs.append(pair)
        while len(pairs) > 1 and _same_point(pairs[0], pairs[-1]):
            pairs.pop()
        if len(pairs) < 3:
            raise RegionError(
                f"a polygon needs at least 3 distinct vertices, got {len(pairs)}",
                argument="vertices",
            )
        for i, a in enumerate(pairs):
            for j in range(i + 2, len(pairs)):
                if _same_point(a, pairs[j]):
                    raise RegionError(
                        f"vertices[{j}] repeats vertices[{i}]: a polygon cannot pass through "
                        "a vertex twice", argument="vertices")
        object.__setattr__(self, "vertices", tuple(pairs))
        normals = self._raw_normals
        lengths = np.linalg.norm(normals, axis=1)
        if (short := np.flatnonzero(lengths < _EDGE_EPS)).size:
            i = int(short[0])
            raise RegionError(
                f"vertices[{i}] and vertices[{(i + 1) % len(pairs)}] are (nearly) coincident "
                "or antipodal, so the edge between them is undefined",
                argument="vertices",
            )
        # Flat: every vertex within _FLAT_TOL radians of the plane of the longest edge (the
        # best-conditioned normal; short edges have normals too noisy to compare).
        plane = normals[int(np.argmax(lengths))] / lengths.max()
        if np.abs(self.vertex_vectors @ plane).max() < _FLAT_TOL:
            raise RegionError(
                "the polygon vertices lie on a single great circle", argument="vertices"
            )

    @classmethod
    def from_flat(cls, coordinates: Sequence[float]) -> Polygon:
        """From scisql's argument order ``ra1, dec1, ra2, dec2, ...``."""
        values = list(coordinates)
        if len(values) % 2:
            raise RegionError(
                f"polygon vertices come as (ra, dec) pairs; got {len(values)} values",
                argument="vertices",
            )
        return cls(tuple(zip(values[0::2], values[1::2], strict=True)))

    @cached_property
    def vertex_vectors(self) -> np.ndarray:
        """Unit vectors of the vertices, shape ``(n, 3)``."""
        ra, dec = np.array(self.vertices, dtype=np.float64).T
        return unit_vectors(ra, dec)

    @cached_property
    def _raw_normals(self) -> np.ndarray:
        v = self.vertex_vectors
        w = np.roll(v, -1, axis=0)
        edges = np.cross(v + w, w - v)  # 2 v x w, computed as scisql does
        if float(v.sum(axis=0) @ edges[0]) < 0.0:
            edges = -edges
        return edges

    @cached_property
    def edge_normals(self) -> np.ndarray:
        """Unit normals of the edge planes, pointing inside, shape ``(n, 3)``."""
        return _normalize(self._raw_normals)

    @cached_property
    def corners(self) -> np.ndarray:
        """Unit vectors of the corners of the selected region, in counter-clockwise order
        seen from outside the sphere: the vertices for a convex polygon, the corners of
        the intersection of the edge half-spaces otherwise; empty if that is empty."""
        n = self.edge_normals
        i, j = np.triu_indices(len(n), 1)
        cross = np.cross(n[i], n[j])
        norms = np.linalg.norm(cross, axis=1)
        cross = cross[norms > _CORNER_TOL] / norms[norms > _CORNER_TOL, None]
        candidates = np.concatenate([cross, -cross])
        candidates = candidates[(candidates @ n.T >= -_CORNER_TOL).all(axis=1)]
        if len(candidates) == 0:
            return candidates.reshape(0, 3)
        centre = candidates.sum(axis=0)
        if np.linalg.norm(centre) < 1e-9:
            return candidates  # a lune: no meaningful order
        e1, e2 = tangent_basis(_normalize(centre))
        order = np.argsort(np.arctan2(candidates @ e2, candidates @ e1))
        ordered = candidates[order]
        keep = np.linalg.norm(ordered - np.roll(ordered, 1, axis=0), axis=1) > 1e-11
        keep[0] = True
        return ordered[keep]

    @property
    def is_empty(self) -> bool:
        return len(self.corners) == 0

    @property
    def is_convex(self) -> bool:
        """True when every vertex lies on the inner side of every edge."""
        return bool((self.vertex_vectors @ self.edge_normals.T >= -_CORNER_TOL).all())

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
        ra, dec, valid = _points(ra_deg, dec_deg)
        with np.errstate(invalid="ignore"):
            return valid & (unit_vectors(ra, dec) @ self.edge_normals.T >= 0.0).all(axis=-1)

    def bounding_circle(self) -> Circle:
        corners = self.corners
        if len(corners) == 0:
            ra, dec = self.vertices[0]
            return Circle(ra, dec, BOUNDS_PAD_DEG)
        centre = corners.sum(axis=0)
        if np.linalg.norm(centre) < 1e-9:
            return Circle(0.0, 90.0, 180.0)
        ra, dec = (float(x) for x in lonlat_deg(centre))
        cosines = corners @ _normalize(centre)
        reach = math.degrees(math.acos(min(1.0, float(cosines.min()))))
        # Beyond 90 degrees an edge may pass farther away than its end corners.
        radius = reach + BOUNDS_PAD_DEG if reach < 89.0 else 180.0
        return Circle(ra, dec, min(radius, 180.0))

    def lonlat_bounds(self) -> LonLatBounds:
        corners = self.corners
        if len(corners) == 0:
            return LonLatBounds(0.0, 0.0, ())
        if len(corners) < 3 or np.linalg.norm(corners.sum(axis=0)) < 1e-9:
            return self.bounding_circle().lonlat_bounds()
        pad_sin = math.sin(math.radians(BOUNDS_PAD_DEG))
        n_z = self.edge_normals[:, 2]
        north, south = bool((n_z >= -pad_sin).all()), bool((n_z <= pad_sin).all())
        following = np.roll(corners, -1, axis=0)
        decs = list(lonlat_deg(corners)[1])
        for a, b in zip(corners, following, strict=True):
            decs.extend(_arc_dec_extrema(a, b))
        dec_min = -90.0 if south else min(decs) - BOUNDS_PAD_DEG
        dec_max = 90.0 if north else max(decs) + BOUNDS_PAD_DEG
        if north or south:
            return LonLatBounds(dec_min, dec_max, _FULL_RA)
        cos_edge = math.cos(math.radians(max(abs(dec_min), abs(dec_max))))
        if cos_edge < 1e-6:
            return LonLatBounds(dec_min, dec_max, _FULL_RA)
        pad_ra = BOUNDS_PAD_DEG / cos_edge + BOUNDS_PAD_DEG
        ranges: list[tuple[float, float]] = []
        for a, b in zip(corners, following, strict=True):
            start, width = _arc_ra_interval(a, b)
            ranges.extend(_ra_interval(start - pad_ra, width + 2.0 * pad_ra))
        return LonLatBounds(dec_min, dec_max, ranges)


def tangent_basis(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing ``centre`` to a right-handed orthonormal basis."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(centre[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = _normalize(np.cross(helper, centre))
    return e1, np.cross(centre, e1)


def _arc_dec_extrema(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Declinations of the highest and lowest points of the great-circle arc a->b when
    they lie inside the arc (the short one, < 180 degrees)."""
    m = np.cross(a, b)
    norm = np.linalg.norm(m)
    if norm == 0.0:
        return []
    m = m / norm
    top = np.array([0.0, 0.0, 1.0]) - m[2] * m
    if np.linalg.norm(top) < 1e-15:
        return []  # the arc lies on the equator
    top = _normalize(top)
    found = []
    for p in (top, -top):
        if np.cross(a, p) @ m >= 0.0 and np.cross(p, b) @ m >= 0.0:
            found.append(float(lonlat_deg(p)[1]))
    return found


def _arc_ra_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(start, width) of the RA swept by the short great-circle arc a->b; RA is
    monotonic along an arc through no pole, so its midpoint tells the direction."""
    (ra_a, ra_b, ra_m), _ = lonlat_deg(np.stack([a, b, a + b]))
    forward = (ra_b - ra_a) % 360.0
    if (ra_m - ra_a) % 360.0 <= forward:
        return float(ra_a), float(forward)
    return float(ra_b), float((ra_a - ra_b) % 360.0)


Region: TypeAlias = Circle | Box | Ellipse | Polygon

__all__ = [
    "BOUNDS_PAD_DEG",
    "MAX_SEMI_MAJOR_ARCSEC",
    "Box",
    "Circle",
    "Ellipse",
    "LonLatBounds",
    "Polygon",
    "Region",
    "RegionError",
    "angular_separation_deg",
    "lonlat_deg",
    "reduce_ra_deg",
    "tangent_basis",
    "unit_vectors",
]
