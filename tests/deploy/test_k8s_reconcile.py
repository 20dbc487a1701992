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
        "NetworkPolicy/sky-worker"])
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
                                            "worker"))
    assert cluster.find("PersistentVolumeClaim", "sky-catalog") is not None


def test_scale_updates_the_statefulset_and_reports_the_rebalance_hook_honestly():
    cluster = FakeCluster()
    reconcile.apply(cluster, resource())
    scaled = resource({"workers": 4}, generation=2)
    reconcile.apply(cluster, scaled)
    assert cluster.find("StatefulSet", "sky-worker")["spec"]["replicas"] == 4
    assert cluster.find("PodDisruptionBudget", "sky-worker")["spec"]["maxUnavailable"] == 1
    step = reconcile.rebalance(cluster, scaled, 2, 4)
    assert step is not None and step.reason == "RebalanceSkipped" and step.job is None
    assert "does not exist yet" in step.message and "2 -> 4" in step.message
    assert not [k for k in cluster.kinds() if k.startswith("Job/")]


def test_rebalance_runs_the_repair_job_once_the_command_exists():
    cluster = FakeCluster()
    scaled = resource({"workers": 3, "replicationFactor": 2}, generation=5)
    step = reconcile.rebalance(cluster, scaled, 2, 3, command=("skyshard", "replicas", "repair"))
    assert step is not None and step.reason == "RebalanceStarted" and step.job == "sky-repair-5"
    job = cluster.find("Job", "sky-repair-5")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["skyshard", "replicas", "repair", "--catalog", "/data/catalog",
                       "--replication", "2"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


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
