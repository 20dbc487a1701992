#!/usr/bin/env python3
"""Shared-scan benchmark: 4 different full scans of one table at once, with shared scans
off and on, and the same 4 queries one at a time (what a lone full scan pays).

    python bench/shared_scans_bench.py [--objects N | --catalog DIR] [--reps 5]
                                       [--executor local|dask] [--workers 2]
                                       [--storage local|s3] [--cold] [--no-alone]
                                       [--unit-rows R] [--min-overlap X]
                                       [--workloads photometry,mixed,sources] [--no-record]

Uses the catalog of bench/core.py (``bench/data/catalog-<N>-seed1``; run core.py first).
One ``Database``, two executors over its one DuckDB: ``LocalExecutor(shared_scans=False)``
(each query one statement over its files) and the default one (full scans ride a shared
scan, units of ``--unit-rows`` rows, overlap ``--min-overlap``: skyshard's defaults
unless given). Per workload: one untimed warm-up, then ``--reps`` repetitions alternating the
executors, each repetition the 4 queries started together on 4 threads (wall time until
the last one ends, and the process CPU time: every DuckDB thread included), then the same
queries one after another (not with ``--no-alone``). Every result of the shared executor
is compared with the other's (same rows, any order, floats to 1e-9 relative).

``--executor dask``: the same on a local Dask cluster of ``--workers`` processes
(``LocalDaskCluster``, shared storage): ``DaskExecutor(shared_scans=False)`` against
``DaskExecutor(shared_scans=True)`` on that one cluster (each worker's convoys scan the
partitions full scans send it). CPU time is then this process's plus the workers'.

Where the files are read from:

- ``--storage local`` (default): the catalog folder; its files stay in the page cache
  between runs (warm), unless ``--cold``: the page cache is dropped (``sync; echo 3 >
  /proc/sys/vm/drop_caches``, root only) before every timed run, so each run reads the
  files from the disk (bytes read from the disk: ``/proc/self/io`` ``read_bytes``);
- ``--storage s3``: an S3 server on localhost (``moto_server``, a child process, data in
  its memory) with the catalog uploaded by ``skyshard upload``'s code, opened as
  ``skyshard.open("s3://...", storage_options=...)`` with fsspec's defaults, as a user
  gets them. The S3 GET requests and the bytes they return are counted in this process;
  the server's CPU time is reported apart (it shares this machine's cores, unlike a
  real object store).

Workloads (4 queries each):

- ``core-hv1``: the core benchmark's full scan of Object (``bench/core.py`` HV1, a
  filtered COUNT/AVG) with four different cuts;
- ``core-hv2``: its Source histogram (HV2, GROUP BY 2 keys) with four bin widths;
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
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import core  # bench/core.py: result comparison, machine, versions

#: The core benchmark's full scans (bench/core.py HV1, HV2), as four users would send them
#: with cuts and bins of their own.
_HV1 = ("SELECT COUNT(*) AS n, AVG(psfFlux_r) AS mean_r FROM Object "
        "WHERE psfFlux_g > {}")
_HV2 = ("SELECT filterName, FLOOR(psfFlux / {}) AS b, COUNT(*) AS n "
        "FROM Source GROUP BY 1, 2")

WORKLOADS: dict[str, tuple[str, list[str]]] = {
    "core-hv1": ("Object", [_HV1.format(t) for t in (4028.0, 1000.0, 2000.0, 8000.0)]),
    "core-hv2": ("Source", [_HV2.format(w) for w in (10000.0, 1000.0, 5000.0, 20000.0)]),
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


#: Worker processes whose CPU time counts with this process's (``--executor dask``).
WORKER_PIDS: list[int] = []


def cpu_s() -> float:
    """CPU seconds of this process, and of the Dask workers when there are some."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    total = r.ru_utime + r.ru_stime
    for pid in WORKER_PIDS:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def scan_stats(executor) -> dict[str, int]:
    """The shared-scan counters of ``executor`` (a Dask one's: summed over its workers)."""
    if hasattr(executor, "scan_stats"):
        out: dict[str, int] = {}
        for stats in executor.scan_stats().values():
            for k, v in stats.items():
                out[k] = out.get(k, 0) + v
        return out
    return dict(executor.scans.stats)


# --- where the files are read from ------------------------------------------------------


