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


def roll_out(cluster, ready_workers: int | None = None) -> None:
    for kind, name in (("Deployment", "sky-frontend"), ("Deployment", "sky-scheduler")):
        cluster.roll_out(kind, name)
    cluster.roll_out("StatefulSet", "sky-worker", ready=ready_workers)


def scale(memo, old: int, new: int, generation: int, **spec) -> tuple[dict, kopf.Patch]:
    """One change of spec.workers as kopf handles it: the update handler, then the field
    handler, sharing one patch."""
    body = resource({"workers": new, **spec}, generation=generation)
    patch = kopf.Patch()
    operator.reconcile_resource(body=body, memo=memo, patch=patch, logger=LOG)
    operator.workers_changed(old=old, new=new, body=body, memo=memo, patch=patch, logger=LOG)
    return body, patch


def condition(status: dict, kind: str) -> tuple[str, str]:
    c = next(c for c in status["conditions"] if c["type"] == kind)
    return c["status"], c["reason"]


def test_kopf_runs_the_update_handler_before_the_rebalance():
    """kopf runs one change's handlers in the order they are registered: the StatefulSet
    takes the new size before the rebalance Job is created."""
    order = [h.fn.__name__ for h in kopf.get_default_registry()._changing.get_all_handlers()]
    assert order.index("reconcile_resource") < order.index("workers_changed")


def test_scale_up_starts_the_rebalance_job_and_reports_progressing(memo, events):
    operator.reconcile_resource(body=resource(), memo=memo, patch=kopf.Patch(), logger=LOG)
    roll_out(memo.cluster)
    body, patch = scale(memo, 2, 5, 2)
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 5
    job = memo.cluster.find("Job", "sky-rebalance-2")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[4:7] == ["skyshard", "replicas", "rebalance"]
    assert command[command.index("--expect-workers") + 1] == "5"
    assert events[-1][:2] == ("Normal", "RebalanceStarted") and "2 -> 5" in events[-1][2]
    status = status_of(patch)
    assert "sky-rebalance-2" in status["rebalance"] and status["observedGeneration"] == 2
    assert condition(status, "Progressing") == ("True", "RollingOut")
    # the StatefulSet has its 5 workers; the Job still runs
    roll_out(memo.cluster)
    timer = kopf.Patch()
    operator.refresh_status(body={**body, "status": status}, memo=memo, patch=timer,
                            logger=LOG)
    assert condition(status_of(timer), "Progressing") == ("True", "Rebalancing")
    assert condition(status_of(timer), "Available") == ("True", "Ready")


def timer(memo, body, status) -> dict:
    """One run of the 15 s timer; the status it would show."""
    patch = kopf.Patch()
    operator.refresh_status(body={**body, "status": status}, memo=memo, patch=patch,
                            logger=LOG)
    return {**status, **status_of(patch)}


def test_scale_down_drains_then_shrinks(memo, events):
    operator.reconcile_resource(body=resource({"workers": 3}), memo=memo, patch=kopf.Patch(),
                                logger=LOG)
    roll_out(memo.cluster)
    body, patch = scale(memo, 3, 2, 2)
    # the StatefulSet keeps its 3 workers; the drain Job runs first
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 3
    job = memo.cluster.find("Job", "sky-drain-2")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[4:9] == ["skyshard", "replicas", "drain", "/data/catalog", "sky-worker-2"]
    assert events[-1][:2] == ("Normal", "DrainStarted") and "3 -> 2" in events[-1][2]
    status = status_of(patch)
    assert condition(status, "Progressing") == ("True", "Draining")
    assert "sky-drain-2" in status["rebalance"]
    # the timer while it runs: nothing shrinks
    status = timer(memo, body, status)
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 3
    assert condition(status, "Progressing") == ("True", "Draining")
    assert condition(status, "Available") == ("True", "Ready")
    # it succeeded: the next timer shrinks the StatefulSet
    memo.cluster.finish_job("sky-drain-2", succeeded=True)
    status = timer(memo, body, status)
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 2
    assert events[-1][:2] == ("Normal", "ScaledDown") and "sky-worker-2" in events[-1][2]
    roll_out(memo.cluster)
    status = timer(memo, body, status)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Available": "True", "Progressing": "False", "Degraded": "False"}
    assert status["rebalance"] == "workers 3 -> 2: Job sky-drain-2 succeeded"
    assert status["workers"] == 2


