#!/usr/bin/env python3
"""Core benchmark: skyshard against plain DuckDB over the same Parquet, in one run.

    python bench/core.py --objects N [--reps 20] [--workdir DIR] [--skip-generate]
                         [--skip-ingest] [--max-rows-per-partition R] [--no-record]

1. generate ``N`` objects (+ ~5 N sources) with bench/generate.py, in a child process,
   unless the data set is already in the work directory;
2. ingest it with skyshard in a child process (Object: director on ra/decl/objectId;
   Source: child of Object by objectId), measuring wall time and the child's peak RSS
   (``os.wait4`` rusage of exactly that process);
3. run the query set on (a) ``skyshard.open(catalog).sql(...)`` and (b) DuckDB views over
   ``read_parquet`` of the generated files (cones as a dec/RA box + haversine, no index),
   one untimed warm-up each, then ``--reps`` timed repetitions alternating the systems,
   comparing every result between the two systems;
4. time skyshard's stages separately (director-index lookup, parse/plan, execution);
5. print the tables and append a section to bench/RESULTS.md.

Data and catalogs live in ``--workdir`` (default bench/data, git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUERIES = ("LV1", "LV2", "LV3", "LV4", "HV1", "HV2")
TITLES = {
    "LV1": "id lookup, all columns",
    "LV2": "1' cone, all columns",
    "LV3": "0.5 deg cone, COUNT(*)",
    "LV4": "object + its sources by id",
    "HV1": "full scan, filtered COUNT/AVG",
    "HV2": "Source histogram, GROUP BY 2 keys",
}
GB = 1e9


# --- the two systems' SQL ---------------------------------------------------------------


def skyshard_sql(q: str, p, P: dict) -> str:
    if q == "LV1":
        return f"SELECT * FROM Object WHERE objectId = {int(p)}"
    if q == "LV2":
        return (f"SELECT * FROM Object WHERE scisql_s2PtInCircle(ra, decl, {p[0]!r}, {p[1]!r}, "
                f"{P['lv2_radius_deg']!r}) = 1")
    if q == "LV3":
        return (f"SELECT COUNT(*) AS n FROM Object WHERE scisql_s2PtInCircle(ra, decl, {p[0]!r}, "
                f"{p[1]!r}, {P['lv3_radius_deg']!r}) = 1")
    if q == "LV4":
        return ("SELECT o.*, s.* FROM Object o JOIN Source s ON o.objectId = s.objectId "
                f"WHERE o.objectId = {int(p)}")
    if q == "HV1":
        return (f"SELECT COUNT(*) AS n, AVG(psfFlux_r) AS mean_r FROM Object "
                f"WHERE psfFlux_g > {P['hv1_psfFlux_g_min']!r}")
    if q == "HV2":
        return (f"SELECT filterName, FLOOR(psfFlux / {P['hv2_flux_bin']!r}) AS b, COUNT(*) AS n "
                "FROM Source GROUP BY 1, 2")
    raise ValueError(q)


def cone_predicate(ra0: float, dec0: float, r: float) -> str:
    """Exact cone test for DuckDB without any extension: a declination band and an RA
    window (which the Parquet reader can push down) plus the haversine distance."""
    terms = [f"decl BETWEEN {dec0 - r!r} AND {dec0 + r!r}"]
    if abs(dec0) + r < 89.9:
        half = math.degrees(math.asin(min(1.0, math.sin(math.radians(r)) /
                                          math.cos(math.radians(dec0))))) * (1 + 1e-9) + 1e-12
        lo, hi = ra0 - half, ra0 + half
        if lo < 0:
            terms.append(f"(ra >= {lo + 360!r} OR ra <= {hi!r})")
        elif hi >= 360:
            terms.append(f"(ra >= {lo!r} OR ra <= {hi - 360!r})")
        else:
            terms.append(f"ra BETWEEN {lo!r} AND {hi!r}")
    h = math.sin(math.radians(r) / 2) ** 2
    terms.append(f"pow(sin(radians(decl - {dec0!r}) / 2), 2) + cos(radians(decl)) * "
                 f"{math.cos(math.radians(dec0))!r} * pow(sin(radians(ra - {ra0!r}) / 2), 2) <= {h!r}")
    return " AND ".join(terms)


def duckdb_sql(q: str, p, P: dict) -> str:
    if q == "LV2":
        return f"SELECT * FROM Object WHERE {cone_predicate(p[0], p[1], P['lv2_radius_deg'])}"
    if q == "LV3":
        return f"SELECT COUNT(*) AS n FROM Object WHERE {cone_predicate(p[0], p[1], P['lv3_radius_deg'])}"
    return skyshard_sql(q, p, P)  # LV1, LV4, HV1, HV2 are plain SQL in both


def params_for(q: str, P: dict, reps: int) -> tuple[object, list]:
    """(warm-up parameter, timed parameters): the warm-up is never one of the timed."""
    pools = {"LV1": P["lv1_ids"], "LV2": P["lv2_centers"], "LV3": P["lv3_centers"],
             "LV4": P["lv4_ids"]}
    if q not in pools:
        return 0, list(range(reps))
    pool = pools[q]
    warm = pool[-1]
    body = pool[:-1] or pool
    return warm, [body[i % len(body)] for i in range(reps)]


# --- result comparison -----------------------------------------------------------------


def canonical(t) -> list[tuple]:
    cols = [c.to_pylist() for c in t.columns]
    rows = list(zip(*cols)) if cols else []
    return sorted(rows, key=lambda r: tuple((x is None, x if x is not None else 0) for x in r))


def same_value(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def compare(sky, duck) -> str | None:
    """None when both results hold the same rows (any order), else what differs."""
    if sky.num_rows != duck.num_rows:
        return f"rows: skyshard {sky.num_rows}, duckdb {duck.num_rows}"
    if sky.num_columns != duck.num_columns:
        return f"columns: skyshard {sky.num_columns}, duckdb {duck.num_columns}"
    for i, (ra, rb) in enumerate(zip(canonical(sky), canonical(duck))):
        for j, (a, b) in enumerate(zip(ra, rb)):
            if not same_value(a, b):
                return (f"row {i} column {j} ({sky.column_names[j]}): skyshard {a!r}, "
                        f"duckdb {b!r}")
    return None


def check_value(q: str, t) -> int | float:
    """A small number summarising a result (as the anchors' 'check')."""
    if q in ("LV3",) and t.num_rows == 1:
        return int(t.column(0)[0].as_py())
    if q == "HV1" and t.num_rows == 1:
        return int(t.column(0)[0].as_py())
    return t.num_rows


# --- statistics --------------------------------------------------------------------------


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def summary(xs: list[float]) -> dict:
    if not xs:
        return {}
    return {"reps": len(xs), "min_ms": min(xs), "p50_ms": statistics.median(xs),
            "p95_ms": p95(xs), "max_ms": max(xs)}


# --- children: generation and ingest -------------------------------------------------------


def run_child(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd`` with stdout+stderr to ``log_path``; wall seconds, exit code and the
    child's peak RSS from its own rusage (``os.wait4``)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent)
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.perf_counter() - t0, "rc": proc.returncode,
            "peak_rss_bytes": ru.ru_maxrss * 1024, "log": str(log_path)}


def ingest_child(data: Path, catalog: Path, max_rows: int, out_json: Path) -> None:
    """Runs in the child process: ingest Object then Source, write timings as JSON."""
    import resource

    import skyshard

    opts = skyshard.IngestOptions(max_rows_per_partition=max_rows, progress=False)
    obj_files = sorted((data / "Object").glob("*.parquet"))
    src_files = sorted((data / "Source").glob("*.parquet"))
    res: dict = {"max_rows_per_partition": max_rows}
    t0 = time.perf_counter()
    info = skyshard.ingest(catalog, "Object", obj_files, ra="ra", dec="decl", key="objectId",
                           options=opts)
    t1 = time.perf_counter()
    res.update(object_seconds=t1 - t0, object_rows=info.rows, object_partitions=len(info.partitions),
               object_peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    out_json.write_text(json.dumps(res))
    info = skyshard.ingest(catalog, "Source", src_files, director="Object",
                           director_key="objectId", options=opts)
    t2 = time.perf_counter()
    res.update(source_seconds=t2 - t1, source_rows=info.rows, source_partitions=len(info.partitions),
               source_orphans=info.orphan_rows,
               peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    out_json.write_text(json.dumps(res))


# --- environment -----------------------------------------------------------------------


def du_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def machine() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_bytes": mem, "cpu": cpu,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def versions() -> dict:
    import duckdb
    import numpy
    import pyarrow
    import sqlglot

    import skyshard

    v = {"skyshard": skyshard.__version__, "duckdb": duckdb.__version__,
         "pyarrow": pyarrow.__version__, "numpy": numpy.__version__, "sqlglot": sqlglot.__version__}
    try:
        root = HERE.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, text=True,
                               capture_output=True).stdout.strip()
        if rev:
            v["skyshard"] += f" (git {rev}{' + uncommitted changes in src/' if dirty else ''})"
    except OSError:
        pass
    return v


# --- the benchmark ---------------------------------------------------------------------


class Runner:
    def __init__(self, db, con, P: dict, reps: int, breakdown_reps: int):
        self.db, self.con, self.P = db, con, P
        self.reps, self.breakdown_reps = reps, breakdown_reps
        self.results: dict[str, dict] = {}

    def sky(self, sql: str):
        return self.db.sql(sql)

    def duck(self, sql: str):
        return self.con.sql(sql).to_arrow_table()

    def run(self, q: str) -> dict:
        warm, params = params_for(q, self.P, self.reps)
        r = {"title": TITLES[q], "example_sql_skyshard": skyshard_sql(q, params[0], self.P),
             "example_sql_duckdb": duckdb_sql(q, params[0], self.P),
             "skyshard_ms": [], "duckdb_ms": [], "skyshard_cpu": [], "duckdb_cpu": [],
             "mismatches": [], "errors": {},
             "checks": {"skyshard": 0, "duckdb": 0}}
        alive = {"skyshard": True, "duckdb": True}
        fns = {"skyshard": (self.sky, skyshard_sql), "duckdb": (self.duck, duckdb_sql)}
        r["warmup_ms"] = {}
        for system, (fn, make) in fns.items():  # untimed warm-up (its time kept apart)
            try:
                t0 = time.perf_counter()
                fn(make(q, warm, self.P))
                r["warmup_ms"][system] = (time.perf_counter() - t0) * 1000.0
            except Exception as exc:  # noqa: BLE001 - recorded and reported
                self._error(r, alive, system, q, make(q, warm, self.P), exc)
        for i, p in enumerate(params):
            order = ("skyshard", "duckdb") if i % 2 == 0 else ("duckdb", "skyshard")
            got = {}
            for system in order:
                if not alive[system]:
                    continue
                fn, make = fns[system]
                sql = make(q, p, self.P)
                try:
                    c0, t0 = time.process_time(), time.perf_counter()
                    got[system] = fn(sql)
                    r[f"{system}_ms"].append((time.perf_counter() - t0) * 1000.0)
                    r[f"{system}_cpu"].append((time.process_time() - c0) * 1000.0)
                    r["checks"][system] += check_value(q, got[system])
                except Exception as exc:  # noqa: BLE001
                    self._error(r, alive, system, q, sql, exc)
            if len(got) == 2:
                diff = compare(got["skyshard"], got["duckdb"])
                if diff:
                    r["mismatches"].append({"param": p, "diff": diff})
                    print(f"!!! RESULT MISMATCH {q} param={p}: {diff}", flush=True)
        r["skyshard"] = summary(r.pop("skyshard_ms"))
        r["duckdb"] = summary(r.pop("duckdb_ms"))
        for system in ("skyshard", "duckdb"):
            cpu = r.pop(f"{system}_cpu")
            if cpu and r[system]:
                r[system]["cpu_p50_ms"] = statistics.median(cpu)
        if alive["skyshard"]:
            r["breakdown"] = self.breakdown(q, params[: self.breakdown_reps])
        self.results[q] = r
        self._print(q, r)
        return r

    def _error(self, r, alive, system, q, sql, exc) -> None:
        alive[system] = False
        text = f"{type(exc).__name__}: {exc}"
        r["errors"][system] = {"error": text[:2000], "sql": sql,
                               "traceback": traceback.format_exc(limit=8)[-4000:]}
        print(f"!!! {system} FAILED on {q}: {text[:500]}\n    SQL: {sql[:300]}", flush=True)

    def breakdown(self, q: str, params: list) -> dict:
        """Where skyshard's time goes: director-index lookup (inside planning),
        parse/analyse/plan, rendering the DuckDB statement (``single_sql``, which the
        embedded executor runs) and DuckDB's execution of it (to an Arrow table)."""
        db = self.db
        lookups: list[float] = []
        original = getattr(db, "_lookup_keys", None)

        def timed_lookup(*args):  # (snapshot, table, constraints)
            assert original is not None
            t0 = time.perf_counter()
            try:
                return original(*args)
            finally:
                lookups.append((time.perf_counter() - t0) * 1000.0)

        if original is not None:
            db._lookup_keys = timed_lookup
        plan_ms, index_ms, render_ms, exec_ms, parts = [], [], [], [], []
        try:
            for p in params:
                sql = skyshard_sql(q, p, self.P)
                lookups.clear()
                t0 = time.perf_counter()
                qp = db.plan(sql)
                t1 = time.perf_counter()
                text = qp.single_sql()  # what the embedded executor runs
                t2 = time.perf_counter()
                db.engine.query(text)
                t3 = time.perf_counter()
                idx = sum(lookups)
                index_ms.append(idx)
                plan_ms.append((t1 - t0) * 1000.0 - idx)
                render_ms.append((t2 - t1) * 1000.0)
                exec_ms.append((t3 - t2) * 1000.0)
                parts.append((len(qp.partitions or []), qp.considered))
        except Exception as exc:  # noqa: BLE001
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if original is not None:
                del db._lookup_keys
        med = statistics.median
        return {"reps": len(params), "index_ms": med(index_ms), "plan_ms": med(plan_ms),
                "render_ms": med(render_ms), "exec_ms": med(exec_ms),
                "partitions": med([a for a, _ in parts]),
                "considered": parts[0][1] if parts else 0}

    @staticmethod
    def _print(q: str, r: dict) -> None:
        s, d = r["skyshard"], r["duckdb"]
        ratio = (s["p50_ms"] / d["p50_ms"]) if s and d else float("nan")
        print(f"{q}: skyshard p50 {fmt(s.get('p50_ms'))} p95 {fmt(s.get('p95_ms'))} ms | duckdb p50 "
              f"{fmt(d.get('p50_ms'))} p95 {fmt(d.get('p95_ms'))} ms | ratio {ratio:.3g} | "
              f"checks {r['checks']} | mismatches {len(r['mismatches'])}", flush=True)


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


# --- report ---------------------------------------------------------------------------------


def targets(res: dict) -> list[tuple[str, str, bool | None]]:
    q = res["queries"]

    def p50(name, system="skyshard"):
        r = q.get(name, {})
        ok = not r.get("errors", {}).get(system) and not r.get("mismatches")
        return (r.get(system) or {}).get("p50_ms"), ok

    out = []
    for name, limit in (("LV2", 5.0), ("LV1", 3.0), ("LV4", 5.0)):
        v, ok = p50(name)
        out.append((f"{name} p50 <= {limit:g} ms", f"{fmt(v)} ms",
                    None if v is None else (ok and v <= limit)))
    for name in ("HV1", "HV2"):
        v, ok = p50(name)
        d, _ = p50(name, "duckdb")
        ratio = v / d if v is not None and d else None
        out.append((f"{name} p50 <= 1.25 x DuckDB", "-" if ratio is None else f"{ratio:.2f} x",
                    None if ratio is None else (ok and ratio <= 1.25)))
    ing = res.get("ingest") or {}
    rps = ing.get("rows_per_s")
    out.append(("ingest >= 500k rows/s", "-" if rps is None else f"{rps:,.0f} rows/s",
                None if rps is None else rps >= 500_000))
    rss = ing.get("peak_rss_bytes")
    out.append(("ingest peak RSS < 3 GB", "-" if rss is None else f"{rss / GB:.2f} GB",
                None if rss is None else rss < 3 * GB))
    return out


def report(res: dict) -> str:
    m, v, d, ing = res["machine"], res["versions"], res["data"], res.get("ingest") or {}
    L = [f"## {res['date']} — {d['objects']:,} objects / {d['sources']:,} sources", ""]
    L.append(f"Command: `{res['command']}`")
    L.append("")
    L.append(f"- Machine: {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, {m['cpu']}, "
             f"{m['os']}, Python {m['python']}")
    L.append("- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    L.append(f"- Input Parquet: Object {d['object_bytes'] / GB:.2f} GB, Source "
             f"{d['source_bytes'] / GB:.2f} GB ({d['files']} file(s) per table); skyshard catalog "
             f"{d['catalog_bytes'] / GB:.2f} GB on disk (partitions, 60\" margin, director index)")
    gen = res.get("generate")
    if gen:
        L.append(f"- Generation (bench/generate.py, child process): {gen['seconds']:.0f} s, "
                 f"peak RSS {gen['peak_rss_bytes'] / GB:.2f} GB")
    elif d.get("generate_seconds") is not None:
        L.append(f"- Generation: data set reused (generated earlier in {d['generate_seconds']:.0f} s)")
    if ing:
        L.append(f"- Ingest (child process, max_rows_per_partition={ing['max_rows_per_partition']:,}): "
                 f"Object {ing['object_rows']:,} rows in {ing['object_seconds']:.1f} s "
                 f"({ing['object_rows'] / ing['object_seconds']:,.0f} rows/s, "
                 f"{ing['object_partitions']} partitions); Source {ing['source_rows']:,} rows in "
                 f"{ing['source_seconds']:.1f} s ({ing['source_rows'] / ing['source_seconds']:,.0f} rows/s, "
                 f"{ing['source_partitions']} partitions, {ing['source_orphans']} orphans); total "
                 f"**{ing['rows_per_s']:,.0f} rows/s**, peak RSS **{ing['peak_rss_bytes'] / GB:.2f} GB** "
                 f"(after Object: {ing['object_peak_rss_bytes'] / GB:.2f} GB)")
    elif res.get("ingest_error"):
        L.append(f"- Ingest FAILED: {res['ingest_error']}")
    else:
        L.append("- Ingest: skipped (existing catalog reused)")
    L.append(f"- Timing: one untimed warm-up per system, then {res['reps']} timed reps alternating "
             "the systems (a different id / centre per rep for LV1-LV4); warm OS page cache; "
             "'first call' = that warm-up (includes one-time loads such as skyshard's director "
             "index; the Database is opened just before LV1); "
             "DuckDB = in-memory connection, views over read_parquet() of the input files.")
    L.append("")
    L.append("| query | what | skyshard p50 ms | p95 | DuckDB p50 ms | p95 | skyshard/DuckDB (p50) "
             "| results agree | check (sum over reps) | first call ms (skyshard / DuckDB) "
             "| CPU ms p50 (skyshard / DuckDB) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for q in QUERIES:
        r = res["queries"].get(q)
        if not r:
            continue
        s, dd, w = r["skyshard"], r["duckdb"], r.get("warmup_ms") or {}
        ratio = f"{s['p50_ms'] / dd['p50_ms']:.3g}" if s and dd else "-"
        if r["errors"]:
            agree = "ERROR"
        elif r["mismatches"]:
            agree = f"**NO ({len(r['mismatches'])} reps)**"
        else:
            agree = "yes"
        L.append(f"| {q} | {r['title']} | {fmt(s.get('p50_ms'))} | {fmt(s.get('p95_ms'))} | "
                 f"{fmt(dd.get('p50_ms'))} | {fmt(dd.get('p95_ms'))} | {ratio} | {agree} | "
                 f"{r['checks']['skyshard']} / {r['checks']['duckdb']} | "
                 f"{fmt(w.get('skyshard'))} / {fmt(w.get('duckdb'))} | "
                 f"{fmt(s.get('cpu_p50_ms'))} / {fmt(dd.get('cpu_p50_ms'))} |")
    L.append("")
    L.append("skyshard time split (separate reps, medians; `db.plan()` = parse + analyse + partition "
             "choice incl. the director-index lookup; `single_sql()` renders the DuckDB statement; "
             "DuckDB = its execution to Arrow):")
    L.append("")
    L.append("| query | partitions read / total | director-index lookup ms | rest of db.plan() ms "
             "| single_sql() ms | DuckDB execution ms |")
    L.append("|---|---|---|---|---|---|")
    for q in QUERIES:
        b = (res["queries"].get(q) or {}).get("breakdown")
        if not b:
            continue
        if "error" in b:
            L.append(f"| {q} | error: {b['error'][:200]} | | | | |")
            continue
        L.append(f"| {q} | {b['partitions']:g} / {b['considered']} | {fmt(b['index_ms'])} | "
                 f"{fmt(b['plan_ms'])} | {fmt(b.get('render_ms'))} | {fmt(b['exec_ms'])} |")
    L.append("")
    L.append("Targets:")
    L.append("")
    L.append("| target | measured | status |")
    L.append("|---|---|---|")
    for name, val, ok in targets(res):
        L.append(f"| {name} | {val} | {'met' if ok else ('not measured' if ok is None else '**not met**')} |")
    problems = []
    for q in QUERIES:
        r = res["queries"].get(q) or {}
        for system, e in (r.get("errors") or {}).items():
            problems.append(f"- **{q} failed on {system}**: `{e['error'][:600]}`\n  SQL: `{e['sql'][:400]}`")
        for mm in (r.get("mismatches") or [])[:5]:
            problems.append(f"- **{q} results differ** (param {mm['param']}): {mm['diff']}")
    if res.get("ingest_error"):
        problems.append(f"- **ingest failed**: {res['ingest_error']}")
    L.append("")
    L.append("Problems: " + ("none" if not problems else ""))
    L.extend(problems)
    if res.get("notes"):
        L.append("")
        L.extend(f"- {n}" for n in res["notes"])
    L.append("")
    return "\n".join(L)


def shown_command(argv: list[str]) -> str:
    """The command line, without machine-specific absolute paths."""
    out, hide = [], False
    for a in argv:
        if hide:
            out.append("DIR" if os.path.isabs(a) else a)
            hide = False
            continue
        if a.startswith("--workdir="):
            val = a.split("=", 1)[1]
            out.append("--workdir=" + ("DIR" if os.path.isabs(val) else val))
            continue
        hide = a == "--workdir"
        out.append(a)
    return "python bench/core.py " + " ".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_ingest":  # the child process
        ingest_child(Path(argv[1]), Path(argv[2]), int(argv[3]), Path(argv[4]))
        return 0
    ap = argparse.ArgumentParser(description="skyshard vs DuckDB core benchmark")
    ap.add_argument("--objects", type=int, required=True)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=HERE / "data")
    ap.add_argument("--skip-generate", action="store_true",
                    help="require the data set to exist in the work directory")
    ap.add_argument("--skip-ingest", action="store_true",
                    help="reuse the catalog of a previous run (no ingest measurement)")
    ap.add_argument("--sources-per-object", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-rows-per-partition", type=int, default=200_000)
    ap.add_argument("--breakdown-reps", type=int, default=5)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args(argv)

    work = a.workdir.resolve()
    tag = f"{a.objects}-seed{a.seed}" + ("" if a.sources_per_object == 5 else f"-spo{a.sources_per_object:g}")
    data = work / f"input-{tag}"
    catalog = work / f"catalog-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "command": shown_command(argv),
                 "reps": a.reps, "machine": machine(), "versions": versions(), "queries": {},
                 "notes": []}

    # 1. data
    if not (data / "queries.json").exists():
        if a.skip_generate:
            print(f"--skip-generate: no data set in {data}", file=sys.stderr)
            return 2
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(catalog, ignore_errors=True)
        print(f"generating {a.objects:,} objects into {data} ...", flush=True)
        g = run_child([sys.executable, str(HERE / "generate.py"), "--objects", str(a.objects),
                       "--out", str(data), "--seed", str(a.seed),
                       "--sources-per-object", str(a.sources_per_object)], work / f"generate-{tag}.log")
        if g["rc"] != 0:
            print(f"generation failed, see {g['log']}", file=sys.stderr)
            return 1
        res["generate"] = g
        print(f"generated in {g['seconds']:.1f} s, peak RSS {g['peak_rss_bytes'] / GB:.2f} GB", flush=True)
    P = json.loads((data / "queries.json").read_text())
    meta = json.loads((data / "meta.json").read_text())
    res["data"] = {"objects": meta["objects"], "sources": meta["sources"],
                   "files": meta["files_per_table"], "generate_seconds": meta.get("generate_seconds"),
                   "object_bytes": du_bytes(data / "Object"), "source_bytes": du_bytes(data / "Source")}

    # 2. ingest
    if a.skip_ingest and (catalog / "skyshard.json").exists():
        pass
    else:
        shutil.rmtree(catalog, ignore_errors=True)
        out_json = work / f"ingest-{tag}.json"
        out_json.unlink(missing_ok=True)
        print(f"ingesting into {catalog} (max_rows_per_partition={a.max_rows_per_partition:,}) ...",
              flush=True)
        load0 = os.getloadavg()
        c = run_child([sys.executable, str(Path(__file__).resolve()), "_ingest", str(data), str(catalog),
                       str(a.max_rows_per_partition), str(out_json)], work / f"ingest-{tag}.log")
        load1 = os.getloadavg()
        res["notes"].append(f"Load average (1/5/15 min) before the ingest {load0[0]:.2f}/{load0[1]:.2f}/"
                            f"{load0[2]:.2f}, after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}.")
        info = json.loads(out_json.read_text()) if out_json.exists() else {}
        if c["rc"] != 0 or "source_seconds" not in info:
            tail = Path(c["log"]).read_text()[-3000:]
            res["ingest_error"] = f"exit code {c['rc']}; log tail: {tail.strip()[-1500:]}"
            print(f"!!! INGEST FAILED (exit {c['rc']}):\n{tail}", file=sys.stderr, flush=True)
            res["data"]["catalog_bytes"] = du_bytes(catalog)
            if not a.no_record:
                append_results(report(res))
            return 1
        info["peak_rss_bytes"] = max(info["peak_rss_bytes"], c["peak_rss_bytes"])
        info["wall_seconds"] = c["seconds"]
        info["rows_per_s"] = (info["object_rows"] + info["source_rows"]) / (
            info["object_seconds"] + info["source_seconds"])
        res["ingest"] = info
        print(f"ingest: Object {info['object_seconds']:.1f} s, Source {info['source_seconds']:.1f} s, "
              f"{info['rows_per_s']:,.0f} rows/s, peak RSS {info['peak_rss_bytes'] / GB:.2f} GB "
              f"(child wall {c['seconds']:.1f} s incl. interpreter start)", flush=True)
    res["data"]["catalog_bytes"] = du_bytes(catalog)

    # 3. queries
    import duckdb

    import skyshard

    db = skyshard.open(catalog)
    con = duckdb.connect()
    obj_glob = str(data / "Object" / "*.parquet")
    src_glob = str(data / "Source" / "*.parquet")
    con.execute(f"CREATE VIEW Object AS SELECT * FROM read_parquet('{obj_glob}')")
    con.execute(f"CREATE VIEW Source AS SELECT * FROM read_parquet('{src_glob}')")
    threads = con.sql("SELECT current_setting('threads')").fetchall()[0][0]
    res["notes"].append(f"DuckDB peer: threads={threads}, no index, cones as dec/RA box + haversine; "
                        "skyshard: default Database options (its own DuckDB, threads = cores).")
    runner = Runner(db, con, P, a.reps, a.breakdown_reps)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    for q in QUERIES:
        runner.run(q)
    res["queries"] = runner.results
    load1 = os.getloadavg()
    res["notes"].append(
        f"Load average (1/5/15 min) before the queries {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
        f"after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} on {os.cpu_count()} cores; queries took "
        f"{time.perf_counter() - t0:.0f} s. A load above ~1 means other processes shared the CPUs "
        "and wall times are inflated; 'CPU ms' (process CPU time, all threads) is less sensitive.")

    text = report(res)
    print()
    print(text)
    (work / f"results-{tag}.json").write_text(json.dumps(res, indent=1, default=str))
    if not a.no_record:
        append_results(text)
    return 0


def append_results(text: str) -> None:
    path = HERE / "RESULTS.md"
    head = "" if path.exists() else (
        "# skyshard core benchmark results\n\n"
        "Appended by `python bench/core.py` (see bench/README.md), newest last.\n\n")
    with open(path, "a") as f:
        f.write(head + text + "\n")


if __name__ == "__main__":
    sys.exit(main())
