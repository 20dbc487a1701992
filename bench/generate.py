#!/usr/bin/env python3
"""Seeded, streamed generator of an LSST-like Object + Source catalog as plain Parquet.

    python bench/generate.py --objects N --out DIR [--sources-per-object 5] [--seed 1]
                             [--batch 500000]

Writes::

    DIR/Object/part-NNNN.parquet   N rows, 24 columns, one file per batch
    DIR/Source/part-NNNN.parquet   ~ N * sources-per-object rows (Poisson per object)
    DIR/queries.json               query parameters (ids that exist, cone centres on data)
    DIR/meta.json                  row counts, seed, timings

Memory is bounded by the batch (~0.5-1 GB at 500k objects per batch) whatever N is.
Every batch draws from its own random stream (seed, batch index), so the output depends
only on (N, seed, batch, sources-per-object).

Sky model (non-uniform, so that partitions differ in density):

- 60 % uniform on the sphere;
- 30 % in a Gaussian band (sigma 8 deg in Galactic latitude) around the Galactic plane;
- 10 % in 400 compact clumps ("clusters", Gaussian, 0.05-0.6 deg) whose centres and
  weights are fixed by the seed.

``objectId`` is a bijective scramble of the row number (unique, unrelated to position
and to file order). Sources are written in random order within each batch, as a
visit-ordered Source table would be, not grouped by object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BANDS = ("u", "g", "r", "i", "z", "y")
ZP_NJY = 31.4                       # AB magnitude of 1 nJy
DEPTH = {"u": 23.9, "g": 25.0, "r": 24.7, "i": 24.0, "z": 23.3, "y": 22.1}  # 5-sigma
COLOR_SLOPE = {"u": 1.7, "g": 1.0, "r": 0.0, "i": -0.4, "z": -0.55, "y": -0.65}  # x (g-r)
OBJECT_ID_BASE = 1 << 40
SOURCE_ID_BASE = 1 << 50
VISIT_BASE = 900_000_000
N_CLUMPS = 400
QUERY_GROUP = 64                    # parameters per query kind in queries.json
OBJECT_ROW_GROUP = 131_072
SOURCE_ROW_GROUP = 524_288

# North Galactic pole and the Galactic longitude of the north celestial pole (J2000, deg).
NGP_RA, NGP_DEC, NCP_L = 192.85948, 27.12825, 122.93192


def galactic_to_icrs(l_deg: np.ndarray, b_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spherical-trigonometry conversion Galactic (l, b) -> ICRS (ra, dec), degrees."""
    l, b = np.radians(l_deg), np.radians(b_deg)
    dp, lp = math.radians(NGP_DEC), math.radians(NCP_L)
    sin_dec = np.sin(b) * math.sin(dp) + np.cos(b) * math.cos(dp) * np.cos(lp - l)
    y = np.cos(b) * np.sin(lp - l)
    x = np.sin(b) * math.cos(dp) - np.cos(b) * math.sin(dp) * np.cos(lp - l)
    ra = (np.degrees(np.arctan2(y, x)) + NGP_RA) % 360.0
    dec = np.degrees(np.arcsin(np.clip(sin_dec, -1.0, 1.0)))
    return ra, dec


def scramble_ids(rows: np.ndarray, bits: int) -> np.ndarray:
    """Unique int64 ids from row numbers: a bijection on [0, 2**bits) (odd multiplier,
    xor-shift, odd multiplier, xor constant), offset by OBJECT_ID_BASE."""
    mask = np.uint64((1 << bits) - 1)
    x = rows.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x * np.uint64(0xD6E8FEB86659FD93)) & mask
        x ^= x >> np.uint64(bits // 2 + 1)
        x = (x * np.uint64(0xA0761D6478BD642F)) & mask
        x ^= np.uint64(0x5851F42D4C957F2D) & mask
    return x.astype(np.int64) + OBJECT_ID_BASE


def jitter(ra: np.ndarray, dec: np.ndarray, sigma_deg: np.ndarray | float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian displacement in the tangent plane (fine for sigma up to ~1 deg)."""
    n = len(ra)
    d_dec = rng.normal(0.0, 1.0, n) * sigma_deg
    d_ra = rng.normal(0.0, 1.0, n) * sigma_deg / np.maximum(np.cos(np.radians(dec)), 1e-3)
    dec2 = dec + d_dec
    # reflect over a pole rather than clip, so no pile-up at +-90
    over = np.abs(dec2) > 90.0
    dec2[over] = np.sign(dec2[over]) * 180.0 - dec2[over]
    ra2 = (ra + d_ra + np.where(over, 180.0, 0.0)) % 360.0
    return ra2, dec2


class Clumps:
    """Fixed clump centres, sizes and weights (from the seed only)."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 0])
        self.ra = rng.uniform(0.0, 360.0, N_CLUMPS)
        self.dec = np.degrees(np.arcsin(rng.uniform(-0.98, 0.98, N_CLUMPS)))
        self.sigma = rng.uniform(0.05, 0.6, N_CLUMPS)
        w = rng.lognormal(0.0, 1.0, N_CLUMPS)
        self.weight = w / w.sum()


def sky(rng: np.random.Generator, n: int, clumps: Clumps) -> tuple[np.ndarray, np.ndarray]:
    kind = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    ra = np.empty(n)
    dec = np.empty(n)
    m = kind == 0
    k = int(m.sum())
    ra[m] = rng.uniform(0.0, 360.0, k)
    dec[m] = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, k)))
    m = kind == 1
    k = int(m.sum())
    gl = rng.uniform(0.0, 360.0, k)
    gb = np.clip(rng.normal(0.0, 8.0, k), -89.99, 89.99)
    ra[m], dec[m] = galactic_to_icrs(gl, gb)
    m = kind == 2
    k = int(m.sum())
    c = rng.choice(N_CLUMPS, size=k, p=clumps.weight)
    ra[m], dec[m] = jitter(clumps.ra[c], clumps.dec[c], clumps.sigma[c], rng)
    return ra, dec


