"""The operator's decisions, without kopf: what to apply, what to prune, what a change of
``spec.workers`` triggers, what to clean up, and the status to report.

Every object it creates carries an owner reference to the ``SkyShard`` resource, so the
garbage collector deletes them with it (the catalog claim too, unless
``storage.pvc.retainOnDelete``).

The replica rebalance (pvc mode)
--------------------------------
Each worker keeps replicas of the catalog's partitions on its own volume. After a
change of ``spec.workers`` (or a request: the annotation ``REQUEST_ANNOTATION``) the
operator runs a Job, ``skyshard replicas place`` against the scheduler (see
``workloads.rebalance_job``). Its order, for both directions:

1. the StatefulSet takes the new replica count (the update handler runs before the
   field handler; the controller removes the highest ordinals on a scale-down, and their
   scratch claims with them);
2. the Job waits until the scheduler sees exactly ``spec.workers`` workers
   (``--expect-workers``), so it never places onto a worker about to go, whatever the
   handlers' order;
3. it copies from the catalog volume whatever the live workers lack: partitions whose
   holders left go to the remaining workers, until each has ``replicationFactor``
   copies; new workers get the shared files (and partitions that are short of copies).

The shrink comes first, not a drain: ``replicas place`` considers every live worker a
holder and has no way to leave some out, so a drain run before the shrink would move
nothing. No data can be lost that way (the catalog volume holds every file and is the
copies' source); the cost is that partitions held only by removed workers have no live
copy until the Job has run. Existing copies are not moved to new workers: place and
repair only fill what is missing.

One Job at a time (concurrent placements of one catalog are not supported): starting
one deletes the older rebalance Jobs, and waits (``RebalanceWait``) while a pod of one
still runs. The latest Job is kept (no TTL) so the status can show it: Progressing
while it runs, Degraded if it failed. With S3 storage every pod copies the whole
catalog, so nothing is rebalanced.
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
from skyshard.deploy.workloads import REASON_ANNOTATION, REBALANCE, rebalance_job

# Kinds pruned when the spec no longer renders them (e.g. networkPolicies turned off).
# Claims are never pruned: they hold data. Rebalance Jobs are not rendered; they go when
# the next one starts, or with the resource.
PRUNED_KINDS = (("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
                ("apps/v1", "StatefulSet"), ("policy/v1", "PodDisruptionBudget"),
                ("networking.k8s.io/v1", "NetworkPolicy"))

#: Setting this annotation to a new value (e.g. a date) runs the rebalance Job: after
#: loading a catalog, or after a failed Job. Not under ``skyshard.io/``: kopf ignores
#: changes of annotations under its own storage prefix.
REQUEST_ANNOTATION = "rebalance.skyshard.io/request"
FINISHED_PHASES = ("Succeeded", "Failed")


class RebalanceWait(Exception):
    """A pod of an earlier rebalance Job is still running; try again shortly."""


@dataclass(frozen=True)
class Rebalance:
    """The outcome of the rebalance step, posted as an event and kept in the status."""

    type: str
    reason: str
    message: str
    job: str | None = None


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def desired(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rendered objects with owner references (SpecError if the spec is invalid)."""
    spec = from_resource(body)
    owner = owner_reference(body)
    out = []
    for obj in render(spec):
        keep = (obj["kind"] == "PersistentVolumeClaim" and isinstance(spec.storage, PvcStorage)
                and spec.storage.retain_on_delete)
        if not keep:
            obj["metadata"]["ownerReferences"] = [owner]
        out.append(obj)
    return out


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
    objs = desired(body)
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
    e.g. the resource was just created)."""
    if old is None or new is None or old == new:
        return None
    return start_rebalance(cluster, body, f"workers {old} -> {new}")


def start_rebalance(cluster: Cluster, body: Mapping[str, Any], reason: str,
                    request: str | None = None) -> Rebalance:
    """Start the rebalance Job (pvc mode; see the module docstring), after deleting the
    older ones. ``RebalanceWait`` while a pod of an older one still runs; S3 mode: a
    step that says why nothing runs."""
    spec = from_resource(body)
    if not isinstance(spec.storage, PvcStorage):
        return Rebalance("Normal", "RebalanceNotNeeded",
                         f"{reason}: no replica rebalance: with S3 storage every pod copies "
                         "the whole catalog at start, so no data has to move")
    job = rebalance_job(spec, int(body["metadata"].get("generation", 0)), reason, request)
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
                            "earlier rebalance Job to stop")
    job["metadata"]["ownerReferences"] = [owner_reference(body)]
    cluster.apply(job)
    return Rebalance("Normal", "RebalanceStarted",
                     f"{reason}: Job {name} places the replicas on the {spec.workers} "
                     f"worker(s), {spec.replication_factor} cop"
                     f"{'y' if spec.replication_factor == 1 else 'ies'} of each partition",
                     job=name)


def rebalance_jobs(cluster: Cluster, spec: SkyShardSpec, uid: str) -> list[dict]:
    """This resource's rebalance Jobs, oldest first."""
    jobs = [j for j in cluster.list("batch/v1", "Job", spec.namespace,
                                    spec.selector(REBALANCE))
            if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or [])]
    return sorted(jobs, key=lambda j: (j["metadata"].get("creationTimestamp") or "",
                                       j["metadata"]["name"]))


def latest_rebalance(cluster: Cluster, body: Mapping[str, Any]) -> status_mod.JobState | None:
    """The state of the newest rebalance Job (None: there is none, or S3 mode)."""
    spec = from_resource(body)
    if not isinstance(spec.storage, PvcStorage):
        return None
    jobs = rebalance_jobs(cluster, spec, body["metadata"]["uid"])
    return status_mod.job_state(jobs[-1], REASON_ANNOTATION) if jobs else None


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

