#!/usr/bin/env python3
"""Shared-nothing replicas: time to recover from a killed worker.

    python bench/replicas_bench.py [--objects 1000000] [--workers 3] [--replication 2]
                                   [--reps 5] [--kills 3] [--workdir DIR] [--no-record]

1. reuse the data set and catalog of bench/core.py in the work directory (made, in child
   processes, when missing: see bench/dask_bench.py ``ensure_catalog``);
2. start a scheduler and ``--workers`` plain ``dask worker`` processes named w0, w1, ...,
   each keeping its copies in its own directory under a temporary folder (no shared
   reads: each worker's engine may read only its own directory);
3. place the catalog (timed: every copy goes through the workers and is verified), check
   it (size + SHA-256 of every copy, timed), open ``DaskExecutor(placement="replicas")``;
4. the full scan HV2 (Source histogram; also HV1): ``--reps`` timed runs without
   failure, each compared with the embedded answer;
5. recovery, ``--kills`` times: start HV2, SIGKILL a worker process (each run another)
   as soon as the scheduler has given it its task, time kill -> answer (its part reruns
   on the other holders of its partitions) and compare the answer (a run whose query
   answered before the kill is not counted); then start the worker again
   under its name and directory and time until it is back and verified to hold its
   copies (nothing copied);
6. print the numbers and append a section to bench/RESULTS.md.

The catalog's ``replicas.json`` is removed at the end if the run created it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import core
from dask_bench import ensure_catalog


class Workers:
    """``dask worker`` processes by name, each with its own replica directory."""

    def __init__(self, client, base: Path) -> None:
        self.client, self.base, self.procs = client, base, {}
        self.env = dict(os.environ, DASK_SKYSHARD__REPLICAS__DIRECTORY=str(base))

    def start(self, *names: str) -> None:
        for name in names:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker",
                 self.client.scheduler.address, "--name", name, "--nthreads", "1",
                 "--no-nanny", "--no-dashboard"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait(lambda live: set(names) <= live)

    def kill(self, name: str) -> None:
        """SIGKILL the worker; return once the scheduler has dropped it (a worker started
        again under a name the scheduler still lists would be refused)."""
        self.procs.pop(name).send_signal(signal.SIGKILL)
        self.wait(lambda live: name not in live)

    def live(self) -> set[str]:
        from skyshard.dispatch.replicas import named_workers

        return set(named_workers(self.client))

    def wait(self, done, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.live()):
            if time.monotonic() > deadline:
                raise SystemExit(f"workers did not come or go: {self.live()}")
            time.sleep(0.01)

    def stop(self) -> None:
        for p in self.procs.values():
            p.kill()
            p.wait()


def timed_runs(db, sql: str, reps: int, want) -> dict:
    times, diffs = [], []
    db.sql(sql)  # warm-up
    for _ in range(reps):
        t0 = time.perf_counter()
        got = db.sql(sql)
        times.append((time.perf_counter() - t0) * 1000.0)
        d = core.compare(got, want)
        if d:
            diffs.append(d)
    return {"p50_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "diffs": diffs}


def recovery(ex, db, workers: Workers, sql: str, want, base_ms: float, kills: int,
             names: list[str]) -> list[dict]:
    from skyshard.dispatch.replicas import place

    runs: list[dict] = []
    for k in range(2 * kills):
        if len(runs) == kills:
            break
        out: dict = {}

        def target(out=out):
            try:
                out["table"] = db.sql(sql)
            except Exception as exc:  # noqa: BLE001 - reported below
                out["error"] = exc
            out["end"] = time.perf_counter()

        by_address = {a: n for n, a in ex.named_workers().items()}
        t0 = time.perf_counter()
        thread = threading.Thread(target=target)
        thread.start()
        wanted = names[k % len(names)]  # a different worker each run
        busy: list[str] = []
        while thread.is_alive() and wanted not in busy:
            busy = sorted(by_address[a] for a, keys in ex.client.processing().items()
                          if any(str(key).startswith("skyshard-") for key in keys)
                          and a in by_address)
            time.sleep(0.002)
        victim = wanted if wanted in busy else None
        t_kill = time.perf_counter()
        killed = victim is not None and thread.is_alive()
        if killed:
            workers.kill(victim)
        thread.join()
        run = {"victim": victim, "killed": killed, "kill_at_ms": (t_kill - t0) * 1000.0,
               "total_ms": (out["end"] - t0) * 1000.0,
               "kill_to_answer_ms": (out["end"] - t_kill) * 1000.0,
               "extra_ms": (out["end"] - t0) * 1000.0 - base_ms}
        if "error" in out:
            run["error"] = f"{type(out['error']).__name__}: {out['error']}"
        else:
            run["diff"] = core.compare(out["table"], want)
        if killed:
            t1 = time.perf_counter()
            workers.start(victim)
            run["rejoin_s"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            report = place(ex.client, ex.root, checksum=False)
            run["reverify_s"] = time.perf_counter() - t2
            run["copied_after_rejoin"] = len(report.copied)
        if not killed or run["kill_to_answer_ms"] <= 0:
            print(f"recovery {k + 1}: the query answered before {wanted} could be killed; "
                  "not counted", flush=True)
            continue
        runs.append(run)
        print(f"recovery {k + 1}: killed {victim} at {run['kill_at_ms']:.0f} ms, answer "
              f"{run['kill_to_answer_ms']:.0f} ms after the kill (total {run['total_ms']:.0f}, "
              f"baseline {base_ms:.0f}), same answer: "
              f"{'error' not in run and run.get('diff') is None}", flush=True)
    return runs


def report(res: dict) -> str:
    f = core.fmt
    m = res["machine"]
    L = [(f"## {res['date']} — shared-nothing replicas: recovery from a killed worker, "
         f"{res['objects']:,} objects"), ""]
    L.append(f"Command: `{res['command']}`")
    L.append("")
    L.append(f"- Machine: `nproc` {m['cores']}, {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
             f"{m['cpu'].split()[0] if m['cpu'] else '?'}, {m['os']}, Python {m['python']}; "
             f"load average (1/5/15 min) before {res['load_before']}, after "
             f"{res['load_after']}")
    L.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    L.append(f"- Cluster: {res['workers']} `dask worker` processes (1 thread each, no nanny), "
             f"replication {res['replication']}; each worker's copies in its own directory; "
             f"{res['partitions']} partitions, {res['placed_bytes'] / 1e6:,.0f} MB placed "
             f"({res['catalog_bytes'] / 1e6:,.0f} MB of partition and shared files in the "
             "catalog).")
    L.append(f"- Place (copy through the workers, each copy verified): {res['place_s']:.1f} s; "
             f"check (size + SHA-256 of every copy): {res['check_s']:.2f} s; executor open "
             f"(placement verified by size): {res['open_s']:.2f} s.")
    L.append("")
    L.append("| query | without failure p50 ms (min-max) | results agree |")
    L.append("|---|---|---|")
    for name, r in res["queries"].items():
        L.append(f"| {name} | {f(r['p50_ms'])} ({f(r['min_ms'])}-{f(r['max_ms'])}) | "
                 f"{'yes' if not r['diffs'] else '**no**'} |")
    L.append("")
    runs = res["recovery"]
    if runs:
        med = statistics.median
        L.append("Killed worker during HV2 (SIGKILL of a worker as soon as the scheduler has "
                 "given it its task; baseline without a kill "
                 f"{f(res['queries']['HV2']['p50_ms'])} ms):")
        L.append("")
        L.append("| run | victim | kill at ms | kill to answer ms | total ms | extra over "
                 "baseline ms | same answer | worker back s | copies after rejoin |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for i, r in enumerate(runs):
            same = "error" not in r and r.get("diff") is None
            L.append(f"| {i + 1} | {r['victim']} | {f(r['kill_at_ms'])} | "
                     f"{f(r['kill_to_answer_ms'])} | {f(r['total_ms'])} | {f(r['extra_ms'])} | "
                     f"{'yes' if same else '**no**'} | {r.get('rejoin_s', 0):.1f} | "
                     f"{r.get('copied_after_rejoin', '-')} |")
        L.append("")
        L.append(f"Median: kill to answer {f(med([r['kill_to_answer_ms'] for r in runs]))} ms, "
                 f"total {f(med([r['total_ms'] for r in runs]))} ms vs "
                 f"{f(res['queries']['HV2']['p50_ms'])} ms without a kill. Kill to answer = "
                 "the scheduler dropping the worker (SIGKILL closes its connection at once) + "
                 "the executor's poll of the cluster (every 0.1 s while tasks run) + the lost "
                 "part rerun on the other holders of its partitions, which are busy with their "
                 "own part. 'worker back': the worker started again under its name and "
                 "directory until it is in the cluster; 'copies after rejoin': what the "
                 "placement check then had to copy.")
    problems = [f"- **{n}**: {d}" for n, r in res["queries"].items() for d in r["diffs"][:3]]
    problems += [f"- **recovery run {i + 1}**: {r.get('error') or r.get('diff')}"
                 for i, r in enumerate(runs) if "error" in r or r.get("diff")]
    L.append("")
    L.append("Problems: " + ("none" if not problems else ""))
    L.extend(problems)
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="skyshard shared-nothing recovery benchmark")
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--replication", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=HERE / "data")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-rows-per-partition", type=int, default=200_000)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args(argv)

    data, catalog = ensure_catalog(a.workdir.resolve(), a.objects, a.seed,
                                   a.max_rows_per_partition)
    P = json.loads((data / "queries.json").read_text())

    from distributed import Client, LocalCluster

    import skyshard
    from skyshard.dispatch import replicas
    from skyshard.dispatch.dask_executor import DaskExecutor
    from skyshard.dispatch.placement import PLACEMENT_FILE, SHARED, Placement

    shown = " ".join("DIR" if os.path.isabs(x) else x for x in (argv or sys.argv[1:]))
    res: dict = {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                 "command": f"python bench/replicas_bench.py {shown}".strip(),
                 "objects": a.objects, "workers": a.workers, "replication": a.replication,
                 "machine": core.machine(), "versions": core.versions(),
                 "load_before": "/".join(f"{x:.2f}" for x in os.getloadavg())}
    had_placement = (catalog / PLACEMENT_FILE).exists()
    tmp = Path(tempfile.mkdtemp(prefix="skyshard-replicas-bench-"))
    names = [f"w{i}" for i in range(a.workers)]
    scheduler = LocalCluster(n_workers=0, dashboard_address=":0")
    client = Client(scheduler, set_as_default=False)
    workers = Workers(client, tmp)
    ex = None
    try:
        workers.start(*names)
        t0 = time.perf_counter()
        placed = replicas.place(client, catalog, replication=a.replication)
        res["place_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        checked = replicas.check(client, catalog)
        res["check_s"] = time.perf_counter() - t0
        if not checked.healthy:
            raise SystemExit(checked.text(every_unit=False))
        pl: Placement = placed.placement
        res["partitions"] = len(pl.partition_units)
        res["catalog_bytes"] = sum(s for u in pl.units.values() for s, _ in u.files.values())
        res["placed_bytes"] = sum(s * len(u.holders) for u in pl.units.values()
                                  for s, _ in u.files.values())
        res["shared_bytes"] = sum(s for s, _ in pl.units[SHARED].files.values())
        t0 = time.perf_counter()
        ex = DaskExecutor(catalog, scheduler=scheduler.scheduler_address,
                          placement="replicas")
        res["open_s"] = time.perf_counter() - t0
        local = skyshard.open(catalog)
        db = skyshard.open(catalog)
        db.executor = ex
        res["queries"] = {}
        wants = {}
        for q in ("HV1", "HV2"):
            sql = core.skyshard_sql(q, 0, P)
            wants[q] = local.sql(sql)
            res["queries"][q] = timed_runs(db, sql, a.reps, wants[q])
            print(f"{q}: p50 {res['queries'][q]['p50_ms']:.0f} ms", flush=True)
        res["recovery"] = recovery(ex, db, workers, core.skyshard_sql("HV2", 0, P), wants["HV2"],
                                   res["queries"]["HV2"]["p50_ms"], a.kills, names)
    finally:
        if ex is not None:
            ex.close()
        client.close()
        workers.stop()
        scheduler.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if not had_placement:
            (catalog / PLACEMENT_FILE).unlink(missing_ok=True)
    res["load_after"] = "/".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(res)
    print(text)
    if not a.no_record:
        with open(HERE / "RESULTS.md", "a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