def objects(seed: int, bidx: int, start: int, n: int, bits: int, clumps: Clumps) -> pa.Table:
    rng = np.random.default_rng([seed, 1, bidx])
    ra, dec = sky(rng, n, clumps)
    # r magnitude with rising counts, dN/dm ~ 10^(0.3 m), 17 < r < 26.5 (inverse CDF)
    lo, hi, a = 17.0, 26.5, 0.3 * math.log(10.0)
    u = rng.random(n)
    r_mag = np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a
    g_r = rng.normal(0.55, 0.4, n)
    cols: dict[str, object] = {
        "objectId": scramble_ids(np.arange(start, start + n), bits),
        "ra": ra,
        "decl": dec,
    }
    for band in BANDS:
        true = 10.0 ** ((ZP_NJY - (r_mag + COLOR_SLOPE[band] * g_r)) / 2.5)
        sky_sigma = 10.0 ** ((ZP_NJY - DEPTH[band]) / 2.5) / 5.0
        err = np.sqrt(sky_sigma**2 + (0.01 * true) ** 2 + true * 0.05)
        cols[f"psfFlux_{band}"] = (true + rng.standard_normal(n) * err).astype(np.float32)
        cols[f"psfFluxErr_{band}"] = err.astype(np.float32)
    p_ext = np.clip((r_mag - 19.0) / 6.0, 0.05, 0.9)
    ext = rng.random(n) < p_ext
    cols["extendedness"] = ext.astype(np.float32)
    size = np.where(ext, rng.lognormal(0.4, 0.45, n), 0.7) ** 2
    e1 = rng.normal(0.0, 0.15, n)
    cols["shape_xx"] = (size * (1.0 + e1)).astype(np.float32)
    cols["shape_yy"] = (size * (1.0 - e1)).astype(np.float32)
    cols["shape_xy"] = (size * rng.normal(0.0, 0.1, n)).astype(np.float32)
    cols["pmRa"] = rng.normal(0.0, 4.0, n).astype(np.float32)
    cols["pmDec"] = rng.normal(0.0, 4.0, n).astype(np.float32)
    cols["parallax"] = np.abs(rng.normal(0.0, 0.8, n)).astype(np.float32)
    # a few rare flag bits (saturated, edge, interpolated, blended ...)
    flags = np.zeros(n, dtype=np.int64)
    for bit, p in enumerate((0.01, 0.02, 0.05, 0.08, 0.003)):
        flags |= (rng.random(n) < p).astype(np.int64) << bit
    cols["flags"] = flags
    cols["detect_isPrimary"] = rng.random(n) < 0.97
    return pa.table(cols)


def sources(seed: int, bidx: int, first_id: int, obj: pa.Table, per_object: float) -> pa.Table:
    rng = np.random.default_rng([seed, 2, bidx])
    k = rng.poisson(per_object, obj.num_rows)
    host = np.repeat(np.arange(obj.num_rows), k)
    rng.shuffle(host)                      # visit order, not object order
    n = len(host)
    ra0 = obj.column("ra").to_numpy()[host]
    dec0 = obj.column("decl").to_numpy()[host]
    ra, dec = jitter(ra0, dec0, 0.08 / 3600.0, rng)   # 0.08" astrometric scatter
    band = rng.integers(0, len(BANDS), n)
    flux = np.stack([obj.column(f"psfFlux_{b}").to_numpy() for b in BANDS])[band, host]
    ferr = np.stack([obj.column(f"psfFluxErr_{b}").to_numpy() for b in BANDS])[band, host] * 2.0
    names = np.array(BANDS)
    return pa.table({
        "sourceId": np.arange(first_id, first_id + n, dtype=np.int64) + SOURCE_ID_BASE,
        "objectId": obj.column("objectId").to_numpy()[host],
        "ccdVisitId": VISIT_BASE + rng.integers(0, 2_000_000, n, dtype=np.int64),
        "filterName": pa.array(names[band], pa.string()),
        "ra": ra,
        "decl": dec,
        "psfFlux": (flux + rng.standard_normal(n) * ferr).astype(np.float32),
        "psfFluxErr": ferr.astype(np.float32),
        "midPointTai": rng.uniform(60_800.0, 64_450.0, n),
        "flags": (rng.random(n) < 0.04).astype(np.int32) | ((rng.random(n) < 0.01).astype(np.int32) << 1),
    })


