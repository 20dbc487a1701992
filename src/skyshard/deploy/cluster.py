"""What the operator asks of the Kubernetes API, behind a small protocol, so that its
decisions are tested against a fake; ``KubeCluster`` is the real one (server-side apply
through the ``kubernetes`` client's dynamic API)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

FIELD_MANAGER = "skyshard-operator"


class Cluster(Protocol):
    def apply(self, obj: Mapping[str, Any]) -> None:
        """Create or update ``obj`` (server-side apply; our fields only)."""

    def create(self, obj: Mapping[str, Any]) -> bool:
        """Create ``obj`` unless an object of that name exists (then False, untouched)."""

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        """The object, or None if there is none."""

    def list(self, api_version: str, kind: str, namespace: str,
             labels: Mapping[str, str]) -> list[dict]:
        """Objects of a kind in ``namespace`` carrying all of ``labels``."""

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete the object (dependents in the background); gone already is fine."""


class KubeCluster:
    """The API server, from the in-cluster service account or else ``~/.kube/config``."""

    def __init__(self) -> None:
        from kubernetes import client, config, dynamic

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self._api = dynamic.DynamicClient(client.ApiClient())

    def _resource(self, api_version: str, kind: str):
        return self._api.resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        self._resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=dict(obj), name=meta["name"], namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER, force_conflicts=True)

    def create(self, obj: Mapping[str, Any]) -> bool:
        from kubernetes.dynamic.exceptions import ConflictError

        try:
            self._resource(obj["apiVersion"], obj["kind"]).create(
                body=dict(obj), namespace=obj["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER)
        except ConflictError:
            return False
        return True

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return self._resource(api_version, kind).get(name=name,
                                                         namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str,
             labels: Mapping[str, str]) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        found = self._resource(api_version, kind).get(namespace=namespace,
                                                      label_selector=selector)
        return list(found.to_dict().get("items") or [])

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            self._resource(api_version, kind).delete(
                name=name, namespace=namespace, propagation_policy="Background")
        except NotFoundError:
            pass