class Storage:
    """The catalog as the benchmark opens it, and what one timed run reads."""

    label = "local, warm (files in the page cache)"

    def __init__(self, catalog: Path) -> None:
        self.catalog = catalog

    def open(self, **kwargs):
        import skyshard

        return skyshard.open(self.catalog, **kwargs)

    def before_run(self) -> None:
        """Called before every timed run (not timed)."""

    def meter(self) -> dict[str, float]:
        """Counters; the difference across a run is what it read."""
        return {}

    def close(self) -> None:
        pass


class ColdLocal(Storage):
    label = "local, cold (page cache dropped before every timed run)"

    def __init__(self, catalog: Path) -> None:
        super().__init__(catalog)
        drop_page_cache()  # fail now, not after the warm-up

    def before_run(self) -> None:
        drop_page_cache()

    def meter(self) -> dict[str, float]:
        return {"disk_MB": proc_io()["read_bytes"] / 1e6}


def drop_page_cache() -> None:
    """Write back dirty pages and drop the clean ones: the next reads go to the disk."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as exc:
        raise SystemExit(f"--cold needs to drop the page cache (root, /proc/sys/vm "
                         f"writable): {exc}") from exc


def proc_io() -> dict[str, int]:
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = int(v)
    return out


class S3(Storage):
    """A moto S3 server on a free localhost port, the catalog uploaded to it."""

    BUCKET = "bench"

    def __init__(self, catalog: Path, options: dict | None = None) -> None:
        super().__init__(catalog)
        exe = shutil.which("moto_server")
        if exe is None:
            raise SystemExit("--storage s3 needs moto's server: pip install 'moto[server]'")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise SystemExit(f"moto_server did not start on {endpoint}")
                time.sleep(0.1)
        self.options = {"key": "testing", "secret": "testing", "endpoint_url": endpoint}
        self.extra = dict(options or {})
        self.url = f"s3://{self.BUCKET}/{catalog.name}"
        from skyshard.storage import remote

        remote.filesystem("s3", self.options).mkdir(self.BUCKET)
        t0 = time.perf_counter()
        self.files = remote.upload(catalog, self.url, self.options)
        self.upload_s = time.perf_counter() - t0
        self.label = (f"S3 on localhost (moto_server, its own process; {self.files} files "
                      f"uploaded in {self.upload_s:.1f} s), "
                      + (f"storage options {self.extra}" if self.extra else
                         "fsspec/s3fs defaults"))
        self.gets = self.got = 0
        self._count_gets()
        print(f"S3: {self.url} at {endpoint}, {self.files} files uploaded in "
              f"{self.upload_s:.1f} s", flush=True)

    def _count_gets(self) -> None:
        """Count GetObject requests and their bytes (every S3FileSystem in this process)."""
        import s3fs

        original = s3fs.S3FileSystem._call_s3
        lock = threading.Lock()

        async def counted(fs, method, *args, **kwargs):
            out = await original(fs, method, *args, **kwargs)
            if method == "get_object":
                with lock:
                    self.gets += 1
                    self.got += int(out.get("ContentLength") or 0)
            return out

        s3fs.S3FileSystem._call_s3 = counted

    def open(self, **kwargs):
        import skyshard

        return skyshard.open(self.url, storage_options=self.options | self.extra, **kwargs)

    def meter(self) -> dict[str, float]:
        return {"GETs": self.gets, "fetched_MB": self.got / 1e6,
                "server_cpu_s": self.server_cpu()}

    def server_cpu(self) -> float:
        """CPU seconds of the S3 server process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def metered(storage: Storage, run, *args) -> tuple[float, float, list, dict[str, float]]:
    """``run(*args)`` from a fresh start (``before_run``), with what it read."""
    storage.before_run()
    m0 = storage.meter()
    wall, cpu, out = run(*args)
    m1 = storage.meter()
    return wall, cpu, out, {k: m1[k] - m0[k] for k in m0}


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


