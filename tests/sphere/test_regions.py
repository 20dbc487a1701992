from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord, SkyOffsetFrame
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sky_regions import offset, ras, sample_cap, seeds
from skyshard.errors import UserError
from skyshard.sphere.regions import (
    Box,
    Circle,
    Ellipse,
    Polygon,
    RegionError,
    angular_separation_deg,
)

FAST = settings(max_examples=60, deadline=None)

decs = st.one_of(st.floats(-90.0, 90.0), st.sampled_from([-90.0, -89.9999, 0.0, 89.9999, 90.0]))


@st.composite
def circles(draw):
    radius = draw(st.one_of(st.floats(1e-5, 5.0), st.floats(5.0, 180.0)))
    return Circle(draw(ras), draw(decs), radius)


@st.composite
def boxes(draw):
    dec_a, dec_b = sorted([draw(decs), draw(decs)])
    ra_min = draw(ras)
    width = draw(st.one_of(st.floats(0.0, 20.0), st.floats(0.0, 360.0), st.just(360.0)))
    return Box(
        ra_min, dec_a, (ra_min + width) if width >= 360.0 else (ra_min + width) % 360.0, dec_b
    )


@st.composite
def ellipses(draw):
    major = draw(st.floats(0.01, 36000.0))
    minor = major * draw(st.floats(0.02, 1.0))
    return Ellipse(draw(ras), draw(decs), major, minor, draw(st.floats(-360.0, 360.0)))


@st.composite
def polygons(draw):
    ra, dec = draw(ras), draw(decs)
    size = draw(st.one_of(st.floats(1e-3, 1.0), st.floats(1.0, 60.0)))
    n = draw(st.integers(3, 8))
    bearings = sorted(draw(st.lists(st.floats(0.0, 360.0), min_size=n, max_size=n)))
    if draw(st.booleans()):
        bearings.reverse()
    scales = draw(st.lists(st.floats(0.3, 1.0), min_size=n, max_size=n))
    vertices = tuple(offset(ra, dec, b, size * s) for b, s in zip(bearings, scales, strict=True))
    try:
        return Polygon(vertices)
    except RegionError:
        assume(False)


regions = st.one_of(circles(), boxes(), ellipses(), polygons())


def inside_points(region, rng, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    circle = region.bounding_circle()
    ra, dec = sample_cap(circle.ra_deg, circle.dec_deg, circle.radius_deg, n, rng)
    keep = region.contains(ra, dec)
    return ra[keep], dec[keep]


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: Circle(0.0, 91.0, 1.0), "dec_deg"),
        (lambda: Circle(float("nan"), 0.0, 1.0), "ra_deg"),
        (lambda: Circle(0.0, 0.0, 0.0), "radius_deg"),
        (lambda: Circle(0.0, 0.0, 180.5), "radius_deg"),
        (lambda: Circle("a", 0.0, 1.0), "ra_deg"),
        (lambda: Circle(True, 0.0, 1.0), "ra_deg"),
        (lambda: Box(0.0, 2.0, 1.0, 1.0), "dec_min_deg"),
        (lambda: Box(0.0, -91.0, 1.0, 1.0), "dec_min_deg"),
        (lambda: Box(10.0, 0.0, -5.0, 1.0), "ra_min_deg"),
        (lambda: Box(370.0, 0.0, 5.0, 1.0), "ra_min_deg"),
        (lambda: Box(0.0, 0.0, float("inf"), 1.0), "ra_max_deg"),
        (lambda: Ellipse(0.0, 0.0, 10.0, 20.0, 0.0), "semi_minor_arcsec"),
        (lambda: Ellipse(0.0, 0.0, 10.0, 0.0, 0.0), "semi_minor_arcsec"),
        (lambda: Ellipse(0.0, 0.0, 36001.0, 1.0, 0.0), "semi_major_arcsec"),
        (lambda: Ellipse(0.0, 0.0, 10.0, 1.0, float("nan")), "pos_angle_deg"),
        (lambda: Polygon(((0.0, 0.0), (1.0, 1.0))), "vertices"),
        (lambda: Polygon(((0.0, 0.0), (1.0, 1.0), (0.0, 0.0))), "vertices"),
        (lambda: Polygon(((0.0, 0.0), (10.0, 0.0), (20.0, 0.0))), "vertices"),
        # within 1e-17 rad of the meridian RA 2 (found by hypothesis): flat, not a triangle
        (lambda: Polygon(((2.0, 0.00390625), (2.0, 0.001953125),
                          (1.9999999999999996, 0.00146484375))), "vertices"),
        (lambda: Polygon(((0.0, 0.0), (180.0, 0.0), (90.0, 45.0))), "vertices"),
        (lambda: Polygon(((0.0, 0.0), (1.0, 95.0), (2.0, 0.0))), "vertices"),
        (lambda: Polygon(((0.0, 0.0), (1.0,), (2.0, 1.0))), "vertices"),
        (lambda: Polygon.from_flat([0.0, 0.0, 1.0, 1.0, 2.0]), "vertices"),
    ],
)
def test_invalid_arguments_are_named(make, argument):
    with pytest.raises(RegionError) as info:
        make()
    assert isinstance(info.value, UserError)
    assert info.value.argument == argument
    assert argument.split("_")[0] in str(info.value)


