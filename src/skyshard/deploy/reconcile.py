"""The operator's decisions, without kopf: what to apply, what to prune, what a change of
``spec.workers`` triggers, what to clean up, and the status to report.

Every object it creates carries an owner reference to the ``SkyShard`` resource, so the
garbage collector deletes them with it (the catalog claim too, unless
``storage.pvc.retainOnDelete``).

The replica Jobs (pvc mode)
---------------------------
Each worker keeps replicas of the catalog's partitions on its own volume, so a change
of ``spec.workers`` moves copies, always before a worker goes and after one comes:

- **Scale-up.** The update handler grows the StatefulSet (it runs before the field
  handler); the field handler starts the rebalance Job, ``skyshard replicas
  rebalance``: it waits until the scheduler sees exactly ``spec.workers`` workers
  (``--expect-workers``), copies from the catalog volume what is missing, then moves
  copies onto the new workers until the bytes per worker are even (copies first, then
  the record, then the surplus copies removed).
- **Scale-down.** The StatefulSet keeps its replicas (``apply`` renders the current
  count while a scale-down waits). The field handler starts the drain Job, ``skyshard
  replicas drain`` of the pods that will go (the highest ordinals, as the controller
  removes them), once the scheduler sees all current workers; their copies move to the
  others, keeping ``replicationFactor`` copies (too few workers left: the Job fails and
  nothing is removed). Only when that Job has succeeded does the status timer
  (``advance``) shrink the StatefulSet; a failed drain leaves it as it is (Degraded)
  until a request runs a new one. The timer also starts a drain that is missing (the
  operator restarted, or the field handler had to wait).

One Job at a time (concurrent placements of one catalog are not supported): starting
one deletes the older replica Jobs, and waits (``RebalanceWait``) while a pod of one
still runs. The latest Job is kept (no TTL) so the status can show it: Progressing
while it runs (and while a scale-down waits for its drain), Degraded if it failed. A
request (the annotation ``REQUEST_ANNOTATION``) runs the drain if a scale-down waits,
the rebalance otherwise. With S3 storage every pod copies the whole catalog, so
nothing moves and the StatefulSet follows ``spec.workers`` at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skyshard.deploy import status as status_mod
from skyshard.deploy.cluster import Cluster
from skyshard.deploy.render import key, render
from skyshard.deploy.spec import (
    API_VERSION,
    KIND,
    MANAGED_BY,
    PvcStorage,
    SkyShardSpec,
    from_resource,
)
from skyshard.deploy.workloads import (
    ACTION_ANNOTATION,
    DRAINED_ANNOTATION,
    REASON_ANNOTATION,
    REBALANCE,
    drained_workers,
    rebalance_job,
)

# Kinds pruned when the spec no longer renders them (e.g. networkPolicies turned off).
# Claims are never pruned: they hold data. Replica Jobs are not rendered; they go when
# the next one starts, or with the resource.
PRUNED_KINDS = (("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
                ("apps/v1", "StatefulSet"), ("policy/v1", "PodDisruptionBudget"),
                ("networking.k8s.io/v1", "NetworkPolicy"))

#: Setting this annotation to a new value (e.g. a date) runs the replica Job (the drain
#: if a scale-down waits for one, else the rebalance): after loading a catalog, or after
#: a failed Job. Not under ``skyshard.io/``: kopf ignores changes of annotations under
#: its own storage prefix.
REQUEST_ANNOTATION = "rebalance.skyshard.io/request"
FINISHED_PHASES = ("Succeeded", "Failed")


class RebalanceWait(Exception):
    """A pod of an earlier replica Job is still running; try again shortly."""


@dataclass(frozen=True)
class Rebalance:
    """The outcome of a replica step (a Job started, the StatefulSet shrunk after its
    drain), posted as an event and kept in the status."""

    type: str
    reason: str
    message: str
    job: str | None = None


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def desired(body: Mapping[str, Any], workers: int | None = None) -> list[dict[str, Any]]:
    """The rendered objects with owner references (SpecError if the spec is invalid);
    the StatefulSet with ``workers`` replicas if given (``worker_replicas``)."""
    spec = from_resource(body)
    owner = owner_reference(body)
    out = []
    for obj in render(spec):
        keep = (obj["kind"] == "PersistentVolumeClaim" and isinstance(spec.storage, PvcStorage)
                and spec.storage.retain_on_delete)
        if not keep:
            obj["metadata"]["ownerReferences"] = [owner]
        if workers is not None and obj["kind"] == "StatefulSet":
            obj["spec"]["replicas"] = workers
        out.append(obj)
    return out


def current_workers(cluster: Cluster, spec: SkyShardSpec) -> int | None:
    """The workers' StatefulSet's replicas now (None: there is none)."""
    sts = cluster.get("apps/v1", "StatefulSet", spec.namespace, spec.names.workers)
    if sts is None:
        return None
    return int((sts.get("spec") or {}).get("replicas", 1))


def worker_replicas(cluster: Cluster, body: Mapping[str, Any]) -> int:
    """The StatefulSet's replicas to apply: ``spec.workers``, except during a
    scale-down in pvc mode, when the current count stays until a drain Job has
    succeeded for every pod that goes."""
    spec = from_resource(body)
    current = current_workers(cluster, spec)
    if (not isinstance(spec.storage, PvcStorage) or current is None
            or spec.workers >= current):
        return spec.workers
    job = latest_rebalance(cluster, body)
    if job is not None and _drains(job, spec, current) and job.state == status_mod.SUCCEEDED:
        return spec.workers
    return current


def _drains(job: status_mod.JobState, spec: SkyShardSpec, current: int) -> bool:
    """Whether ``job`` is a drain of every pod a scale-down from ``current`` removes."""
    return job.is_drain and set(drained_workers(spec, current)) <= set(job.drained)


def auth_secret(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret for ``authSecretRef`` with user ``skyshard`` and a random password (and
    token, if ``tokenKey`` is set), owned by the resource."""
    spec = from_resource(body)
    data = {spec.auth.user_key: f"skyshard:{secrets.token_urlsafe(18)}"}
    if spec.auth.token_key:
        data[spec.auth.token_key] = secrets.token_urlsafe(24)
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": spec.auth.name, "namespace": spec.namespace,
                         "labels": spec.labels("auth"),
                         "ownerReferences": [owner_reference(body)]},
            "stringData": data}


