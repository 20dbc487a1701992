"""The kopf handlers called as plain functions (kopf's machinery is not under test): the
fake API sits in ``memo.cluster``, events are recorded instead of posted."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from k8s_fake import FakeCluster, resource

kopf = pytest.importorskip("kopf")

from skyshard.deploy import operator  # noqa: E402  (needs kopf)

LOG = logging.getLogger("test-operator")


@pytest.fixture
def events(monkeypatch):
    posted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(operator, "post_event",
                        lambda body, type, reason, message: posted.append((type, reason, message)))
    return posted


@pytest.fixture
def memo():
    return SimpleNamespace(cluster=FakeCluster())


def status_of(patch) -> dict:
    return dict(patch).get("status", {})


def test_create(memo, events):
    patch = kopf.Patch()
    operator.reconcile_resource(body=resource(), memo=memo, patch=patch, logger=LOG)
    cluster = memo.cluster
    assert cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 2
    assert cluster.find("Secret", "sky-auth") is not None
    assert [e[1] for e in events] == ["AuthSecretCreated"]
    assert "random password" in events[0][2] and "skyshard:" not in events[0][2]
    status = status_of(patch)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Available": "False", "Progressing": "True", "Degraded": "False"}
    # the on.field handler sees creation as old=None: no rebalance
    operator.workers_changed(old=None, new=2, body=resource(), memo=memo, patch=kopf.Patch(),
                             logger=LOG)
    assert [e[1] for e in events] == ["AuthSecretCreated"]


def test_update_is_idempotent_and_keeps_the_secret(memo, events):
    operator.reconcile_resource(body=resource(), memo=memo, patch=kopf.Patch(), logger=LOG)
    password = memo.cluster.find("Secret", "sky-auth")["stringData"]["user"]
    before = {k: v for k, v in memo.cluster.objects.items() if k[1] != "Secret"}
    operator.reconcile_resource(body=resource(), memo=memo, patch=kopf.Patch(), logger=LOG)
    assert {k: v for k, v in memo.cluster.objects.items() if k[1] != "Secret"} == before
    assert memo.cluster.find("Secret", "sky-auth")["stringData"]["user"] == password
    assert [e[1] for e in events] == ["AuthSecretCreated"]
    operator.reconcile_resource(body=resource({"image": "skyshard:2"}, generation=2), memo=memo,
                                patch=kopf.Patch(), logger=LOG)
    front = memo.cluster.find("Deployment", "sky-frontend")
    assert front["spec"]["template"]["spec"]["containers"][0]["image"] == "skyshard:2"


def test_scale(memo, events):
    operator.reconcile_resource(body=resource(), memo=memo, patch=kopf.Patch(), logger=LOG)
    scaled = resource({"workers": 5}, generation=2)
    patch = kopf.Patch()
    # kopf runs the update handler, then the field handler, for one change
    operator.reconcile_resource(body=scaled, memo=memo, patch=patch, logger=LOG)
    operator.workers_changed(old=2, new=5, body=scaled, memo=memo, patch=patch, logger=LOG)
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 5
    assert events[-1][:2] == ("Normal", "RebalanceSkipped")
    assert "does not exist yet" in status_of(patch)["rebalance"]
    assert status_of(patch)["observedGeneration"] == 2


def test_scale_runs_the_repair_job_when_the_command_exists(memo, events, monkeypatch):
    from skyshard.deploy import reconcile

    monkeypatch.setattr(reconcile, "REPAIR_COMMAND", ("skyshard", "replicas", "repair"))
    body = resource({"workers": 3}, generation=4)
    operator.workers_changed(old=2, new=3, body=body, memo=memo, patch=kopf.Patch(), logger=LOG)
    assert memo.cluster.find("Job", "sky-repair-4") is not None
    assert events[-1][1] == "RebalanceStarted"


def test_invalid_spec_is_a_permanent_error(memo, events):
    with pytest.raises(kopf.PermanentError, match="replicationFactor"):
        operator.reconcile_resource(body=resource({"replicationFactor": 9}), memo=memo,
                                    patch=kopf.Patch(), logger=LOG)
    assert memo.cluster.objects == {} and events == []


def test_delete(memo, events):
    body = resource()
    operator.reconcile_resource(body=body, memo=memo, patch=kopf.Patch(), logger=LOG)
    labels = memo.cluster.find("StatefulSet", "sky-worker")["spec"][
        "volumeClaimTemplates"][0]["metadata"]["labels"]
    memo.cluster.objects[("v1", "PersistentVolumeClaim", "astro", "scratch-sky-worker-0")] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "scratch-sky-worker-0", "namespace": "astro", "labels": labels}}
    operator.deleted(body=body, memo=memo, logger=LOG)
    assert ("delete", "PersistentVolumeClaim/scratch-sky-worker-0") in memo.cluster.calls
    assert memo.cluster.find("PersistentVolumeClaim", "sky-catalog") is not None  # GC's job


def test_status_timer_patches_only_on_change(memo, events):
    body = resource()
    operator.reconcile_resource(body=body, memo=memo, patch=kopf.Patch(), logger=LOG)
    for kind, name in (("Deployment", "sky-frontend"), ("Deployment", "sky-scheduler"),
                       ("StatefulSet", "sky-worker")):
        memo.cluster.roll_out(kind, name)
    patch = kopf.Patch()
    operator.refresh_status(body=body, memo=memo, patch=patch, logger=LOG)
    status = status_of(patch)
    assert {c["type"]: c["status"] for c in status["conditions"]}["Available"] == "True"
    again = kopf.Patch()
    operator.refresh_status(body={**body, "status": status}, memo=memo, patch=again, logger=LOG)
    assert "status" not in dict(again)


def test_status_timer_recreates_a_workload_deleted_by_hand(memo, events):
    body = resource()
    operator.reconcile_resource(body=body, memo=memo, patch=kopf.Patch(), logger=LOG)
    memo.cluster.delete("apps/v1", "StatefulSet", "astro", "sky-worker")
    patch = kopf.Patch()
    operator.refresh_status(body=body, memo=memo, patch=patch, logger=LOG)
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 2
    calls = len(memo.cluster.calls)
    operator.refresh_status(body=body, memo=memo, patch=kopf.Patch(), logger=LOG)
    assert len(memo.cluster.calls) == calls  # nothing missing: reads only


def test_startup_keeps_progress_out_of_the_status():
    settings = kopf.OperatorSettings()
    fake = FakeCluster()
    memo = SimpleNamespace(cluster=fake)
    operator.startup(settings=settings, memo=memo, logger=LOG)
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert memo.cluster is fake
