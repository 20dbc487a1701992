#!/usr/bin/env python3
"""Serving benchmark: many small clients over MySQL and TAP while full scans run.

    python bench/serve_bench.py [--objects 10000000] [--duration 60] [--clients 50]
                                [--think 1.0] [--scans 2] [--protocols mysql,tap]
                                [--no-closed-loop] [--config FILE] [--no-record]

For each protocol (MySQL, then TAP) and each think time (``--think``, then 0: the
closed-loop run), one *run*:

1. start ``skyshard serve`` on the catalog in a child process (authentication on: one
   user with a password, one bearer token; free ports), wait until both ports answer;
2. time the first id lookup and the first cone (cold start), then warm up (a few of each
   query over both protocols, one of each full scan);
3. for ``--duration`` seconds, ``--clients`` low-volume clients of that protocol, spread
   over ``--client-procs`` processes, each with its own connection (MySQL: one PyMySQL
   connection; TAP: one keep-alive HTTP session, ``POST /tap/sync``, ADQL, VOTable);
   meanwhile ``--scans`` other clients of the same protocol loop full scans;
4. stop the server (SIGTERM) and check it exits cleanly.

A *low-volume client* sends one query, waits for the whole answer, checks it, then
thinks (sleeps a time drawn uniformly between 0.5 and 1.5 times ``--think``) before the
next; each query is an id lookup (LV1: ``SELECT * FROM Object WHERE objectId = X``) or a
1' cone (LV2: all columns of the objects within 1 arcmin of a point), half and half at
random. Ids are objects drawn from the input data; cone centres are objects moved by up to
20". A *scan client* loops HV2 (the ``Source`` histogram: all ~50 M rows) and HV1
(filtered ``COUNT``/``AVG`` over all of ``Object``) back to back, with no think time.

Every answer is checked against the expected one, computed beforehand with plain DuckDB
from the input Parquet (not through skyshard): an id lookup must return exactly that
object with its position, a cone exactly the objects within the radius, a scan exactly
the expected count/histogram. A wrong answer counts as an error.

Measured per run: queries done in the window, throughput, latency p50/p95/p99/max (all
low-volume queries, and per kind), errors (with the first distinct messages), full scans
completed and their latency, the server's RSS (its process and children) at start,
after the warm-up ("before", 2 s after it), peak during the window, 2 s after it
("after"), and under load early and late in the window (medians of the samples at 20-30 %
and 90-100 % of it: a leak shows there even when memory pools release memory between),
and CPU seconds of the server, of the client processes and of everything else on the
machine during the window (a measure of how disturbed the run was). Latencies are
client-side wall times.

Targets (issue 4), for the runs with think time: p95 <= 250 ms, 0 errors, RSS growth
under 10 % (after / before, and late / early under load). The closed-loop runs are
reported for honesty, unmarked.

Needs the input Parquet of bench/generate.py (``input-<N>-seed<S>``) and its catalog
(``catalog-<N>-seed<S>``) in ``--workdir`` (bench/data): ``python bench/core.py
--objects N`` makes both. The expected answers are cached there
(``serve-params-<N>-seed<S>.json``); server logs go there too (``serve-<run>.log``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONE_RADIUS_DEG = 1.0 / 60.0
CONE_OFFSET_ARCSEC = 20.0
SAMPLE = 512          # ids and cone centres drawn from the data
TARGET_P95_MS = 250.0
TARGET_RSS_GROWTH = 0.10
MAX_MESSAGES = 5
USER = "bench"


# --- expected answers (plain DuckDB over the input Parquet) --------------------------------


def make_params(input_dir: Path, seed: int) -> dict:
    """Ids, cone centres and the expected answers of every query the clients send."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    obj = f"read_parquet('{input_dir / 'Object' / '*.parquet'}')"
    src = f"read_parquet('{input_dir / 'Source' / '*.parquet'}')"
    P = json.loads((input_dir / "queries.json").read_text())
    picked = con.sql(f"SELECT objectId, ra, decl FROM {obj} "
                     f"USING SAMPLE reservoir({2 * SAMPLE} ROWS) REPEATABLE ({seed})").fetchall()
    rng = random.Random(seed)
    rng.shuffle(picked)
    ids = [[int(i), float(r), float(d)] for i, r, d in picked[:SAMPLE]]
    centres = []
    for _, ra, dec in picked[SAMPLE:2 * SAMPLE]:
        centres.append(_moved(ra, dec, rng.uniform(0, CONE_OFFSET_ARCSEC) / 3600.0,
                              rng.uniform(0, 2 * math.pi)))
    con.execute("CREATE TABLE centres (i INTEGER, ra DOUBLE, decl DOUBLE)")
    con.executemany("INSERT INTO centres VALUES (?, ?, ?)",
                    [(i, ra, dec) for i, (ra, dec) in enumerate(centres)])
    r = CONE_RADIUS_DEG
    members = con.sql(f"""
        SELECT c.i, o.objectId,
               degrees(2 * asin(sqrt(pow(sin(radians(o.decl - c.decl) / 2), 2)
                   + cos(radians(o.decl)) * cos(radians(c.decl))
                   * pow(sin(radians(o.ra - c.ra) / 2), 2)))) AS d
        FROM centres c JOIN {obj} o ON o.decl BETWEEN c.decl - {2 * r!r} AND c.decl + {2 * r!r}
        WHERE d <= {r * 1.000001!r}""").fetchall()
    sure: list[list[int]] = [[] for _ in centres]
    edge: list[list[int]] = [[] for _ in centres]  # within 1e-6 of the radius: either way
    for i, oid, d in members:
        (sure if d <= r * 0.999999 else edge)[i].append(int(oid))
    cones = [{"ra": ra, "dec": dec, "ids": sorted(sure[i]), "edge": sorted(edge[i])}
             for i, (ra, dec) in enumerate(centres)]
    t = P["hv1_psfFlux_g_min"]
    n, mean = con.sql(f"SELECT COUNT(*), AVG(psfFlux_r) FROM {obj} WHERE psfFlux_g > {t!r}").fetchall()[0]
    width = P["hv2_flux_bin"]
    hist = con.sql(f"SELECT filterName, FLOOR(psfFlux / {width!r})::BIGINT, COUNT(*) FROM {src} "
                   "GROUP BY 1, 2").fetchall()
    return {"ids": ids, "cones": cones, "radius_deg": r,
            "hv1": {"threshold": t, "n": int(n), "mean_r": float(mean)},
            "hv2": {"width": width, "hist": sorted([f, int(b), int(c)] for f, b, c in hist)}}