def run_workload(db, off, on, name: str, reps: int, storage: Storage, alone: bool) -> dict:
    table, sqls = WORKLOADS[name]
    union, total = columns_read(db, sqls, table)
    r = {"table": table, "queries": sqls, "columns_union": union, "columns_sum": total,
         "together": {"off": [], "on": []}, "together_cpu": {"off": [], "on": []},
         "alone": {"off": [], "on": []}, "alone_cpu": {"off": [], "on": []},
         "together_io": {"off": [], "on": []}, "alone_io": {"off": [], "on": []},
         "mismatches": []}
    print(f"\n{name}: {table}, 4 queries, columns {union} shared / {total} read separately",
          flush=True)
    _, _, want = one_by_one(db, off, sqls)  # warm-up and the reference rows
    one_by_one(db, on, sqls)
    before = scan_stats(on)

    def check(got: list, how: str, rep: int) -> None:
        for i, (g, w) in enumerate(zip(got, want)):
            diff = core.compare(g, w)
            if diff:
                r["mismatches"].append(f"{how} rep {rep} query {i + 1}: {diff}")
                print(f"!!! RESULT MISMATCH {name} {how} rep {rep} query {i + 1}: {diff}")

    kinds = [("together", together, "together")] + \
        ([("alone", one_by_one, "one by one")] if alone else [])
    for rep in range(reps):
        order = ("off", "on") if rep % 2 == 0 else ("on", "off")
        for key, run, how in kinds:
            for mode in order:
                wall, cpu, got, io = metered(storage, run, db, off if mode == "off" else on,
                                             sqls)
                r[key][mode].append(wall)
                r[key + "_cpu"][mode].append(cpu)
                r[key + "_io"][mode].append(io)
                if mode == "on":
                    check(got, how, rep)
        line = (f"  rep {rep + 1}: together off {r['together']['off'][-1]:.2f} s, "
                f"on {r['together']['on'][-1]:.2f} s")
        if alone:
            line += (f"; one by one off {r['alone']['off'][-1]:.2f} s, "
                     f"on {r['alone']['on'][-1]:.2f} s")
        io = r["together_io"]
        if io["off"][-1]:
            line += "; together read off " + _io_text(io["off"][-1]) + ", on " + \
                _io_text(io["on"][-1])
        print(line, flush=True)
    after = scan_stats(on)
    r["scan_stats"] = {k: after[k] - before.get(k, 0) for k in after}
    keys = ("together", "together_cpu", "alone", "alone_cpu") if alone else \
        ("together", "together_cpu")
    for key in keys:
        r[key + "_median"] = {m: statistics.median(v) for m, v in r[key].items()}
    for key in ("together_io", "alone_io") if alone else ("together_io",):
        r[key + "_median"] = {m: {k: statistics.median(x[k] for x in v) for k in v[0]}
                              for m, v in r[key].items()}
    r["speedup"] = r["together_median"]["off"] / r["together_median"]["on"]
    r["cpu_ratio"] = r["together_cpu_median"]["off"] / r["together_cpu_median"]["on"]
    if alone:
        r["alone_overhead"] = r["alone_median"]["on"] / r["alone_median"]["off"]
    return r


def _io_text(io: dict[str, float]) -> str:
    """What a run read, e.g. '412 MB in 96 GETs, server 1.2 CPU s'."""
    parts = []
    if "fetched_MB" in io:
        parts.append(f"{io['fetched_MB']:,.0f} MB in {io['GETs']:,.0f} GETs")
    if "disk_MB" in io:
        parts.append(f"{io['disk_MB']:,.0f} MB from disk")
    if "server_cpu_s" in io:
        parts.append(f"server {io['server_cpu_s']:.1f} CPU s")
    return ", ".join(parts)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def units(db, scans, table: str) -> int:
    """How many units a convoy over all of ``table`` makes."""
    from skyshard.dispatch.scans import scan_request

    return len(scans.units(scan_request(db.plan(f"SELECT COUNT(*) FROM {table}"),
                                        db.tables[table])))


