"""Conservative HEALPix (NESTED) coverage of regions, and ``_healpix_29`` of positions.

Coverage may include cells that the region misses but never drops one it touches. It
does not use cdshealpix's region searches, which drop cells in some cases (cdshealpix
0.9: ``zone_search`` on some lon/lat boxes, ``polygon_search`` on polygons around a
pole, ``cone_search`` beyond ~150 degrees). Instead it descends the HEALPix hierarchy,
testing the cap around each cell (the HEALPix maximum pixel radius, grown by 1% and
:data:`~skyshard.sphere.regions.BOUNDS_PAD_DEG`) against the region, and splitting the
cells that straddle its boundary down to two orders below the one asked for. Small
circles (the cones of most queries) are the exception: cdshealpix's cone search covers
them 15-50 times faster (0.03-0.05 ms against 0.6-1.4 ms per 1' cone at orders 5 and
12, in two timings over 300 random cones), on the circle grown by twice the cap of its cells, a margin that
no rounding at the rim can cross (``_small_circle``).

>>> pixels(Circle(30.0, 20.0, 0.2), 3).tolist()
[10]
>>> healpix29_ranges(Circle(30.0, 20.0, 0.2), 3)
[(45035996273704960, 49539595901075456)]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import astropy.units as u
import cdshealpix.nested as healpix
import numpy as np
from astropy.coordinates import Latitude, Longitude

from skyshard.errors import UserError
from skyshard.sphere.regions import (
    BOUNDS_PAD_DEG,
    Box,
    Circle,
    Ellipse,
    Polygon,
    Region,
    lonlat_deg,
    unit_vectors,
)

try:  # the compiled core: same hash as the public wrapper, without astropy conversions
    from cdshealpix import cdshealpix as _core
except ImportError:  # pragma: no cover - depends on the cdshealpix build
    _core = None

HEALPIX_MAX_ORDER = 29

#: Finest order ``overlaps`` computes coverage at; finer partitions are tested against
#: their ancestor at this order, which is conservative.
MAX_OVERLAP_ORDER = 10

_REFINE_ORDERS = 2  # boundary cells are split this many orders below the one asked for,
_REFINE_BUDGET = 200_000  # while there are no more than this many of them
#: Circles up to this radius (id-lookup-sized cones, the common query) are covered by
#: cdshealpix's compiled cone search, grown (``_small_circle``), not by the descent.
SMALL_CIRCLE_DEG = 1.0
_SMALL_CIRCLE_CELLS = 20_000  # about the most cells its search may return
_ELLIPSE_POLYGON_SIDES = 16

# (centres as unit vectors, cap radius in radians) -> (may intersect, lies inside)
_Tester = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def _check_order(order: int, name: str = "order") -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer):
        raise UserError(f"{name} must be an integer, not {order!r}")
    if not 0 <= order <= HEALPIX_MAX_ORDER:
        raise UserError(f"{name} must lie in [0, {HEALPIX_MAX_ORDER}], not {order}")
    return int(order)


def pixels(region: Region, order: int) -> np.ndarray:
    """Sorted unique NESTED pixel ids at ``order`` of every cell touching ``region``.

    The result has one entry per cell: mind the order for large regions.

    >>> pixels(Box(359.0, -1.0, 1.0, 1.0), 3).tolist()
    [271, 282, 293, 304]
    """
    order = _check_order(order)
    lo, hi = _ranges(region, order)
    shift = 2 * (HEALPIX_MAX_ORDER - order)
    first, counts = lo >> shift, (hi - lo) >> shift
    # expand the sorted disjoint ranges: already sorted and unique
    return np.repeat(first - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())


def healpix29_ranges(region: Region, order: int) -> list[tuple[int, int]]:
    """Merged half-open ranges ``[lo, hi)`` of ``_healpix_29`` values of the cells at
    ``order`` touching ``region`` (cell p at order k covers ``[p << 2(29-k), (p+1) << 2(29-k))``).

    >>> healpix29_ranges(Box(0.0, -90.0, 360.0, 90.0), 5) == [(0, 12 << 58)]
    True
    """
    lo, hi = _ranges(region, _check_order(order))
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


def overlaps(
    region: Region,
    partitions: Sequence[tuple[int, int]] | np.ndarray,
    *,
    max_order: int = MAX_OVERLAP_ORDER,
) -> np.ndarray:
    """Boolean mask: which ``(order, pixel)`` partitions of a (mixed-order) tiling may
    intersect ``region``. Coverage is computed once, at the finest partition order capped
    at ``max_order``.

    >>> overlaps(Circle(30.0, 20.0, 0.2), [(0, 0), (0, 1), (3, 10), (3, 11)]).tolist()
    [True, False, True, False]
    """
    cells = np.asarray(partitions, dtype=np.int64)
    if cells.size == 0:
        return np.zeros(0, dtype=bool)
    if cells.ndim != 2 or cells.shape[1] != 2:
        raise UserError(f"partitions must be (order, pixel) pairs, not shape {cells.shape}")
    orders, pix = cells[:, 0], cells[:, 1]
    if orders.min() < 0 or orders.max() > HEALPIX_MAX_ORDER:
        raise UserError(f"partition orders must lie in [0, {HEALPIX_MAX_ORDER}]")
    shift = 2 * (HEALPIX_MAX_ORDER - orders)
    if pix.min() < 0 or (pix >= 12 << (2 * orders)).any():
        raise UserError("partition pixel ids must lie in [0, 12 * 4**order)")
    order = min(int(orders.max()), _check_order(max_order, "max_order"))
    lo, hi = _ranges(region, order)
    part_lo, part_hi = pix << shift, (pix + 1) << shift
    last = np.searchsorted(lo, part_hi, side="left") - 1  # last range starting before part_hi
    hit = last >= 0
    result = np.zeros(len(cells), dtype=bool)
    result[hit] = hi[last[hit]] > part_lo[hit]
    return result


def healpix29(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """``_healpix_29``: order-29 NESTED pixel of each position (int64), as HATS computes it.

    >>> healpix29(np.array([0.0, 45.0]), np.array([0.0, 90.0])).tolist()
    [1369094286720630784, 288230376151711743]
    """
    ra = np.ascontiguousarray(ra_deg, dtype=np.float64)
    dec = np.ascontiguousarray(dec_deg, dtype=np.float64)
    if ra.shape != dec.shape:
        raise UserError(f"ra_deg and dec_deg differ in shape: {ra.shape} and {dec.shape}")
    if not np.isfinite(ra).all():
        raise UserError("ra_deg must be finite (found NaN or infinity)")
    with np.errstate(invalid="ignore"):
        if not (np.abs(dec) <= 90.0).all():
            raise UserError("dec_deg must be finite and lie in [-90, 90]")
    if ra.size == 0:
        return np.zeros(ra.shape, dtype=np.int64)
    if _core is not None and ra.min() >= 0.0 and ra.max() < 360.0:
        try:
            return _hash29_core(ra, dec)
        except (TypeError, ValueError, AttributeError):  # pragma: no cover - API drift
            pass
    lon = Longitude(ra, unit=u.deg, copy=False)
    lat = Latitude(dec, unit=u.deg, copy=False)
    return healpix.lonlat_to_healpix(lon, lat, HEALPIX_MAX_ORDER).astype(np.int64)


def _hash29_core(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    flat_ra, flat_dec = ra.ravel(), dec.ravel()
    n = flat_ra.size
    ipix = np.empty(n, dtype=np.uint64)
    dx, dy = np.empty(n), np.empty(n)
    depth = np.broadcast_to(np.uint8(HEALPIX_MAX_ORDER), (n,))
    lon, lat = np.radians(flat_ra), np.radians(flat_dec)
    _core.lonlat_to_healpix(depth, lon, lat, ipix, dx, dy, np.uint16(0))
    return ipix.view(np.int64).reshape(ra.shape)


# --- the descent --------------------------------------------------------------------


def _ranges(region: Region, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, merged half-open ``_healpix_29`` ranges of the coverage at ``order``
    (read-only arrays; recent answers are kept: a query is planned more than once, by
    TAP's checks then by its run, and both the partition choice and the row filter ask)."""
    try:
        return _recent_ranges(region, order)
    except TypeError:  # a region that cannot be hashed
        return _descend(region, order)


