"""The operator's decisions (no kopf, no API server): create, update, scale, delete, and
the status, against an in-memory fake of the API."""

from __future__ import annotations

import pytest
from k8s_fake import NS, FakeCluster, resource

from skyshard.deploy import reconcile
from skyshard.deploy.spec import SpecError

WORKLOADS = (("Deployment", "sky-frontend"), ("Deployment", "sky-scheduler"),
             ("StatefulSet", "sky-worker"))


def roll_out_all(cluster: FakeCluster, **kw) -> None:
    for kind, name in WORKLOADS:
        cluster.roll_out(kind, name, **(kw if kind == "StatefulSet" else {}))


def test_create_applies_every_object_owned_by_the_resource():
    cluster = FakeCluster()
    done = reconcile.apply(cluster, resource())
    assert cluster.kinds() == sorted([
        "ConfigMap/sky-config", "PersistentVolumeClaim/sky-catalog",
        "Service/sky", "Service/sky-scheduler", "Service/sky-workers",
        "Deployment/sky-frontend", "Deployment/sky-scheduler", "StatefulSet/sky-worker",
        "PodDisruptionBudget/sky-worker", "NetworkPolicy/sky-default-deny",
        "NetworkPolicy/sky-dns", "NetworkPolicy/sky-frontend", "NetworkPolicy/sky-scheduler",
        "NetworkPolicy/sky-worker", "NetworkPolicy/sky-rebalance"])
    assert len(done) == len(cluster.objects)
    for obj in cluster.objects.values():
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "skyshard.io/v1alpha1", "kind": "SkyShard", "name": "sky",
                       "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
        assert obj["metadata"]["namespace"] == NS
    # the default deny is applied before any pod can start
    first_pod_owner = next(i for i, (_, n) in enumerate(cluster.calls)
                           if n.startswith(("Deployment/", "StatefulSet/")))
    deny = cluster.calls.index(("apply", "NetworkPolicy/sky-default-deny"))
    assert deny < first_pod_owner


def test_catalog_claim_is_kept_on_delete_when_asked():
    cluster = FakeCluster()
    reconcile.apply(cluster, resource({"storage": {"pvc": {"retainOnDelete": True}}}))
    assert "ownerReferences" not in cluster.find("PersistentVolumeClaim", "sky-catalog")["metadata"]
    assert cluster.find("StatefulSet", "sky-worker")["metadata"]["ownerReferences"]


def test_auth_secret_is_created_once_and_a_users_secret_is_never_touched():
    cluster = FakeCluster()
    body = resource()
    assert reconcile.ensure_auth_secret(cluster, body)
    secret = cluster.find("Secret", "sky-auth")
    user, _, password = secret["stringData"]["user"].partition(":")
    assert user == "skyshard" and len(password) >= 20
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert not reconcile.ensure_auth_secret(cluster, body)
    assert cluster.find("Secret", "sky-auth")["stringData"]["user"] == f"skyshard:{password}"

    theirs = FakeCluster()
    theirs.objects[("v1", "Secret", NS, "sky-auth")] = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sky-auth", "namespace": NS},
        "stringData": {"user": "alice:hers"}}
    assert not reconcile.ensure_auth_secret(theirs, body)
    assert theirs.find("Secret", "sky-auth")["stringData"] == {"user": "alice:hers"}


def test_token_key_gets_a_generated_token():
    secret = reconcile.auth_secret(resource({"authSecretRef": {"name": "a", "tokenKey": "tok"}}))
    assert set(secret["stringData"]) == {"user", "tok"}


def test_update_changes_image_and_rolls_the_front_end_on_config_change():
    cluster = FakeCluster()
    reconcile.apply(cluster, resource())
    before = cluster.find("Deployment", "sky-frontend")
    hash_before = before["spec"]["template"]["metadata"]["annotations"]["skyshard.io/config-hash"]
    reconcile.apply(cluster, resource({"image": "skyshard:2", "limits": {"timeout_s": 30}},
                                      generation=2))
    after = cluster.find("Deployment", "sky-frontend")
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "skyshard:2"
    assert cluster.find("StatefulSet", "sky-worker")["spec"]["template"]["spec"][
        "containers"][0]["image"] == "skyshard:2"
    assert after["spec"]["template"]["metadata"]["annotations"][
        "skyshard.io/config-hash"] != hash_before
    assert "timeout_s = 30.0" in cluster.find("ConfigMap", "sky-config")["data"]["serve.toml"]