def section(args, res: dict, catalog: Path, db, scans, storage: Storage, m: dict,
            v: dict) -> str:
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    cmd = "python bench/shared_scans_bench.py " + " ".join(args.argv)
    dask = args.executor == "dask"
    tables = ", ".join(
        f"{t} {db.tables[t].rows:,} rows / {len(db.tables[t].partitions)} partitions"
        + ("" if dask else f" / {units(db, scans, t)} units")
        for t in sorted({WORKLOADS[w][0] for w in res["workloads"]}))
    if dask:
        tables += (f"; each of the {args.workers} workers cuts the partitions a full scan "
                   f"sends it into units (at least {res['min_units']})")
    alone = not args.no_alone
    metered_io = any(res[n]["together_io"]["off"][0] for n in res["workloads"])
    lines = [
        f"## {now} — shared scans: 4 concurrent full scans, off vs on ({res['storage']})",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"- Data: `{catalog.name}`: {tables} (a unit: consecutive partitions of at most about "
        f"{scans.unit_rows:,} rows, read once for the queries that need it when their "
        f"columns overlap {scans.min_overlap}x or more)",
        f"- Storage: {storage.label}",
        f"- Machine: {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, {m['cpu']}, "
        f"{m['os']}, Python {m['python']}; load average (1/5/15 min) before "
        f"{res['load_before']}, after {res['load_after']}",
        "- Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()),
        f"- A load average above the {m['cores']} cores means other processes shared them: "
        "wall times are then inflated and noisy; the CPU columns (this process"
        + (" and the Dask workers" if dask else " only") + ") are steadier.",
        f"- {args.reps} repetitions, medians; 'together' = the 4 queries started at once on 4 "
        "threads (wall time to the last result; CPU = the process's CPU time, all DuckDB "
        "threads" + (", plus the Dask workers' CPU time" if dask else "") + ")"
        + ("; 'one by one' = the same 4 queries in sequence (a lone full scan's "
           "cost)" if alone else "") + ". "
        + (f"Executors: a `LocalDaskCluster` of {args.workers} worker processes "
           f"({res['cluster']}); off: `DaskExecutor(shared_scans=False)` (one task per "
           "worker per query, one DuckDB statement over that worker's partitions); on: "
           "`DaskExecutor(shared_scans=True)` (each task rides its worker's convoy of those "
           "partitions). Both on the same cluster."
           if dask else
           "Off: `LocalExecutor(shared_scans=False)`, each query one DuckDB statement over "
           "its files; on: the default executor."),
        "",
    ]
    head = ["workload", "table", "columns: shared read / read separately", "together off s",
            "together on s", "speed-up", "CPU off s", "CPU on s", "CPU ratio"]
    if metered_io:
        head += ["read by a together run: off", "on"]
    if alone:
        head += ["one by one off s", "one by one on s", "lone overhead"]
    head += ["units read shared / by one query"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in res["workloads"]:
        r = res[name]
        tm, cm = r["together_median"], r["together_cpu_median"]
        s = r["scan_stats"]
        cells = [name, r["table"], f"{r['columns_union']} / {r['columns_sum']}",
                 f"{tm['off']:.2f}", f"{tm['on']:.2f}", f"{r['speedup']:.2f}x",
                 f"{cm['off']:.2f}", f"{cm['on']:.2f}", f"{r['cpu_ratio']:.2f}x"]
        if metered_io:
            io = r["together_io_median"]
            cells += [_io_text(io["off"]), _io_text(io["on"])]
        if alone:
            am = r["alone_median"]
            cells += [f"{am['off']:.2f}", f"{am['on']:.2f}",
                      f"{(r['alone_overhead'] - 1) * 100:+.0f} %"]
        cells.append(f"{s['shared_reads']} / {s['own_reads']}")
        lines.append("| " + " | ".join(cells) + " |")
    if metered_io:
        lines += ["", ("'read by a together run': medians over the repetitions of what one "
                       "run of the 4 queries read (S3: GET requests counted in this process "
                       "and the bytes they returned, and the S3 server's CPU time; cold: "
                       "bytes this process read from the disk, /proc/self/io).")]
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
    ap.add_argument("--storage", choices=("local", "s3"), default="local",
                    help="read the catalog from its folder, or from an S3 server on "
                         "localhost it is uploaded to")
    ap.add_argument("--cold", action="store_true",
                    help="local: drop the page cache before every timed run (root only)")
    ap.add_argument("--s3-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an fsspec storage option for --storage s3 (default: none, as a user "
                         "gets it), e.g. default_cache_type=none")
    ap.add_argument("--memory-limit", default=None,
                    help="the DuckDB memory limit (default: DuckDB's, 80%% of RAM); it bounds "
                         "DuckDB's cache of remote files too: below the table's size, as for a "
                         "catalog larger than the machine's memory")
    ap.add_argument("--no-alone", action="store_true",
                    help="skip the one-by-one runs (only the 4 queries together)")
    ap.add_argument("--unit-rows", type=int, default=None,
                    help="rows per shared-scan unit (default: skyshard's)")
    ap.add_argument("--min-overlap", type=float, default=None,
                    help="share a unit when the queries' columns overlap this much "
                         "(default: skyshard's)")
    ap.add_argument("--executor", choices=("local", "dask"), default="local",
                    help="run the queries in this process, or on a local Dask cluster")
    ap.add_argument("--workers", type=int, default=2,
                    help="--executor dask: worker processes of the local cluster")
    ap.add_argument("--gather-s", type=float, default=None,
                    help="seconds an idle convoy waits for queries sent together "
                         "(default: skyshard's)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.s3_option and args.storage != "s3":
        raise SystemExit("--s3-option is for --storage s3")
    if args.cold and args.storage != "local":
        raise SystemExit("--cold is for --storage local (the S3 server keeps its data in "
                         "memory)")

    from skyshard.dispatch.local import LocalExecutor
    from skyshard.dispatch.scans import DEFAULT_UNIT_ROWS, MIN_UNITS, SharedScans

    catalog = (args.catalog or args.workdir / f"catalog-{args.objects}-seed{args.seed}").resolve()
    if not (catalog / "skyshard.json").exists():
        raise SystemExit(f"no catalog at {catalog}: run bench/core.py --objects "
                         f"{args.objects} first")
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    unit_rows = args.unit_rows or DEFAULT_UNIT_ROWS
    from skyshard.storage.remote import parse_option

    storage: Storage = (S3(catalog, dict(map(parse_option, args.s3_option)))
                        if args.storage == "s3" else
                        ColdLocal(catalog) if args.cold else Storage(catalog))
    mode = args.storage + (", cold" if args.cold else ", warm" if args.storage == "local" else "")
    cluster = None
    if args.executor == "dask" and args.storage != "local":
        raise SystemExit("--executor dask is measured on --storage local")
    try:
        db = storage.open(memory_limit=args.memory_limit)
        tuning = {k: v for k, v in (("min_overlap", args.min_overlap),
                                    ("gather_s", args.gather_s)) if v is not None}
        scans = SharedScans(db.engine, unit_rows=unit_rows, **tuning)
        if args.executor == "dask":
            from skyshard.dispatch.dask_executor import SLOTS, DaskExecutor, LocalDaskCluster

            cluster = LocalDaskCluster(args.workers)
            common = dict(scheduler=cluster, engine=db.engine, data_dirs=[catalog])
            off = DaskExecutor(catalog, **common)
            on = DaskExecutor(catalog, shared_scans=True,
                              scan_options={"unit_rows": unit_rows} | tuning, **common)
            WORKER_PIDS[:] = sorted(set(on.client.run(os.getpid).values()))
        else:
            off = LocalExecutor(db.engine, shared_scans=False)
            on = LocalExecutor(db.engine, scans=scans)
        if args.memory_limit:
            mode += f", DuckDB memory limit {args.memory_limit}"
        res: dict = {"workloads": names, "storage": mode, "load_before": load(),
                     "unit_rows": unit_rows, "min_overlap": scans.min_overlap,
                     "executor": args.executor, "min_units": MIN_UNITS}
        if cluster is not None:
            mode += f"; Dask, {args.workers} workers"
            res["storage"] = mode
            res["cluster"] = (f"{cluster.threads} DuckDB thread(s) and "
                              f"{cluster.memory_limit} each, {SLOTS} task slots")
        if isinstance(storage, S3):
            res["upload_s"] = storage.upload_s
        for name in names:
            res[name] = run_workload(db, off, on, name, args.reps, storage, not args.no_alone)
        res["load_after"] = load()
        on.close()
        off.close()
        db.close()
    finally:
        if cluster is not None:
            cluster.close()
        storage.close()
    tag = args.storage + ("-cold" if args.cold else "") + \
        ("-dask" if args.executor == "dask" else "")
    out = args.workdir / f"shared-scans-results-{catalog.name}-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    m, v = core.machine(), core.versions()
    text = section(args, res, catalog, db, scans, storage, m, v)
    print("\n" + text)
    if not args.no_record:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write("\n" + text)
        print(f"appended to {HERE / 'RESULTS.md'}; all numbers in {out}")


if __name__ == "__main__":
    main()