@functools.lru_cache(maxsize=256)
def _recent_ranges(region: Region, order: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = _descend(region, order)
    lo.setflags(write=False)
    hi.setflags(write=False)
    return lo, hi


def _descend(region: Region, order: int) -> tuple[np.ndarray, np.ndarray]:
    # Not cdshealpix's cone_search as it is for circles: with depth_delta 2 it left out
    # cells holding points just inside cones of 2-7 deg radius (37 of 3.4 M boundary
    # points in 2,000 random cones), and a coverage must never leave a row out. Small
    # circles go through it grown by a safe margin (``_small_circle``, in ``_moc``).
    ipix, depth = _moc(region, order)
    if len(ipix) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    shift = 2 * (HEALPIX_MAX_ORDER - depth)
    lo, hi = ipix << shift, (ipix + 1) << shift
    by_start = np.argsort(lo, kind="stable")
    lo, hi = lo[by_start], hi[by_start]
    reach = np.maximum.accumulate(hi)
    starts = np.flatnonzero(np.r_[True, lo[1:] > reach[:-1]])
    return lo[starts], np.maximum.reduceat(hi, starts)


def _moc(region: Region, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells at orders <= ``order`` covering the region, as (ipix, depth) int64 arrays."""
    if (isinstance(region, Circle) and region.radius_deg <= SMALL_CIRCLE_DEG
            and _core is not None):
        found = _small_circle(region, order)
        if found is not None:
            return found
    test = _tester(region)
    found_ipix: list[np.ndarray] = []
    found_depth: list[int] = []
    if test is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    target = min(order + _REFINE_ORDERS, HEALPIX_MAX_ORDER)
    cells = np.arange(12, dtype=np.int64)
    for depth in range(target + 1):
        may, inside = test(_centres(cells, depth), _cap_radius_rad(depth))
        straddling = cells[may & ~inside]
        if depth == target or (depth >= order and 4 * len(straddling) > _REFINE_BUDGET):
            found_ipix.append(cells[may])
            found_depth.append(depth)
            break
        found_ipix.append(cells[inside])
        found_depth.append(depth)
        if len(straddling) == 0:
            break
        cells = (straddling[:, None] * 4 + np.arange(4)).ravel()
    ipix_parts, depth_parts = [], []
    for ipix, depth in zip(found_ipix, found_depth, strict=True):
        if depth > order:  # the cell's ancestor at ``order`` touches the region
            ipix, depth = np.unique(ipix >> (2 * (depth - order))), order
        ipix_parts.append(ipix)
        depth_parts.append(np.full(len(ipix), depth, dtype=np.int64))
    return np.concatenate(ipix_parts), np.concatenate(depth_parts)


def _small_circle(circle: Circle, order: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cells at ``order`` that hold a point of a small circle: cdshealpix's cone
    search (0.03-0.05 ms against 0.6-1.4 ms for the descent, per 1' cone) at a depth whose cells are a quarter
    of the radius or smaller (and two orders below ``order``, as the descent refines),
    on the circle grown by twice their cap radius, so every cell holding a point of the
    circle lies wholly inside the grown circle and no rounding at the rim can leave it
    out; then those cells' ancestors at ``order``. None when that would be more than
    ``_SMALL_CIRCLE_CELLS`` cells (``order`` fine for the radius: the descent, which
    keeps the inside in coarse cells, does it better) or when cdshealpix's compiled
    core does not take these arguments."""
    radius = math.radians(circle.radius_deg)
    depth = min(order + _REFINE_ORDERS, HEALPIX_MAX_ORDER)
    while depth < HEALPIX_MAX_ORDER and _cap_radius_rad(depth) > radius / 4:
        depth += 1
    grown = min(math.pi, radius + 2 * _cap_radius_rad(depth))
    if (grown / _cap_radius_rad(depth)) ** 2 > _SMALL_CIRCLE_CELLS:
        return None
    try:
        ipix, _, _ = _core.cone_search(np.uint8(depth), np.uint8(0),
                                       np.float64(math.radians(circle.ra_deg % 360.0)),
                                       np.float64(math.radians(circle.dec_deg)),
                                       np.float64(grown), True)
    except (TypeError, ValueError, AttributeError):  # another cdshealpix: the descent
        return None
    cells = np.unique(ipix.astype(np.int64) >> (2 * (depth - order)))
    return cells, np.full(len(cells), order, dtype=np.int64)


def _centres(cells: np.ndarray, depth: int) -> np.ndarray:
    """Unit vectors of the centres of NESTED cells at ``depth``, in numpy: the standard
    nested-to-ring geometry (a base face, bits de-interleaved into x/y, then z and phi).
    cdshealpix's wrapper costs ~0.5 ms per call, and a descent makes one per order."""
    nside = 1 << depth
    npface = nside * nside
    cells = cells.astype(np.int64)
    face = cells // npface
    ipf = cells % npface
    ix, iy = _compact_bits(ipf), _compact_bits(ipf >> 1)
    jr = _JRLL[face] * nside - ix - iy - 1
    north, south = jr < nside, jr > 3 * nside
    nr = np.where(north, jr, np.where(south, 4 * nside - jr, nside))
    cap = nr.astype(np.float64) ** 2 / (3.0 * npface)  # 1 - |z| in the polar caps, exactly
    z = np.where(north, 1.0 - cap, np.where(south, cap - 1.0, (2 * nside - jr) * 2.0 / (3.0 * nside)))
    kshift = np.where((jr >= nside) & (jr <= 3 * nside), (jr - nside) & 1, 0)
    jp = (_JPLL[face] * nr + ix - iy + 1 + kshift) // 2
    jp = np.where(jp > 4 * nside, jp - 4 * nside, jp)
    jp = np.where(jp < 1, jp + 4 * nside, jp)
    phi = (jp - (kshift + 1) * 0.5) * (math.pi / 2 / nr)
    polar = north | south
    sin_theta = np.where(polar, np.sqrt(np.maximum(0.0, cap * (2.0 - cap))),
                         np.sqrt(np.maximum(0.0, (1.0 - z) * (1.0 + z))))
    return np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), z], axis=-1)