def test_turning_network_policies_off_prunes_them_and_only_ours():
    cluster = FakeCluster()
    reconcile.apply(cluster, resource())
    foreign = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "theirs", "namespace": NS,
                            "labels": {"app.kubernetes.io/instance": "sky",
                                       "app.kubernetes.io/managed-by": "skyshard"},
                            "ownerReferences": [{"uid": "someone-else"}]},
               "spec": {"podSelector": {}}}
    cluster.objects[("networking.k8s.io/v1", "NetworkPolicy", NS, "theirs")] = foreign
    done = reconcile.apply(cluster, resource({"networkPolicies": False}, generation=2))
    left = [k for k in cluster.kinds() if k.startswith("NetworkPolicy/")]
    assert left == ["NetworkPolicy/theirs"]
    assert sorted(d for d in done if d.startswith("-")) == sorted(
        f"-NetworkPolicy/sky-{s}" for s in ("default-deny", "dns", "frontend", "scheduler",
                                            "worker", "rebalance"))
    assert cluster.find("PersistentVolumeClaim", "sky-catalog") is not None


S3_STORAGE = {"s3": {"url": "s3://b/c", "secretRef": {"name": "s"}}}


def job_command(job: dict) -> list[str]:
    """The skyshard command the Job's shell guard runs (``sh -c GUARD $0 ARGV``)."""
    (main,) = job["spec"]["template"]["spec"]["containers"]
    assert main["command"][:2] == ["sh", "-c"] and 'exec "$@"' in main["command"][2]
    return main["command"][4:]


