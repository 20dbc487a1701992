"""What the serving tests share: a small catalog, a server on free ports in this process,
a plain HTTP client."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

USERS = {"alice": "secret", "bob": "hunter2"}
TOKENS = {"alice": "tok-alice", "bob": "tok-bob"}
N_OBJECTS = 300

#: A query DuckDB needs minutes for (a 14-fold cross product of a 6-row replicated
#: table), but that the planner accepts: what cancellation and time limits stop.
SLOW_SQL = ("SELECT SUM(" + " + ".join(f"f{i}.filterId" for i in range(14)) + ") AS s FROM "
            + ", ".join(f"Filter f{i}" for i in range(14)))


def make_tables(seed: int = 5) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    n = N_OBJECTS
    ids = np.arange(1, n + 1, dtype=np.int64) * 7
    null_mag = np.arange(n) % 10 == 3
    stamps = [bytes([i % 256, 0, 255, 0x80 | (i % 128)]) for i in range(n)]  # not UTF-8
    obj = pa.table({
        "objectId": ids,
        "ra": rng.uniform(0, 360, n),
        "decl": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
        "gMag": pa.array(np.where(null_mag, np.nan, rng.normal(22, 1, n)), mask=null_mag),
        "rMag": rng.normal(21, 1, n).astype(np.float32),
        "nEpochs": rng.integers(0, 50, n).astype(np.int32),
        "flags": rng.integers(-100, 100, n).astype(np.int8),
        "band": rng.integers(-3000, 3000, n).astype(np.int16),
        "kind": rng.choice(["star", "galaxy", "qso"], n),
        "stamp": pa.array(stamps, pa.binary()),
    })
    src = pa.table({
        "sourceId": np.arange(1, 3 * n + 1, dtype=np.int64),
        "objectId": np.repeat(ids, 3),
        "psfFlux": rng.lognormal(0, 1, 3 * n),
    })
    flt = pa.table({
        "filterId": np.arange(6, dtype=np.int8),
        "filterName": list("ugrizy"),
        "photClam": [365.0, 480.0, 622.0, 754.0, 869.0, 971.0],
    })
    return {"Object": obj, "Source": src, "Filter": flt}


def build(root: Path, tables: dict[str, pa.Table]) -> None:
    import skyshard

    inputs = root.parent / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for name, t in tables.items():
        pq.write_table(t, inputs / f"{name}.parquet")
    opts = skyshard.IngestOptions(max_rows_per_partition=100, max_order=5, progress=False)
    skyshard.ingest(root, "Object", [inputs / "Object.parquet"], ra="ra", dec="decl",
                    key="objectId", options=opts)
    skyshard.ingest(root, "Source", [inputs / "Source.parquet"], director="Object",
                    director_key="objectId", options=opts)
    skyshard.ingest(root, "Filter", [inputs / "Filter.parquet"], replicated=True, options=opts)


def start_server(catalog: Path, results_dir: Path, **options):
    from skyshard.service import config
    from skyshard.service.server import Server

    limits = {"timeout_s": 30, "max_rows": 500, "max_result_bytes": 4 * 2**20,
              "memory_results_bytes": 4096}
    limits.update(options.pop("limits", {}))
    cfg = config.load(None, catalog=catalog, mysql_port=0, http_port=0,
                      users=[f"{u}:{p}" for u, p in USERS.items()],
                      tokens=[f"{u}:{t}" for u, t in TOKENS.items()],
                      results_dir=results_dir, limits=limits, **options)
    return Server(cfg).start()


class Http:
    """A plain urllib client for the HTTP API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body=None, *, token: str | None = "tok-alice",
             basic: tuple[str, str] | None = None, headers: dict | None = None):
        """(status, headers, body): the body parsed as JSON when it is JSON."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if basic is not None:
            req.add_header("Authorization",
                           "Basic " + base64.b64encode(":".join(basic).encode()).decode())
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, hdrs, raw = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            status, hdrs, raw = err.code, dict(err.headers), err.read()
        if hdrs.get("content-type", "").startswith("application/json"):
            return status, hdrs, json.loads(raw)
        return status, hdrs, raw

    def wait(self, qid: int, *, token: str = "tok-alice", timeout: float = 20.0) -> dict:
        """Poll the status until the query is final."""
        deadline = time.monotonic() + timeout
        while True:
            status, _, body = self.call("GET", f"/query-async/status/{qid}", token=token)
            assert status == 200, body
            if body["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.02)


def wait_until(predicate, timeout: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(step)

