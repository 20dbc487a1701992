from __future__ import annotations

import math
import time

import cdshealpix.nested as healpix
import numpy as np
import pytest
from astropy.coordinates import Latitude, Longitude
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sky_regions import boxes, circles, decs, offset, ras, sample_cap, seeds  # noqa: F401
from skyshard.errors import UserError
from skyshard.sphere import coverage
from skyshard.sphere.coverage import (
    MAX_OVERLAP_ORDER,
    SMALL_CIRCLE_DEG,
    healpix29,
    healpix29_ranges,
    overlaps,
    pixels,
)
from skyshard.sphere.regions import (
    Box,
    Circle,
    Ellipse,
    Polygon,
    RegionError,
    angular_separation_deg,
    lonlat_deg,
)

orders = st.integers(0, 9)


@st.composite
def ellipses(draw):
    major = draw(st.floats(0.1, 36000.0))
    minor = major * draw(st.floats(0.05, 1.0))
    return Ellipse(draw(ras), draw(decs), major, minor, draw(st.floats(-360.0, 360.0)))


@st.composite
def polygons(draw):
    ra, dec = draw(ras), draw(decs)
    size = draw(st.one_of(st.floats(1e-3, 1.0), st.floats(1.0, 80.0)))
    n = draw(st.integers(3, 8))
    bearings = sorted(draw(st.lists(st.floats(0.0, 360.0), min_size=n, max_size=n)))
    scales = draw(st.lists(st.floats(0.3, 1.0), min_size=n, max_size=n))
    try:
        return Polygon(
            tuple(offset(ra, dec, b, size * s) for b, s in zip(bearings, scales, strict=True))
        )
    except RegionError:
        assume(False)


regions = st.one_of(circles(), boxes(), ellipses(), polygons())