def test_scale_up_starts_a_rebalance_job_for_the_new_worker_set():
    cluster = FakeCluster()
    reconcile.apply(cluster, resource())
    scaled = resource({"workers": 4, "replicationFactor": 2}, generation=2)
    reconcile.apply(cluster, scaled)
    assert cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 4
    step = reconcile.rebalance(cluster, scaled, 2, 4)
    assert step is not None and step.reason == "RebalanceStarted"
    assert step.job == "sky-rebalance-2" and "2 -> 4" in step.message
    job = cluster.find("Job", "sky-rebalance-2")
    assert job_command(job) == [
        "skyshard", "replicas", "rebalance", "/data/catalog",
        "--scheduler", "tcp://sky-scheduler:8786", "--expect-workers", "4", "--wait", "900",
        "--replication", "2", "--quiet"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["metadata"]["annotations"] == {"skyshard.io/rebalance-reason": "workers 2 -> 4",
                                              "skyshard.io/rebalance-action": "rebalance"}
    assert reconcile.advance(cluster, scaled) == []  # nothing waits for the timer
    # the workers keep their replicas on their own volume, where the Job's copies go
    (worker,) = cluster.find("StatefulSet", "sky-worker")["spec"]["template"]["spec"][
        "containers"]
    assert {"name": "DASK_SKYSHARD__REPLICAS__DIRECTORY",
            "value": "/var/lib/skyshard/scratch/replicas"} in worker["env"]
    assert {"name": "scratch", "mountPath": "/var/lib/skyshard/scratch"} in \
        worker["volumeMounts"]


def replicas_of(cluster: FakeCluster) -> int:
    return cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"]


def test_scale_down_drains_first_and_shrinks_only_after_the_drain_succeeded():
    """The documented order: the StatefulSet keeps its workers (the update handler's
    apply), the drain Job empties the pods that go, and only its success lets the
    timer shrink the StatefulSet."""
    cluster = FakeCluster()
    reconcile.apply(cluster, resource({"workers": 4, "replicationFactor": 2}))
    shrunk = resource({"workers": 2, "replicationFactor": 2}, generation=2)
    reconcile.apply(cluster, shrunk)
    assert replicas_of(cluster) == 4
    step = reconcile.rebalance(cluster, shrunk, 4, 2)
    assert step is not None and step.reason == "DrainStarted" and step.job == "sky-drain-2"
    assert "sky-worker-2, sky-worker-3" in step.message and "keeps 4 workers" in step.message
    job = cluster.find("Job", "sky-drain-2")
    assert job_command(job) == [
        "skyshard", "replicas", "drain", "/data/catalog", "sky-worker-2", "sky-worker-3",
        "--scheduler", "tcp://sky-scheduler:8786", "--expect-workers", "4", "--wait", "900",
        "--replication", "2", "--quiet"]
    assert job["metadata"]["annotations"] == {
        "skyshard.io/rebalance-reason": "workers 4 -> 2",
        "skyshard.io/rebalance-action": "drain",
        "skyshard.io/drained-workers": "sky-worker-2,sky-worker-3"}
    # running: nothing shrinks, whoever applies (the timer, an update of the image)
    assert reconcile.advance(cluster, shrunk) == []
    reconcile.apply(cluster, resource({"workers": 2, "replicationFactor": 2,
                                       "image": "skyshard:2"}, generation=3))
    assert replicas_of(cluster) == 4
    cluster.finish_job("sky-drain-2", succeeded=True)
    steps = reconcile.advance(cluster, shrunk)
    assert [s.reason for s in steps] == ["ScaledDown"]
    assert "sky-worker-2, sky-worker-3" in steps[0].message and "4 -> 2" in steps[0].message
    assert replicas_of(cluster) == 2
    applied = [name for verb, name in cluster.calls if verb == "apply"]
    last_sts = max(i for i, n in enumerate(applied) if n == "StatefulSet/sky-worker")
    assert applied.index("Job/sky-drain-2") < last_sts
    assert reconcile.advance(cluster, shrunk) == []  # done
    reconcile.apply(cluster, shrunk)
    assert replicas_of(cluster) == 2


def test_a_failed_drain_keeps_the_workers_until_a_request_runs_it_again():
    cluster = FakeCluster()
    reconcile.apply(cluster, resource({"workers": 3}))
    shrunk = resource({"workers": 2}, generation=2)
    reconcile.apply(cluster, shrunk)
    reconcile.rebalance(cluster, shrunk, 3, 2)
    cluster.finish_job("sky-drain-2", succeeded=False)
    assert reconcile.advance(cluster, shrunk) == []  # no shrink, no new Job by itself
    reconcile.apply(cluster, shrunk)
    assert replicas_of(cluster) == 3
    assert [k for k in cluster.kinds() if k.startswith("Job/")] == ["Job/sky-drain-2"]
    step = reconcile.start_rebalance(cluster, shrunk, "requested", request="again")
    assert step.reason == "DrainStarted" and step.job.startswith("sky-drain-2-")
    cluster.finish_job(step.job, succeeded=True)
    assert [s.reason for s in reconcile.advance(cluster, shrunk)] == ["ScaledDown"]
    assert replicas_of(cluster) == 2


def test_the_timer_starts_a_drain_that_is_missing():
    """E.g. the operator restarted between the update and the field handler."""
    cluster = FakeCluster()
    reconcile.apply(cluster, resource({"workers": 3}))
    shrunk = resource({"workers": 1}, generation=4)
    reconcile.apply(cluster, shrunk)
    (step,) = reconcile.advance(cluster, shrunk)
    assert step.reason == "DrainStarted" and "workers 3 -> 1" in step.message
    assert job_command(cluster.find("Job", "sky-drain-4"))[4:6] == ["sky-worker-1",
                                                                    "sky-worker-2"]
    assert reconcile.advance(cluster, shrunk) == []  # it runs: wait
    pod = cluster.start_job_pod("sky-drain-4")
    cluster.finish_job("sky-drain-4", succeeded=True)
    cluster.delete("v1", "Pod", NS, pod)
    assert [s.reason for s in reconcile.advance(cluster, shrunk)] == ["ScaledDown"]


def test_a_drain_of_more_workers_than_go_is_followed_by_a_rebalance():
    """4 -> 2 drained sky-worker-2 and -3, then spec.workers became 3 before the shrink:
    the StatefulSet shrinks to 3 (sky-worker-3 is empty), and sky-worker-2, emptied but
    staying, gets copies again from a rebalance Job."""
    cluster = FakeCluster()
    reconcile.apply(cluster, resource({"workers": 4}))
    reconcile.apply(cluster, resource({"workers": 2}, generation=2))
    reconcile.rebalance(cluster, resource({"workers": 2}, generation=2), 4, 2)
    cluster.finish_job("sky-drain-2", succeeded=True)
    three = resource({"workers": 3}, generation=3)
    steps = reconcile.advance(cluster, three)
    assert [s.reason for s in steps] == ["ScaledDown", "RebalanceStarted"]
    assert replicas_of(cluster) == 3
    assert job_command(cluster.find("Job", "sky-rebalance-3"))[:3] == [
        "skyshard", "replicas", "rebalance"]


def test_a_scale_down_undone_before_its_drain_finished():
    cluster = FakeCluster()
    reconcile.apply(cluster, resource({"workers": 3}))
    reconcile.apply(cluster, resource({"workers": 2}, generation=2))
    reconcile.rebalance(cluster, resource({"workers": 2}, generation=2), 3, 2)
    back = resource({"workers": 3}, generation=3)
    reconcile.apply(cluster, back)
    step = reconcile.rebalance(cluster, back, 2, 3)
    assert step.reason == "RebalanceStarted" and cluster.find("Job", "sky-drain-2") is None
    assert replicas_of(cluster) == 3 and reconcile.advance(cluster, back) == []


def test_shared_s3_storage_needs_no_rebalance():
    cluster = FakeCluster()
    scaled = resource({"workers": 3, "storage": S3_STORAGE}, generation=2)
    reconcile.apply(cluster, scaled)
    step = reconcile.rebalance(cluster, scaled, 2, 3)
    assert step is not None and step.reason == "RebalanceNotNeeded" and step.job is None
    assert "whole catalog" in step.message and "2 -> 3" in step.message
    assert not [k for k in cluster.kinds() if k.startswith("Job/")]
    # a scale-down shrinks at once: nothing to drain
    reconcile.apply(cluster, resource({"workers": 1, "storage": S3_STORAGE}, generation=3))
    assert replicas_of(cluster) == 1
    assert reconcile.advance(cluster, resource({"workers": 1, "storage": S3_STORAGE})) == []
    (worker,) = cluster.find("StatefulSet", "sky-worker")["spec"]["template"]["spec"][
        "containers"]
    assert not any(e["name"].startswith("DASK_SKYSHARD") for e in worker["env"])
    assert reconcile.latest_rebalance(cluster, scaled) is None


def test_a_new_rebalance_replaces_the_old_job_once_its_pod_has_stopped():
    cluster = FakeCluster()
    reconcile.rebalance(cluster, resource({"workers": 3}, generation=2), 2, 3)
    pod = cluster.start_job_pod("sky-rebalance-2")
    again = resource({"workers": 4}, generation=3)
    with pytest.raises(reconcile.RebalanceWait, match=pod):
        reconcile.rebalance(cluster, again, 3, 4)
    assert cluster.find("Job", "sky-rebalance-2") is None  # deleted: obsolete
    assert cluster.find("Job", "sky-rebalance-3") is None  # not before the pod is gone
    cluster.delete("v1", "Pod", NS, pod)  # the garbage collector's work
    step = reconcile.rebalance(cluster, again, 3, 4)
    assert step.job == "sky-rebalance-3"
    assert [k for k in cluster.kinds() if k.startswith("Job/")] == ["Job/sky-rebalance-3"]


def test_finished_jobs_are_replaced_without_waiting():
    cluster = FakeCluster()
    reconcile.rebalance(cluster, resource({"workers": 3}, generation=2), 2, 3)
    cluster.start_job_pod("sky-rebalance-2", phase="Failed")
    cluster.finish_job("sky-rebalance-2", succeeded=False)
    step = reconcile.rebalance(cluster, resource({"workers": 2}, generation=3), 3, 2)
    assert step.job == "sky-rebalance-3"
    assert [k for k in cluster.kinds() if k.startswith("Job/")] == ["Job/sky-rebalance-3"]


def test_rebalance_on_request_gets_its_own_job_name():
    cluster = FakeCluster()
    body = resource(generation=5)
    step = reconcile.start_rebalance(cluster, body, "requested", request="2026-03-01")
    assert step.job is not None and step.job.startswith("sky-rebalance-5-")
    other = reconcile.start_rebalance(cluster, body, "requested", request="2026-03-02")
    assert other.job != step.job and cluster.find("Job", step.job) is None
    longest = resource(name="a" * 40, generation=999_999)
    name = reconcile.start_rebalance(FakeCluster(), longest, "r", request="x").job
    assert len(name) == 63


@pytest.mark.parametrize("old,new", [(None, 2), (2, 2), (3, None)])
def test_no_rebalance_without_a_change_of_workers(old, new):
    assert reconcile.rebalance(FakeCluster(), resource(), old, new) is None


def test_invalid_spec_applies_nothing():
    cluster = FakeCluster()
    with pytest.raises(SpecError, match="replicationFactor 3 exceeds workers 2"):
        reconcile.apply(cluster, resource({"replicationFactor": 3}))
    with pytest.raises(SpecError, match="exactly one"):
        reconcile.apply(cluster, resource({"storage": {}}))
    assert cluster.objects == {}


def test_delete_removes_the_worker_scratch_claims_only():
    cluster = FakeCluster()
    body = resource()
    reconcile.apply(cluster, body)
    worker_labels = cluster.find("StatefulSet", "sky-worker")["spec"][
        "volumeClaimTemplates"][0]["metadata"]["labels"]
    for i in range(2):
        name = f"scratch-sky-worker-{i}"
        cluster.objects[("v1", "PersistentVolumeClaim", NS, name)] = {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NS, "labels": dict(worker_labels)}}
    removed = reconcile.cleanup(cluster, body)
    assert sorted(removed) == ["PersistentVolumeClaim/scratch-sky-worker-0",
                               "PersistentVolumeClaim/scratch-sky-worker-1"]
    assert cluster.find("PersistentVolumeClaim", "sky-catalog") is not None
    assert reconcile.cleanup(FakeCluster(), resource(
        {"storage": {"s3": {"url": "s3://b/c", "secretRef": {"name": "s"}}}})) == []


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_status_before_anything_runs():
    status = reconcile.observe(FakeCluster(), resource(), now="2026-01-01T00:00:00Z")
    assert conditions(status) == {"Available": ("False", "NotCreated"),
                                  "Progressing": ("True", "RollingOut"),
                                  "Degraded": ("False", "AsExpected")}
    assert status["readyWorkers"] == 0 and status["version"] == "test"