def offset(ra: float, dec: float, sep_deg: float, pa_rad: float) -> tuple[float, float]:
    """Point at separation sep_deg and position angle pa_rad from (ra, dec) (exact)."""
    a, d, s, p = math.radians(ra), math.radians(dec), math.radians(sep_deg), pa_rad
    sin_d2 = math.sin(d) * math.cos(s) + math.cos(d) * math.sin(s) * math.cos(p)
    d2 = math.asin(max(-1.0, min(1.0, sin_d2)))
    a2 = a + math.atan2(math.sin(p) * math.sin(s) * math.cos(d),
                        math.cos(s) - math.sin(d) * sin_d2)
    return math.degrees(a2) % 360.0, math.degrees(d2)


def generate(n: int, out: Path, *, per_object: float = 5.0, seed: int = 1,
             batch: int = 500_000, log=print) -> dict:
    if n < 1:
        raise SystemExit("--objects must be at least 1")
    bits = max(16, math.ceil(math.log2(n)) + 1)
    (out / "Object").mkdir(parents=True, exist_ok=True)
    (out / "Source").mkdir(parents=True, exist_ok=True)
    clumps = Clumps(seed)
    # Rows whose ids / positions become query parameters, drawn before generating.
    pick = np.random.default_rng([seed, 99])
    wanted = pick.choice(n, size=min(n, 4 * QUERY_GROUP), replace=False)
    positions: dict[int, tuple[float, float]] = {}
    hv1_threshold = None
    t0 = time.time()
    n_src = 0
    n_batches = -(-n // batch)
    for bidx in range(n_batches):
        start = bidx * batch
        m = min(batch, n - start)
        obj = objects(seed, bidx, start, m, bits, clumps)
        src = sources(seed, bidx, n_src, obj, per_object)
        if hv1_threshold is None:
            # ~4 % of objects have psfFlux_g above this (the magnitude model does not
            # depend on position, so the first batch is a fair sample)
            g = obj.column("psfFlux_g").to_numpy()
            hv1_threshold = float(f"{np.quantile(g, 0.96):.4g}")
        here = wanted[(wanted >= start) & (wanted < start + m)] - start
        ra_np, dec_np = obj.column("ra").to_numpy(), obj.column("decl").to_numpy()
        for r in here:
            positions[int(r + start)] = (float(ra_np[r]), float(dec_np[r]))
        pq.write_table(obj, out / "Object" / f"part-{bidx:04d}.parquet",
                       row_group_size=OBJECT_ROW_GROUP, compression="snappy")
        pq.write_table(src, out / "Source" / f"part-{bidx:04d}.parquet",
                       row_group_size=SOURCE_ROW_GROUP, compression="snappy")
        n_src += src.num_rows
        log(f"  batch {bidx + 1}/{n_batches}: {start + m:,} objects, {n_src:,} sources, "
            f"{time.time() - t0:.1f} s")
        del obj, src
    gen_s = time.time() - t0

    rng = np.random.default_rng([seed, 98])
    order = wanted.copy()
    rng.shuffle(order)
    groups = [order[i::4] for i in range(4)]
    ids = {g: scramble_ids(np.asarray(groups[g]), bits).tolist() for g in range(4)}
    lv2 = []
    for r in groups[2]:
        ra0, dec0 = positions[int(r)]
        # an object moved by 0-20": the 1' cone always holds it, plus whatever is near
        lv2.append(offset(ra0, dec0, rng.uniform(0.0, 20.0) / 3600.0, rng.uniform(0.0, 2 * math.pi)))
    lv3 = [positions[int(r)] for r in groups[3]]
    queries = {
        "lv1_ids": ids[0],
        "lv4_ids": ids[1],
        "lv2_centers": lv2,
        "lv2_radius_deg": 1.0 / 60.0,
        "lv3_centers": lv3,
        "lv3_radius_deg": 0.5,
        "hv1_psfFlux_g_min": hv1_threshold,
        "hv2_flux_bin": 1.0e4,
    }
    meta = {
        "objects": n, "sources": n_src, "sources_per_object": per_object, "seed": seed,
        "batch": batch, "id_bits": bits, "files_per_table": n_batches,
        "generate_seconds": round(gen_s, 1),
    }
    (out / "queries.json").write_text(json.dumps(queries, indent=1) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, required=True, help="number of Object rows")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--sources-per-object", type=float, default=5.0,
                    help="mean of the Poisson number of sources per object (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=500_000, help="objects per batch / file")
    a = ap.parse_args(argv)
    if a.out.exists() and any(a.out.iterdir()):
        raise SystemExit(f"{a.out} is not empty")
    meta = generate(a.objects, a.out, per_object=a.sources_per_object, seed=a.seed,
                    batch=a.batch, log=lambda s: print(s, flush=True))
    print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    sys.exit(main())
