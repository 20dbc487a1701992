"""Pieces of pod specs: the Pod Security "restricted" contexts, probes, volumes, env.

Every container runs as the image's non-root user with a read-only root file system; what
must be written goes to an ``emptyDir`` (``/tmp``) or a volume.
"""

from __future__ import annotations

from typing import Any

from skyshard.deploy.spec import UID

TMP_DIR = "/tmp"


def pod_security() -> dict[str, Any]:
    """The pod-level securityContext (restricted profile; fsGroup makes volumes writable)."""
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    """The container-level securityContext (restricted profile, read-only root)."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def container(name: str, image: str, pull_policy: str, command: list[str], *,
              env: list[dict] | None = None, mounts: list[dict] | None = None,
              resources: dict | None = None, working_dir: str = TMP_DIR,
              **extra: Any) -> dict[str, Any]:
    """A container with the restricted securityContext, ``HOME=/tmp`` and no bytecode
    writes."""
    base_env = [{"name": "HOME", "value": TMP_DIR},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}]
    out: dict[str, Any] = {"name": name, "image": image, "imagePullPolicy": pull_policy,
                           "command": command, "workingDir": working_dir,
                           "env": base_env + (env or []),
                           "securityContext": container_security(),
                           "volumeMounts": [tmp_mount()] + (mounts or [])}
    if resources:
        out["resources"] = resources
    out.update(extra)
    return out


def pod_spec(containers: list[dict], volumes: list[dict], *,
             init_containers: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    """A pod spec that gets no API token and no service-link variables."""
    out: dict[str, Any] = {"automountServiceAccountToken": False, "enableServiceLinks": False,
                           "securityContext": pod_security()}
    if init_containers:
        out["initContainers"] = init_containers
    out["containers"] = containers
    out["volumes"] = [tmp_volume()] + volumes
    out.update(extra)
    return out


def tmp_volume(size: str = "1Gi") -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {"sizeLimit": size}}


def tmp_mount() -> dict[str, Any]:
    return {"name": "tmp", "mountPath": TMP_DIR}


def http_probe(path: str, port: int | str, *, period: int = 10, failures: int = 3,
               delay: int = 0) -> dict[str, Any]:
    out = {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
           "timeoutSeconds": 5, "failureThreshold": failures}
    if delay:
        out["initialDelaySeconds"] = delay
    return out


def tcp_probe(port: int | str, *, period: int = 10, failures: int = 3) -> dict[str, Any]:
    return {"tcpSocket": {"port": port}, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": failures}


def value_env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    """An env variable read from a Secret (never a value in the manifest)."""
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
