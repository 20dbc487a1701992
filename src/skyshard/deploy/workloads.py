"""The workloads of one deployment: front end, Dask scheduler, Dask workers, and the
catalog loader pod and replica rebalance Job.

One image serves every role, chosen by its command: ``skyshard serve`` (front end),
``dask scheduler``, ``dask worker``, ``skyshard ingest`` (loader), ``skyshard replicas
rebalance`` / ``drain`` (the replica Jobs). The catalog is at ``/data/catalog`` in every
pod, read-only except in the loader and the replica Jobs, as the Dask executor needs
(every worker reads it at the path the front end plans with). In pvc mode each worker
also keeps replicas of the catalog's partitions on its own volume (``REPLICAS_DIR``),
placed by the rebalance Job and moved off workers about to go by the drain Job.
"""

from __future__ import annotations

import copy
import math
import zlib
from typing import Any

from skyshard.deploy import pods
from skyshard.deploy.serveconf import (
    CONFIG_FILE,
    RESULTS_DIR,
    RESULTS_SIZE,
    config_hash,
    serve_toml,
)
from skyshard.deploy.spec import (
    CATALOG_DIR,
    CONFIG_DIR,
    HTTP_PORT,
    MYSQL_PORT,
    SCHEDULER_HTTP_PORT,
    SCHEDULER_PORT,
    SCRATCH_DIR,
    WORKER_HTTP_PORT,
    WORKER_PORT,
    PvcStorage,
    S3Storage,
    SkyShardSpec,
)

CONFIG_HASH_ANNOTATION = "skyshard.io/config-hash"
FRONTEND_SCRATCH_SIZE = "5Gi"
#: pvc mode: where each worker keeps its replicas, on its own scratch volume (the Dask
#: config key ``skyshard.replicas.directory``; a folder per worker name below it)
REPLICAS_DIR = f"{SCRATCH_DIR}/replicas"
REBALANCE = "rebalance"  # the replica Jobs' component label (rebalance and drain)
DRAIN = "drain"
#: the Job's annotation saying why it runs (e.g. ``workers 2 -> 3``)
REASON_ANNOTATION = "skyshard.io/rebalance-reason"
#: the Job's annotation saying what it does: ``rebalance`` or ``drain``
ACTION_ANNOTATION = "skyshard.io/rebalance-action"
#: a drain Job's annotation: the worker pods it empties, comma-separated
DRAINED_ANNOTATION = "skyshard.io/drained-workers"
#: seconds the Job waits for the scheduler to see exactly ``spec.workers`` workers
REBALANCE_WAIT_S = 900


def metadata(spec: SkyShardSpec, name: str, component: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": spec.namespace, "labels": spec.labels(component)}


def config_map(spec: SkyShardSpec) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(spec, spec.names.config, "frontend"),
            "data": {CONFIG_FILE: serve_toml(spec)}}


def catalog_claim(spec: SkyShardSpec) -> dict[str, Any] | None:
    """The shared catalog PVC (pvc mode), or None (S3 mode)."""
    storage = spec.storage
    if not isinstance(storage, PvcStorage):
        return None
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": metadata(spec, spec.names.catalog, "catalog"),
            "spec": _claim_spec(storage.access_mode, storage.size, storage.storage_class)}