def test_status_available_then_degraded_then_scaling():
    cluster = FakeCluster()
    body = resource()
    reconcile.apply(cluster, body)
    roll_out_all(cluster)
    status = reconcile.observe(cluster, body, now="2026-01-01T00:00:00Z")
    assert conditions(status) == {"Available": ("True", "Ready"),
                                  "Progressing": ("False", "RolledOut"),
                                  "Degraded": ("False", "AsExpected")}
    assert status["readyWorkers"] == 2 and status["workers"] == 2
    assert status["workerSelector"] == ("app.kubernetes.io/name=skyshard,"
                                        "app.kubernetes.io/instance=sky,"
                                        "app.kubernetes.io/component=worker")

    cluster.roll_out("StatefulSet", "sky-worker", ready=1)  # a worker crash-loops
    later = reconcile.observe(cluster, {**body, "status": status}, now="2026-01-01T00:05:00Z")
    assert conditions(later)["Degraded"] == ("True", "PodsNotReady")
    assert conditions(later)["Available"] == ("True", "Ready")
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times["Available"] == "2026-01-01T00:00:00Z"  # unchanged status keeps its time
    assert times["Degraded"] == "2026-01-01T00:05:00Z"

    scaled = resource({"workers": 4}, generation=2)
    reconcile.apply(cluster, scaled)  # the StatefulSet's new spec is not rolled out yet
    scaling = reconcile.observe(cluster, scaled)
    assert conditions(scaling)["Progressing"] == ("True", "RollingOut")
    assert conditions(scaling)["Degraded"][0] == "False"


