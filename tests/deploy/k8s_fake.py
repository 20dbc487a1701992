"""An in-memory stand-in for the Kubernetes API (the operator's ``Cluster`` protocol)
that records every call, and a ``SkyShard`` resource builder."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from skyshard.deploy.render import key

NS = "astro"


def resource(spec: Mapping[str, Any] | None = None, *, name: str = "sky",
             generation: int = 1, uid: str = "uid-1",
             status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A SkyShard object as the API server would hand it to the operator."""
    body: dict[str, Any] = {
        "apiVersion": "skyshard.io/v1alpha1", "kind": "SkyShard",
        "metadata": {"name": name, "namespace": NS, "uid": uid, "generation": generation},
        "spec": {"image": "skyshard:test", "workers": 2,
                 "storage": {"pvc": {"size": "5Gi"}},
                 "authSecretRef": {"name": "sky-auth"}, **(spec or {})},
    }
    if status is not None:
        body["status"] = dict(status)
    return body


class FakeCluster:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.created = 0  # the API server stamps each new object's creation time

    def _stamp(self) -> str:
        self.created += 1
        moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.created)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    # --- the protocol ---
    def apply(self, obj: Mapping[str, Any]) -> None:
        k = key(dict(obj))
        self.calls.append(("apply", f"{k[1]}/{k[3]}"))
        new = copy.deepcopy(dict(obj))
        old = self.objects.get(k)
        generation = (old or {}).get("metadata", {}).get("generation", 0)
        if old is None or old.get("spec") != new.get("spec"):
            generation += 1
        new["metadata"]["generation"] = generation
        new["metadata"]["creationTimestamp"] = (
            old["metadata"]["creationTimestamp"] if old is not None else self._stamp())
        if old is not None and "status" in old:
            new["status"] = old["status"]
        self.objects[k] = new

    def create(self, obj: Mapping[str, Any]) -> bool:
        k = key(dict(obj))
        if k in self.objects:
            self.calls.append(("create-exists", f"{k[1]}/{k[3]}"))
            return False
        self.calls.append(("create", f"{k[1]}/{k[3]}"))
        self.objects[k] = copy.deepcopy(dict(obj))
        self.objects[k]["metadata"]["creationTimestamp"] = self._stamp()
        return True

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, api_version: str, kind: str, namespace: str,
             labels: Mapping[str, str]) -> list[dict]:
        out = []
        for (av, k, ns, _), obj in self.objects.items():
            have = obj["metadata"].get("labels") or {}
            if (av, k, ns) == (api_version, kind, namespace) and all(
                    have.get(a) == b for a, b in labels.items()):
                out.append(copy.deepcopy(obj))
        return out

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.calls.append(("delete", f"{kind}/{name}"))
        self.objects.pop((api_version, kind, namespace, name), None)

    # --- for the tests ---
    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        for (_, k, _, n), obj in self.objects.items():
            if (k, n) == (kind, name):
                return obj
        return None

    def kinds(self) -> list[str]:
        return sorted(f"{k}/{n}" for (_, k, _, n) in self.objects)

    def roll_out(self, kind: str, name: str, *, ready: int | None = None) -> None:
        """Pretend the controller has rolled ``kind/name`` out (``ready`` pods ready)."""
        obj = self.find(kind, name)
        assert obj is not None, f"{kind}/{name} not applied"
        want = obj["spec"].get("replicas", 1)
        obj["status"] = {"observedGeneration": obj["metadata"]["generation"],
                         "replicas": want, "updatedReplicas": want,
                         "readyReplicas": want if ready is None else ready}

    def finish_job(self, name: str, *, succeeded: bool) -> None:
        """Pretend the Job controller has finished Job ``name``."""
        job = self.find("Job", name)
        assert job is not None, f"Job/{name} not applied"
        if succeeded:
            job["status"] = {"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}]}
        else:
            job["status"] = {"failed": 3, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}]}

    def start_job_pod(self, job_name: str, phase: str = "Running") -> str:
        """A pod of Job ``job_name`` as the Job controller makes it (its template's labels
        plus the job-name labels); its name."""
        job = self.find("Job", job_name)
        assert job is not None, f"Job/{job_name} not applied"
        labels = dict(job["spec"]["template"]["metadata"]["labels"])
        labels.update({"job-name": job_name, "batch.kubernetes.io/job-name": job_name})
        name = f"{job_name}-x7k2p"
        ns = job["metadata"]["namespace"]
        self.objects[("v1", "Pod", ns, name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "status": {"phase": phase}}
        return name
