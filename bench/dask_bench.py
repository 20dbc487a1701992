#!/usr/bin/env python3
"""Dask executor benchmark: the core query set through ``DaskExecutor`` (a local cluster
of worker processes on shared storage) against the embedded local executor, in one run.

    python bench/dask_bench.py --objects N [--workers 2] [--reps 10] [--kills 3]
                               [--workdir DIR] [--no-record]

1. reuse the data set and catalog of bench/core.py in the work directory (generate and
   ingest them, in child processes, when missing);
2. start the cluster (timed), then for each query of bench/core.py: one untimed warm-up
   per executor, ``--reps`` timed repetitions alternating the executors, every result of
   the Dask executor compared with the local one;
3. recovery: ``--kills`` times, run the longest full scan (HV2), SIGKILL one worker
   process while its task runs, and time the answer (which must equal the local one);
4. print the tables and append a section to bench/RESULTS.md.

The local executor is ``skyshard.open(catalog)`` (one DuckDB, threads = cores); the Dask
one is the same ``Database`` with its executor replaced by ``DaskExecutor(catalog,
workers=W)`` (each worker's DuckDB has cores / W threads).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import core  # noqa: E402  - bench/core.py: query set, comparison, data set generation

GB = 1e9
FULL_SCANS = ("HV1", "HV2")


# --- data -------------------------------------------------------------------------------


def ensure_catalog(work: Path, objects: int, seed: int, max_rows: int) -> tuple[Path, Path]:
    """The input data set and catalog of ``core.py`` for ``objects``, made if missing."""
    tag = f"{objects}-seed{seed}"
    data, catalog = work / f"input-{tag}", work / f"catalog-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    if not (data / "queries.json").exists():
        print(f"generating {objects:,} objects into {data} ...", flush=True)
        g = core.run_child([sys.executable, str(HERE / "generate.py"), "--objects", str(objects),
                            "--out", str(data), "--seed", str(seed)], work / f"generate-{tag}.log")
        if g["rc"] != 0:
            raise SystemExit(f"generation failed, see {g['log']}")
    if not (catalog / "skyshard.json").exists():
        print(f"ingesting into {catalog} ...", flush=True)
        out_json = work / f"ingest-{tag}.json"
        c = core.run_child([sys.executable, str(HERE / "core.py"), "_ingest", str(data),
                            str(catalog), str(max_rows), str(out_json)], work / f"ingest-{tag}.log")
        if c["rc"] != 0:
            raise SystemExit(f"ingest failed, see {c['log']}")
    return data, catalog


# --- timing -----------------------------------------------------------------------------


def time_queries(local, dask_db, P: dict, reps: int) -> dict:
    """Per query: p50/p95 of both executors and the reps whose results differ."""
    out = {}
    for q in core.QUERIES:
        warm, params = core.params_for(q, P, reps)
        r = {"title": core.TITLES[q], "local_ms": [], "dask_ms": [], "mismatches": [],
             "partitions": len(local.plan(core.skyshard_sql(q, params[0], P)).partitions or []),
             "warmup_ms": {}}
        for name, db in (("local", local), ("dask", dask_db)):
            t0 = time.perf_counter()
            db.sql(core.skyshard_sql(q, warm, P))
            r["warmup_ms"][name] = (time.perf_counter() - t0) * 1000.0
        for i, p in enumerate(params):
            sql = core.skyshard_sql(q, p, P)
            got = {}
            for name in (("local", "dask") if i % 2 == 0 else ("dask", "local")):
                db = local if name == "local" else dask_db
                t0 = time.perf_counter()
                got[name] = db.sql(sql)
                r[f"{name}_ms"].append((time.perf_counter() - t0) * 1000.0)
            diff = core.compare(got["dask"], got["local"])
            if diff:
                r["mismatches"].append({"param": p, "diff": diff})
                print(f"!!! RESULT MISMATCH {q} param={p}: {diff}", flush=True)
        r["local"] = core.summary(r.pop("local_ms"))
        r["dask"] = core.summary(r.pop("dask_ms"))
        out[q] = r
        print(f"{q}: local p50 {core.fmt(r['local']['p50_ms'])} ms, dask p50 "
              f"{core.fmt(r['dask']['p50_ms'])} ms ({r['partitions']} partitions), "
              f"mismatches {len(r['mismatches'])}", flush=True)
    return out


def reruns(ex) -> int:
    """How many of skyshard's tasks the scheduler has started more than once."""

    def count(dask_scheduler) -> int:
        starts: dict[str, int] = {}
        for entry in dask_scheduler.transition_log:
            key, finish = entry[0], entry[2]
            if isinstance(key, str) and key.startswith("skyshard-") and finish == "processing":
                starts[key] = starts.get(key, 0) + 1
        return sum(1 for n in starts.values() if n > 1)

    return ex.client.run_on_scheduler(count)