def _moved(ra: float, dec: float, dist_deg: float, bearing: float) -> tuple[float, float]:
    """The point ``dist_deg`` away from (ra, dec) towards ``bearing`` (great circle)."""
    d, b = math.radians(dist_deg), bearing
    p1, l1 = math.radians(dec), math.radians(ra)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1),
                         math.cos(d) - math.sin(p1) * math.sin(p2))
    return (math.degrees(l2) % 360.0, math.degrees(p2))


def load_params(workdir: Path, objects: int, seed: int) -> dict:
    path = workdir / f"serve-params-{objects}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    input_dir = workdir / f"input-{objects}-seed{seed}"
    if not (input_dir / "queries.json").exists():
        raise SystemExit(f"{input_dir} is missing: run bench/core.py --objects {objects} first")
    t0 = time.perf_counter()
    print(f"computing expected answers from {input_dir.name} with DuckDB ...", flush=True)
    params = make_params(input_dir, seed)
    path.write_text(json.dumps(params))
    print(f"  done in {time.perf_counter() - t0:.1f} s -> {path.name}", flush=True)
    return params


# --- the queries and their checks ---------------------------------------------------------


def lv_sql(kind: str, arg: list, radius: float, adql: bool) -> str:
    if kind == "LV1":
        return f"SELECT * FROM Object WHERE objectId = {int(arg[0])}"
    ra, dec = arg
    if adql:
        return ("SELECT * FROM Object WHERE 1 = CONTAINS(POINT('ICRS', ra, decl), "
                f"CIRCLE('ICRS', {ra!r}, {dec!r}, {radius!r}))")
    return f"SELECT * FROM Object WHERE scisql_s2PtInCircle(ra, decl, {ra!r}, {dec!r}, {radius!r}) = 1"


def scan_sql(kind: str, params: dict) -> str:
    if kind == "HV1":
        return ("SELECT COUNT(*) AS n, AVG(psfFlux_r) AS mean_r FROM Object "
                f"WHERE psfFlux_g > {params['hv1']['threshold']!r}")
    w = params["hv2"]["width"]
    return (f"SELECT filterName, FLOOR(psfFlux / {w!r}) AS b, COUNT(*) AS n FROM Source "
            f"GROUP BY filterName, FLOOR(psfFlux / {w!r})")


class WrongAnswer(Exception):
    pass


def check(kind: str, arg, names: list[str], rows: list[tuple], params: dict) -> None:
    """Raise ``WrongAnswer`` unless ``rows`` are the expected answer."""
    if kind == "LV1":
        oid, ra, dec = arg
        if len(rows) != 1:
            raise WrongAnswer(f"LV1 {oid}: {len(rows)} rows, expected 1")
        row = dict(zip(names, rows[0]))
        if row.get("objectId") != oid or not (_close(row.get("ra"), ra)
                                              and _close(row.get("decl"), dec)):
            raise WrongAnswer(f"LV1 {oid}: got objectId={row.get('objectId')} "
                              f"ra={row.get('ra')} decl={row.get('decl')}")
    elif kind == "LV2":
        at = names.index("objectId")
        got = sorted(r[at] for r in rows)
        want, edge = set(arg["ids"]), set(arg["edge"])
        if len(got) != len(set(got)) or not (want <= set(got) <= want | edge):
            raise WrongAnswer(f"LV2 at ({arg['ra']:.5f}, {arg['dec']:.5f}): {len(got)} objects, "
                              f"expected {len(want)} (+{len(edge)} on the edge)")
    elif kind == "HV1":
        want = params["hv1"]
        if len(rows) != 1 or rows[0][0] != want["n"] or not _close(rows[0][1], want["mean_r"], 1e-6):
            raise WrongAnswer(f"HV1: got {rows[:1]}, expected ({want['n']}, {want['mean_r']})")
    elif kind == "HV2":
        got = sorted([str(f), int(b), int(c)] for f, b, c in rows)
        if got != params["hv2"]["hist"]:
            raise WrongAnswer(f"HV2: {len(got)} bins / {sum(r[2] for r in got)} rows, expected "
                              f"{len(params['hv2']['hist'])} / "
                              f"{sum(r[2] for r in params['hv2']['hist'])}")


