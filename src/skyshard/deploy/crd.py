"""The ``SkyShard`` CustomResourceDefinition (``skyshard.io/v1alpha1``).

A structural OpenAPI schema with defaults, CEL rules for what spans fields (one storage
kind; ``replicationFactor <= workers``), the status and scale subresources
(``kubectl scale skyshard/NAME --replicas N`` sets ``spec.workers``), and printer columns.
"""

from __future__ import annotations

from typing import Any

from skyshard.deploy.spec import (
    ACCESS_MODES,
    GROUP,
    KIND,
    PLURAL,
    PULL_POLICIES,
    SERVICE_TYPES,
    VERSION,
)

_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}],
             "x-kubernetes-int-or-string": True}
_QUANTITY_STRING = {"type": "string",
                    "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 253}


def _obj(properties: dict[str, Any], required: list[str] | None = None,
         description: str | None = None, rules: list[tuple[str, str]] | None = None,
         ) -> dict[str, Any]:
    """An object node; ``rules`` are CEL (rule, message) pairs."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    if rules:
        out["x-kubernetes-validations"] = [{"rule": r, "message": m} for r, m in rules]
    return out


def _str(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _resources(component: str) -> dict[str, Any]:
    quantities = {"type": "object", "additionalProperties": _QUANTITY}
    return _obj({"requests": quantities, "limits": quantities},
                description=f"CPU and memory of the {component} (a ResourceRequirements)")


def _limits() -> dict[str, Any]:
    number = {"type": "number", "minimum": 0}
    integer = {"type": "integer", "minimum": 0}
    return _obj({"timeout_s": number, "max_rows": integer, "max_result_bytes": integer,
                 "max_concurrent": integer, "max_queued": integer,
                 "max_scans": {**integer, "minimum": 1}, "shared_scans": {"type": "boolean"},
                 "memory_results_bytes": integer, "result_ttl_s": number,
                 "history": integer},
                description="the [limits] of skyshard serve's configuration file")


def spec_schema() -> dict[str, Any]:
    pvc = _obj({
        "size": {**_QUANTITY_STRING, "default": "10Gi", "description": "catalog volume size"},
        "storageClassName": _str("storage class of the catalog and scratch volumes"),
        "accessMode": {"type": "string", "enum": list(ACCESS_MODES), "default": "ReadWriteMany",
                       "description": "ReadWriteMany unless every pod runs on one node"},
        "scratchSize": {**_QUANTITY_STRING, "default": "10Gi",
                        "description": "per-worker volume: DuckDB spill and the worker's "
                                       "replicas"},
        "retainOnDelete": {"type": "boolean", "default": False,
                           "description": "keep the catalog volume when the resource goes"},
    }, description="the catalog on a shared PersistentVolumeClaim, replicas of its "
                   "partitions on a volume per worker")
    s3 = _obj({
        "url": _str("s3://bucket/prefix[?endpoint_override=host:port&scheme=http]",
                    pattern="^s3://.+"),
        "secretRef": _obj({"name": _NAME}, ["name"],
                          "Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "cidr": _str("addresses S3 is reached at (egress policy)", default="0.0.0.0/0"),
        "cacheSize": {**_QUANTITY_STRING, "default": "20Gi",
                      "description": "per-pod space for the copied catalog"},
    }, ["url", "secretRef"], "the catalog copied from S3 into each pod at start")
    storage = _obj({"pvc": pvc, "s3": s3}, description="where the catalog lives",
                   rules=[("has(self.pvc) != has(self.s3)",
                           "give exactly one of storage.pvc and storage.s3")])
    return _obj({
        "image": _str("the skyshard image (every role)", minLength=1),
        "imagePullPolicy": {"type": "string", "enum": list(PULL_POLICIES),
                            "default": "IfNotPresent"},
        "workers": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 2,
                    "description": "Dask workers"},
        "replicationFactor": {"type": "integer", "minimum": 1, "default": 1,
                              "description": "pvc storage: copies of each partition on the "
                                             "workers' own volumes, placed by the rebalance "
                                             "Job; S3: every pod has the whole catalog"},
        "database": _str("database name clients USE (default: the resource name)",
                         pattern="^[A-Za-z_][A-Za-z0-9_]*$"),
        "storage": storage,
        "resources": _obj({c: _resources(c) for c in ("frontend", "scheduler", "workers")}),
        "authSecretRef": _obj({
            "name": _NAME,
            "userKey": _str("key holding NAME:PASSWORD", default="user"),
            "tokenKey": _str("key holding an HTTP bearer token (optional)"),
        }, ["name"], "Secret with the front end's user (never inline)"),
        "networkPolicies": {"type": "boolean", "default": True,
                            "description": "default-deny plus the needed flows"},
        "service": _obj({"type": {"type": "string", "enum": list(SERVICE_TYPES),
                                  "default": "ClusterIP"}},
                        description="the front end's Service"),
        "limits": _limits(),
    }, ["image", "workers", "storage", "authSecretRef"], "a skyshard deployment",
        rules=[("!has(self.replicationFactor) || self.replicationFactor <= self.workers",
                "replicationFactor cannot exceed workers")])


def status_schema() -> dict[str, Any]:
    condition = _obj({
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer"},
    }, ["type", "status"])
    return _obj({
        "conditions": {"type": "array", "items": condition,
                       "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        "readyWorkers": {"type": "integer"},
        "workers": {"type": "integer"},
        "workerSelector": {"type": "string"},
        "version": {"type": "string"},
        "observedGeneration": {"type": "integer"},
        "rebalance": {"type": "string",
                      "description": "the last replica rebalance step (pvc storage: its Job "
                                     "and state; S3: why none is needed)"},
    })


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    columns = [
        {"name": "Workers", "type": "integer", "jsonPath": ".spec.workers"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyWorkers"},
        {"name": "Available", "type": "string",
         "jsonPath": '.status.conditions[?(@.type=="Available")].status'},
        {"name": "Version", "type": "string", "jsonPath": ".status.version"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    schema = _obj({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                   "metadata": {"type": "object"}, "spec": spec_schema(),
                   "status": status_schema()}, ["spec"])
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}",
                     "labels": {"app.kubernetes.io/name": "skyshard"}},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": KIND.lower(), "shortNames": ["sky"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.workers",
                    "statusReplicasPath": ".status.workers",
                    "labelSelectorPath": ".status.workerSelector"}},
                "additionalPrinterColumns": columns,
            }],
        },
    }