def frontend_deployment(spec: SkyShardSpec) -> dict[str, Any]:
    """``skyshard serve``: one replica (query records and async results live in it)."""
    command = ["skyshard", "serve", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}",
               "--user", "$(SKYSHARD_USER)"]
    env = [pods.secret_env("SKYSHARD_USER", spec.auth.name, spec.auth.user_key),
           pods.value_env("SKYSHARD_SCHEDULER", spec.scheduler_address),
           # the Dask client gathers results through the scheduler, as the policies allow
           pods.value_env("DASK_DISTRIBUTED__CLIENT__DIRECT_TO_WORKERS", "False")]
    if spec.auth.token_key:
        command += ["--token", "$(SKYSHARD_TOKEN)"]
        env.append(pods.secret_env("SKYSHARD_TOKEN", spec.auth.name, spec.auth.token_key))
    probe = "/meta/version"
    main = pods.container(
        "frontend", spec.image, spec.image_pull_policy, command, env=env,
        mounts=[_catalog_mount(read_only=True),
                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                {"name": "results", "mountPath": RESULTS_DIR},
                {"name": "scratch", "mountPath": SCRATCH_DIR}],
        resources=copy.deepcopy(dict(spec.resources["frontend"])),
        working_dir=SCRATCH_DIR,  # DuckDB spills merges to ./.tmp
        ports=[{"name": "mysql", "containerPort": MYSQL_PORT, "protocol": "TCP"},
               {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        startupProbe=pods.http_probe(probe, "http", period=5, failures=60),
        readinessProbe=pods.http_probe(probe, "http", period=10, failures=3),
        livenessProbe=pods.http_probe(probe, "http", period=20, failures=3),
    )
    init = [_fetch_container(spec) if spec.is_s3 else _wait_container(spec),
            _scheduler_wait_container(spec)]
    volumes = [_catalog_volume(spec),
               {"name": "config", "configMap": {"name": spec.names.config}},
               {"name": "results", "emptyDir": {"sizeLimit": RESULTS_SIZE}},
               {"name": "scratch", "emptyDir": {"sizeLimit": FRONTEND_SCRATCH_SIZE}}]
    template = _template(spec, "frontend", pods.pod_spec([main], volumes, init_containers=init),
                         {CONFIG_HASH_ANNOTATION: config_hash(serve_toml(spec))})
    return _deployment(spec, spec.names.frontend, "frontend", template)


def frontend_service(spec: SkyShardSpec) -> dict[str, Any]:
    return _service(spec, spec.names.service, "frontend",
                    [("mysql", MYSQL_PORT), ("http", HTTP_PORT)], spec.service_type)


def scheduler_deployment(spec: SkyShardSpec) -> dict[str, Any]:
    command = ["dask", "scheduler", "--port", str(SCHEDULER_PORT),
               "--dashboard-address", f":{SCHEDULER_HTTP_PORT}"]
    main = pods.container(
        "scheduler", spec.image, spec.image_pull_policy, command,
        resources=copy.deepcopy(dict(spec.resources["scheduler"])),
        ports=[{"name": "dask", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
               {"name": "dask-http", "containerPort": SCHEDULER_HTTP_PORT, "protocol": "TCP"}],
        readinessProbe=pods.tcp_probe("dask", period=5),
        livenessProbe=pods.http_probe("/health", "dask-http", period=20, delay=10),
    )
    template = _template(spec, "scheduler", pods.pod_spec([main], []))
    return _deployment(spec, spec.names.scheduler, "scheduler", template)


def scheduler_service(spec: SkyShardSpec) -> dict[str, Any]:
    return _service(spec, spec.names.scheduler, "scheduler", [("dask", SCHEDULER_PORT)])


#: Tasks a worker runs at once, at least (as a local cluster's ``SLOTS``): queries sent
#: together meet in its shared scans, and a cone does not wait behind a scan. DuckDB's
#: own threads, not Dask's, use the cores.
MIN_WORKER_TASKS = 4


def worker_threads(spec: SkyShardSpec) -> int:
    """Dask threads per worker (queries run at once on it): its CPU limit, else request,
    rounded down, and at least ``MIN_WORKER_TASKS``."""
    res = spec.resources["workers"]
    cpu = (res.get("limits") or {}).get("cpu") or (res.get("requests") or {}).get("cpu") or 1
    text = str(cpu)
    cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(MIN_WORKER_TASKS, math.floor(cores))


def worker_statefulset(spec: SkyShardSpec) -> dict[str, Any]:
    """``dask worker`` pods with stable names; scratch (DuckDB spill, Dask files) on a
    PVC per worker in pvc mode, an emptyDir in S3 mode."""
    command = ["dask", "worker", spec.scheduler_address, "--name", "$(POD_NAME)",
               "--worker-port", str(WORKER_PORT), "--no-nanny",
               "--dashboard-address", f":{WORKER_HTTP_PORT}",
               "--nthreads", str(worker_threads(spec)), "--memory-limit", "auto",
               "--local-directory", f"{SCRATCH_DIR}/dask"]
    env = [pods.field_env("POD_NAME", "metadata.name")]
    if isinstance(spec.storage, PvcStorage):
        env.append(pods.value_env("DASK_SKYSHARD__REPLICAS__DIRECTORY", REPLICAS_DIR))
    main = pods.container(
        "worker", spec.image, spec.image_pull_policy, command, env=env,
        mounts=[_catalog_mount(read_only=True), {"name": "scratch", "mountPath": SCRATCH_DIR}],
        resources=copy.deepcopy(dict(spec.resources["workers"])),
        working_dir=SCRATCH_DIR,  # DuckDB spills to ./.tmp
        ports=[{"name": "dask", "containerPort": WORKER_PORT, "protocol": "TCP"},
               {"name": "dask-http", "containerPort": WORKER_HTTP_PORT, "protocol": "TCP"}],
        readinessProbe=pods.tcp_probe("dask", period=5),
        livenessProbe=pods.http_probe("/health", "dask-http", period=20, delay=10),
    )
    volumes = [_catalog_volume(spec)]
    storage = spec.storage
    if isinstance(storage, S3Storage):
        volumes.append({"name": "scratch", "emptyDir": {"sizeLimit": storage.cache_size}})
    init = [_fetch_container(spec)] if spec.is_s3 else None
    affinity = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": spec.selector("worker")}}}]}}
    pod = pods.pod_spec([main], volumes, init_containers=init, affinity=affinity,
                        terminationGracePeriodSeconds=30)
    body: dict[str, Any] = {
        "serviceName": spec.names.workers_service, "replicas": spec.workers,
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": spec.selector("worker")},
        "template": _template(spec, "worker", pod),
    }
    if isinstance(storage, PvcStorage):
        body["volumeClaimTemplates"] = [{
            "metadata": {"name": "scratch", "labels": spec.labels("worker")},
            "spec": _claim_spec("ReadWriteOnce", storage.scratch_size, storage.storage_class)}]
        body["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete",
                                                        "whenScaled": "Delete"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": metadata(spec, spec.names.workers, "worker"), "spec": body}


def workers_service(spec: SkyShardSpec) -> dict[str, Any]:
    """The StatefulSet's headless Service (stable worker DNS names)."""
    svc = _service(spec, spec.names.workers_service, "worker", [("dask", WORKER_PORT)])
    svc["spec"]["clusterIP"] = "None"
    svc["spec"]["publishNotReadyAddresses"] = True
    return svc


def workers_disruption_budget(spec: SkyShardSpec) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(spec, spec.names.workers, "worker"),
            "spec": {"maxUnavailable": 1,
                     "selector": {"matchLabels": spec.selector("worker")}}}


def loader_pod(spec: SkyShardSpec, tmp_size: str = "10Gi") -> dict[str, Any]:
    """A pod with the catalog mounted read-write, to copy inputs into (``kubectl cp``)
    and run ``skyshard ingest`` in (``kubectl exec``); pvc mode only."""
    if spec.is_s3:
        raise ValueError("the loader is for pvc storage; with S3, ingest locally and upload")
    main = pods.container("loader", spec.image, spec.image_pull_policy, ["sleep", "infinity"],
                          mounts=[_catalog_mount(read_only=False)],
                          resources={"requests": {"cpu": "500m", "memory": "1Gi"},
                                     "limits": {"memory": "4Gi"}})
    pod = pods.pod_spec([main], [_catalog_volume(spec)], restartPolicy="Never")
    pod["volumes"][0] = pods.tmp_volume(tmp_size)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": metadata(spec, spec.names.loader, "loader"), "spec": pod}


def rebalance_command(spec: SkyShardSpec) -> list[str]:
    """``skyshard replicas rebalance`` on the catalog, once the scheduler sees exactly
    ``spec.workers`` workers: copies from the catalog volume what the workers lack and
    moves copies onto new workers until the partitions' bytes are even, so that every
    partition has ``replicationFactor`` copies and every worker has the shared files."""
    return ["skyshard", "replicas", "rebalance", CATALOG_DIR,
            "--scheduler", spec.scheduler_address,
            "--expect-workers", str(spec.workers), "--wait", str(REBALANCE_WAIT_S),
            "--replication", str(spec.replication_factor), "--quiet"]


def drained_workers(spec: SkyShardSpec, current: int) -> list[str]:
    """The worker pods a scale-down from ``current`` to ``spec.workers`` removes: the
    highest ordinals, as the StatefulSet controller does."""
    return [f"{spec.names.workers}-{i}" for i in range(spec.workers, current)]


def drain_command(spec: SkyShardSpec, current: int) -> list[str]:
    """``skyshard replicas drain`` of the pods a scale-down from ``current`` removes,
    once the scheduler sees all ``current`` workers: their copies move to the others
    (``replicationFactor`` copies each), and nothing is recorded on them any more."""
    return ["skyshard", "replicas", "drain", CATALOG_DIR, *drained_workers(spec, current),
            "--scheduler", spec.scheduler_address,
            "--expect-workers", str(current), "--wait", str(REBALANCE_WAIT_S),
            "--replication", str(spec.replication_factor), "--quiet"]


def rebalance_job_name(spec: SkyShardSpec, generation: int, request: str | None = None,
                       action: str = REBALANCE) -> str:
    """``NAME-rebalance-GENERATION`` (or ``NAME-drain-...``), with ``-XXXXX`` from a
    request's value (at most 63 characters, as the pods' job-name label, for
    generations below 10^6)."""
    name = f"{spec.name}-{action}-{generation}"
    if request is not None:
        name += f"-{zlib.crc32(request.encode()) & 0xFFFFF:05x}"
    return name


def rebalance_job(spec: SkyShardSpec, generation: int, reason: str,
                  request: str | None = None, *, drain_from: int | None = None
                  ) -> dict[str, Any]:
    """The Job that moves the replicas (pvc mode only): ``rebalance`` onto the current
    workers, or with ``drain_from`` (the StatefulSet's replicas, more than
    ``spec.workers``) ``drain`` of the pods a scale-down removes. The catalog volume
    read-write (``replicas.json`` is written there), no API token, no Secret. A shell
    guard makes it succeed without doing anything while the volume holds no catalog
    yet."""
    if not isinstance(spec.storage, PvcStorage):
        raise ValueError("replicas are placed in pvc mode only; with S3 every pod copies "
                         "the whole catalog")
    draining = drain_from is not None and drain_from > spec.workers
    action = DRAIN if draining else REBALANCE
    command = (drain_command(spec, drain_from) if draining and drain_from is not None
               else rebalance_command(spec))
    guard = (f'if ! skyshard tables {CATALOG_DIR} >/dev/null 2>&1; then '
             f'echo "no catalog in {CATALOG_DIR} yet: nothing to place"; exit 0; fi; '
             'exec "$@"')
    main = pods.container(
        REBALANCE, spec.image, spec.image_pull_policy,
        ["sh", "-c", guard, REBALANCE] + command,
        # the bulk of the copies goes straight to the workers, not through the scheduler
        env=[pods.value_env("DASK_DISTRIBUTED__CLIENT__DIRECT_TO_WORKERS", "True")],
        mounts=[_catalog_mount(read_only=False)],
        resources={"requests": {"cpu": "250m", "memory": "512Mi"},
                   "limits": {"memory": "2Gi"}})
    pod = pods.pod_spec([main], [_catalog_volume(spec)], restartPolicy="Never")
    meta = metadata(spec, rebalance_job_name(spec, generation, request, action), REBALANCE)
    meta["annotations"] = {REASON_ANNOTATION: reason, ACTION_ANNOTATION: action}
    if draining and drain_from is not None:
        meta["annotations"][DRAINED_ANNOTATION] = ",".join(drained_workers(spec, drain_from))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"backoffLimit": 2,
                     "template": {"metadata": {"labels": spec.labels(REBALANCE)},
                                  "spec": pod}}}


# --- pieces ------------------------------------------------------------------------------


def _deployment(spec: SkyShardSpec, name: str, component: str,
                template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": metadata(spec, name, component),
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                     "selector": {"matchLabels": spec.selector(component)},
                     "template": template}}


