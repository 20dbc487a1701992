"""Cone, box, ellipse and polygon queries against brute force over every row (numpy,
independent of the SQL macros), including boxes across RA 0/360 and near the pole."""

from __future__ import annotations

import numpy as np
import pytest

from skyshard.sphere.regions import Box, Circle, Ellipse, Polygon, angular_separation_deg


def ids_where(t, mask) -> list[int]:
    return sorted(np.asarray(t.column("objectId"))[mask].tolist())


CONES = [(45, 10, 0.5), (0.2, 0.1, 2.0), (359.8, -1, 1.0), (10, 88.5, 3.0), (200, -30, 1.5)]


@pytest.mark.parametrize("ra,dec,r", CONES)
@pytest.mark.parametrize("form", ["areaspec", "scisql"])
def test_cone(sky_db, sky_tables, ra, dec, r, form):
    t = sky_tables["Object"]
    want = ids_where(t, angular_separation_deg(t.column("ra").to_numpy(), t.column("decl").to_numpy(),
                                               ra, dec) <= r)
    where = (f"qserv_areaspec_circle({ra}, {dec}, {r})" if form == "areaspec"
             else f"scisql_s2PtInCircle(ra, decl, {ra}, {dec}, {r}) = 1")
    got = sky_db.sql(f"SELECT objectId FROM Object WHERE {where}").column(0).to_pylist()
    assert sorted(got) == want
    assert want, "the cone should hold rows"


BOXES = [(44, 9, 46, 11), (358, -2, 2, 2), (359.5, -3, 0.5, 3), (0, 86, 360, 90), (100, 85, 300, 90)]


@pytest.mark.parametrize("box", BOXES)
def test_box(sky_db, sky_tables, box):
    t = sky_tables["Object"]
    want = ids_where(t, Box(*box).contains(t.column("ra").to_numpy(), t.column("decl").to_numpy()))
    got = sky_db.sql(f"SELECT objectId FROM Object WHERE qserv_areaspec_box{box}").column(0).to_pylist()
    assert sorted(got) == want
    assert want


def test_box_brute_force_by_hand(sky_db, sky_tables):
    """A box across RA 0 checked without the regions module at all."""
    t = sky_tables["Object"]
    ra, dec = t.column("ra").to_numpy(), t.column("decl").to_numpy()
    mask = ((ra >= 358) | (ra <= 2)) & (dec >= -2) & (dec <= 2)
    got = sky_db.sql("SELECT objectId FROM Object WHERE qserv_areaspec_box(358, -2, 2, 2)")
    assert sorted(got.column(0).to_pylist()) == ids_where(t, mask)


def test_ellipse(sky_db, sky_tables):
    t = sky_tables["Object"]
    e = Ellipse(45, 10, 3600, 1800, 30)
    want = ids_where(t, e.contains(t.column("ra").to_numpy(), t.column("decl").to_numpy()))
    got = sky_db.sql("SELECT objectId FROM Object WHERE qserv_areaspec_ellipse(45, 10, 3600, 1800, 30)")
    assert sorted(got.column(0).to_pylist()) == want and want


@pytest.mark.parametrize("vertices", [
    ((44, 9), (46, 9), (45, 11)),
    ((359, -2), (1, -2), (1, 2), (359, 2)),
    ((0, 0), (3, 1), (3, 10), (0, 5)),
])
def test_polygon(sky_db, sky_tables, vertices):
    t = sky_tables["Object"]
    want = ids_where(t, Polygon(vertices).contains(t.column("ra").to_numpy(), t.column("decl").to_numpy()))
    flat = ", ".join(str(c) for v in vertices for c in v)
    got = sky_db.sql(f"SELECT objectId FROM Object WHERE qserv_areaspec_poly({flat})")
    assert sorted(got.column(0).to_pylist()) == want and want
    got2 = sky_db.sql(f"SELECT objectId FROM Object WHERE scisql_s2PtInCPoly(ra, decl, {flat}) = 1")
    assert sorted(got2.column(0).to_pylist()) == want


def test_circle_region_is_not_the_macro(sky_tables):
    """The reference itself: Circle.contains agrees with the angular separation."""
    t = sky_tables["Object"]
    ra, dec = t.column("ra").to_numpy(), t.column("decl").to_numpy()
    c = Circle(45, 10, 0.5)
    assert (c.contains(ra, dec) == (angular_separation_deg(ra, dec, 45, 10) <= 0.5)).all()
