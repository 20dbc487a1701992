"""The Dask executor across a network: a scheduler and two workers, each in its own
network namespace (``ip netns``) cabled by a veth pair to a bridge, talking only over
those addresses; this process is the client, reaching the scheduler through its own veth
link (``netns_hosts``).

Needs root and iproute2; skipped, with the reason, where namespaces cannot be made.
Every process started here is killed and every namespace and link deleted at the end,
whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("distributed")

from distributed import Client  # noqa: E402

import skyshard  # noqa: E402
from background import run_in_thread  # noqa: E402
from netns_hosts import Host, NetnsUnavailable, Network  # noqa: E402
from netns_tasks import HOLD, TaskMarks, client_hosts, marks  # noqa: E402
from same_rows import assert_same_rows  # noqa: E402
from test_oracle import CASES, oracle_sql  # noqa: E402

HERE = Path(__file__).resolve().parent
PORT = 8786  # each host has its own ports: no clash with anything on this machine
START_TIMEOUT_S = 30.0
SCAN_SQL = ("SELECT kind, COUNT(*) AS n, AVG(gMag) AS g, STDDEV(rMag) AS s, MAX(decl) AS m "
            "FROM Object GROUP BY kind")

# The scheduler drops a worker silent for 1 s (at least 10 heartbeats, 5 s, in practice)
# and gives up on reaching its nanny after 3 s, so an unplugged worker is noticed in
# about 10 s rather than the default 5 minutes.
DASK_ENV = {
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "1s",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s",
}


@dataclass
class NetCluster:
    net: Network
    scheduler: Host
    workers: dict[str, Host]
    address: str  # the scheduler's, tcp://ADDR:PORT
    admin: Client
    marks: Path
    logs: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen]

    def worker_hosts(self) -> set[str]:
        """The hosts of the workers registered with the scheduler now."""
        return {urlsplit(w).hostname for w in self.admin.scheduler_info()["workers"]}

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.logs.glob("*.log")))

    def start_worker(self, name: str, log: str) -> None:
        """``dask worker`` (with its nanny) in host ``name``, serving on its address."""
        host = self.workers[name]
        self.procs[name] = self.net.spawn(
            host, [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                   "--host", host.address, "--name", name, "--nworkers", "1",
                   "--nthreads", "1", "--no-dashboard"],
            log=self.logs / log, env=self.env)

    def wait(self, what: str, done, timeout: float) -> float:
        """Poll ``done()`` until true; the seconds it took (fails after ``timeout``)."""
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{what}: not within {timeout} s\n{self.logs_text()}")
            time.sleep(0.05)
        return time.monotonic() - start


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("netns-logs")
    folder = tmp_path_factory.mktemp("netns-marks")
    net = Network()
    try:
        net.__enter__()
        sched, wa, wb = net.host("sched"), net.host("wa"), net.host("wb")
    except NetnsUnavailable as exc:
        net.close()
        pytest.skip(f"cannot make network namespaces here: {exc}")
    except BaseException:
        net.close()
        raise
    admin = None
    try:
        env = dict(os.environ, **DASK_ENV,
                   PYTHONPATH=os.pathsep.join([str(HERE), *(p for p in sys.path if p)]))
        net.spawn(sched, [sys.executable, "-m", "distributed.cli.dask_scheduler",
                          "--host", sched.address, "--port", str(PORT), "--no-dashboard"],
                  log=logs / "scheduler.log", env=env)
        address = f"tcp://{sched.address}:{PORT}"
        admin = Client(address, timeout=START_TIMEOUT_S, set_as_default=False)
        found = NetCluster(net, sched, {"wa": wa, "wb": wb}, address, admin, folder, logs,
                           env, {})
        for name in found.workers:
            found.start_worker(name, f"worker-{name}.log")
        found.wait("both workers registered", lambda: len(found.worker_hosts()) == 2,
                   START_TIMEOUT_S)
        admin.register_plugin(TaskMarks(str(folder)), name="netns-marks")
        yield found
    finally:
        if admin is not None:
            admin.close()
        net.close()


@pytest.fixture(scope="module")
def netns_db(cluster, sky_root):
    db = skyshard.open(sky_root, scheduler=cluster.address)
    yield db
    db.close()


@pytest.fixture(scope="module")
def ids(sky_tables):
    oids = sky_tables["Object"].column("objectId").to_pylist()
    orphan = sky_tables["Source"].column("objectId").to_pylist()[-1]
    return {"oid": oids[17], "oid2": oids[4000], "orphan": orphan}


def ran_in(cluster: NetCluster, since: int) -> set[tuple[int, str | None]]:
    """(namespace inode, worker host) of the tasks started after the first ``since``."""
    return {(m.inode, urlsplit(m.worker).hostname) for m in marks(cluster.marks)[since:]}


def test_queries_across_the_namespaces(cluster, netns_db, sky_db, oracle, ids):
    """Every process is at its namespace's address; the answers are the embedded
    executor's and DuckDB's over the same rows; the fragments ran in both worker
    namespaces."""
    info = netns_db.executor.client.scheduler_info()
    assert info["address"] == cluster.address
    workers = info["workers"]
    assert {urlsplit(w).hostname for w in workers} == {h.address for h in cluster.workers.values()}
    for address, w in workers.items():  # each nanny listens beside its worker
        assert cluster.workers[w["name"]].address == urlsplit(address).hostname
        assert urlsplit(w["nanny"]).hostname == urlsplit(address).hostname
    # The scheduler sees this process coming from its veth address, and nothing else.
    peers = {urlsplit(a).hostname for a in cluster.admin.run_on_scheduler(client_hosts)}
    assert peers == {cluster.net.client_address}

    both = {(h.inode(), h.address) for h in cluster.workers.values()}
    since = len(marks(cluster.marks))
    for template in CASES:
        sql = template.format(**ids)
        ordered = " order by " in sql.lower()
        got = netns_db.sql(sql)
        assert_same_rows(got, sky_db.sql(sql), ordered=ordered)
        assert_same_rows(got, oracle.sql(oracle_sql(sky_db, sql, oracle)).to_arrow_table(),
                         ordered=ordered)
    assert ran_in(cluster, since) == both
    # A full scan is split: one part in each worker's namespace.
    since = len(marks(cluster.marks))
    assert_same_rows(netns_db.sql(SCAN_SQL), sky_db.sql(SCAN_SQL), ordered=False)
    scan = marks(cluster.marks)[since:]
    assert len(scan) == 2 and ran_in(cluster, since) == both


def test_unplugged_worker_mid_query(cluster, netns_db, sky_db):
    """A worker whose cable is pulled while it runs its part of a full scan is dropped by
    the scheduler; its part runs again on the other worker and the answer is whole. Once
    plugged back, the worker (restarted, as a process manager would, when it ended on
    finding itself dropped) rejoins and takes work again."""
    wa, wb = cluster.workers["wa"], cluster.workers["wb"]
    want = sky_db.sql(SCAN_SQL)
    hold = cluster.marks / HOLD
    since = len(marks(cluster.marks))
    hold.touch()
    thread, out = run_in_thread(lambda: netns_db.sql(SCAN_SQL))
    try:
        cluster.wait("both workers running their part",
                     lambda: {m[0] for m in ran_in(cluster, since)} == {wa.inode(), wb.inode()},
                     START_TIMEOUT_S)
        cluster.net.link_down(wb)
        cut = len(marks(cluster.marks))
    finally:
        hold.unlink()
    try:
        detected = cluster.wait("the unplugged worker dropped",
                                lambda: wb.address not in cluster.worker_hosts(), 30)
        thread.join(30)
        assert not thread.is_alive(), "the query did not end"
        assert "error" not in out, out.get("error")
        assert_same_rows(out["table"], want, ordered=False)
        # The lost part ran again, in the other namespace.
        assert ran_in(cluster, cut) == {(wa.inode(), wa.address)}
        assert detected < 20
    finally:
        cluster.net.link_up(wb)
    # Dropped, the worker ends itself when it hears from the scheduler again.
    old = cluster.procs["wb"]
    cluster.wait("the dropped worker back or ended",
                 lambda: wb.address in cluster.worker_hosts() or old.poll() is not None,
                 START_TIMEOUT_S)
    if wb.address not in cluster.worker_hosts():
        cluster.start_worker("wb", "worker-wb-restarted.log")
    cluster.wait("the worker registered again", lambda: len(cluster.worker_hosts()) == 2,
                 START_TIMEOUT_S)
    # Registered, it may still be opening its engine: the first scans can run on wa alone.
    since = len(marks(cluster.marks))
    deadline = time.monotonic() + 10
    while (wb.inode(), wb.address) not in ran_in(cluster, since):
        assert time.monotonic() < deadline, f"no task ran on the restarted worker\n" \
            f"{cluster.logs_text()}"
        assert_same_rows(netns_db.sql(SCAN_SQL), want, ordered=False)
    assert ran_in(cluster, since) <= {(wa.inode(), wa.address), (wb.inode(), wb.address)}