def _close(a, b, rel: float = 1e-12) -> bool:
    return isinstance(a, (int, float)) and abs(a - b) <= rel * max(1.0, abs(b))


# --- the two protocols, client side ----------------------------------------------------------


class MysqlClient:
    def __init__(self, server: dict, timeout: float) -> None:
        import pymysql

        self.conn = pymysql.connect(host="127.0.0.1", port=server["mysql_port"], user=USER,
                                    password=server["password"], connect_timeout=10,
                                    read_timeout=timeout, write_timeout=timeout, autocommit=True)

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            return names, list(cur.fetchall())

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already broken
            self.conn.close()


class TapClient:
    adql = True

    def __init__(self, server: dict, timeout: float) -> None:
        import requests

        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {server['token']}"
        self.url = f"http://127.0.0.1:{server['http_port']}/tap/sync"
        self.timeout = timeout

    def query(self, adql: str) -> tuple[list[str], list[tuple]]:
        r = self.session.post(self.url, data={"REQUEST": "doQuery", "LANG": "ADQL",
                                              "QUERY": adql}, timeout=self.timeout)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {_votable_error(r.content)}")
        return decode_votable(r.content)

    def close(self) -> None:
        self.session.close()


MysqlClient.adql = False
CLIENTS = {"mysql": MysqlClient, "tap": TapClient}

_VO = "{http://www.ivoa.net/xml/VOTable/v1.3}"
_FIXED = {"boolean": ("c", 1), "unsignedByte": ("B", 1), "short": ("h", 2), "int": ("i", 4),
          "long": ("q", 8), "float": ("f", 4), "double": ("d", 8)}


def decode_votable(doc: bytes) -> tuple[list[str], list[tuple]]:
    """Names and rows of a BINARY2 VOTable (scalars and ``char *``: what these queries
    return); raises if QUERY_STATUS is not OK."""
    root = ET.fromstring(doc)
    status = root.find(f".//{_VO}INFO[@name='QUERY_STATUS']")
    if status is None or status.get("value") != "OK":
        raise RuntimeError(f"QUERY_STATUS {None if status is None else status.get('value')}: "
                           f"{_votable_error(doc)}")
    fields = root.findall(f".//{_VO}FIELD")
    names = [f.get("name") for f in fields]
    types = [(f.get("datatype"), f.get("arraysize")) for f in fields]
    stream = root.find(f".//{_VO}STREAM")
    data = base64.b64decode("".join(stream.text.split())) if stream is not None and stream.text else b""
    mask_len = (len(fields) + 7) // 8
    rows, pos = [], 0
    while pos < len(data):
        mask = data[pos:pos + mask_len]
        pos += mask_len
        row = []
        for k, (datatype, arraysize) in enumerate(types):
            if arraysize is not None:
                (n,) = struct.unpack_from(">i", data, pos)
                value = data[pos + 4:pos + 4 + n].decode()
                pos += 4 + n
            else:
                code, size = _FIXED[datatype]
                (value,) = struct.unpack_from(">" + code, data, pos)
                pos += size
                if datatype == "boolean":
                    value = {b"T": True, b"F": False}.get(value)
            if mask[k // 8] & (0x80 >> (k % 8)):
                value = None
            row.append(value)
        rows.append(tuple(row))
    return names, rows


def _votable_error(doc: bytes) -> str:
    try:
        info = ET.fromstring(doc).find(f".//{_VO}INFO[@name='QUERY_STATUS']")
        return (info.text or "").strip()[:300] if info is not None else doc[:300].decode(errors="replace")
    except ET.ParseError:
        return doc[:300].decode(errors="replace")


# --- client processes ------------------------------------------------------------------------


def client_process(spec: dict, out: mp.Queue) -> None:
    """Run some clients (threads) of one run; put their records and this process's CPU
    seconds on ``out``."""
    records: list[tuple] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_client_thread, args=(spec, c, records, lock), daemon=True)
               for c in spec["clients"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec["t_end"] - time.time() + 3 * spec["timeout"])
    cpu = os.times()
    with lock:
        out.put({"records": list(records), "cpu": cpu.user + cpu.system,
                 "stuck": sum(t.is_alive() for t in threads)})