def _template(spec: SkyShardSpec, component: str, pod: dict[str, Any],
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": spec.labels(component)}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": pod}


def _service(spec: SkyShardSpec, name: str, component: str, ports: list[tuple[str, int]],
             service_type: str = "ClusterIP") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": metadata(spec, name, component),
            "spec": {"type": service_type, "selector": spec.selector(component),
                     "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"}
                               for n, p in ports]}}


def _claim_spec(mode: str, size: str, storage_class: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"accessModes": [mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        out["storageClassName"] = storage_class
    return out


def _init_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def _catalog_volume(spec: SkyShardSpec) -> dict[str, Any]:
    storage = spec.storage
    if isinstance(storage, S3Storage):
        return {"name": "catalog", "emptyDir": {"sizeLimit": storage.cache_size}}
    return {"name": "catalog", "persistentVolumeClaim": {"claimName": spec.names.catalog}}


def _catalog_mount(*, read_only: bool) -> dict[str, Any]:
    return {"name": "catalog", "mountPath": CATALOG_DIR, "readOnly": read_only}


def _wait_container(spec: SkyShardSpec) -> dict[str, Any]:
    """Waits until the catalog PVC holds a catalog (an empty claim is the normal state
    before the first ingest)."""
    script = (f"until skyshard tables {CATALOG_DIR} >/dev/null 2>&1; do "
              f"echo 'waiting for a catalog in {CATALOG_DIR}'; sleep 10; done")
    return pods.container("wait-for-catalog", spec.image, spec.image_pull_policy,
                          ["sh", "-c", script], mounts=[_catalog_mount(read_only=True)],
                          resources=_init_resources())


def _scheduler_wait_container(spec: SkyShardSpec) -> dict[str, Any]:
    """Waits until the Dask scheduler accepts connections: ``skyshard serve`` connects to
    it at start (and would exit, to be restarted, if it were not up yet)."""
    check = ("import socket; socket.create_connection("
             f"('{spec.names.scheduler}', {SCHEDULER_PORT}), 3).close()")
    script = (f'until python -c "{check}" 2>/dev/null; do '
              "echo 'waiting for the Dask scheduler'; sleep 3; done")
    return pods.container("wait-for-scheduler", spec.image, spec.image_pull_policy,
                          ["sh", "-c", script], resources=_init_resources())


def _fetch_container(spec: SkyShardSpec) -> dict[str, Any]:
    """Copies the catalog from S3 (credentials from the Secret, in this container only)."""
    storage = spec.storage
    assert isinstance(storage, S3Storage)
    env = [pods.secret_env("AWS_ACCESS_KEY_ID", storage.secret_name, "AWS_ACCESS_KEY_ID"),
           pods.secret_env("AWS_SECRET_ACCESS_KEY", storage.secret_name,
                           "AWS_SECRET_ACCESS_KEY"),
           pods.secret_env("AWS_SESSION_TOKEN", storage.secret_name, "AWS_SESSION_TOKEN",
                           optional=True),
           pods.secret_env("AWS_DEFAULT_REGION", storage.secret_name, "AWS_DEFAULT_REGION",
                           optional=True)]
    return pods.container("fetch-catalog", spec.image, spec.image_pull_policy,
                          ["skyshard", "deploy", "fetch", storage.url, CATALOG_DIR], env=env,
                          mounts=[_catalog_mount(read_only=False)], resources=_init_resources())