@pytest.mark.parametrize(
    ("args", "stored", "wraps", "full"),
    [
        ((350.0, -1.0, 370.0, 1.0), (350.0, 10.0), True, False),
        ((-10.0, -1.0, 10.0, 1.0), (350.0, 10.0), True, False),
        ((359.0, -1.0, 1.0, 1.0), (359.0, 1.0), True, False),
        ((0.0, -1.0, 360.0, 1.0), (0.0, 360.0), False, True),
        ((10.0, -1.0, 380.0, 1.0), (0.0, 360.0), False, True),
        ((360.0, -1.0, 0.0, 1.0), (0.0, 0.0), False, False),
        ((370.0, -1.0, 380.0, 1.0), (10.0, 20.0), False, False),
    ],
)
def test_box_normalisation_follows_scisql(args, stored, wraps, full):
    box = Box(*args)
    assert (box.ra_min_deg, box.ra_max_deg) == stored
    assert (box.wraps, box.full_ra) == (wraps, full)


def test_normalisation_of_centres_and_vertices():
    assert Circle(-10.0, 0.0, 1.0).ra_deg == 350.0
    assert Ellipse(725.0, 0.0, 1.0, 1.0, 0.0).ra_deg == 5.0
    polygon = Polygon([[-1, 0], [1, 0], [0, 1], [-1, 0]])  # closing vertex repeated
    assert polygon.vertices == ((359.0, 0.0), (1.0, 0.0), (0.0, 1.0))
    assert Polygon(((0, 90), (10, 90), (0, 0), (90, 0))).vertices == (
        (0.0, 90.0),
        (0.0, 0.0),
        (90.0, 0.0),
    )


# --- contains -------------------------------------------------------------------------


@FAST
@given(circles(), seeds)
def test_circle_contains_matches_astropy_separation(circle, seed):
    rng = np.random.default_rng(seed)
    ra, dec = sample_cap(
        circle.ra_deg, circle.dec_deg, min(180.0, circle.radius_deg * 1.5), 500, rng
    )
    sep = (
        SkyCoord(ra * u.deg, dec * u.deg)
        .separation(SkyCoord(circle.ra_deg * u.deg, circle.dec_deg * u.deg))
        .deg
    )
    clear = np.abs(sep - circle.radius_deg) > 1e-9
    assert (circle.contains(ra, dec)[clear] == (sep <= circle.radius_deg)[clear]).all()


def test_box_contains_examples():
    ra = np.array([0.5, 359.5, 358.9, 1.1, 0.0, 360.0, -0.5, 0.5, 0.5])
    dec = np.array([0.0, 1.0, 0.0, 0.0, -1.0, 0.0, 0.0, 1.01, float("nan")])
    got = Box(359.0, -1.0, 1.0, 1.0).contains(ra, dec)
    assert got.tolist() == [True, True, False, False, True, True, True, False, False]
    assert Box(0.0, 89.0, 360.0, 90.0).contains(
        np.array([123.0, 5.0]), np.array([90.0, 88.0])
    ).tolist() == [True, False]
    # scisql tests RA even at the pole
    assert Box(0.0, 89.0, 10.0, 90.0).contains(
        np.array([5.0, 200.0]), np.array([90.0, 90.0])
    ).tolist() == [True, False]