def recovery(ex, local, dask_db, sql: str, base_ms: float, kills: int, workers: int) -> list[dict]:
    """Kill a busy worker in the middle of ``sql``; time the answer and check it."""
    want = local.sql(sql)
    runs = []
    for k in range(kills):
        ex.client.wait_for_workers(workers, timeout=120)
        pids = ex.client.run(os.getpid)
        before = reruns(ex)
        out: dict = {}

        def target():
            try:
                out["table"] = dask_db.sql(sql)
            except Exception as exc:  # noqa: BLE001 - reported below
                out["error"] = exc
            out["end"] = time.perf_counter()

        t0 = time.perf_counter()
        thread = threading.Thread(target=target)
        thread.start()
        busy: list[str] = []
        while not busy and thread.is_alive():
            busy = [w for w, keys in ex.client.processing().items()
                    if any(str(key).startswith("skyshard-") for key in keys)]
            time.sleep(0.005)
        time.sleep(max(0.0, 0.4 * base_ms / 1000.0 - (time.perf_counter() - t0)))
        victim = busy[k % len(busy)] if busy else None
        t_kill = time.perf_counter()
        if victim is not None and thread.is_alive():
            os.kill(pids[victim], signal.SIGKILL)
        thread.join()
        ex.client.wait_for_workers(workers, timeout=120)
        run = {"kill_at_ms": (t_kill - t0) * 1000.0, "total_ms": (out["end"] - t0) * 1000.0,
               "kill_to_answer_ms": (out["end"] - t_kill) * 1000.0,
               "extra_ms": (out["end"] - t0) * 1000.0 - base_ms,
               "worker_back_s": time.perf_counter() - t_kill,
               "tasks_rerun": reruns(ex) - before, "killed": victim is not None}
        if "error" in out:
            run["error"] = f"{type(out['error']).__name__}: {out['error']}"
        else:
            run["diff"] = core.compare(out["table"], want)
        runs.append(run)
        print(f"recovery {k + 1}: killed at {run['kill_at_ms']:.0f} ms, answer after "
              f"{run['total_ms']:.0f} ms (baseline {base_ms:.0f}), tasks rerun "
              f"{run['tasks_rerun']}, same answer: "
              f"{run.get('diff') is None and 'error' not in run}",
              flush=True)
    return runs


# --- report -----------------------------------------------------------------------------