_JRLL = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4], dtype=np.int64)
_JPLL = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7], dtype=np.int64)


def _compact_bits(v: np.ndarray) -> np.ndarray:
    """Keep the even bits of ``v`` and pack them: the x (or, shifted, y) of a nested index."""
    v = v & 0x5555555555555555
    v = (v | (v >> 1)) & 0x3333333333333333
    v = (v | (v >> 2)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v >> 4)) & 0x00FF00FF00FF00FF
    v = (v | (v >> 8)) & 0x0000FFFF0000FFFF
    return (v | (v >> 16)) & 0x00000000FFFFFFFF


@functools.lru_cache(maxsize=64)
def _cap_radius_rad(depth: int) -> float:
    """HEALPix's maximum angular distance between a cell centre and its corners at this
    depth (``max_pixrad`` of the HEALPix library), grown by 1% and the pad."""
    nside = 1 << depth
    z, phi = 2.0 / 3.0, math.pi / (4 * nside)
    a = np.array([math.sqrt(1 - z * z) * math.cos(phi), math.sqrt(1 - z * z) * math.sin(phi), z])
    z = 1.0 - (1.0 - 1.0 / nside) ** 2 / 3.0
    b = np.array([math.sqrt(1 - z * z), 0.0, z])
    angle = math.atan2(float(np.linalg.norm(np.cross(a, b))), float(a @ b))
    return 1.01 * angle + math.radians(BOUNDS_PAD_DEG)


