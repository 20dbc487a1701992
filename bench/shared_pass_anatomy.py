#!/usr/bin/env python3
"""Where a shared scan's time goes, unit by unit: what sharing can save at most.

    python bench/shared_pass_anatomy.py [--objects 10000000 | --catalog DIR]
                                        [--workload photometry] [--reps 7]

For each unit of the table (as ``SharedScans`` cuts it) and the 4 queries of a workload of
``bench/shared_scans_bench.py``, on the catalog's own engine, one statement at a time
(medians of ``--reps``, the page cache warm):

- ``separate``: each query's parallel statement over the unit's files, as an unshared
  scan runs it (4 statements);
- ``shared``: the one statement of a shared pass (the union of the columns materialised,
  each query's statement over it, packed into lists), as ``SharedScans`` builds it;
- ``materialise``: that statement's read of the files alone;
- ``queries``: each query's statement over the materialised unit, minus the read.

``separate / shared`` is what sharing can save when the queries are run one at a time;
the parts show where the rest goes. Prints a table; records nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import shared_scans_bench as ssb  # noqa: E402 - the workloads


def median_ms(run, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=10_000_000)
    ap.add_argument("--catalog", type=Path, default=None)
    ap.add_argument("--workload", default="photometry", choices=sorted(ssb.WORKLOADS))
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args(argv)

    import skyshard
    from skyshard.dispatch import scans as shared
    from skyshard.storage import layout

    catalog = a.catalog or HERE / "data" / f"catalog-{a.objects}-seed1"
    db = skyshard.open(catalog)
    table, sqls = ssb.WORKLOADS[a.workload]
    plans = [db.plan(s) for s in sqls]
    info = shared.full_scan_table(plans[0])
    if info is None or any(shared.full_scan_table(p) != info for p in plans):
        raise SystemExit(f"the {a.workload} queries are not full scans of one table")
    scans = shared.SharedScans(db.engine)
    base = Path(info.path) if Path(info.path).is_absolute() else catalog / info.path
    names = set().union(*(shared.needed_columns(p, info) for p in plans))
    cols = ", ".join(f'"{c}"' for c in info.column_names if c in names)
    overs = [p.parallel_sql_over(shared.SCANNED) for p in plans]
    q = db.engine.query
    totals = {"separate": 0.0, "shared": 0.0, "materialise": 0.0, "queries": 0.0}
    print(f"{a.workload}: {table}, {len(scans.units(info))} units; ms per unit "
          "(separate = sum of the 4 statements)")
    print("unit   rows        separate  shared  materialise  queries")
    for unit in scans.units(info):
        files = ", ".join("'" + layout.partition_path(str(base / layout.DATASET), o, p) + "'"
                          for o, p in unit.partitions)
        head = (f'WITH "{shared.SCANNED}" AS MATERIALIZED (SELECT {cols} FROM '
                f"read_parquet([{files}], hive_partitioning = false))")
        each = ", ".join(f"(SELECT list(__r) FROM ({o}) AS __r) AS __q{i}"
                         for i, o in enumerate(overs))
        sep = sum(median_ms(lambda p=p: q(p.parallel_sql(unit.partitions, orphans=False)),
                            a.reps) for p in plans)
        one = median_ms(lambda: q(f"{head} SELECT {each}"), a.reps)
        mat = median_ms(lambda: q(f'{head} SELECT count(*) FROM "{shared.SCANNED}"'), a.reps)
        over = sum(median_ms(lambda o=o: q(f"{head} {o}"), a.reps) - mat for o in overs)
        for k, v in zip(totals, (sep, one, mat, over)):
            totals[k] += v
        print(f"{unit.index:>4}  {unit.rows:>10,}  {sep:>8.1f}  {one:>6.1f}  {mat:>11.1f}  "
              f"{over:>7.1f}")
    t = totals
    print(f"total             {t['separate']:>8.1f}  {t['shared']:>6.1f}  {t['materialise']:>11.1f}"
          f"  {t['queries']:>7.1f}")
    print(f"separate / shared = {t['separate'] / t['shared']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
