"""Hypothesis strategies and samplers of sky regions, shared by the sphere and macro tests."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from skyshard.sphere.regions import Box, Circle, Ellipse, lonlat_deg, tangent_basis, unit_vectors

ras = st.floats(0.0, 360.0, exclude_max=True)

decs = st.one_of(st.floats(-90.0, 90.0), st.sampled_from([-90.0, -89.99, 0.0, 89.99, 90.0]))

seeds = st.integers(0, 2**32 - 1)


def sample_cap(
    ra: float, dec: float, radius_deg: float, n: int, rng
) -> tuple[np.ndarray, np.ndarray]:
    centre = unit_vectors(ra, dec)
    e1, e2 = tangent_basis(centre)
    cos_t = rng.uniform(math.cos(math.radians(min(radius_deg, 180.0))), 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    v = cos_t[:, None] * centre + sin_t[:, None] * (
        np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2
    )
    return lonlat_deg(v)


def offset(ra: float, dec: float, bearing_deg: float, distance_deg: float) -> tuple[float, float]:
    centre, towards, _ = Ellipse(ra, dec, 1.0, 1.0, bearing_deg).frame()
    d = math.radians(distance_deg)
    ra2, dec2 = lonlat_deg(math.cos(d) * centre + math.sin(d) * towards)
    return float(ra2), float(dec2)


@st.composite

def circles(draw):
    return Circle(
        draw(ras), draw(decs), draw(st.one_of(st.floats(1e-4, 5.0), st.floats(5.0, 180.0)))
    )


@st.composite

def boxes(draw):
    dec_a, dec_b = sorted([draw(decs), draw(decs)])
    ra_min = draw(ras)
    width = draw(st.one_of(st.floats(0.0, 10.0), st.floats(0.0, 360.0), st.just(360.0)))
    return Box(
        ra_min, dec_a, (ra_min + width) if width >= 360.0 else (ra_min + width) % 360.0, dec_b
    )