def test_a_failed_drain_blocks_the_scale_down_and_is_degraded(memo, events):
    operator.reconcile_resource(body=resource({"workers": 3}), memo=memo, patch=kopf.Patch(),
                                logger=LOG)
    roll_out(memo.cluster)
    body, patch = scale(memo, 3, 2, 2)
    memo.cluster.finish_job("sky-drain-2", succeeded=False)
    status = timer(memo, body, status_of(patch))
    status = timer(memo, body, status)
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 3
    assert condition(status, "Degraded") == ("True", "DrainFailed")
    assert condition(status, "Progressing") == ("False", "DrainFailed")
    assert [k for k in memo.cluster.kinds() if k.startswith("Job/")] == ["Job/sky-drain-2"]
    # an update of the resource does not shrink it either
    operator.reconcile_resource(body=body, memo=memo, patch=kopf.Patch(), logger=LOG)
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 3
    # a request runs the drain again
    requested = {**body, "metadata": {**body["metadata"], "annotations": {
        operator.reconcile.REQUEST_ANNOTATION: "retry"}}}
    again = kopf.Patch()
    operator.rebalance_requested(old=None, new="retry", body=requested, memo=memo,
                                 patch=again, logger=LOG)
    assert events[-1][1] == "DrainStarted"
    (job,) = [k for k in memo.cluster.kinds() if k.startswith("Job/")]
    assert job.startswith("Job/sky-drain-2-")
    assert condition(status_of(again), "Degraded") == ("False", "AsExpected")
    assert condition(status_of(again), "Progressing") == ("True", "Draining")
    memo.cluster.finish_job(job.split("/")[1], succeeded=True)
    timer(memo, requested, status_of(again))
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 2


def test_job_failure_is_degraded_until_a_new_rebalance(memo, events):
    operator.reconcile_resource(body=resource(), memo=memo, patch=kopf.Patch(), logger=LOG)
    body, patch = scale(memo, 2, 3, 2)
    roll_out(memo.cluster)
    memo.cluster.finish_job("sky-rebalance-2", succeeded=False)
    timer = kopf.Patch()
    operator.refresh_status(body={**body, "status": status_of(patch)}, memo=memo,
                            patch=timer, logger=LOG)
    status = status_of(timer)
    assert condition(status, "Degraded") == ("True", "RebalanceFailed")
    assert condition(status, "Available") == ("True", "Ready")
    # a request re-runs it: the failed Job goes, the new one makes the status Progressing
    requested = {**body, "status": status,
                 "metadata": {**body["metadata"],
                              "annotations": {operator.reconcile.REQUEST_ANNOTATION: "1"}}}
    again = kopf.Patch()
    operator.rebalance_requested(old=None, new="1", body=requested, memo=memo, patch=again,
                                 logger=LOG)
    assert memo.cluster.find("Job", "sky-rebalance-2") is None
    assert events[-1][1] == "RebalanceStarted" and "requested" in events[-1][2]
    assert condition(status_of(again), "Degraded") == ("False", "AsExpected")
    assert condition(status_of(again), "Progressing") == ("True", "Rebalancing")


def test_shared_s3_storage_runs_no_job(memo, events):
    s3 = {"storage": {"s3": {"url": "s3://b/c", "secretRef": {"name": "s"}}}}
    operator.reconcile_resource(body=resource(s3), memo=memo, patch=kopf.Patch(), logger=LOG)
    _, patch = scale(memo, 2, 4, 2, **s3)
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 4
    assert not [k for k in memo.cluster.kinds() if k.startswith("Job/")]
    assert events[-1][:2] == ("Normal", "RebalanceNotNeeded")
    assert "no data has to move" in status_of(patch)["rebalance"]
    scale(memo, 4, 1, 3, **s3)  # down: at once, nothing to drain
    assert memo.cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 1
    assert not [k for k in memo.cluster.kinds() if k.startswith("Job/")]


def test_a_running_older_job_makes_the_handler_retry(memo, events):
    scale(memo, 2, 3, 2)
    memo.cluster.start_job_pod("sky-rebalance-2")
    body = resource({"workers": 4}, generation=3)
    with pytest.raises(kopf.TemporaryError, match="earlier replica Job") as info:
        operator.workers_changed(old=3, new=4, body=body, memo=memo, patch=kopf.Patch(),
                                 logger=LOG)
    assert info.value.delay == 15
    assert memo.cluster.find("Job", "sky-rebalance-3") is None


def test_request_annotation_is_seen_by_kopf():
    """kopf ignores changes of annotations under its own storage prefix (skyshard.io/);
    the request annotation is outside it, so its on.field handler fires."""
    storage = kopf.AnnotationsDiffBaseStorage(prefix="skyshard.io")
    body = kopf.Body({**resource(), "metadata": {**resource()["metadata"], "annotations": {
        "skyshard.io/kopf-managed": "yes",
        operator.reconcile.REQUEST_ANNOTATION: "2026-03-01"}}})
    essence = storage.build(body=body)
    assert essence["metadata"]["annotations"] == {
        operator.reconcile.REQUEST_ANNOTATION: "2026-03-01"}


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