def _client_thread(spec: dict, client: dict, records: list, lock: threading.Lock) -> None:
    params = spec["params"]
    rng = random.Random(client["seed"])
    mine: list[tuple] = []
    try:
        conn = CLIENTS[spec["protocol"]](spec["server"], spec["timeout"])
    except Exception as exc:  # noqa: BLE001 - a refused connection is an error of the run
        with lock:
            records.append((client["role"], "connect", 0.0, 0.0, _message(exc)))
        return
    try:
        think = spec["think"]
        start = spec["t_start"] + (rng.uniform(0, think) if client["role"] == "lv" else 0.0)
        time.sleep(max(0.0, start - time.time()))
        k = 0
        while time.time() < spec["t_end"]:
            if client["role"] == "scan":
                kind = ("HV2", "HV1")[k % 2]
                arg, sql = None, scan_sql(kind, params)
            else:
                kind = "LV1" if rng.random() < spec["lv1_share"] else "LV2"
                if kind == "LV1":
                    arg = rng.choice(params["ids"])
                    sql = lv_sql(kind, arg, params["radius_deg"], conn.adql)
                else:
                    arg = rng.choice(params["cones"])
                    sql = lv_sql(kind, [arg["ra"], arg["dec"]], params["radius_deg"], conn.adql)
            k += 1
            t0 = time.time()
            c0 = time.perf_counter()
            error = None
            try:
                names, rows = conn.query(sql)
                check(kind, arg, names, rows, params)
            except Exception as exc:  # noqa: BLE001 - every failure is recorded
                error = _message(exc)
            mine.append((client["role"], kind, t0 - spec["t_start"], time.perf_counter() - c0, error))
            if error is not None and client["role"] == "lv":
                conn.close()  # start afresh, as a client would after an error
                try:
                    conn = CLIENTS[spec["protocol"]](spec["server"], spec["timeout"])
                except Exception as exc:  # noqa: BLE001
                    mine.append((client["role"], "connect", time.time() - spec["t_start"], 0.0,
                                 _message(exc)))
                    return
            if client["role"] == "lv" and think > 0:
                time.sleep(rng.uniform(0.5 * think, 1.5 * think))
    finally:
        conn.close()
        with lock:
            records.extend(mine)


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:240] if str(exc).strip() else ''}"


# --- the server --------------------------------------------------------------------------------


@dataclass
class Served:
    proc: subprocess.Popen
    log: Path
    mysql_port: int
    http_port: int
    password: str
    token: str
    ready_s: float

    def spec(self) -> dict:
        return {"mysql_port": self.mysql_port, "http_port": self.http_port,
                "password": self.password, "token": self.token}


def start_server(catalog: Path, log: Path, extra: list[str], results_dir: Path) -> Served:
    password, token = secrets.token_hex(8), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "skyshard.cli", "serve", "--catalog", str(catalog),
           "--mysql-port", "0", "--http-port", "0", "--user", f"{USER}:{password}",
           "--token", f"{USER}:{token}", "--results-dir", str(results_dir), *extra]
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    ports: dict[str, int] = {}
    while time.perf_counter() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}) while starting: see {log}")
        for line in log.read_text(errors="replace").splitlines():
            if "MySQL protocol on " in line:
                ports["mysql"] = int(line.rsplit(":", 1)[1])
            elif "HTTP on http://" in line:
                ports["http"] = int(line.split("HTTP on http://", 1)[1].split()[0].rsplit(":", 1)[1])
        if len(ports) == 2 and _answers(ports["mysql"]) and _answers(ports["http"]):
            return Served(proc, log, ports["mysql"], ports["http"], password, token,
                          time.perf_counter() - t0)
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not start within 120 s: see {log}")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop_server(served: Served) -> tuple[int | None, float]:
    t0 = time.perf_counter()
    served.proc.send_signal(signal.SIGTERM)
    try:
        code = served.proc.wait(30)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        code = None
    return code, time.perf_counter() - t0


