"""The ``SkyShard`` resource's spec as typed values: defaults, validation, names, labels.

The same rules as the CRD's schema and CEL validations, so that ``skyshard deploy render``
(no API server) refuses what the API server would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qs, urlsplit

from skyshard import __version__

GROUP = "skyshard.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SkyShard"
PLURAL = "skyshards"

DEFAULT_IMAGE = f"skyshard:{__version__}"
MANAGED_BY = "skyshard"
UID = 10001

MYSQL_PORT = 4040
HTTP_PORT = 8080
SCHEDULER_PORT = 8786
SCHEDULER_HTTP_PORT = 8787
WORKER_PORT = 8788
WORKER_HTTP_PORT = 8790

CATALOG_DIR = "/data/catalog"
CONFIG_DIR = "/etc/skyshard"
SCRATCH_DIR = "/var/lib/skyshard/scratch"

COMPONENTS = ("frontend", "scheduler", "workers")
DEFAULT_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "frontend": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "scheduler": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    "workers": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
}
ACCESS_MODES = ("ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


class SpecError(ValueError):
    """A spec the API server would refuse, or that cannot be deployed."""


@dataclass(frozen=True)
class PvcStorage:
    """The catalog on one shared PersistentVolumeClaim; each worker gets a PVC of its own
    (scratch: DuckDB spill, and its replicas of the catalog's partitions)."""

    size: str = "10Gi"
    storage_class: str | None = None
    access_mode: str = "ReadWriteMany"
    scratch_size: str = "10Gi"
    retain_on_delete: bool = False


@dataclass(frozen=True)
class S3Storage:
    """The catalog copied from an S3 URL into each pod at start (pyarrow's S3 client)."""

    url: str
    secret_name: str
    cidr: str = "0.0.0.0/0"
    cache_size: str = "20Gi"

    @property
    def port(self) -> int:
        """The TCP port S3 is reached on: ``endpoint_override``'s, else 443 (80 for
        ``scheme=http``)."""
        query = parse_qs(urlsplit(self.url).query)
        endpoint = (query.get("endpoint_override") or [""])[0]
        scheme = (query.get("scheme") or ["https"])[0]
        if endpoint:
            parts = urlsplit(endpoint if "://" in endpoint else f"{scheme}://{endpoint}")
            if parts.port:
                return parts.port
            scheme = parts.scheme or scheme
        return 80 if scheme == "http" else 443


@dataclass(frozen=True)
class AuthRef:
    """A Secret holding ``NAME:PASSWORD`` (key ``user_key``) and maybe a bearer token."""

    name: str
    user_key: str = "user"
    token_key: str | None = None


@dataclass(frozen=True)
class SkyShardSpec:
    name: str
    namespace: str
    auth: AuthRef
    storage: PvcStorage | S3Storage = field(default_factory=PvcStorage)
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    workers: int = 2
    replication_factor: int = 1
    network_policies: bool = True
    database: str | None = None
    service_type: str = "ClusterIP"
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: DEFAULT_RESOURCES)
    limits: Mapping[str, float | int] = field(default_factory=dict)

    @property
    def names(self) -> Names:
        return Names(self.name)

    @property
    def is_s3(self) -> bool:
        return isinstance(self.storage, S3Storage)

    @property
    def scheduler_address(self) -> str:
        return f"tcp://{self.names.scheduler}:{SCHEDULER_PORT}"

    @property
    def sql_database(self) -> str:
        """The database name clients ``USE``."""
        return self.database or self.name.replace("-", "_")

    @property
    def version(self) -> str:
        """The image's tag (or digest), shown as the resource's version."""
        image = self.image
        if "@" in image:
            return image.rsplit("@", 1)[1][:19]
        last = image.rsplit("/", 1)[-1]
        return last.rsplit(":", 1)[1] if ":" in last else "latest"

    def labels(self, component: str | None = None) -> dict[str, str]:
        out = {"app.kubernetes.io/name": "skyshard", "app.kubernetes.io/instance": self.name,
               "app.kubernetes.io/managed-by": MANAGED_BY}
        if component:
            out["app.kubernetes.io/component"] = component
        return out

    def selector(self, component: str | None = None) -> dict[str, str]:
        """Labels that select this deployment's pods (of one component)."""
        out = {"app.kubernetes.io/name": "skyshard", "app.kubernetes.io/instance": self.name}
        if component:
            out["app.kubernetes.io/component"] = component
        return out


@dataclass(frozen=True)
class Names:
    """Object names of one deployment; the front end's Service is the resource's name."""

    base: str

    @property
    def service(self) -> str:
        return self.base

    @property
    def frontend(self) -> str:
        return f"{self.base}-frontend"

    @property
    def scheduler(self) -> str:
        return f"{self.base}-scheduler"

    @property
    def workers(self) -> str:
        return f"{self.base}-worker"

    @property
    def workers_service(self) -> str:
        return f"{self.base}-workers"

    @property
    def config(self) -> str:
        return f"{self.base}-config"

    @property
    def catalog(self) -> str:
        return f"{self.base}-catalog"

    @property
    def loader(self) -> str:
        return f"{self.base}-loader"


