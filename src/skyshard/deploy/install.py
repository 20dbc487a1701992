"""The operator's own manifests: its namespace (Pod Security "restricted" enforced), a
ServiceAccount, the ClusterRole it needs and nothing more (Secrets: create only, never
read), and its Deployment running ``kopf run -m skyshard.deploy.operator``.
"""

from __future__ import annotations

from typing import Any

from skyshard.deploy import pods
from skyshard.deploy.spec import DEFAULT_IMAGE, GROUP, PLURAL

NAMESPACE = "skyshard-system"
NAME = "skyshard-operator"
HEALTH_PORT = 8080
_CRUD = ["get", "list", "watch", "create", "update", "patch", "delete"]


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": "skyshard", "app.kubernetes.io/component": "operator"}


def rules() -> list[dict[str, Any]]:
    """RBAC rules: kopf's needs (CRDs, namespaces, events) and the managed kinds."""
    return [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": [GROUP], "resources": [PLURAL],
         "verbs": ["get", "list", "watch", "patch", "update"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"],
         "verbs": ["get", "patch", "update"]},
        # create only: the auth Secret when there is none; Secrets are never read
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps", "services", "persistentvolumeclaims"],
         "verbs": _CRUD},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": _CRUD},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _CRUD},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": _CRUD},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": _CRUD},
        # read only: whether a pod of an earlier rebalance Job still runs
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    ]


def operator_manifests(image: str = DEFAULT_IMAGE, namespace: str = NAMESPACE,
                       pull_policy: str = "IfNotPresent") -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding and Deployment."""
    meta = {"name": NAME, "namespace": namespace, "labels": _labels()}
    command = ["kopf", "run", "--standalone", "--all-namespaces",
               f"--liveness=http://0.0.0.0:{HEALTH_PORT}/healthz",
               "-m", "skyshard.deploy.operator"]
    main = pods.container(
        "operator", image, pull_policy, command,
        resources={"requests": {"cpu": "100m", "memory": "256Mi"},
                   "limits": {"memory": "512Mi"}},
        ports=[{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        livenessProbe=pods.http_probe("/healthz", "health", period=30, delay=30))
    pod = pods.pod_spec([main], [], serviceAccountName=NAME)
    pod["automountServiceAccountToken"] = True  # it talks to the API server
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {
             "pod-security.kubernetes.io/enforce": "restricted",
             "pod-security.kubernetes.io/enforce-version": "latest"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": NAME, "labels": _labels()}, "rules": rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": NAME, "labels": _labels()},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                  "selector": {"matchLabels": _labels()},
                  "template": {"metadata": {"labels": _labels()}, "spec": pod}}},
    ]
