from __future__ import annotations

import pyarrow as pa

from skyshard.catalog.director_index import DirectorIndex


def test_lookup_and_range():
    t = pa.table({"k": [10, 3, 7, 3, 99], "Norder": [1, 1, 2, 3, 1], "Npix": [5, 6, 40, 200, 5]})
    idx = DirectorIndex.from_table(t, "k")
    assert idx.partitions_of([3]) == {(1, 6), (3, 200)}          # duplicate keys: both
    assert idx.partitions_of([4, 1000]) == set()
    assert idx.partitions_of(["x"]) == set()                     # not an integer key
    assert idx.partitions_between(4, 10) == {(2, 40), (1, 5)}
    assert idx.partitions_between(3.5, 6.9) == set()
    assert idx.partitions_between(-5, 3) == {(1, 6), (3, 200)}


def test_database_uses_index(sky_db, sky_tables):
    oid = sky_tables["Object"].column("objectId")[5].as_py()
    info = sky_db.tables["Object"]
    from skyshard.sql.analyze import KeyConstraint

    match = sky_db._lookup_keys(sky_db._current(), info, [KeyConstraint(values=(oid,))])
    assert len(match.partitions) == 1 and len(match.healpix) == 1
    (order, pixel), = match.partitions
    got = sky_db.sql(f"SELECT chunkId FROM Object WHERE objectId = {oid}").column(0)[0].as_py()
    assert got == [p.id for p in info.partitions if (p.order, p.pixel) == (order, pixel)][0]