def report(res: dict) -> str:
    f = core.fmt
    m = res["machine"]
    q = res["queries"]
    L = [f"## {res['date']} — Dask executor, {res['objects']:,} objects, "
         f"{res['workers']} worker processes", ""]
    L.append(f"Command: `{res['command']}`")
    L.append("")
    L.append(f"- Machine: {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
             f"{m['cpu'].split()[0] if m['cpu'] else '?'}, {m['os']}, Python {m['python']}")
    L.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    L.append(f"- Local: `skyshard.open(catalog)` (one DuckDB, {m['cores']} threads). Dask: the "
             f"same `Database` with `DaskExecutor(catalog, workers={res['workers']})` as its "
             f"executor: a LocalCluster of {res['workers']} processes x "
             f"{res.get('slots', 1)} task slot(s), each worker's "
             f"DuckDB {res['worker_threads']} thread(s), shared storage (local disk), one task per "
             "worker per query, merge on the client.")
    L.append(f"- Cluster start (LocalCluster + client + engines warmed on the workers): "
             f"{res['start_s']:.2f} s")
    L.append(f"- {res['reps']} timed reps per query after one untimed warm-up per executor, "
             "alternating; every Dask result compared with the local one.")
    L.append("")
    L.append("| query | what | partitions | local p50 ms | p95 | Dask p50 ms | p95 "
             "| Dask/local (p50) | results agree |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for name, r in q.items():
        lo, da = r["local"], r["dask"]
        L.append(f"| {name} | {r['title']} | {r['partitions']} | {f(lo['p50_ms'])} | "
                 f"{f(lo['p95_ms'])} | {f(da['p50_ms'])} | {f(da['p95_ms'])} | "
                 f"{da['p50_ms'] / lo['p50_ms']:.2f} | "
                 f"{'yes' if not r['mismatches'] else '**no**'} |")
    L.append("")
    ratios = ", ".join(f"{n} {q[n]['dask']['p50_ms'] / q[n]['local']['p50_ms']:.2f}x"
                       for n in FULL_SCANS if n in q)
    L.append(f"- Full-scan overhead (Dask p50 / local p50): {ratios}")
    L.append(f"- 1' cone (LV2) p50: Dask {f(q['LV2']['dask']['p50_ms'])} ms, local "
             f"{f(q['LV2']['local']['p50_ms'])} ms")
    rec = res["recovery"]
    if rec["runs"]:
        ok = [r for r in rec["runs"] if "error" not in r and r.get("diff") is None]
        med = statistics.median
        L.append(f"- Killed worker ({rec['query']}, SIGKILL of a busy worker process at ~40 % of "
                 f"the query; baseline Dask p50 {f(rec['base_ms'])} ms), {len(rec['runs'])} runs: "
                 "answer "
                 f"after {f(med([r['total_ms'] for r in rec['runs']]))} ms median "
                 f"(kill to answer {f(med([r['kill_to_answer_ms'] for r in rec['runs']]))} ms, "
                 f"{f(med([r['extra_ms'] for r in rec['runs']]))} ms more than without failure); "
                 f"tasks rerun {sum(r['tasks_rerun'] for r in rec['runs'])}; answers equal to the "
                 f"local one: {len(ok)} of {len(rec['runs'])}; the nanny had the worker back "
                 f"{med([r['worker_back_s'] for r in rec['runs']]):.1f} s after the kill (median).")
    problems = [f"- **{n} results differ** (param {mm['param']}): {mm['diff']}"
                for n, r in q.items() for mm in r["mismatches"][:3]]
    problems += [f"- **recovery run {i + 1}**: {r.get('error') or r.get('diff')}"
                 for i, r in enumerate(rec["runs"]) if "error" in r or r.get("diff")]
    L.append("")
    L.append("Problems: " + ("none" if not problems else ""))
    L.extend(problems)
    L.append("")
    L.extend(f"- {n}" for n in res["notes"])
    L.append("")
    return "\n".join(L)


# --- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="skyshard Dask executor vs local executor")
    ap.add_argument("--objects", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=HERE / "data")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-rows-per-partition", type=int, default=200_000)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args(argv)

    work = a.workdir.resolve()
    data, catalog = ensure_catalog(work, a.objects, a.seed, a.max_rows_per_partition)
    P = json.loads((data / "queries.json").read_text())

    import skyshard
    from skyshard.dispatch.dask_executor import DaskExecutor

    shown = " ".join("DIR" if os.path.isabs(x) else x for x in (argv or sys.argv[1:]))
    res: dict = {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                 "command": f"python bench/dask_bench.py {shown}", "objects": a.objects,
                 "workers": a.workers, "reps": a.reps, "machine": core.machine(),
                 "versions": core.versions(), "notes": []}
    local = skyshard.open(catalog)
    dask_db = skyshard.open(catalog)
    t0 = time.perf_counter()
    ex = DaskExecutor(catalog, workers=a.workers, engine=dask_db.engine)
    res["start_s"] = time.perf_counter() - t0
    res["worker_threads"] = ex.spec.threads
    res["slots"] = ex._cluster.slots if ex._cluster is not None else 1
    dask_db.executor = ex
    try:
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        res["queries"] = time_queries(local, dask_db, P, a.reps)
        load1 = os.getloadavg()
        res["notes"].append(
            f"Load average (1/5/15 min) before the queries {load0[0]:.2f}/{load0[1]:.2f}/"
            f"{load0[2]:.2f}, after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} on "
            f"{os.cpu_count()} cores; the timed queries took {time.perf_counter() - t0:.0f} s. "
            "A load above ~1 means other processes shared the CPUs.")
        hv2 = core.skyshard_sql("HV2", 0, P)
        base = res["queries"]["HV2"]["dask"]["p50_ms"]
        res["recovery"] = {"query": "HV2", "base_ms": base,
                           "runs": recovery(ex, local, dask_db, hv2, base, a.kills, a.workers)}
    finally:
        ex.close()
    text = report(res)
    print()
    print(text)
    (work / f"dask-results-{a.objects}-seed{a.seed}.json").write_text(
        json.dumps(res, indent=1, default=str))
    if not a.no_record:
        core.append_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