class Sampler(threading.Thread):
    """The server's RSS (process + children) and CPU seconds, every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.samples: list[tuple[float, int]] = []  # (time.time(), RSS)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _over_tree(self, value) -> int:
        """``value(process)`` summed over the server and its children (0 once gone)."""
        import psutil

        total = 0
        try:
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += value(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
                    pass
        except psutil.NoSuchProcess:
            return 0
        return total

    def rss(self) -> int:
        return self._over_tree(lambda p: p.memory_info().rss)

    def disk_read(self) -> int:
        """Bytes the server (process + children) has read from the disk, not the cache."""
        return self._over_tree(lambda p: p.io_counters().read_bytes)

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def median_between(self, t0: float, t1: float) -> int:
        with self._lock:
            xs = sorted(v for t, v in self.samples if t0 <= t <= t1)
        return xs[len(xs) // 2] if xs else 0

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.rss()

    def run(self) -> None:
        while not self._stop.wait(self.every):
            value = self.rss()
            with self._lock:
                self.peak = max(self.peak, value)
                self.samples.append((time.time(), value))

    def stop(self) -> None:
        self._stop.set()


def machine_busy_s() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    protocol: str
    think: float
    records: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        proto = {"mysql": "MySQL", "tap": "TAP"}[self.protocol]
        return f"{proto}, {'think ' + _num(self.think) + ' s' if self.think > 0 else 'closed loop'}"


def run_one(args: argparse.Namespace, params: dict, protocol: str, think: float,
            index: int) -> Run:
    run = Run(protocol, think)
    print(f"\n=== {run.name}: {args.clients} clients + {args.scans} scan clients, "
          f"{args.duration:g} s ===", flush=True)
    info = run.info
    info["load_before"] = os.getloadavg()
    results_dir = Path(tempfile.mkdtemp(prefix="serve-bench-results-"))
    log = args.workdir / f"serve-{index}-{protocol}-{'think' if think > 0 else 'closed'}.log"
    extra = ["--config", str(args.config)] if args.config else []
    served = start_server(args.catalog, log, extra, results_dir)
    sampler = Sampler(served.proc.pid)
    sampler.start()
    info["ready_s"] = served.ready_s
    info["rss_start"] = sampler.rss()
    try:
        info.update(warm_up(served, params, args.timeout))
        time.sleep(2.0)
        info["rss_before"] = sampler.rss()
        sampler.reset_peak()
        spec = {"protocol": protocol, "server": served.spec(), "params": params, "think": think,
                "timeout": args.timeout, "lv1_share": args.lv1_share}
        procs, out, t_start = start_clients(args, spec, index)
        time.sleep(max(0.0, t_start - time.time()))
        cpu0, busy0, wall0 = sampler.cpu(), machine_busy_s(), time.time()
        read0 = sampler.disk_read()
        results = [out.get(timeout=args.duration + 60 + 4 * args.timeout) for _ in procs]
        for p in procs:
            p.join(10)
        cpu1, busy1, wall1 = sampler.cpu(), machine_busy_s(), time.time()
        info["disk_read_bytes"] = sampler.disk_read() - read0
        time.sleep(2.0)
        info["rss_after"] = sampler.rss()
        info["rss_peak"] = max(sampler.peak, info["rss_after"])
        d = args.duration
        info["rss_load_early"] = sampler.median_between(wall0 + 0.2 * d, wall0 + 0.3 * d)
        info["rss_load_late"] = sampler.median_between(wall0 + 0.9 * d, wall0 + d)
        for r in results:
            run.records.extend(r["records"])
        info["client_cpu_s"] = sum(r["cpu"] for r in results)
        info["stuck_clients"] = sum(r["stuck"] for r in results)
        info["server_cpu_s"] = cpu1 - cpu0
        info["machine_busy_s"] = busy1 - busy0
        info["wall_s"] = wall1 - wall0
        info["load_after"] = os.getloadavg()
    finally:
        sampler.stop()
        code, stop_s = stop_server(served)
        shutil.rmtree(results_dir, ignore_errors=True)
    info["exit_code"], info["stop_s"] = code, stop_s
    text = log.read_text(errors="replace")
    info["server_tracebacks"] = text.count("Traceback")
    info["server_warnings"] = sum(1 for line in text.splitlines()
                                  if " WARNING " in line or " ERROR " in line)
    print_run(run, args.duration)
    return run


def warm_up(served: Served, params: dict, timeout: float) -> dict:
    """Time the first id lookup and cone (cold start), then one of each scan and a few
    of each small query over both protocols; any failure here stops the benchmark."""
    out = {}
    m, t = MysqlClient(served.spec(), timeout), TapClient(served.spec(), timeout)
    try:
        for kind, arg, key in (("LV1", params["ids"][0], "first_lv1_ms"),
                               ("LV2", params["cones"][0], "first_lv2_ms")):
            sql_arg = arg if kind == "LV1" else [arg["ra"], arg["dec"]]
            c0 = time.perf_counter()
            names, rows = m.query(lv_sql(kind, sql_arg, params["radius_deg"], False))
            out[key] = (time.perf_counter() - c0) * 1e3
            check(kind, arg, names, rows, params)
        for kind in ("HV1", "HV2"):
            names, rows = m.query(scan_sql(kind, params))
            check(kind, None, names, rows, params)
        for i in range(1, 11):
            for client in (m, t):
                for kind, arg in (("LV1", params["ids"][i]), ("LV2", params["cones"][i])):
                    sql_arg = arg if kind == "LV1" else [arg["ra"], arg["dec"]]
                    names, rows = client.query(lv_sql(kind, sql_arg, params["radius_deg"],
                                                      client.adql))
                    check(kind, arg, names, rows, params)
    finally:
        m.close()
        t.close()
    return out


def start_clients(args: argparse.Namespace, spec: dict,
                  index: int) -> tuple[list, mp.Queue, float]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    clients = [{"role": "lv", "seed": args.seed * 1_000_003 + index * 10_007 + i}
               for i in range(args.clients)]
    clients += [{"role": "scan", "seed": i} for i in range(args.scans)]
    nproc = max(1, min(args.client_procs, len(clients)))
    groups = [clients[i::nproc] for i in range(nproc)]
    spec = dict(spec, t_start=time.time() + 3.0 + 0.5 * nproc)
    spec["t_end"] = spec["t_start"] + args.duration
    procs = []
    for g in groups:
        p = ctx.Process(target=client_process, args=(dict(spec, clients=g), out), daemon=True)
        p.start()
        procs.append(p)
    return procs, out, spec["t_start"]


# --- statistics and report -------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def summarise(run: Run, duration: float) -> dict:
    lv = [r for r in run.records if r[0] == "lv" and r[1] != "connect" and r[2] < duration]
    scans = [r for r in run.records if r[0] == "scan" and r[2] < duration]
    connects = [r for r in run.records if r[1] == "connect"]
    ok = [r for r in lv if r[4] is None]
    errors = [r for r in lv if r[4] is not None] + connects
    messages: list[str] = []
    for r in errors + [s for s in scans if s[4] is not None]:
        if r[4] not in messages and len(messages) < MAX_MESSAGES:
            messages.append(r[4])
    lat = [r[3] * 1e3 for r in lv]
    s = {"done": len(lv), "ok": len(ok), "errors": len(errors),
         "wrong": sum(1 for r in errors if r[4].startswith("WrongAnswer")),
         "qps": len(lv) / duration, "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
         "max": max(lat) if lat else float("nan"), "messages": messages, "kinds": {}}
    for kind in ("LV1", "LV2"):
        xs = [r[3] * 1e3 for r in lv if r[1] == kind]
        s["kinds"][kind] = {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "p99": pct(xs, 99)}
    for kind in ("HV1", "HV2"):
        xs = [r[3] * 1e3 for r in scans if r[1] == kind and r[4] is None]
        s["kinds"][kind] = {"n": len(xs), "p50": pct(xs, 50), "max": max(xs) if xs else float("nan"),
                            "errors": sum(1 for r in scans if r[1] == kind and r[4] is not None)}
    s["scan_errors"] = sum(1 for r in scans if r[4] is not None)
    i = run.info
    s["rss_growth"] = i["rss_after"] / i["rss_before"] - 1 if i.get("rss_before") else float("nan")
    s["rss_load_growth"] = (i["rss_load_late"] / i["rss_load_early"] - 1
                            if i.get("rss_load_early") else float("nan"))
    return s


def _num(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _gb(b: int) -> str:
    return f"{b / 1e9:.2f} GB"


def print_run(run: Run, duration: float) -> None:
    s = summarise(run, duration)
    i = run.info
    print(f"  low-volume: {s['done']} queries ({s['qps']:.1f}/s), errors {s['errors']} "
          f"(wrong answers {s['wrong']}); latency ms p50 {_num(s['p50'])} p95 {_num(s['p95'])} "
          f"p99 {_num(s['p99'])} max {_num(s['max'])}")
    for kind in ("LV1", "LV2"):
        k = s["kinds"][kind]
        print(f"    {kind}: {k['n']} p50 {_num(k['p50'])} p95 {_num(k['p95'])} p99 {_num(k['p99'])}")
    for kind in ("HV1", "HV2"):
        k = s["kinds"][kind]
        print(f"  scans {kind}: {k['n']} done, p50 {_num(k['p50'])} ms, max {_num(k['max'])} ms, "
              f"errors {k['errors']}")
    print(f"  server RSS start {_gb(i['rss_start'])}, before {_gb(i['rss_before'])}, peak "
          f"{_gb(i['rss_peak'])}, after {_gb(i['rss_after'])} ({s['rss_growth']:+.1%}); "
          f"under load {_gb(i['rss_load_early'])} at 20-30 % of the window, "
          f"{_gb(i['rss_load_late'])} at 90-100 % ({s['rss_load_growth']:+.1%})")
    print(f"  CPU s in the window: server {i['server_cpu_s']:.1f}, clients {i['client_cpu_s']:.1f}, "
          f"others {others_cpu(i):.1f} (machine {i['machine_busy_s']:.1f} of "
          f"{i['wall_s'] * (os.cpu_count() or 1):.0f}); server disk reads "
          f"{_gb(i.get('disk_read_bytes', 0))}")
    print(f"  first LV1 {i['first_lv1_ms']:.0f} ms, first LV2 {i['first_lv2_ms']:.0f} ms; "
          f"server up in {i['ready_s']:.1f} s, stopped in {i['stop_s']:.1f} s (exit {i['exit_code']})")
    for m in s["messages"]:
        print(f"  ! {m}")


def others_cpu(info: dict) -> float:
    """Busy CPU seconds of the machine not spent by the server or the client processes."""
    return max(0.0, info["machine_busy_s"] - info["server_cpu_s"] - info["client_cpu_s"])


def machine() -> dict:
    cpu, mem = "?", 0
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    return {"cores": os.cpu_count(), "ram": mem, "cpu": cpu}


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                             capture_output=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=HERE.parent,
                               text=True, capture_output=True, check=False).stdout.strip()
    except OSError:
        return "?"
    return rev + (" + uncommitted changes in src/" if dirty else "")


def report(args: argparse.Namespace, runs: list[Run], params: dict, note: str | None) -> str:
    import duckdb

    import skyshard

    m = machine()
    meta = json.loads((args.catalog / "skyshard.json").read_text())
    tables = meta["tables"]
    sums = [(r, summarise(r, args.duration)) for r in runs]
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = (f"## {now} — serving: {args.clients} clients + {args.scans} full scans, "
             f"{args.objects:,} objects")
    lines = [title, ""]
    lines.append(f"Command: `{shown_command(sys.argv[1:])}`")
    lines.append("")
    lines.append(f"- Machine: {m['cores']} cores ({m['cpu']}), {m['ram'] / 2**30:.1f} GiB RAM; "
                 f"load average (1/5/15 min) before the first run "
                 f"{'/'.join(f'{x:.2f}' for x in runs[0].info['load_before'])}")
    lines.append(f"- Versions: skyshard {skyshard.__version__} (git {git_rev()}), "
                 f"duckdb {duckdb.__version__}, Python {sys.version.split()[0]}")
    lines.append(f"- Data: {tables['Object']['rows']:,} objects (Object) and "
                 f"{tables['Source']['rows']:,} sources (Source) in "
                 f"{len(tables['Object']['partitions'])} partitions; "
                 "ids and 1' cone centres drawn from the data "
                 f"({len(params['ids'])} of each; centres moved by up to 20\")")
    lines.append(f"- Clients: {args.clients} low-volume clients per run, in {args.client_procs} "
                 "processes, one connection each (MySQL: PyMySQL; TAP: HTTP keep-alive, "
                 "POST /tap/sync, ADQL, VOTable BINARY2 decoded); a low-volume client sends one "
                 "query (LV1 id lookup or LV2 1' cone, "
                 f"{args.lv1_share:.0%} / {1 - args.lv1_share:.0%} at random), waits for the "
                 "whole answer and checks it, then thinks for a time drawn uniformly in "
                 "[0.5, 1.5] x the think time; 'closed loop' = no think time. "
                 f"Plus {args.scans} scan clients of the same protocol looping HV2 (Source "
                 "histogram, all rows) and HV1 (Object filtered COUNT/AVG) back to back.")
    lines.append(f"- Window {args.duration:g} s per run, after a warm-up; each run starts its "
                 "own server (authentication on: a user and a token); latency = client-side wall "
                 "time per query; every answer checked against DuckDB over the input Parquet "
                 "(a wrong answer is an error). Percentiles are nearest-rank.")
    if args.config:
        lines.append(f"- Server configuration: `--config {Path(args.config).name}`: "
                     + ", ".join(f"{k} = {v}" for k, v in _config_limits(args.config).items()))
    if note:
        lines.append(f"- Note: {note}")
    lines.append("")
    lines.append("| run | queries | per s | p50 ms | p95 ms | p99 ms | max ms | errors | "
                 "LV1 p50/p95 | LV2 p50/p95 | HV1 done (p50 ms) | HV2 done (p50 ms) | "
                 "RSS before → after (peak) | RSS under load, early → late "
                 "| CPU s server / clients / others | server disk reads | load before |")
    lines.append("|" + "---|" * 17)
    for r, s in sums:
        i = r.info
        k = s["kinds"]
        lines.append(
            f"| {r.name} | {s['done']:,} | {s['qps']:.1f} | {_num(s['p50'])} | {_num(s['p95'])} "
            f"| {_num(s['p99'])} | {_num(s['max'])} | {s['errors']}"
            f"{' (' + str(s['wrong']) + ' wrong)' if s['wrong'] else ''} "
            f"| {_num(k['LV1']['p50'])} / {_num(k['LV1']['p95'])} "
            f"| {_num(k['LV2']['p50'])} / {_num(k['LV2']['p95'])} "
            f"| {k['HV1']['n']} ({_num(k['HV1']['p50'])}) | {k['HV2']['n']} ({_num(k['HV2']['p50'])}) "
            f"| {_gb(i['rss_before'])} → {_gb(i['rss_after'])} ({_gb(i['rss_peak'])}) "
            f"| {_gb(i['rss_load_early'])} → {_gb(i['rss_load_late'])} "
            f"| {i['server_cpu_s']:.0f} / {i['client_cpu_s']:.0f} / {others_cpu(i):.0f} "
            f"| {_gb(i.get('disk_read_bytes', 0))} | {i['load_before'][0]:.2f} |")
    lines.append("")
    lines.append("Cold start and shutdown (per run): "
                 + "; ".join(f"{r.name}: up {r.info['ready_s']:.1f} s, RSS {_gb(r.info['rss_start'])}, "
                             f"first LV1 {r.info['first_lv1_ms']:.0f} ms, first LV2 "
                             f"{r.info['first_lv2_ms']:.0f} ms, exit {r.info['exit_code']} in "
                             f"{r.info['stop_s']:.1f} s" for r in runs) + ".")
    problems = []
    for r, s in sums:
        for msg in s["messages"]:
            problems.append(f"{r.name}: {msg}")
        if s["scan_errors"]:
            problems.append(f"{r.name}: {s['scan_errors']} full scan(s) failed")
        if r.info["server_tracebacks"] or r.info["server_warnings"]:
            problems.append(f"{r.name}: server log has {r.info['server_tracebacks']} traceback(s), "
                            f"{r.info['server_warnings']} warning/error line(s)")
        if r.info["stuck_clients"]:
            problems.append(f"{r.name}: {r.info['stuck_clients']} client(s) did not finish")
    lines.append("")
    lines.append("Problems: " + ("none" if not problems else ""))
    lines.extend(f"- {p}" for p in problems)
    lines.append("")
    lines.append("Targets (runs with think time; the closed-loop runs are shown for information):")
    lines.append("")
    lines.append("| run | p95 <= 250 ms | 0 errors | RSS growth < 10 % (after / before; "
                 "late / early under load) |")
    lines.append("|---|---|---|---|")
    for r, s in sums:
        marks = [_mark(s["p95"] <= TARGET_P95_MS, f"{_num(s['p95'])} ms"),
                 _mark(s["errors"] == 0 and s["scan_errors"] == 0,
                       f"{s['errors']} (+{s['scan_errors']} scans)"),
                 _mark(s["rss_growth"] < TARGET_RSS_GROWTH
                       and s["rss_load_growth"] < TARGET_RSS_GROWTH,
                       f"{s['rss_growth']:+.1%}; {s['rss_load_growth']:+.1%}")]
        if r.think <= 0:
            marks = [x.replace("**not met**", "not met") + " (info)" for x in marks]
        lines.append(f"| {r.name} | " + " | ".join(marks) + " |")
    lines.append("")
    lines.append("'others' = busy CPU seconds of the machine during the window not spent by the "
                 "server or the client processes (other users of the machine); "
                 f"{m['cores']} cores give {m['cores']} CPU s per second. 'server disk reads' = "
                 "bytes the server read from the disk, not from the page cache, during the "
                 "window (queries waiting on the disk show there).")
    return "\n".join(lines) + "\n"


def _mark(ok: bool, value: str) -> str:
    return f"{value}: {'met' if ok else '**not met**'}"


def _config_limits(path: str) -> dict:
    import tomllib

    return dict(tomllib.loads(Path(path).read_text()).get("limits", {}))


def shown_command(argv: list[str]) -> str:
    """The command line without machine paths (folders shown by name) nor the options
    that only say where to write (``--json``, ``--note``: the note is shown apart)."""
    out, hide, skip = [], False, False
    for a in argv:
        if skip:
            skip = False
            continue
        if hide:
            out.append(Path(a).name if os.path.isabs(a) else a)
            hide = False
            continue
        if a in ("--json", "--note"):
            skip = True
            continue
        if a.startswith(("--json=", "--note=")):
            continue
        hide = a in ("--workdir", "--catalog", "--config")
        out.append(a)
    return " ".join(["python bench/serve_bench.py", *out])


def append_results(text: str) -> None:
    with open(HERE / "RESULTS.md", "a") as f:
        f.write("\n" + text)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=HERE / "data")
    ap.add_argument("--catalog", type=Path, default=None,
                    help="default: WORKDIR/catalog-<objects>-seed<seed>")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load per run")
    ap.add_argument("--clients", type=int, default=50, help="low-volume clients per run")
    ap.add_argument("--think", type=float, default=1.0, help="mean think time, seconds")
    ap.add_argument("--no-closed-loop", dest="closed_loop", action="store_false",
                    help="skip the runs without think time")
    ap.add_argument("--scans", type=int, default=2, help="clients looping full scans")
    ap.add_argument("--protocols", default="mysql,tap")
    ap.add_argument("--lv1-share", type=float, default=0.5, help="share of id lookups")
    ap.add_argument("--client-procs", type=int, default=4, help="client processes per run")
    ap.add_argument("--timeout", type=float, default=60.0, help="client timeout per query, s")
    ap.add_argument("--config", default=None, help="server TOML (limits...) passed to serve")
    ap.add_argument("--note", default=None, help="a line for RESULTS.md")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = ap.parse_args(argv)
    args.workdir = args.workdir.resolve()
    args.catalog = (args.catalog or args.workdir / f"catalog-{args.objects}-seed{args.seed}").resolve()
    if not (args.catalog / "skyshard.json").exists():
        ap.error(f"no catalog at {args.catalog}: run bench/core.py --objects {args.objects}")
    protocols = [p.strip().lower() for p in args.protocols.split(",") if p.strip()]
    bad = [p for p in protocols if p not in CLIENTS]
    if bad or not protocols:
        ap.error(f"--protocols takes mysql and/or tap, not {args.protocols!r}")
    args.protocols = protocols
    if args.clients < 1 or args.duration <= 0 or args.think < 0:
        ap.error("--clients >= 1, --duration > 0 and --think >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    params = load_params(args.workdir, args.objects, args.seed)
    thinks = [args.think] + ([0.0] if args.closed_loop and args.think > 0 else [])
    runs = []
    index = 0
    for think in thinks:
        for protocol in args.protocols:
            index += 1
            runs.append(run_one(args, params, protocol, think, index))
    text = report(args, runs, params, args.note)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps([{"run": r.name, "info": r.info,
                                          "summary": summarise(r, args.duration)} for r in runs],
                                        default=str, indent=1))
    if not args.no_record:
        append_results(text)
        print("appended to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
