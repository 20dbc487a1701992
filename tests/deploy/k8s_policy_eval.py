"""A small NetworkPolicy evaluator (networking.k8s.io/v1 semantics): may ``src`` open a
connection to ``dst`` on a port?

A connection is allowed when the source's egress allows it and the destination's
ingress allows it. A pod that no policy of its namespace selects for a direction is not
isolated in that direction; endpoints outside the cluster are never isolated. Peers match
by pod and namespace selectors (pods only) or by ``ipBlock``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    name: str
    ip: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    is_pod: bool = True


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector's verdict (an empty selector selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": k in labels and labels[k] in values,
              "NotIn": k not in labels or labels[k] not in values,
              "Exists": k in labels, "DoesNotExist": k not in labels}[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], ep: Endpoint, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(ep.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if not ep.is_pod:
        return False
    ns_sel = peer.get("namespaceSelector")
    ns_ok = ep.namespace == policy_ns if ns_sel is None else selects(ns_sel, ep.namespace_labels)
    return ns_ok and selects(peer.get("podSelector"), ep.labels)


def _port_matches(ports: list[Mapping[str, Any]] | None, port: int, proto: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != proto:
            continue
        lo = p.get("port")
        if lo is None or lo == port or (p.get("endPort") and lo <= port <= p["endPort"]):
            return True
    return False


def _types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def _direction_allows(policies: Iterable[Mapping[str, Any]], ep: Endpoint, peer: Endpoint,
                      port: int, proto: str, direction: str) -> bool:
    if not ep.is_pod:
        return True
    relevant = [p for p in policies if p["metadata"]["namespace"] == ep.namespace
                and selects(p["spec"]["podSelector"], ep.labels) and direction in _types(p)]
    if not relevant:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for p in relevant:
        for rule in p["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(x, peer, ep.namespace) for x in peers)) \
                    and _port_matches(rule.get("ports"), port, proto):
                return True
    return False


def allowed(policies: list[Mapping[str, Any]], src: Endpoint, dst: Endpoint, port: int,
            proto: str = "TCP") -> bool:
    return (_direction_allows(policies, src, dst, port, proto, "Egress")
            and _direction_allows(policies, dst, src, port, proto, "Ingress"))