def points_inside(region, rng, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    circle = region.bounding_circle()
    ra, dec = sample_cap(circle.ra_deg, circle.dec_deg, circle.radius_deg, n, rng)
    extra_ra, extra_dec = [], []
    if isinstance(region, Box):  # corners and edges, poles included
        d = np.linspace(region.dec_min_deg, region.dec_max_deg, 50)
        w = region.ra_min_deg + np.linspace(0.0, region.width_deg, 50)
        extra_ra += [np.full(50, region.ra_min_deg), np.full(50, region.ra_max_deg), w, w]
        extra_dec += [d, d, np.full(50, region.dec_min_deg), np.full(50, region.dec_max_deg)]
    if isinstance(region, Polygon) and len(region.corners) >= 3:  # corners and edges
        a, b = region.corners, np.roll(region.corners, -1, axis=0)
        t = np.linspace(0.0, 1.0, 20)[:, None, None]
        near_ra, near_dec = lonlat_deg((a + t * (b - a)).reshape(-1, 3))
        extra_ra.append(near_ra)
        extra_dec.append(near_dec)
    if isinstance(region, Circle):  # on the circle
        rim = [
            offset(region.ra_deg, region.dec_deg, b, region.radius_deg)
            for b in np.linspace(0, 360, 72)
        ]
        extra_ra.append(np.array(rim)[:, 0])
        extra_dec.append(np.array(rim)[:, 1])
    if extra_ra:
        ra = np.concatenate([ra, *extra_ra]) % 360.0
        dec = np.concatenate([dec, *extra_dec])
    keep = region.contains(ra, dec)
    return ra[keep], dec[keep]


def pixel_of(ra: np.ndarray, dec: np.ndarray, order: int) -> np.ndarray:
    return healpix29(ra, dec) >> (2 * (29 - order))


@settings(max_examples=250, deadline=None)
@given(regions, orders, seeds)
def test_pixels_never_drop_a_point_of_the_region(region, order, seed):
    ra, dec = points_inside(region, np.random.default_rng(seed))
    got = pixels(region, order)
    assert (np.diff(got) > 0).all()
    assert np.isin(pixel_of(ra, dec, order), got).all()


@pytest.mark.parametrize(
    "region",
    [
        Box(0.0, 89.0, 10.0, 90.0),
        Box(350.0, -90.0, 10.0, -89.0),
        Box(359.0, -1.0, 1.0, 1.0),
        Box(0.0, -90.0, 360.0, 90.0),
        Box(5.0, 10.0, 5.0, 10.0),  # a single point
        Circle(0.0, 90.0, 0.5),
        Circle(10.0, -20.0, 170.0),  # beyond what cdshealpix's cone search handles
        Circle(10.0, -20.0, 180.0),
        Ellipse(0.0, 90.0, 36000.0, 100.0, 45.0),
        Ellipse(359.999, 0.0, 10.0, 0.001, 30.0),
        Polygon(((0, 80), (120, 80), (240, 80))),  # around the pole
        Polygon(((0, 0), (90, 0), (0, 90))),  # an octant
        Polygon.from_flat([300, 2, 0.01, 2, 0.03, 2.6, 359.9, 2.6]),  # concave: scisql's region
    ],
    ids=repr,
)
def test_pixels_of_awkward_regions(region):
    rng = np.random.default_rng(3)
    for order in (0, 3, 8):
        ra, dec = points_inside(region, rng, 20000)
        assert np.isin(pixel_of(ra, dec, order), pixels(region, order)).all()


@pytest.mark.parametrize("order", [16, 22, 29])
@pytest.mark.parametrize(
    "region",
    [
        Circle(123.4, -45.6, 2e-6),
        Box(359.999999, 89.999999, 0.000001, 90.0),
        Ellipse(0.0, 0.0, 0.01, 0.002, 30.0),
        Polygon(((10.0, 10.0), (10.000003, 10.0), (10.0, 10.000003))),
    ],
    ids=repr,
)
def test_tiny_regions_at_fine_orders(region, order):
    ra, dec = points_inside(region, np.random.default_rng(order), 5000)
    assert len(ra) > 10
    got = pixels(region, order)
    assert np.isin(pixel_of(ra, dec, order), got).all()
    assert len(got) < 50_000


def test_coverage_is_reasonably_tight():
    assert len(pixels(Circle(30.0, 20.0, 0.01), 10)) <= 4
    assert len(pixels(Box(30.0, 20.0, 30.02, 20.02), 10)) <= 4
    assert len(pixels(Ellipse(30.0, 20.0, 30.0, 3.0, 10.0), 10)) <= 4
    assert len(pixels(Polygon(((30.0, 20.0), (30.01, 20.0), (30.0, 20.01))), 10)) <= 4
    assert len(pixels(Polygon.from_flat([0, 0, 3, 10, 0, 5, 3, 1]), 10)) == 0  # empty bowtie
    assert len(pixels(Box(0.0, -90.0, 360.0, 90.0), 2)) == 12 * 16


@settings(max_examples=80, deadline=None)
@given(regions, orders)
def test_ranges_are_the_merged_pixels(region, order):
    ranges = healpix29_ranges(region, order)
    shift = 2 * (29 - order)
    lo = np.array([r[0] for r in ranges], dtype=np.int64)
    hi = np.array([r[1] for r in ranges], dtype=np.int64)
    assert (lo < hi).all() and (lo[1:] > hi[:-1]).all()  # sorted, disjoint, not adjacent
    assert ((lo >> shift) << shift == lo).all() and ((hi >> shift) << shift == hi).all()
    expanded = (
        np.concatenate([np.arange(a >> shift, b >> shift) for a, b in ranges]) if ranges else []
    )
    assert np.array_equal(expanded, pixels(region, order))


def adaptive_tiling(rng, max_order: int) -> np.ndarray:
    """A random mixed-order tiling of the sphere, as (order, pixel) rows."""
    cells, todo = [], [(0, p) for p in range(12)]
    while todo:
        order, pix = todo.pop()
        if order < max_order and rng.random() < (0.9 if order < 2 else 0.45):
            todo.extend((order + 1, 4 * pix + k) for k in range(4))
        else:
            cells.append((order, pix))
    return np.array(cells, dtype=np.int64)


def slow_overlaps(region, cells: np.ndarray) -> list[bool]:
    k = min(int(cells[:, 0].max()), MAX_OVERLAP_ORDER)
    covered = set(pixels(region, k).tolist())
    result = []
    for order, pix in cells.tolist():
        if order <= k:
            result.append(any(q >> (2 * (k - order)) == pix for q in covered))
        else:
            result.append((pix >> (2 * (order - k))) in covered)
    return result


@settings(max_examples=40, deadline=None)
@given(regions, seeds, st.integers(2, 7))
def test_overlaps_matches_slow_reference(region, seed, max_order):
    assume(not isinstance(region, Circle | Ellipse) or region.bounding_circle().radius_deg < 60)
    cells = adaptive_tiling(np.random.default_rng(seed), max_order)
    assert overlaps(region, cells).tolist() == slow_overlaps(region, cells)


def test_overlaps_with_partitions_finer_than_the_cap():
    region = Circle(30.0, 20.0, 0.001)
    inside = int(healpix29(np.array([30.0]), np.array([20.0]))[0])
    cells = np.array(
        [(15, inside >> 28), (15, (inside >> 28) ^ 1), (14, inside >> 30), (0, 0), (0, 11)]
    )
    got = overlaps(region, cells)
    assert got.tolist() == slow_overlaps(region, cells)
    assert got[0] and got[2] and not got[4]
    assert overlaps(region, []).tolist() == []


def test_overlaps_is_fast_for_many_partitions():
    cells = np.array([(7, p) for p in range(0, 12 * 4**7, 19)][:10_000])
    start = time.perf_counter()
    got = overlaps(Circle(100.0, 30.0, 40.0), cells)
    assert time.perf_counter() - start < 1.0
    assert 0 < got.sum() < len(cells)


def test_overlaps_rejects_bad_partitions():
    with pytest.raises(UserError):
        overlaps(Circle(0.0, 0.0, 1.0), [(30, 0)])
    with pytest.raises(UserError):
        overlaps(Circle(0.0, 0.0, 1.0), [(1, 48)])
    with pytest.raises(UserError):
        pixels(Circle(0.0, 0.0, 1.0), 30)


# --- _healpix_29 ----------------------------------------------------------------------


def reference_healpix29(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """HATS's computation (hats.pixel_math.healpix_shim.radec2pix)."""
    lon = Longitude(np.asarray(ra, dtype=np.float64), unit="deg")
    lat = Latitude(np.asarray(dec, dtype=np.float64), unit="deg")
    return healpix.lonlat_to_healpix(lon, lat, 29).astype(np.int64)


def test_healpix29_matches_hats():
    rng = np.random.default_rng(5)
    ra = np.concatenate(
        [rng.uniform(0, 360, 100_000), [0.0, 359.99999999999994, 45.0, 180.0, 90.0]]
    )
    dec = np.concatenate(
        [
            np.degrees(np.arcsin(rng.uniform(-1, 1, 100_000))),
            [0.0, -90.0, 90.0, 41.8103148957786, -0.0],
        ]
    )
    assert np.array_equal(healpix29(ra, dec), reference_healpix29(ra, dec))
    assert np.array_equal(
        healpix29(ra.astype(np.float32), dec.astype(np.float32)),
        reference_healpix29(ra.astype(np.float32), dec.astype(np.float32)),
    )
    odd_ra = np.array([-10.0, 360.0, 725.5, -0.0])
    assert np.array_equal(healpix29(odd_ra, np.zeros(4)), reference_healpix29(odd_ra, np.zeros(4)))
    grid = healpix29(ra.reshape(5, -1), dec.reshape(5, -1))
    assert grid.shape == (5, len(ra) // 5) and grid.dtype == np.int64
    assert healpix29(np.array([]), np.array([])).shape == (0,)


def test_healpix29_matches_hats_package():
    radec2pix = pytest.importorskip("hats.pixel_math.healpix_shim").radec2pix
    rng = np.random.default_rng(6)
    ra, dec = rng.uniform(0, 360, 1000), rng.uniform(-90, 90, 1000)
    assert np.array_equal(healpix29(ra, dec), radec2pix(29, ra, dec))


@pytest.mark.parametrize(
    ("ra", "dec"),
    [
        ([0.0, float("nan")], [0.0, 0.0]),
        ([0.0], [90.5]),
        ([0.0], [float("nan")]),
        ([float("inf")], [0.0]),
        ([0.0, 1.0], [0.0]),
    ],
)
def test_healpix29_rejects_bad_positions(ra, dec):
    with pytest.raises(UserError):
        healpix29(np.array(ra), np.array(dec))


@settings(max_examples=300, deadline=None)
@given(ras, decs, st.one_of(st.floats(1e-6, 1e-3), st.floats(1e-3, SMALL_CIRCLE_DEG)),
       st.integers(0, 20), seeds)
def test_small_circles_take_the_fast_path_and_drop_no_point(ra, dec, radius, order, seed):
    # orders up to a few below the planner's (cells about half the radius)
    assume(order <= math.floor(math.log2(58.6 / radius)) + 3)
    circle = Circle(ra, dec, radius)
    assert coverage._small_circle(circle, order) is not None  # the fast path, not the descent
    ra_in, dec_in = points_inside(circle, np.random.default_rng(seed), 2000)
    got = pixels(circle, order)
    assert np.isin(pixel_of(ra_in, dec_in, order), got).all()
    # and tight: every cell is near the circle (its centre within the radius, its own cap
    # radius and what the circle was grown by: at most half that)
    lon, lat = healpix.healpix_to_lonlat(got, order)
    d = angular_separation_deg(lon.deg, lat.deg, ra, dec)
    assert (d <= radius + 1.5 * np.degrees(coverage._cap_radius_rad(order)) + 1e-9).all()


def test_small_circles_skip_the_descent(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a small circle went through the descent")

    monkeypatch.setattr(coverage, "_tester", refuse)
    assert len(coverage._moc(Circle(10.0, 20.0, 1 / 60), 12)[0]) > 0
    with pytest.raises(AssertionError, match="descent"):
        coverage._moc(Circle(10.0, 20.0, 2 * SMALL_CIRCLE_DEG), 12)