@FAST
@given(boxes(), seeds)
def test_box_contains_matches_lonlat_definition(box, seed):
    rng = np.random.default_rng(seed)
    ra = rng.uniform(-360.0, 720.0, 400)
    dec = rng.uniform(-90.0, 90.0, 400)
    lon = np.mod(ra, 360.0)
    in_ra = (
        (lon - box.ra_min_deg) % 360.0 <= box.width_deg if not box.full_ra else np.ones(400, bool)
    )
    want = in_ra & (dec >= box.dec_min_deg) & (dec <= box.dec_max_deg)
    edge = np.minimum(
        np.abs((lon - box.ra_min_deg + 180.0) % 360.0 - 180.0),
        np.abs((lon - box.ra_max_deg + 180.0) % 360.0 - 180.0),
    )
    clear = edge > 1e-9
    assert (box.contains(ra, dec)[clear] == want[clear]).all()


@FAST
@given(ellipses(), seeds)
def test_ellipse_contains_matches_offset_frame(ellipse, seed):
    rng = np.random.default_rng(seed)
    reach = math.degrees(math.asin(ellipse.semi_major_rad)) * 1.3
    ra, dec = sample_cap(ellipse.ra_deg, ellipse.dec_deg, reach, 500, rng)
    centre = SkyCoord(ellipse.ra_deg * u.deg, ellipse.dec_deg * u.deg)
    local = SkyCoord(ra * u.deg, dec * u.deg).transform_to(SkyOffsetFrame(origin=centre))
    xyz = local.cartesian.xyz.value  # x towards the centre, y east, z north
    pa = math.radians(ellipse.pos_angle_deg)
    major = math.cos(pa) * xyz[2] + math.sin(pa) * xyz[1]
    minor = math.cos(pa) * xyz[1] - math.sin(pa) * xyz[2]
    q = (major / ellipse.semi_major_rad) ** 2 + (minor / ellipse.semi_minor_rad) ** 2
    clear = np.abs(q - 1.0) * ellipse.semi_minor_arcsec > 1e-6
    want = (q <= 1.0) & (xyz[0] > 0)
    assert (ellipse.contains(ra, dec)[clear] == want[clear]).all()


def test_ellipse_position_angle_is_east_of_north():
    north = Ellipse(10.0, 20.0, 3600.0, 36.0, 0.0)
    east = Ellipse(10.0, 20.0, 3600.0, 36.0, 90.0)
    up, right = offset(10.0, 20.0, 0.0, 0.9), offset(10.0, 20.0, 90.0, 0.9)
    pts = np.array([up, right]).T
    assert north.contains(*pts).tolist() == [True, False]
    assert east.contains(*pts).tolist() == [False, True]
    # scisql also matches near the antipode of the centre; skyshard does not
    assert not north.contains(np.array([190.0]), np.array([-20.0]))[0]


OCTANTS = [
    ((0, 0), (90, 0), (0, 90)),
    ((90, 0), (180, 0), (0, 90)),
    ((180, 0), (270, 0), (0, 90)),
    ((270, 0), (360, 0), (0, 90)),
    ((360, 0), (270, 0), (0, -90)),
    ((270, 0), (180, 0), (0, -90)),
    ((180, 0), (90, 0), (0, -90)),
    ((90, 0), (0, 0), (0, -90)),
]