def test_status_while_the_rebalance_job_runs_then_succeeds():
    cluster = FakeCluster()
    body = resource({"workers": 3}, generation=2)
    reconcile.apply(cluster, body)
    roll_out_all(cluster)
    reconcile.rebalance(cluster, body, 2, 3)
    running = reconcile.observe(cluster, body, now="2026-01-01T00:00:00Z")
    assert conditions(running) == {"Available": ("True", "Ready"),
                                   "Progressing": ("True", "Rebalancing"),
                                   "Degraded": ("False", "AsExpected")}
    assert running["rebalance"] == "workers 2 -> 3: Job sky-rebalance-2 running"
    assert "sky-rebalance-2" in {c["type"]: c["message"]
                                 for c in running["conditions"]}["Progressing"]
    cluster.finish_job("sky-rebalance-2", succeeded=True)
    done = reconcile.observe(cluster, {**body, "status": running})
    assert conditions(done) == {"Available": ("True", "Ready"),
                                "Progressing": ("False", "RolledOut"),
                                "Degraded": ("False", "AsExpected")}
    assert done["rebalance"] == "workers 2 -> 3: Job sky-rebalance-2 succeeded"


def test_status_while_rolling_out_names_the_job_too():
    cluster = FakeCluster()
    body = resource({"workers": 3}, generation=2)
    reconcile.apply(cluster, body)
    reconcile.rebalance(cluster, body, 2, 3)
    status = reconcile.observe(cluster, body)
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "RollingOut")
    assert "sky-rebalance-2 running" in progressing["message"]


