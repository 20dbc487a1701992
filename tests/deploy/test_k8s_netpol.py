"""The rendered NetworkPolicies allow exactly the flows skyshard needs: every
(source, destination, port) of a small cluster model is evaluated."""

from __future__ import annotations

import itertools

import pytest
from k8s_policy_eval import Endpoint, allowed, selects

from skyshard.deploy.netpol import network_policies
from skyshard.deploy.spec import from_dict

NS = "astro"
PORTS = [(53, "UDP"), (53, "TCP"), (22, "TCP"), (443, "TCP"), (4040, "TCP"), (8080, "TCP"),
         (8786, "TCP"), (8787, "TCP"), (8788, "TCP"), (8790, "TCP"), (9000, "TCP")]
S3_URL = "s3://bucket/catalog"


def spec_for(**storage):
    doc = {"authSecretRef": {"name": "auth"}}
    if storage:
        doc["storage"] = storage
    return from_dict("sky", NS, doc)


def model(spec) -> tuple[list[Endpoint], list[Endpoint]]:
    """(this deployment's pods, everything else)."""
    ns_labels = {"kubernetes.io/metadata.name": NS}
    ours = [Endpoint("frontend", "10.244.0.10", NS, spec.labels("frontend"), ns_labels),
            Endpoint("scheduler", "10.244.0.11", NS, spec.labels("scheduler"), ns_labels),
            Endpoint("worker-0", "10.244.0.12", NS, spec.labels("worker"), ns_labels),
            Endpoint("worker-1", "10.244.1.12", NS, spec.labels("worker"), ns_labels)]
    if not spec.is_s3:
        ours.append(Endpoint("loader", "10.244.0.13", NS, spec.labels("loader"), ns_labels))
        ours.append(Endpoint("rebalance", "10.244.0.14", NS, spec.labels("rebalance"),
                             ns_labels))
    others = [
        Endpoint("neighbour", "10.244.0.20", NS, {"app": "other"}, ns_labels),
        Endpoint("notebook", "10.244.2.5", "science", {"app": "notebook"},
                 {"kubernetes.io/metadata.name": "science"}),
        Endpoint("kube-dns", "10.244.0.2", "kube-system", {"k8s-app": "kube-dns"},
                 {"kubernetes.io/metadata.name": "kube-system"}),
        Endpoint("internet-client", "203.0.113.7", is_pod=False),
        Endpoint("s3", "52.216.1.1", is_pod=False),
    ]
    return ours, others


def flows(spec) -> set[tuple[str, str, int, str]]:
    policies = network_policies(spec)
    ours, others = model(spec)
    everyone = ours + others
    out = set()
    for src, dst in itertools.permutations(everyone, 2):
        if src not in ours and dst not in ours:
            continue
        for port, proto in PORTS:
            if allowed(policies, src, dst, port, proto):
                out.add((src.name, dst.name, port, proto))
    return out


def needed(spec, outsiders=("neighbour", "notebook", "kube-dns", "internet-client", "s3")):
    out = {(o, "frontend", p, "TCP") for o in outsiders for p in (4040, 8080)}
    out |= {("frontend", "scheduler", 8786, "TCP"),
            ("worker-0", "scheduler", 8786, "TCP"), ("worker-1", "scheduler", 8786, "TCP"),
            ("scheduler", "worker-0", 8788, "TCP"), ("scheduler", "worker-1", 8788, "TCP")}
    out |= {(src, "kube-dns", 53, proto) for src in ("frontend", "worker-0", "worker-1")
            for proto in ("UDP", "TCP")}
    if not spec.is_s3:  # the replica rebalance Job: a Dask client sending to the workers
        out |= {("rebalance", "scheduler", 8786, "TCP"), ("rebalance", "worker-0", 8788, "TCP"),
                ("rebalance", "worker-1", 8788, "TCP"), ("rebalance", "kube-dns", 53, "UDP"),
                ("rebalance", "kube-dns", 53, "TCP")}
    return out


def test_pvc_mode_allows_exactly_the_needed_flows():
    spec = spec_for()
    assert flows(spec) == needed(spec)


def test_s3_mode_adds_only_egress_to_s3_from_frontend_and_workers():
    spec = spec_for(s3={"url": S3_URL, "secretRef": {"name": "s3"}, "cidr": "52.216.0.0/15"})
    extra = {(src, "s3", 443, "TCP") for src in ("frontend", "worker-0", "worker-1")}
    assert flows(spec) == needed(spec) | extra


def test_s3_endpoint_port_comes_from_the_url():
    url = "s3://cat/v1?endpoint_override=minio.storage:9000&scheme=http"
    spec = spec_for(s3={"url": url, "secretRef": {"name": "s3"}, "cidr": "52.216.0.0/15"})
    assert spec.storage.port == 9000
    extra = {(src, "s3", 9000, "TCP") for src in ("frontend", "worker-0", "worker-1")}
    assert flows(spec) == needed(spec) | extra


def test_s3_default_cidr_opens_that_port_to_any_address():
    """Policies cannot name S3 by host name; without storage.s3.cidr the S3 port is open
    to any address that accepts it (documented)."""
    spec = spec_for(s3={"url": S3_URL, "secretRef": {"name": "s3"}})
    extra = flows(spec) - needed(spec)
    assert extra and all(port == 443 and src in ("frontend", "worker-0", "worker-1")
                         for src, _, port, _ in extra)
    assert {dst for _, dst, _, _ in extra} == {"s3", "internet-client", "notebook", "kube-dns",
                                              "neighbour"}


def test_rebalance_flows_only_in_pvc_mode():
    pvc = flows(spec_for())
    assert ("rebalance", "worker-1", 8788, "TCP") in pvc
    assert not any("rebalance" in (src, dst) and dst not in ("scheduler", "worker-0",
                                                              "worker-1", "kube-dns")
                   for src, dst, _, _ in pvc)
    assert not any(dst == "rebalance" for _, dst, _, _ in pvc)  # nothing connects to it
    s3 = spec_for(s3={"url": S3_URL, "secretRef": {"name": "s3"}, "cidr": "52.216.0.0/15"})
    names = {p["metadata"]["name"] for p in network_policies(s3)}
    assert "sky-rebalance" not in names and "sky-rebalance" in {
        p["metadata"]["name"] for p in network_policies(spec_for())}


def test_every_policy_selects_some_pod_and_no_policy_without_the_flag():
    spec = spec_for()
    ours, _ = model(spec)
    for policy in network_policies(spec):
        assert any(selects(policy["spec"]["podSelector"], p.labels) for p in ours), policy
    off = from_dict("sky", NS, {"authSecretRef": {"name": "a"}, "networkPolicies": False})
    assert network_policies(off) == []


@pytest.mark.parametrize("selector,labels,expected", [
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "c", "operator": "In", "values": ["x", "y"]}]},
     {"c": "y"}, True),
    ({"matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["x"]}]},
     {"c": "x"}, False),
    ({}, {"anything": "at all"}, True),
])
def test_selector_semantics(selector, labels, expected):
    assert selects(selector, labels) is expected


def test_without_policies_every_flow_is_open():
    """The evaluator's baseline: no policy, no isolation."""
    spec = from_dict("sky", NS, {"authSecretRef": {"name": "a"}, "networkPolicies": False})
    open_flows = flows(spec)
    assert ("worker-0", "worker-1", 8788, "TCP") in open_flows
    assert ("notebook", "scheduler", 8786, "TCP") in open_flows
    assert len(open_flows) > 10 * len(needed(spec))
