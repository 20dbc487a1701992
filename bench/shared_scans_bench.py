#!/usr/bin/env python3
"""Shared-scan benchmark: 4 different full scans of one table at once, with shared scans
off and on, and the same 4 queries one at a time (what a lone full scan pays).

    python bench/shared_scans_bench.py [--objects N | --catalog DIR] [--reps 5]
                                       [--unit-rows R] [--workloads photometry,mixed,sources]
                                       [--no-record]

Uses the catalog of bench/core.py (``bench/data/catalog-<N>-seed1``; run core.py first).
One ``Database``, two executors over its one DuckDB: ``LocalExecutor(shared_scans=False)``
(each query one statement over its files) and the default one (full scans ride a shared
scan, units of ``--unit-rows`` rows). Per workload: one untimed warm-up, then ``--reps``
repetitions alternating the executors, each repetition the 4 queries started together on
4 threads (wall time until the last one ends, and the process CPU time: every DuckDB
thread included), then the same queries one after another. Every result of the shared
executor is compared with the other's (same rows, any order, floats to 1e-9 relative).

Workloads (4 queries each):

- ``photometry``: Object, cuts and statistics on the same flux columns (the case shared
  scans are for: the queries read mostly the same columns);
- ``mixed``: Object, four queries on mostly different columns (columnar files already
  let each query read only its own columns, so there is little to share);
- ``sources``: Source (5x the rows), string GROUP BY keys.

Top-k queries (``ORDER BY ... LIMIT``) are left out: they never ride a shared scan.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import core  # bench/core.py: result comparison, machine, versions

WORKLOADS: dict[str, tuple[str, list[str]]] = {
    "photometry": ("Object", [
        ("SELECT COUNT(*) AS n FROM Object "
         "WHERE psfFlux_g > 2 * psfFlux_r AND psfFlux_i > 0 AND psfFlux_u < psfFlux_z"),
        ("SELECT FLOOR(psfFlux_r / 1000) AS bin, COUNT(*) AS n, AVG(psfFlux_g) AS g, "
         "AVG(psfFlux_i) AS i FROM Object GROUP BY bin"),
        ("SELECT objectId, psfFlux_u, psfFlux_g, psfFlux_r FROM Object "
         "WHERE psfFlux_z > psfFlux_y AND psfFlux_g > 200000 ORDER BY psfFlux_g DESC, objectId"),
        ("SELECT AVG(psfFlux_u), AVG(psfFlux_g), AVG(psfFlux_r), AVG(psfFlux_i), "
         "AVG(psfFlux_z), AVG(psfFlux_y) FROM Object WHERE psfFlux_r > 1000"),
    ]),
    "mixed": ("Object", [
        "SELECT COUNT(*) AS n, AVG(psfFlux_r) AS mean_r FROM Object WHERE psfFlux_g > 4028",
        "SELECT FLOOR(decl) AS d, COUNT(*) AS n FROM Object GROUP BY d",
        ("SELECT objectId, ra, decl, parallax FROM Object WHERE extendedness < 0.5 "
         "AND parallax > 3.2 ORDER BY parallax DESC, objectId"),
        "SELECT AVG(pmRa), STDDEV(pmDec), MAX(shape_xx) FROM Object WHERE detect_isPrimary",
    ]),
    "sources": ("Source", [
        "SELECT filterName, FLOOR(psfFlux / 10000) AS b, COUNT(*) AS n FROM Source GROUP BY 1, 2",
        ("SELECT filterName, COUNT(*) AS n, AVG(psfFlux) AS f, MAX(psfFluxErr) AS e "
         "FROM Source GROUP BY filterName"),
        ("SELECT sourceId, objectId, psfFlux FROM Source WHERE filterName = 'r' "
         "AND psfFlux > 500000 ORDER BY psfFlux DESC, sourceId"),
        ("SELECT FLOOR(midPointTai) AS night, COUNT(*) AS n FROM Source WHERE psfFlux > 0 "
         "GROUP BY night"),
    ]),
}
TARGET = 1.5


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def together(db, executor, sqls: list[str]) -> tuple[float, float, list]:
    """Run ``sqls`` at once on threads: (wall s, process CPU s, results)."""
    db.executor = executor
    gate = threading.Barrier(len(sqls) + 1)
    out: list = [None] * len(sqls)

    def one(i: int) -> None:
        gate.wait()
        try:
            out[i] = db.sql(sqls[i])
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sqls))]
    for t in threads:
        t.start()
    gate.wait()
    c0, t0 = cpu_s(), time.perf_counter()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    for r in out:
        if isinstance(r, BaseException):
            raise r
    return wall, cpu, out


def one_by_one(db, executor, sqls: list[str]) -> tuple[float, float, list]:
    db.executor = executor
    c0, t0 = cpu_s(), time.perf_counter()
    out = [db.sql(s) for s in sqls]
    return time.perf_counter() - t0, cpu_s() - c0, out


def columns_read(db, sqls: list[str], table: str) -> tuple[int, int]:
    """(columns of the union the shared scan reads, sum of each query's own columns)."""
    from skyshard.dispatch.scans import full_scan_table, needed_columns

    sets = []
    for s in sqls:
        p = db.plan(s)
        info = full_scan_table(p)
        if info is None or info.name != table:
            raise SystemExit(f"not a shareable full scan of {table}: {s}")
        sets.append(needed_columns(p, info) or {info.column_names[0]})
    return len(set().union(*sets)), sum(len(s) for s in sets)


def run_workload(db, off, on, name: str, reps: int) -> dict:
    table, sqls = WORKLOADS[name]
    union, total = columns_read(db, sqls, table)
    r = {"table": table, "queries": sqls, "columns_union": union, "columns_sum": total,
         "together": {"off": [], "on": []}, "together_cpu": {"off": [], "on": []},
         "alone": {"off": [], "on": []}, "alone_cpu": {"off": [], "on": []},
         "mismatches": []}
    print(f"\n{name}: {table}, 4 queries, columns {union} shared / {total} read separately",
          flush=True)
    _, _, want = one_by_one(db, off, sqls)  # warm-up and the reference rows
    one_by_one(db, on, sqls)
    before = dict(on.scans.stats)

    def check(got: list, how: str, rep: int) -> None:
        for i, (g, w) in enumerate(zip(got, want)):
            diff = core.compare(g, w)
            if diff:
                r["mismatches"].append(f"{how} rep {rep} query {i + 1}: {diff}")
                print(f"!!! RESULT MISMATCH {name} {how} rep {rep} query {i + 1}: {diff}")

    for rep in range(reps):
        order = ("off", "on") if rep % 2 == 0 else ("on", "off")
        for mode in order:
            wall, cpu, got = together(db, off if mode == "off" else on, sqls)
            r["together"][mode].append(wall)
            r["together_cpu"][mode].append(cpu)
            if mode == "on":
                check(got, "together", rep)
        for mode in order:
            wall, cpu, got = one_by_one(db, off if mode == "off" else on, sqls)
            r["alone"][mode].append(wall)
            r["alone_cpu"][mode].append(cpu)
            if mode == "on":
                check(got, "one by one", rep)
        print(f"  rep {rep + 1}: together off {r['together']['off'][-1]:.2f} s, "
              f"on {r['together']['on'][-1]:.2f} s; one by one off {r['alone']['off'][-1]:.2f} s, "
              f"on {r['alone']['on'][-1]:.2f} s", flush=True)
    after = on.scans.stats
    r["scan_stats"] = {k: after[k] - before.get(k, 0) for k in after}
    for key in ("together", "together_cpu", "alone", "alone_cpu"):
        r[key + "_median"] = {m: statistics.median(v) for m, v in r[key].items()}
    r["speedup"] = r["together_median"]["off"] / r["together_median"]["on"]
    r["cpu_ratio"] = r["together_cpu_median"]["off"] / r["together_cpu_median"]["on"]
    r["alone_overhead"] = r["alone_median"]["on"] / r["alone_median"]["off"]
    return r


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def section(args, res: dict, catalog: Path, db, scans, m: dict, v: dict) -> str:
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    cmd = "python bench/shared_scans_bench.py " + " ".join(args.argv)
    tables = ", ".join(
        f"{t} {db.tables[t].rows:,} rows / {len(db.tables[t].partitions)} partitions / "
        f"{len(scans.units(db.tables[t]))} units"
        for t in sorted({WORKLOADS[w][0] for w in res["workloads"]}))
    lines = [
        f"## {now} — shared scans: 4 concurrent full scans, off vs on",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"- Data: `{catalog.name}`: {tables} (a unit: consecutive partitions of at most about "
        f"{scans.unit_rows:,} rows, read once for the queries that need it when their "
        f"columns overlap {scans.min_overlap}x or more)",
        f"- Machine: {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, {m['cpu']}, "
        f"{m['os']}, Python {m['python']}; load average (1/5/15 min) before "
        f"{res['load_before']}, after {res['load_after']}",
        "- Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()),
        f"- A load average above the {m['cores']} cores means other processes shared them: "
        "wall times are then inflated and noisy; the CPU columns (this process only) are "
        "steadier.",
        f"- {args.reps} repetitions, medians; 'together' = the 4 queries started at once on 4 "
        "threads (wall time to the last result; CPU = the process's CPU time, all DuckDB "
        "threads); 'one by one' = the same 4 queries in sequence (a lone full scan's cost). "
        "Off: `LocalExecutor(shared_scans=False)`, each query one DuckDB statement over its "
        "files; on: the default executor.",
        "",
        "| workload | table | columns: shared read / read separately | together off s | "
        "together on s | speed-up | CPU off s | CPU on s | CPU ratio | one by one off s | "
        "one by one on s | lone overhead | units read shared / by one query |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in res["workloads"]:
        r = res[name]
        tm, cm, am = r["together_median"], r["together_cpu_median"], r["alone_median"]
        s = r["scan_stats"]
        lines.append(
            f"| {name} | {r['table']} | {r['columns_union']} / {r['columns_sum']} | "
            f"{tm['off']:.2f} | {tm['on']:.2f} | {r['speedup']:.2f}x | {cm['off']:.2f} | "
            f"{cm['on']:.2f} | {r['cpu_ratio']:.2f}x | {am['off']:.2f} | {am['on']:.2f} | "
            f"{(r['alone_overhead'] - 1) * 100:+.0f} % | {s['shared_reads']} / {s['own_reads']} |")
    lines += ["", "Queries:", ""]
    for name in res["workloads"]:
        for i, q in enumerate(res[name]["queries"]):
            lines.append(f"- {name} {i + 1}: `{q}`")
    lines += ["", f"Target: 4 concurrent full scans with shared scans >= {TARGET}x faster than "
              "without:", ""]
    for name in res["workloads"]:
        sp = res[name]["speedup"]
        lines.append(f"- {name}: {sp:.2f}x — {'met' if sp >= TARGET else '**not met**'}")
    problems = [x for name in res["workloads"] for x in res[name]["mismatches"]]
    lines += ["", "Problems: " + ("; ".join(problems) if problems else "none (every shared "
                                  "result equal to the unshared one)"), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=HERE / "data")
    ap.add_argument("--catalog", type=Path, help="a catalog directory (default: core.py's)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--unit-rows", type=int, default=None,
                    help="rows per shared-scan unit (default: skyshard's)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv

    import skyshard
    from skyshard.dispatch.local import LocalExecutor
    from skyshard.dispatch.scans import DEFAULT_UNIT_ROWS, SharedScans

    catalog = args.catalog or args.workdir / f"catalog-{args.objects}-seed{args.seed}"
    if not (catalog / "skyshard.json").exists():
        raise SystemExit(f"no catalog at {catalog}: run bench/core.py --objects "
                         f"{args.objects} first")
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    unit_rows = args.unit_rows or DEFAULT_UNIT_ROWS
    db = skyshard.open(catalog)
    off = LocalExecutor(db.engine, shared_scans=False)
    on = LocalExecutor(db.engine, scans=SharedScans(db.engine, unit_rows=unit_rows))
    res: dict = {"workloads": names, "load_before": load(), "unit_rows": unit_rows}
    for name in names:
        res[name] = run_workload(db, off, on, name, args.reps)
    res["load_after"] = load()
    out = args.workdir / f"shared-scans-results-{catalog.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    m, v = core.machine(), core.versions()
    text = section(args, res, catalog, db, on.scans, m, v)
    print("\n" + text)
    if not args.no_record:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write("\n" + text)
        print(f"appended to {HERE / 'RESULTS.md'}; all numbers in {out}")


if __name__ == "__main__":
    main()