@pytest.mark.parametrize("triangle", OCTANTS)
@pytest.mark.parametrize("reverse", [False, True])
def test_polygon_octants_in_either_winding(triangle, reverse):
    """scisql's own polygon test: the eight octant triangles."""
    rng = np.random.default_rng(7)
    ra, dec = rng.uniform(0.0, 360.0, 2000), rng.uniform(-90.0, 90.0, 2000)
    (ra0, _), (ra1, _), (_, pole) = triangle
    lo, hi = min(ra0, ra1), max(ra0, ra1)
    want = ((dec >= 0) if pole > 0 else (dec <= 0)) & (ra >= lo) & (ra <= hi)
    vertices = tuple(reversed(triangle)) if reverse else triangle
    assert (Polygon(vertices).contains(ra, dec) == want).all()


def test_qserv_polygons():
    triangle = Polygon.from_flat([1.0, 3.0, 1.5, 2.0, 2.0, 4.0])
    assert triangle.is_convex and not triangle.is_empty
    assert triangle.contains(np.array([1.5, 1.0, 1.5]), np.array([3.0, 3.0, 2.1])).tolist() == [
        True,
        False,
        True,
    ]
    bowtie = Polygon.from_flat([0, 0, 3, 10, 0, 5, 3, 1])  # self-intersecting
    assert not bowtie.is_convex and bowtie.is_empty
    ra, dec = np.meshgrid(np.linspace(-1, 4, 101), np.linspace(-1, 11, 101))
    assert not bowtie.contains(ra.ravel(), dec.ravel()).any()
    quad = Polygon.from_flat([300, 2, 0.01, 2, 0.03, 2.6, 359.9, 2.6])  # slightly concave
    assert not quad.is_convex and not quad.is_empty
    assert quad.contains(
        np.array([359.95, 340.0, 330.0, 1.0]), np.array([2.3, 2.4, 2.4, 2.3])
    ).tolist() == [True, True, False, False]


@FAST
@given(polygons())
def test_convex_polygon_corners_are_its_vertices(polygon):
    if polygon.is_convex:
        assert len(polygon.corners) <= len(polygon.vertices)
        dots = polygon.corners @ polygon.vertex_vectors.T
        assert (dots.max(axis=1) > 1 - 1e-9).all()


# --- conservative bounds --------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(regions, seeds)
def test_bounding_circle_and_lonlat_bounds_contain_the_region(region, seed):
    rng = np.random.default_rng(seed)
    circle = region.bounding_circle()
    ra, dec = sample_cap(
        circle.ra_deg, circle.dec_deg, min(180.0, circle.radius_deg * 1.2 + 1e-6), 3000, rng
    )
    inside = region.contains(ra, dec)
    ra, dec = ra[inside], dec[inside]
    sep = angular_separation_deg(circle.ra_deg, circle.dec_deg, ra, dec)
    assert (sep <= circle.radius_deg).all()
    bounds = region.lonlat_bounds()
    assert (dec >= bounds.dec_min_deg).all() and (dec <= bounds.dec_max_deg).all()
    in_ra = np.zeros(len(ra), dtype=bool)
    for lo, hi in bounds.ra_ranges_deg:
        in_ra |= (ra >= lo) & (ra <= hi)
    assert in_ra.all()


def test_bounds_are_tight_for_small_regions():
    polygon = Polygon(((10.0, 20.0), (11.0, 20.0), (11.0, 21.0), (10.0, 21.0)))
    bounds = polygon.lonlat_bounds()
    assert np.ravel(bounds.ra_ranges_deg) == pytest.approx([10.0, 11.0], abs=1e-6)
    # the upper edge is a great circle: it bulges north of the corners
    assert 21.0 < bounds.dec_max_deg < 21.01 and bounds.dec_min_deg == pytest.approx(20.0, abs=1e-6)
    wrap = Circle(0.5, 0.0, 1.0).lonlat_bounds()
    assert np.ravel(wrap.ra_ranges_deg) == pytest.approx([0.0, 1.5, 359.5, 360.0], abs=1e-6)
    assert Circle(0.0, 89.5, 1.0).lonlat_bounds().full_ra
    assert Polygon(((0, 80), (120, 80), (240, 80))).lonlat_bounds().full_ra
    assert Box(0.0, 0.0, 10.0, 1.0).bounding_circle().radius_deg < 6.0
    assert Polygon.from_flat([0, 0, 3, 10, 0, 5, 3, 1]).lonlat_bounds().empty
