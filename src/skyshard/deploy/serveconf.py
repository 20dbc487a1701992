"""The front end's ``skyshard serve`` configuration file, kept in a ConfigMap.

It holds no secret: the user and token come from the Secret named by ``authSecretRef``
as ``--user``/``--token`` arguments (``$(VAR)`` expanded by the kubelet from env
variables filled from the Secret).
"""

from __future__ import annotations

import hashlib
import json

from skyshard.deploy.spec import CATALOG_DIR, HTTP_PORT, MYSQL_PORT, SkyShardSpec

CONFIG_FILE = "serve.toml"
RESULTS_DIR = "/var/lib/skyshard/results"  # an emptyDir of its own (large results)
RESULTS_SIZE = "5Gi"


def serve_toml(spec: SkyShardSpec) -> str:
    """The TOML ``skyshard serve --config`` reads (keys of ``skyshard.service.config``)."""
    top = {"catalog": CATALOG_DIR, "host": "0.0.0.0", "mysql_port": MYSQL_PORT,
           "http_port": HTTP_PORT, "database": spec.sql_database, "results_dir": RESULTS_DIR,
           "allow_anonymous": False}
    lines = [f"{k} = {_value(v)}" for k, v in top.items()]
    # Scans go to the Dask workers; id lookups and cones stay in the front end, which
    # mounts the same catalog. The workers read the catalog volume (or their copy of
    # the S3 catalog) as shared storage.
    cluster = {"scheduler": spec.scheduler_address, "placement": "shared",
               "local_interactive": True}
    lines += ["", "[cluster]"] + [f"{k} = {_value(v)}" for k, v in cluster.items()]
    if spec.limits:
        lines += ["", "[limits]"] + [f"{k} = {_value(v)}" for k, v in sorted(spec.limits.items())]
    return "\n".join(lines) + "\n"


def config_hash(text: str) -> str:
    """A short digest put on the pod template, so a config change rolls the front end."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string
