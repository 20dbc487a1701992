"""Every pod skyshard renders passes the Pod Security Standards "restricted" profile
(the fields the admission controller checks), with a read-only root file system."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skyshard.deploy.install import operator_manifests
from skyshard.deploy.render import render
from skyshard.deploy.spec import UID, from_dict
from skyshard.deploy.workloads import loader_pod, rebalance_job

REPO = Path(__file__).resolve().parents[2]
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def all_objects() -> list[dict]:
    pvc = from_dict("sky", "astro", {"authSecretRef": {"name": "a", "tokenKey": "t"}})
    s3 = from_dict("sky", "astro", {"authSecretRef": {"name": "a"}, "storage": {
        "s3": {"url": "s3://b/c", "secretRef": {"name": "s"}}}})
    return (render(pvc) + render(s3)
            + [loader_pod(pvc), rebalance_job(pvc, 1, "workers 2 -> 3"),
               rebalance_job(pvc, 2, "workers 4 -> 2", drain_from=4)]
            + operator_manifests())


def pod_specs() -> list[tuple[str, dict]]:
    out = []
    for obj in all_objects():
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Pod":
            out.append((name, obj["spec"]))
        elif "template" in obj.get("spec", {}):
            out.append((name, obj["spec"]["template"]["spec"]))
    return out


PODS = pod_specs()


def test_every_workload_kind_is_covered():
    kinds = {name.split("/")[0] for name, _ in PODS}
    assert kinds == {"Deployment", "StatefulSet", "Pod", "Job"}
    assert len(PODS) >= 9


@pytest.mark.parametrize("name,pod", PODS, ids=[n for n, _ in PODS])
def test_pod_passes_the_restricted_profile(name, pod):
    ctx = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert not pod.get(host) or host == "hostUsers", f"{name}: {host}"
    assert ctx.get("runAsUser", UID) != 0
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, f"{name}: volume {vol['name']} is {kinds}"
    containers = (pod.get("initContainers") or []) + pod["containers"]
    for c in containers:
        sc = c.get("securityContext") or {}
        where = f"{name}/{c['name']}"
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("privileged") is not True, where
        assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), where
        assert set((sc.get("capabilities") or {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where
        assert sc.get("runAsNonRoot", ctx.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", ctx.get("runAsUser")) not in (0,), where
        seccomp = (sc.get("seccompProfile") or ctx.get("seccompProfile") or {}).get("type")
        assert seccomp in ("RuntimeDefault", "Localhost"), where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert all("hostPort" not in p for p in c.get("ports") or []), where
        assert all(not m.get("subPath") for m in c.get("volumeMounts") or []), where


@pytest.mark.parametrize("name,pod", PODS, ids=[n for n, _ in PODS])
def test_tmp_is_a_writable_empty_dir(name, pod):
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "/tmp" in mounts and not mounts["/tmp"].get("readOnly"), c["name"]
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert {"name": "HOME", "value": "/tmp"} in c["env"]


def test_only_the_operator_gets_an_api_token():
    for name, pod in PODS:
        expected = name == "Deployment/skyshard-operator"
        assert pod["automountServiceAccountToken"] is expected, name


def test_rebalance_job_pod_fields():
    """The Job's pod by name: restricted contexts, no token, no Secret, never restarted in
    place (the Job retries with new pods), a writable catalog mount and /tmp only."""
    pvc = from_dict("sky", "astro", {"authSecretRef": {"name": "a"}})
    drain = rebalance_job(pvc, 7, "workers 3 -> 2", drain_from=3)["spec"]["template"]["spec"]
    pod = rebalance_job(pvc, 7, "workers 1 -> 2")["spec"]["template"]["spec"]
    assert {k: v for k, v in drain.items() if k != "containers"} == \
        {k: v for k, v in pod.items() if k != "containers"}
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": UID,
                                      "runAsGroup": UID, "fsGroup": UID,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    (main,) = pod["containers"]
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert {m["mountPath"]: m.get("readOnly", False) for m in main["volumeMounts"]} == \
        {"/tmp": False, "/data/catalog": False}
    assert not any("valueFrom" in e for e in main["env"])
    assert "secret" not in {k for v in pod["volumes"] for k in v}


def test_the_image_runs_as_the_same_numeric_user():
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users == [f"{UID}:{UID}"]
    assert re.search(r"^HEALTHCHECK .*meta/version|SKYSHARD_HEALTH_URL=\S+/meta/version",
                     dockerfile, re.MULTILINE)