def from_resource(body: Mapping[str, Any]) -> SkyShardSpec:
    """The spec of a ``SkyShard`` object (as the API server returns it)."""
    meta = body.get("metadata") or {}
    return from_dict(meta.get("name", ""), meta.get("namespace") or "default",
                     body.get("spec") or {})


def from_dict(name: str, namespace: str, spec: Mapping[str, Any]) -> SkyShardSpec:
    """Validate ``spec`` (the CRD's camelCase fields) and fill in the defaults."""
    if not _DNS_LABEL.match(name):
        raise SpecError(f"name {name!r}: lowercase letters, digits and '-', at most 40 "
                        "characters (object names are derived from it)")
    workers = _int(spec, "workers", 2, minimum=1)
    replication = _int(spec, "replicationFactor", 1, minimum=1)
    if replication > workers:
        raise SpecError(f"replicationFactor {replication} exceeds workers {workers}")
    database = spec.get("database")
    if database is not None and not _SQL_NAME.match(str(database)):
        raise SpecError(f"database {database!r} is not a plain SQL name")
    auth = spec.get("authSecretRef")
    if not isinstance(auth, Mapping) or not auth.get("name"):
        raise SpecError("authSecretRef.name is required (a Secret with key 'user': "
                        "NAME:PASSWORD)")
    return SkyShardSpec(
        name=name, namespace=namespace,
        auth=AuthRef(str(auth["name"]), str(auth.get("userKey", "user")),
                     auth.get("tokenKey")),
        storage=_storage({"pvc": {}} if spec.get("storage") is None else spec["storage"]),
        image=str(spec.get("image") or DEFAULT_IMAGE),
        image_pull_policy=_choice(spec, "imagePullPolicy", "IfNotPresent", PULL_POLICIES),
        workers=workers, replication_factor=replication,
        network_policies=bool(spec.get("networkPolicies", True)),
        database=database,
        service_type=_choice(spec.get("service") or {}, "type", "ClusterIP", SERVICE_TYPES),
        resources=_resources(spec.get("resources") or {}),
        limits=_limits(spec.get("limits") or {}),
    )


def _storage(doc: Mapping[str, Any]) -> PvcStorage | S3Storage:
    if ("pvc" in doc) == ("s3" in doc):
        raise SpecError("give exactly one of storage.pvc and storage.s3")
    if "pvc" in doc:
        pvc = doc["pvc"] or {}
        out = PvcStorage(size=str(pvc.get("size", "10Gi")),
                         storage_class=pvc.get("storageClassName"),
                         access_mode=_choice(pvc, "accessMode", "ReadWriteMany", ACCESS_MODES),
                         scratch_size=str(pvc.get("scratchSize", "10Gi")),
                         retain_on_delete=bool(pvc.get("retainOnDelete", False)))
        _quantity("storage.pvc.size", out.size)
        _quantity("storage.pvc.scratchSize", out.scratch_size)
        return out
    s3 = doc["s3"] or {}
    url = str(s3.get("url", ""))
    if not url.startswith("s3://"):
        raise SpecError(f"storage.s3.url {url!r} must start with s3://")
    secret = (s3.get("secretRef") or {}).get("name")
    if not secret:
        raise SpecError("storage.s3.secretRef.name is required (keys AWS_ACCESS_KEY_ID, "
                        "AWS_SECRET_ACCESS_KEY)")
    out3 = S3Storage(url=url, secret_name=str(secret), cidr=str(s3.get("cidr", "0.0.0.0/0")),
                     cache_size=str(s3.get("cacheSize", "20Gi")))
    _quantity("storage.s3.cacheSize", out3.cache_size)
    return out3


def _resources(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    unknown = sorted(set(doc) - set(COMPONENTS))
    if unknown:
        raise SpecError(f"resources: unknown component(s) {', '.join(unknown)}")
    return {c: doc.get(c) or DEFAULT_RESOURCES[c] for c in COMPONENTS}


def _limits(doc: Mapping[str, Any]) -> dict[str, float | int | bool]:
    from skyshard.service.config import Limits

    kinds = {f.name: type(getattr(Limits(), f.name)) for f in fields(Limits)}
    out: dict[str, float | int | bool] = {}
    for key, value in doc.items():
        if key not in kinds:
            raise SpecError(f"limits.{key}: unknown (known: {', '.join(sorted(kinds))})")
        if kinds[key] is bool:
            if not isinstance(value, bool):
                raise SpecError(f"limits.{key}: {value!r} is not true or false")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SpecError(f"limits.{key}: {value!r} is not a non-negative number")
        out[key] = kinds[key](value)
    return out


def _int(doc: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{key}: {value!r} is not an integer >= {minimum}")
    return value


def _choice(doc: Mapping[str, Any], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = str(doc.get(key, default))
    if value not in allowed:
        raise SpecError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _quantity(where: str, value: str) -> None:
    if not _QUANTITY.match(value):
        raise SpecError(f"{where}: {value!r} is not a Kubernetes quantity (e.g. 10Gi)")
