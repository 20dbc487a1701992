"""``KubeCluster`` maps the operator's calls onto the kubernetes client's dynamic API (a
stub stands in for the API server: the requests' arguments are what is checked)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("kubernetes")

from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError  # noqa: E402
from kubernetes.dynamic.resource import ResourceInstance  # noqa: E402

from skyshard.deploy.cluster import FIELD_MANAGER, KubeCluster  # noqa: E402


class StubResource:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def _record(self, verb: str, kw: dict):
        self.calls.append((verb, kw))
        if self.fail is not None:
            raise self.fail

    def server_side_apply(self, **kw):
        self._record("apply", kw)

    def create(self, **kw):
        self._record("create", kw)

    def delete(self, **kw):
        self._record("delete", kw)

    def get(self, **kw):
        self._record("get", kw)
        if "name" in kw:
            return ResourceInstance(None, {"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": kw["name"]}})
        return ResourceInstance(None, {"apiVersion": "v1", "kind": "ConfigMapList",
                                       "items": [{"metadata": {"name": "a"}}]})


def cluster(resource: StubResource) -> KubeCluster:
    kube = KubeCluster.__new__(KubeCluster)  # no kubeconfig needed
    kube._api = SimpleNamespace(resources=SimpleNamespace(get=lambda **_: resource))
    return kube


def error(kind: type, status: int) -> Exception:
    return kind(ApiException(status=status, reason="stub"))


def test_apply_is_a_forced_server_side_apply():
    res = StubResource()
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}}
    cluster(res).apply(obj)
    assert res.calls == [("apply", {"body": obj, "name": "c", "namespace": "n",
                                    "field_manager": FIELD_MANAGER, "force_conflicts": True})]


def test_get_list_delete():
    res = StubResource()
    kube = cluster(res)
    assert kube.get("v1", "ConfigMap", "n", "c")["metadata"]["name"] == "c"
    assert [o["metadata"]["name"] for o in kube.list("v1", "ConfigMap", "n", {"a": "1", "b": "2"})] \
        == ["a"]
    kube.delete("v1", "ConfigMap", "n", "c")
    assert res.calls[1] == ("get", {"namespace": "n", "label_selector": "a=1,b=2"})
    assert res.calls[2] == ("delete", {"name": "c", "namespace": "n",
                                       "propagation_policy": "Background"})


def test_missing_and_existing_objects():
    assert cluster(StubResource(error(NotFoundError, 404))).get("v1", "Secret", "n", "s") is None
    cluster(StubResource(error(NotFoundError, 404))).delete("v1", "Secret", "n", "s")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n"}}
    assert cluster(StubResource(error(ConflictError, 409))).create(secret) is False
    assert cluster(StubResource()).create(secret) is True
