"""A small seeded sky for tests: Object (director), Source (child), Filter (replicated).

Density is not uniform (a dense clump, a band, a patch across RA 0/360, a few polar
objects), values include NULLs, Source has orphans (rows whose objectId is not in
Object). ``oracle()`` is one unpartitioned DuckDB over the same rows.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

N_OBJECTS = 6000
N_ORPHANS = 37


def make_tables(seed: int = 11) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    n = N_OBJECTS
    parts = [
        (int(n * 0.4), lambda k: (rng.normal(45, 1.5, k), rng.normal(10, 1.5, k))),        # clump
        (int(n * 0.2), lambda k: (rng.uniform(0, 360, k), rng.normal(-30, 2, k))),         # band
        (int(n * 0.2), lambda k: (rng.uniform(-3, 3, k) % 360, rng.uniform(-3, 3, k))),    # RA wrap
        (int(n * 0.05), lambda k: (rng.uniform(0, 360, k), rng.uniform(86, 90, k))),       # pole
    ]
    rest = n - sum(k for k, _ in parts)
    parts.append((rest, lambda k: (rng.uniform(0, 360, k),
                                   np.degrees(np.arcsin(rng.uniform(-1, 1, k))))))        # uniform
    drawn = [f(k) for k, f in parts]
    ra = np.concatenate([d[0] for d in drawn]) % 360.0
    dec = np.clip(np.concatenate([d[1] for d in drawn]), -90, 90)
    rng2 = np.random.default_rng(seed + 1)
    order = rng2.permutation(n)
    ra, dec = ra[order], dec[order]
    object_id = rng2.choice(np.arange(1_000, 10_000_000), n, replace=False).astype(np.int64)
    mag_g = rng2.normal(22, 1.5, n)
    mag_r = mag_g - rng2.normal(0.5, 0.3, n)
    flux = 10 ** (-(mag_g + 48.6) / 2.5)
    null_mask = rng2.random(n) < 0.05
    kind = rng2.choice(np.array(["star", "galaxy", "qso"]), n, p=[0.5, 0.45, 0.05])
    obj = pa.table({
        "objectId": object_id,
        "ra": ra,
        "decl": dec,
        "gMag": pa.array(np.where(null_mask, np.nan, mag_g), mask=null_mask),
        "rMag": mag_r.astype(np.float32),
        "gFlux": flux,
        "nEpochs": rng2.integers(0, 50, n).astype(np.int32),
        "kind": kind,
        "flags": rng2.integers(0, 256, n).astype(np.int16),
    })
    per = rng2.poisson(3, n)
    idx = np.repeat(np.arange(n), per)
    m = len(idx)
    src_obj = object_id[idx]
    orphan_ids = rng2.choice(np.arange(20_000_000, 21_000_000), N_ORPHANS, replace=False)
    src = pa.table({
        "sourceId": np.arange(1, m + N_ORPHANS + 1, dtype=np.int64),
        "objectId": np.concatenate([src_obj, orphan_ids]).astype(np.int64),
        "filterId": rng2.integers(0, 6, m + N_ORPHANS).astype(np.int8),
        "ra": np.concatenate([ra[idx], rng2.uniform(0, 360, N_ORPHANS)]),
        "decl": np.concatenate([dec[idx], rng2.uniform(-60, 60, N_ORPHANS)]),
        "psfFlux": np.concatenate([rng2.lognormal(0, 1, m), rng2.lognormal(0, 1, N_ORPHANS)]),
        "taiMidPoint": np.round(rng2.uniform(50000, 51000, m + N_ORPHANS), 6),
    })
    flt = pa.table({
        "filterId": np.arange(6, dtype=np.int8),
        "filterName": ["u", "g", "r", "i", "z", "y"],
        "photClam": [365.0, 480.0, 622.0, 754.0, 869.0, 971.0],
    })
    return {"Object": obj, "Source": src, "Filter": flt}


def build(root: Path, tables: dict[str, pa.Table], *, max_rows: int = 400) -> None:
    """Ingest the tables into a catalog at ``root`` (small partitions: many of them)."""
    import skyshard

    inputs = root.parent / (root.name + "-inputs")
    inputs.mkdir(parents=True, exist_ok=True)
    for name, t in tables.items():
        pq.write_table(t, inputs / f"{name}.parquet")
    opts = skyshard.IngestOptions(max_rows_per_partition=max_rows, max_order=7, progress=False)
    skyshard.ingest(root, "Object", [inputs / "Object.parquet"], ra="ra", dec="decl",
                    key="objectId", options=opts)
    skyshard.ingest(root, "Source", [inputs / "Source.parquet"], director="Object",
                    director_key="objectId", ra="ra", dec="decl", options=opts)
    skyshard.ingest(root, "Filter", [inputs / "Filter.parquet"], replicated=True, options=opts)


def oracle(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    """One unpartitioned DuckDB holding the same rows, with the same SQL macros."""
    from skyshard.engine.macros import install

    con = duckdb.connect()
    install(con)
    for name, t in tables.items():
        con.register(f"{name}_arrow", t)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM "{name}_arrow"')
    return con