def _tester(region: Region) -> _Tester | None:
    """The cap test of a region, None for an empty region."""
    if isinstance(region, Circle):
        return _circle_tester(_centre(region), math.radians(region.radius_deg))
    if isinstance(region, Box):
        return _box_tester(region)
    if isinstance(region, Ellipse):
        return _halfspace_tester(_ellipse_normals(region), region.bounding_circle())
    if isinstance(region, Polygon):
        if region.is_empty:
            return None
        return _halfspace_tester(region.edge_normals, region.bounding_circle())
    raise TypeError(f"not a region: {region!r}")


def _centre(circle: Circle) -> np.ndarray:
    return unit_vectors(circle.ra_deg, circle.dec_deg)


def _chord2(angle_rad: float) -> float:
    """Squared chord length of an angle; angles are compared as chords, which keeps
    their precision at small angles without trigonometry per cell."""
    if angle_rad >= math.pi:
        return math.inf
    return -math.inf if angle_rad < 0.0 else 4.0 * math.sin(0.5 * angle_rad) ** 2


def _circle_tester(centre: np.ndarray, radius_rad: float) -> _Tester:
    def test(centres: np.ndarray, cap_rad: float) -> tuple[np.ndarray, np.ndarray]:
        chord2 = ((centres - centre) ** 2).sum(axis=1)
        return chord2 <= _chord2(radius_rad + cap_rad), chord2 <= _chord2(radius_rad - cap_rad)

    return test


