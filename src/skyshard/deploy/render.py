"""Every manifest of one skyshard deployment, as dicts or YAML.

The operator applies exactly these (with owner references added); without the operator,
``skyshard deploy render --workers 4 | kubectl apply -f -`` deploys the same thing.

>>> from skyshard.deploy.spec import from_dict
>>> spec = from_dict("sky", "astro", {"authSecretRef": {"name": "auth"}, "networkPolicies": False})
>>> objs = render(spec)
>>> [f"{o['kind']}/{o['metadata']['name']}" for o in objs][:3]
['ConfigMap/sky-config', 'PersistentVolumeClaim/sky-catalog', 'Service/sky-scheduler']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skyshard.deploy import workloads
from skyshard.deploy.netpol import network_policies
from skyshard.deploy.spec import SkyShardSpec


def render(spec: SkyShardSpec) -> list[dict[str, Any]]:
    """The objects in the order to apply them (policies, claims and services before
    pods)."""
    objs = [workloads.config_map(spec), workloads.catalog_claim(spec),
            workloads.scheduler_service(spec), workloads.scheduler_deployment(spec),
            workloads.workers_service(spec), workloads.worker_statefulset(spec),
            workloads.workers_disruption_budget(spec),
            workloads.frontend_service(spec), workloads.frontend_deployment(spec)]
    return network_policies(spec) + [o for o in objs if o is not None]


def to_yaml(objs: Iterable[dict[str, Any]]) -> str:
    """A multi-document YAML stream, keys in the order written."""
    try:
        import yaml
    except ImportError as exc:
        from skyshard.errors import UserError

        raise UserError("YAML output needs PyYAML: pip install 'skyshard[deploy]'") from exc

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # never &anchors: plain manifests
            return True

    return yaml.dump_all(list(objs), Dumper=Dumper, sort_keys=False, default_flow_style=False)


def key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """(apiVersion, kind, namespace, name): an object's identity."""
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]
