"""NetworkPolicies: deny everything to and from this deployment's pods, then allow exactly

- clients (anyone) -> front end, TCP 4040 (MySQL) and 8080 (HTTP);
- front end -> scheduler, TCP 8786 (the Dask client; results come through the scheduler);
- workers -> scheduler, TCP 8786, and scheduler -> workers, TCP 8788 (Dask's comm);
- front end and workers -> cluster DNS, UDP/TCP 53;
- pvc mode, the replica rebalance Job -> scheduler, TCP 8786, -> workers, TCP 8788 (its
  Dask client sends the copies straight to the workers), -> cluster DNS;
- S3 mode: front end and workers -> the S3 endpoint's port (``storage.s3.cidr``).

Health probes come from the kubelet on the node, which NetworkPolicy implementations
let through; no other port of these pods is reachable.
"""

from __future__ import annotations

from typing import Any

from skyshard.deploy.spec import (
    HTTP_PORT,
    MYSQL_PORT,
    SCHEDULER_PORT,
    WORKER_PORT,
    S3Storage,
    SkyShardSpec,
)
from skyshard.deploy.workloads import REBALANCE

DNS_NAMESPACE = {"kubernetes.io/metadata.name": "kube-system"}
DNS_PODS = {"k8s-app": "kube-dns"}


def network_policies(spec: SkyShardSpec) -> list[dict[str, Any]]:
    """The policies, or none when ``networkPolicies`` is false."""
    if not spec.network_policies:
        return []
    rebalance = [] if spec.is_s3 else [REBALANCE]  # the Job runs in pvc mode only
    clients = ["frontend", "worker"] + rebalance
    out = [
        _policy(spec, "default-deny", _labels(spec), ingress=[], egress=[]),
        _policy(spec, "dns", _components(spec, "frontend", "worker", *rebalance), egress=[
            {"to": [{"namespaceSelector": {"matchLabels": DNS_NAMESPACE},
                     "podSelector": {"matchLabels": DNS_PODS}}],
             "ports": [_port(53, "UDP"), _port(53, "TCP")]}]),
        _policy(spec, "frontend", _labels(spec, "frontend"),
                ingress=[{"ports": [_port(MYSQL_PORT), _port(HTTP_PORT)]}],
                egress=[_to(spec, "scheduler", SCHEDULER_PORT)]),
        _policy(spec, "scheduler", _labels(spec, "scheduler"),
                ingress=[{"from": [_pods(spec, c) for c in clients],
                          "ports": [_port(SCHEDULER_PORT)]}],
                egress=[_to(spec, "worker", WORKER_PORT)]),
        _policy(spec, "worker", _labels(spec, "worker"),
                ingress=[{"from": [_pods(spec, c) for c in ["scheduler"] + rebalance],
                          "ports": [_port(WORKER_PORT)]}],
                egress=[_to(spec, "scheduler", SCHEDULER_PORT)]),
    ]
    if rebalance:
        out.append(_policy(spec, REBALANCE, _labels(spec, REBALANCE), egress=[
            _to(spec, "scheduler", SCHEDULER_PORT), _to(spec, "worker", WORKER_PORT)]))
    storage = spec.storage
    if isinstance(storage, S3Storage):
        out.append(_policy(spec, "s3", _components(spec, "frontend", "worker"), egress=[
            {"to": [{"ipBlock": {"cidr": storage.cidr}}], "ports": [_port(storage.port)]}]))
    return out


def _policy(spec: SkyShardSpec, suffix: str, selector: dict[str, Any], *,
            ingress: list | None = None, egress: list | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"podSelector": selector}
    types = []
    if ingress is not None:
        types.append("Ingress")
        if ingress:
            body["ingress"] = ingress
    if egress is not None:
        types.append("Egress")
        if egress:
            body["egress"] = egress
    body["policyTypes"] = types
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"{spec.name}-{suffix}", "namespace": spec.namespace,
                         "labels": spec.labels("network")},
            "spec": body}


def _labels(spec: SkyShardSpec, component: str | None = None) -> dict[str, Any]:
    return {"matchLabels": spec.selector(component)}


def _components(spec: SkyShardSpec, *components: str) -> dict[str, Any]:
    return {"matchLabels": spec.selector(),
            "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                  "values": list(components)}]}


def _pods(spec: SkyShardSpec, component: str) -> dict[str, Any]:
    return {"podSelector": _labels(spec, component)}


def _to(spec: SkyShardSpec, component: str, port: int) -> dict[str, Any]:
    return {"to": [_pods(spec, component)], "ports": [_port(port)]}


def _port(port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"port": port, "protocol": protocol}