def _halfspace_tester(normals: np.ndarray, bounds: Circle) -> _Tester:
    """Intersection of half-spaces ``v . n >= 0``: a cap misses it when it lies beyond
    one of the planes or misses the bounding circle (the planes of a small polygon meet
    again near its antipode), and is inside when it lies within all the planes."""
    near = _circle_tester(_centre(bounds), math.radians(bounds.radius_deg))

    def test(centres: np.ndarray, cap_rad: float) -> tuple[np.ndarray, np.ndarray]:
        dots = centres @ normals.T
        sin_cap = math.sin(min(cap_rad, math.pi / 2))
        may = (dots >= -sin_cap).all(axis=1) & near(centres, cap_rad)[0]
        return may, (dots >= sin_cap).all(axis=1)

    return test


def _box_tester(box: Box) -> _Tester:
    """Compare the lon/lat extent of each cap with the box."""
    half_width = 0.5 * box.width_deg
    middle = box.ra_min_deg + half_width

    def test(centres: np.ndarray, cap_rad: float) -> tuple[np.ndarray, np.ndarray]:
        ra, dec = lonlat_deg(centres)
        cap_deg = math.degrees(cap_rad)
        may = (dec - cap_deg <= box.dec_max_deg) & (dec + cap_deg >= box.dec_min_deg)
        inside = (dec - cap_deg >= box.dec_min_deg) & (dec + cap_deg <= box.dec_max_deg)
        if box.full_ra:
            return may, inside
        polar = np.abs(dec) + cap_deg >= 90.0
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = math.sin(cap_rad) / np.cos(np.radians(dec))
            reach = np.where(polar, 180.0, np.degrees(np.arcsin(np.minimum(ratio, 1.0))))
        distance = np.abs((ra - middle + 180.0) % 360.0 - 180.0)
        may &= distance <= reach + half_width
        inside &= ~polar & (distance + reach <= half_width)
        return may, inside

    return test


def _ellipse_normals(ellipse: Ellipse) -> np.ndarray:
    """Inward edge normals of a polygon around the ellipse. In the gnomonic projection
    at the centre (where great circles are straight lines) the ellipse lies within the
    ellipse of semi-axes ``a / cos(asin(a))`` and ``b / cos(asin(a))``; the polygon
    circumscribes that one, grown by the pad."""
    centre, major, minor = ellipse.frame()
    a, b = ellipse.semi_major_rad, ellipse.semi_minor_rad
    stretch = 1.0 / math.sqrt(1.0 - a * a)
    pad = 2.0 * math.radians(BOUNDS_PAD_DEG)
    n = _ELLIPSE_POLYGON_SIDES
    phi = 2.0 * np.pi * (np.arange(n) + 0.5) / n
    scale = 1.0 / math.cos(math.pi / n)
    gx = (a * stretch + pad) * scale * np.cos(phi)
    gy = (b * stretch + pad) * scale * np.sin(phi)
    vertices = centre + gx[:, None] * major + gy[:, None] * minor
    normals = np.cross(vertices, np.roll(vertices, -1, axis=0))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return normals * np.sign(normals @ centre)[:, None]


__all__ = [
    "HEALPIX_MAX_ORDER",
    "MAX_OVERLAP_ORDER",
    "healpix29",
    "healpix29_ranges",
    "overlaps",
    "pixels",
]