def test_status_degraded_when_the_rebalance_job_failed():
    cluster = FakeCluster()
    body = resource({"workers": 3}, generation=2)
    reconcile.apply(cluster, body)
    roll_out_all(cluster)
    reconcile.rebalance(cluster, body, 2, 3)
    cluster.finish_job("sky-rebalance-2", succeeded=False)
    status = reconcile.observe(cluster, body)
    assert conditions(status) == {"Available": ("True", "Ready"),
                                  "Progressing": ("False", "RolledOut"),
                                  "Degraded": ("True", "RebalanceFailed")}
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Degraded")
    assert "sky-rebalance-2" in message and "BackoffLimitExceeded" in message
    assert "kubectl logs job/sky-rebalance-2" in message
    assert status["rebalance"].startswith("workers 2 -> 3: Job sky-rebalance-2 failed")


def test_status_while_a_scale_down_waits_for_its_drain():
    cluster = FakeCluster()
    reconcile.apply(cluster, resource({"workers": 3}))
    roll_out_all(cluster)
    body = resource({"workers": 2}, generation=2)
    reconcile.apply(cluster, body)
    waiting = reconcile.observe(cluster, body)
    assert conditions(waiting)["Progressing"] == ("True", "Draining")
    reconcile.rebalance(cluster, body, 3, 2)
    running = reconcile.observe(cluster, body)
    assert conditions(running) == {"Available": ("True", "Ready"),
                                   "Progressing": ("True", "Draining"),
                                   "Degraded": ("False", "AsExpected")}
    message = next(c["message"] for c in running["conditions"] if c["type"] == "Progressing")
    assert "keeps 3 workers" in message and "sky-drain-2 running" in message
    assert running["rebalance"] == "workers 3 -> 2: Job sky-drain-2 running"

    cluster.finish_job("sky-drain-2", succeeded=False)
    failed = reconcile.observe(cluster, body)
    assert conditions(failed) == {"Available": ("True", "Ready"),
                                  "Progressing": ("False", "DrainFailed"),
                                  "Degraded": ("True", "DrainFailed")}
    message = next(c["message"] for c in failed["conditions"] if c["type"] == "Degraded")
    assert "drain Job sky-drain-2 failed" in message and "keeps 3 workers" in message
    assert "rebalance.skyshard.io/request" in message

    cluster.finish_job("sky-drain-2", succeeded=True)
    reconcile.advance(cluster, body)
    roll_out_all(cluster)
    done = reconcile.observe(cluster, body)
    assert conditions(done) == {"Available": ("True", "Ready"),
                                "Progressing": ("False", "RolledOut"),
                                "Degraded": ("False", "AsExpected")}
    assert done["workers"] == 2 and done["rebalance"].endswith("sky-drain-2 succeeded")


def test_a_job_of_another_resource_of_the_same_name_is_not_ours():
    cluster = FakeCluster()
    reconcile.rebalance(cluster, resource({"workers": 3}, generation=2), 2, 3)
    cluster.finish_job("sky-rebalance-2", succeeded=False)
    recreated = resource({"workers": 3}, generation=1, uid="uid-2")
    assert reconcile.latest_rebalance(cluster, recreated) is None