def ensure_auth_secret(cluster: Cluster, body: Mapping[str, Any]) -> bool:
    """Create the front end's Secret if there is none (a Secret that exists is never
    read or changed); whether it was created."""
    return cluster.create(auth_secret(body))


def apply(cluster: Cluster, body: Mapping[str, Any]) -> list[str]:
    """Apply every desired object, prune owned ones no longer desired; ``Kind/name`` of
    each object applied or deleted (deleted ones prefixed ``-``)."""
    objs = desired(body, worker_replicas(cluster, body))
    for obj in objs:
        cluster.apply(obj)
    done = [f"{o['kind']}/{o['metadata']['name']}" for o in objs]
    return done + [f"-{name}" for name in prune(cluster, body, {key(o) for o in objs})]


def prune(cluster: Cluster, body: Mapping[str, Any], keep: set[tuple]) -> list[str]:
    meta = body["metadata"]
    labels = {"app.kubernetes.io/instance": meta["name"],
              "app.kubernetes.io/managed-by": MANAGED_BY}
    deleted = []
    for api_version, kind in PRUNED_KINDS:
        for obj in cluster.list(api_version, kind, meta["namespace"], labels):
            m = obj["metadata"]
            ours = any(r.get("uid") == meta["uid"] for r in m.get("ownerReferences") or [])
            if ours and (api_version, kind, meta["namespace"], m["name"]) not in keep:
                cluster.delete(api_version, kind, meta["namespace"], m["name"])
                deleted.append(f"{kind}/{m['name']}")
    return deleted


def rebalance(cluster: Cluster, body: Mapping[str, Any], old: int | None,
              new: int | None) -> Rebalance | None:
    """The step after ``spec.workers`` changed from ``old`` to ``new`` (None: no change,
    e.g. the resource was just created): the drain Job on a scale-down, the rebalance
    Job on a scale-up."""
    if old is None or new is None or old == new:
        return None
    return start_rebalance(cluster, body, f"workers {old} -> {new}")


def start_rebalance(cluster: Cluster, body: Mapping[str, Any], reason: str,
                    request: str | None = None) -> Rebalance:
    """Start the replica Job (pvc mode; see the module docstring), after deleting the
    older ones: the drain of the pods a scale-down removes while the StatefulSet has
    more replicas than ``spec.workers``, else the rebalance. ``RebalanceWait`` while a
    pod of an older one still runs; S3 mode: a step that says why nothing runs."""
    spec = from_resource(body)
    if not isinstance(spec.storage, PvcStorage):
        return Rebalance("Normal", "RebalanceNotNeeded",
                         f"{reason}: no replica rebalance: with S3 storage every pod copies "
                         "the whole catalog at start, so no data has to move")
    current = current_workers(cluster, spec)
    draining = current is not None and current > spec.workers
    job = rebalance_job(spec, int(body["metadata"].get("generation", 0)), reason, request,
                        drain_from=current if draining else None)
    name = job["metadata"]["name"]
    for old in rebalance_jobs(cluster, spec, body["metadata"]["uid"]):
        if old["metadata"]["name"] != name:
            cluster.delete("batch/v1", "Job", spec.namespace, old["metadata"]["name"])
    running = sorted(p["metadata"]["name"] for p in
                     cluster.list("v1", "Pod", spec.namespace, spec.selector(REBALANCE))
                     if _job_of(p) != name
                     and (p.get("status") or {}).get("phase") not in FINISHED_PHASES)
    if running:
        raise RebalanceWait(f"{reason}: waiting for pod(s) {', '.join(running)} of an "
                            "earlier replica Job to stop")
    job["metadata"]["ownerReferences"] = [owner_reference(body)]
    cluster.apply(job)
    copies = (f"{spec.replication_factor} cop"
              f"{'y' if spec.replication_factor == 1 else 'ies'} of each partition")
    if draining and current is not None:
        gone = drained_workers(spec, current)
        return Rebalance("Normal", "DrainStarted",
                         f"{reason}: Job {name} moves the replicas off {', '.join(gone)} "
                         f"onto the other {spec.workers} worker(s), {copies}; the "
                         f"StatefulSet keeps {current} workers until it has succeeded",
                         job=name)
    return Rebalance("Normal", "RebalanceStarted",
                     f"{reason}: Job {name} places the replicas on the {spec.workers} "
                     f"worker(s) and evens them out, {copies}", job=name)


