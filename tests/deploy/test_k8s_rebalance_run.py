"""The replica Jobs' commands, run for real: the argv the operator renders (catalog path
and scheduler address swapped for local ones, a shorter ``--grace``) against a Dask
scheduler and ``dask worker`` processes named as the StatefulSet names its pods, each
keeping its replicas below the directory the rendered worker gets in its environment.

The scale is played in the operator's order: down, the drain Job runs while every
worker is there, then the highest ordinal goes (process and volume); up, the new
worker starts, then the rebalance Job runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("distributed")

import dask
from named_workers import NamedWorkers, empty_cluster

from skyshard.cli import main
from skyshard.deploy.spec import CATALOG_DIR, from_dict
from skyshard.deploy.workloads import rebalance_job
from skyshard.dispatch import replicas
from skyshard.dispatch.placement import SHARED, Placement


def job_argv(workers: int, replication: int,
             drain_from: int | None = None) -> tuple[list[str], list[str]]:
    """(the shell guard ``sh -c SCRIPT $0``, the skyshard argv) of the rendered Job: the
    rebalance onto ``workers``, or the drain of a scale-down from ``drain_from``."""
    spec = from_dict("sky", "astro", {"authSecretRef": {"name": "a"}, "workers": workers,
                                      "replicationFactor": replication})
    job = rebalance_job(spec, 2, f"workers -> {workers}", drain_from=drain_from)
    (main_container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in main_container["env"]}
    assert env["DASK_DISTRIBUTED__CLIENT__DIRECT_TO_WORKERS"] == "True"
    command = main_container["command"]
    return command[:4], command[4:]


@pytest.fixture(scope="module")
def cluster(sky_root, tmp_path_factory):
    with empty_cluster(sky_root, tmp_path_factory.mktemp("rebalance")) as c:
        yield c


def run_job(cluster, capsys, workers: int, replication: int, wait_s: str = "60",
            drain_from: int | None = None):
    """The Job's skyshard command, in this process; (exit status, stdout, stderr)."""
    _, argv = job_argv(workers, replication, drain_from)
    argv = [str(cluster["root"]) if a == CATALOG_DIR else a for a in argv]
    argv[argv.index("--scheduler") + 1] = cluster["address"]
    argv[argv.index("--wait") + 1] = wait_s
    action = "drain" if drain_from is not None else "rebalance"
    assert argv[:3] == ["skyshard", "replicas", action]
    argv += ["--grace", "0.5"]  # no query runs here: no need to wait the default 5 s
    with dask.config.set({"distributed.client.direct-to-workers": True}):
        code = main(argv[1:])
    out, err = capsys.readouterr()
    return code, out, err


def holders(root: Path) -> dict[str, tuple[str, ...]]:
    placed = Placement.load(root)
    return {u: placed.holders(u) for u in placed.partition_units}


def files_of(workers: NamedWorkers, root: Path, name: str) -> list[Path]:
    home = workers.base / name / Placement.load(root).catalog_id
    return [p for p in home.rglob("*") if p.is_file()] if home.exists() else []


def test_scale_down_then_up(cluster, capsys):
    root, client, workers = cluster["root"], cluster["client"], cluster["workers"]
    workers.start("sky-worker-0", "sky-worker-1", "sky-worker-2")
    code, out, err = run_job(cluster, capsys, 3, 1)
    assert code == 0, out + err
    assert "healthy" in out
    before = holders(root)
    gone = [u for u, hs in before.items() if hs == ("sky-worker-2",)]
    assert gone, "worker 2 should hold some partitions alone"

    # scale 3 -> 2: the drain Job runs while all three are there ...
    code, out, err = run_job(cluster, capsys, 2, 1, drain_from=3)
    assert code == 0, out + err
    assert "drained: sky-worker-2 holds nothing the placement names; it can be removed" in out
    after = holders(root)
    assert all(len(hs) == 1 and hs[0] in ("sky-worker-0", "sky-worker-1")
               for hs in after.values())
    assert files_of(workers, root, "sky-worker-2") == []
    # ... then the StatefulSet removes sky-worker-2 and its volume: nothing was only there
    workers.remove("sky-worker-2")
    report = replicas.check(client, root)
    assert report.healthy, report.text(every_unit=False)
    assert all(len(u.verified) == 1 for u in report.units if u.unit != SHARED)
    assert holders(root) == after

    # scale 2 -> 3 with replication 2: the new worker starts empty, then the Job runs
    workers.start("sky-worker-2")
    code, out, err = run_job(cluster, capsys, 3, 2)
    assert code == 0, out + err
    report = replicas.check(client, root)
    assert report.healthy and report.replication == 2, report.text(every_unit=False)
    shared = next(u for u in report.units if u.unit == SHARED)
    assert "sky-worker-2" in shared.verified
    assert all(len(u.verified) == 2 for u in report.units if u.unit != SHARED)
    load = report.load()
    mean = sum(b for _, b in load.values()) / 3
    assert all(abs(b - mean) <= 0.1 * mean for _, b in load.values()), load


def test_job_fails_when_the_worker_set_never_matches(cluster, capsys):
    if not replicas.named_workers(cluster["client"]):  # run alone (e.g. on its own xdist
        cluster["workers"].start("sky-worker-0")       # process): give it one worker
    code, _, err = run_job(cluster, capsys, 7, 1, wait_s="1")
    assert code == 1
    assert "expected 7 Dask worker(s), the cluster has" in err


def test_guard_succeeds_without_a_catalog(tmp_path):
    """Before the first ingest the Job succeeds doing nothing (exit 0, a message)."""
    if shutil.which("skyshard") is None:
        pytest.skip("the skyshard command is not on PATH")
    guard, argv = job_argv(2, 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    script = guard[2].replace(CATALOG_DIR, str(empty))
    never = ["sh", "-c", "echo must not run; exit 3"]  # what "$@" would run
    done = subprocess.run(["sh", "-c", script, guard[3], *never], check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "nothing to place" in done.stdout and "must not run" not in done.stdout
    assert argv[0] == "skyshard"


def test_guard_runs_the_command_when_there_is_a_catalog(sky_root):
    if shutil.which("skyshard") is None:
        pytest.skip("the skyshard command is not on PATH")
    guard, _ = job_argv(2, 1)
    script = guard[2].replace(CATALOG_DIR, str(sky_root))
    done = subprocess.run(["sh", "-c", script, guard[3], "sh", "-c", "echo ran; exit 3"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "ran" in done.stdout
