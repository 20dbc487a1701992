"""The operator's decisions, without kopf: what to apply, what to prune, what a change of
``spec.workers`` triggers, what to clean up, and the status to report.

Every object it creates carries an owner reference to the ``SkyShard`` resource, so the
garbage collector deletes them with it (the catalog claim too, unless
``storage.pvc.retainOnDelete``).
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
from skyshard.deploy.spec import API_VERSION, KIND, MANAGED_BY, PvcStorage, from_resource
from skyshard.deploy.workloads import repair_job

# Kinds pruned when the spec no longer renders them (e.g. networkPolicies turned off).
# Claims are never pruned: they hold data.
PRUNED_KINDS = (("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
                ("apps/v1", "StatefulSet"), ("policy/v1", "PodDisruptionBudget"),
                ("networking.k8s.io/v1", "NetworkPolicy"))

# The replica repair command run as a Job after each change of spec.workers. None: it
# does not exist yet. skyshard keeps one copy of the catalog on shared storage (see the
# Dask executor's note on shared-nothing replication, not built yet), so a scale moves no data; the
# operator reports the skipped step instead of running a command that is not there.
REPAIR_COMMAND: tuple[str, ...] | None = None


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


def rebalance(cluster: Cluster, body: Mapping[str, Any], old: int | None, new: int | None,
              command: tuple[str, ...] | None = None) -> Rebalance | None:
    """The step after ``spec.workers`` changed from ``old`` to ``new`` (None: nothing to
    do). ``command`` defaults to ``REPAIR_COMMAND``."""
    if old is None or new is None or old == new:
        return None
    command = command if command is not None else REPAIR_COMMAND
    spec = from_resource(body)
    if command is None:
        return Rebalance("Normal", "RebalanceSkipped",
                         f"workers {old} -> {new}: no replica rebalance, 'skyshard replicas "
                         "repair' does not exist yet; the catalog is on shared storage, "
                         "so no data has to move")
    job = repair_job(spec, list(command), int(body["metadata"].get("generation", 0)))
    job["metadata"]["ownerReferences"] = [owner_reference(body)]
    cluster.apply(job)
    return Rebalance("Normal", "RebalanceStarted",
                     f"workers {old} -> {new}: replica repair job {job['metadata']['name']}",
                     job=job["metadata"]["name"])


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
                              scheduler, workers, body.get("status"), now or _now())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