def advance(cluster: Cluster, body: Mapping[str, Any]) -> list[Rebalance]:
    """The timer's step of a waiting scale-down (pvc mode): shrink the StatefulSet once
    the drain of every pod that goes has succeeded (then rebalance if the drain emptied
    more workers than go), or start that drain if there is none; nothing while it runs
    or after it failed (Degraded until a request). The steps taken."""
    spec = from_resource(body)
    current = current_workers(cluster, spec)
    if not isinstance(spec.storage, PvcStorage) or current is None or current <= spec.workers:
        return []
    job = latest_rebalance(cluster, body)
    if job is None or not _drains(job, spec, current):
        try:
            return [start_rebalance(cluster, body, f"workers {current} -> {spec.workers}")]
        except RebalanceWait:
            return []
    if job.state != status_mod.SUCCEEDED:
        return []
    apply(cluster, body)
    steps = [Rebalance("Normal", "ScaledDown",
                       f"Job {job.name} drained {', '.join(drained_workers(spec, current))}: "
                       f"StatefulSet {spec.names.workers} scaled {current} -> {spec.workers}",
                       job=job.name)]
    if set(job.drained) - set(drained_workers(spec, current)):
        try:  # workers that stay were drained too: give them copies again
            steps.append(start_rebalance(cluster, body, f"after the drain of {job.name}"))
        except RebalanceWait:
            pass
    return steps


def rebalance_jobs(cluster: Cluster, spec: SkyShardSpec, uid: str) -> list[dict]:
    """This resource's replica Jobs (rebalance and drain), oldest first."""
    jobs = [j for j in cluster.list("batch/v1", "Job", spec.namespace,
                                    spec.selector(REBALANCE))
            if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or [])]
    return sorted(jobs, key=lambda j: (j["metadata"].get("creationTimestamp") or "",
                                       j["metadata"]["name"]))


def latest_rebalance(cluster: Cluster, body: Mapping[str, Any]) -> status_mod.JobState | None:
    """The state of the newest replica Job (None: there is none, or S3 mode)."""
    spec = from_resource(body)
    if not isinstance(spec.storage, PvcStorage):
        return None
    jobs = rebalance_jobs(cluster, spec, body["metadata"]["uid"])
    return (status_mod.job_state(jobs[-1], REASON_ANNOTATION, ACTION_ANNOTATION,
                                 DRAINED_ANNOTATION) if jobs else None)


def _job_of(pod: Mapping[str, Any]) -> str | None:
    labels = pod["metadata"].get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


def cleanup(cluster: Cluster, body: Mapping[str, Any]) -> list[str]:
    """On deletion: the workers' scratch claims (the StatefulSet's retention policy does
    it on Kubernetes >= 1.27; this covers older clusters). Owned objects go with the
    garbage collector."""
    spec = from_resource(body)
    if not isinstance(spec.storage, PvcStorage):
        return []
    claims = cluster.list("v1", "PersistentVolumeClaim", spec.namespace, spec.labels("worker"))
    for claim in claims:
        cluster.delete("v1", "PersistentVolumeClaim", spec.namespace, claim["metadata"]["name"])
    return [f"PersistentVolumeClaim/{c['metadata']['name']}" for c in claims]


def workloads(cluster: Cluster, body: Mapping[str, Any]) -> list[dict | None]:
    """The front end's and the scheduler's Deployments and the workers' StatefulSet (None
    for one that does not exist)."""
    spec = from_resource(body)
    names = spec.names
    return [cluster.get("apps/v1", "Deployment", spec.namespace, names.frontend),
            cluster.get("apps/v1", "Deployment", spec.namespace, names.scheduler),
            cluster.get("apps/v1", "StatefulSet", spec.namespace, names.workers)]


def heal(cluster: Cluster, body: Mapping[str, Any]) -> list[str]:
    """Apply everything again if a workload has gone (deleted by hand): what ``apply``
    did, or nothing."""
    if all(w is not None for w in workloads(cluster, body)):
        return []
    return apply(cluster, body)


def observe(cluster: Cluster, body: Mapping[str, Any], now: str | None = None) -> dict[str, Any]:
    """The status the resource should show now."""
    spec = from_resource(body)
    frontend, scheduler, workers = (status_mod.rollout(w) for w in workloads(cluster, body))
    return status_mod.compute(spec, int(body["metadata"].get("generation", 0)), frontend,
                              scheduler, workers, body.get("status"), now or _now(),
                              latest_rebalance(cluster, body))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

