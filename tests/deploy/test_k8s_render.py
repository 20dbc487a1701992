"""The rendered manifests: valid against the Kubernetes API schemas (offline, strict), wired
together (ports, names, paths), every command line accepted by its program, no secret
inline."""

from __future__ import annotations

import re

import pytest

from skyshard.deploy.install import operator_manifests
from skyshard.deploy.render import render
from skyshard.deploy.serveconf import CONFIG_FILE
from skyshard.deploy.spec import from_dict
from skyshard.deploy.workloads import loader_pod, rebalance_job

AUTH = {"authSecretRef": {"name": "sky-auth", "tokenKey": "token"}}
S3 = {"s3": {"url": "s3://bucket/cat?endpoint_override=minio:9000&scheme=http",
             "secretRef": {"name": "sky-s3"}}}


def pvc_spec(**extra):
    return from_dict("sky", "astro", {**AUTH, "workers": 3, **extra})


def s3_spec():
    return from_dict("sky", "astro", {**AUTH, "storage": S3})


def by_name(objs: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objs}


def pod_of(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def every_object() -> list[dict]:
    spec = pvc_spec()
    return (render(spec) + render(s3_spec()) + render(pvc_spec(networkPolicies=False))
            + [loader_pod(spec), rebalance_job(spec, 2, "workers 2 -> 3"),
               rebalance_job(spec, 3, "requested", request="2026-01-01"),
               rebalance_job(spec, 4, "workers 5 -> 3", drain_from=5)]
            + operator_manifests())


def test_manifests_validate_against_the_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate")
    objs = every_object()
    for version in ("1.30", kv.latest_version()):
        for obj in objs:
            kv.validate(obj, version, strict=True)


def test_a_broken_manifest_is_caught():
    kv = pytest.importorskip("kubernetes_validate")
    sts = by_name(render(pvc_spec()))["StatefulSet/sky-worker"]
    sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "dask"
    with pytest.raises(kv.ValidationError):
        kv.validate(sts, "1.30", strict=True)


def test_pvc_mode_wiring():
    spec = pvc_spec()
    objs = by_name(render(spec))
    claim = objs["PersistentVolumeClaim/sky-catalog"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    sts = objs["StatefulSet/sky-worker"]
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "sky-workers"
    (template,) = sts["spec"]["volumeClaimTemplates"]
    assert template["metadata"]["name"] == "scratch"
    assert objs["Service/sky-workers"]["spec"]["clusterIP"] == "None"
    front = objs["Service/sky"]["spec"]
    assert [(p["name"], p["port"]) for p in front["ports"]] == [("mysql", 4040), ("http", 8080)]
    assert objs["Service/sky-scheduler"]["spec"]["ports"][0]["port"] == 8786
    for name in ("Deployment/sky-frontend", "StatefulSet/sky-worker"):
        pod = pod_of(objs[name])
        (main,) = pod["containers"]
        mount = next(m for m in main["volumeMounts"] if m["name"] == "catalog")
        assert mount == {"name": "catalog", "mountPath": "/data/catalog", "readOnly": True}
        volume = next(v for v in pod["volumes"] if v["name"] == "catalog")
        assert volume["persistentVolumeClaim"]["claimName"] == "sky-catalog"
    loader = loader_pod(spec)
    assert {"name": "catalog", "mountPath": "/data/catalog", "readOnly": False} in \
        loader["spec"]["containers"][0]["volumeMounts"]


def test_s3_mode_copies_the_catalog_with_credentials_only_in_the_init_container():
    objs = by_name(render(s3_spec()))
    assert "PersistentVolumeClaim/sky-catalog" not in objs
    assert "volumeClaimTemplates" not in objs["StatefulSet/sky-worker"]["spec"]
    for name in ("Deployment/sky-frontend", "StatefulSet/sky-worker"):
        pod = pod_of(objs[name])
        fetch = pod["initContainers"][0]
        assert fetch["command"][:3] == ["skyshard", "deploy", "fetch"]
        for other in pod["initContainers"][1:]:  # the front end also waits for the scheduler
            assert other["name"] == "wait-for-scheduler"
            assert not any(e["name"].startswith("AWS_") for e in other["env"])
        assert fetch["command"][3] == S3["s3"]["url"]
        creds = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in fetch["env"]
                 if "valueFrom" in e}
        assert creds["AWS_ACCESS_KEY_ID"] == creds["AWS_SECRET_ACCESS_KEY"] == "sky-s3"
        for c in pod["containers"]:
            assert not any(e["name"].startswith("AWS_") for e in c["env"])
        assert next(v for v in pod["volumes"] if v["name"] == "catalog")["emptyDir"]


def test_front_end_points_at_the_scheduler_and_the_workers_too():
    objs = by_name(render(pvc_spec()))
    (front,) = pod_of(objs["Deployment/sky-frontend"])["containers"]
    env = {e["name"]: e.get("value") for e in front["env"]}
    assert env["SKYSHARD_SCHEDULER"] == "tcp://sky-scheduler:8786"
    waits = [c for c in pod_of(objs["Deployment/sky-frontend"])["initContainers"]
             if c["name"] == "wait-for-scheduler"]
    assert len(waits) == 1 and "('sky-scheduler', 8786)" in waits[0]["command"][-1]
    (worker,) = pod_of(objs["StatefulSet/sky-worker"])["containers"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://sky-scheduler:8786"]


def test_secrets_are_referenced_never_inline():
    for obj in every_object():
        assert obj["kind"] != "Secret"
        for c in _containers(obj):
            for e in c.get("env", []):
                if re.search(r"USER|TOKEN|SECRET|PASSWORD|KEY", e["name"]) and \
                        e["name"] != "AWS_DEFAULT_REGION":
                    assert "secretKeyRef" in e.get("valueFrom", {}), (c["name"], e)
    toml = by_name(render(pvc_spec()))["ConfigMap/sky-config"]["data"][CONFIG_FILE]
    assert "[users]" not in toml and "[tokens]" not in toml


def test_every_variable_a_command_uses_is_defined():
    """The kubelet expands $(VAR) only for variables the container defines; anything
    else would reach the program literally."""
    for obj in every_object():
        for c in _containers(obj):
            defined = {e["name"] for e in c.get("env", [])}
            used = set(re.findall(r"\$\(([A-Z_]+)\)", " ".join(c["command"])))
            assert used <= defined, (obj["metadata"]["name"], c["name"], used - defined)


def test_serve_config_is_accepted_by_skyshard_serve(tmp_path):
    from skyshard.service import config

    spec = pvc_spec(database="lsst", limits={"timeout_s": 60, "max_rows": 10,
                                             "shared_scans": True, "max_scans": 4})
    path = tmp_path / CONFIG_FILE
    path.write_text(by_name(render(spec))["ConfigMap/sky-config"]["data"][CONFIG_FILE])
    cfg = config.load(path, users=["alice:secret"])
    assert (str(cfg.catalog), cfg.host, cfg.mysql_port, cfg.http_port) == \
        ("/data/catalog", "0.0.0.0", 4040, 8080)
    assert cfg.database == "lsst" and cfg.limits.timeout_s == 60.0 and cfg.limits.max_rows == 10
    assert cfg.limits.shared_scans is True and cfg.limits.max_scans == 4
    assert not cfg.credentials.allow_anonymous
    # scans go to the Dask workers, which read the same catalog volume
    assert (cfg.cluster.scheduler, cfg.cluster.placement, cfg.cluster.local_interactive) == \
        ("tcp://sky-scheduler:8786", "shared", True)


@pytest.mark.parametrize("limits, message", [
    ({"shared_scans": "yes"}, "limits.shared_scans: 'yes' is not true or false"),
    ({"max_rows": True}, "limits.max_rows: True is not a non-negative number"),
    ({"max_rowz": 1}, "limits.max_rowz: unknown"),
])
def test_bad_limits_are_refused(limits, message):
    from skyshard.deploy.spec import SpecError

    with pytest.raises(SpecError, match=re.escape(message)):
        pvc_spec(limits=limits)


def test_command_lines_are_accepted_by_their_programs(tmp_path):
    """Parse (not run) each rendered command with the program's own click command."""
    from distributed.cli import dask_scheduler, dask_worker

    from skyshard import cli as skyshard_cli

    config_file = tmp_path / "serve.toml"
    config_file.write_text("")
    programs = {("dask", "scheduler"): dask_scheduler.main, ("dask", "worker"): dask_worker.main,
                ("skyshard",): skyshard_cli.cli}
    try:
        from kopf import cli as kopf_cli
    except ImportError:  # the operator's command is checked where kopf is installed
        kopf_cli = None
    if kopf_cli is not None:
        programs[("kopf",)] = kopf_cli.main
    seen = set()
    for obj in every_object():
        for c in _containers(obj):
            cmd = [a.replace("$(SKYSHARD_USER)", "alice:pw").replace("$(SKYSHARD_TOKEN)", "t")
                   .replace("$(POD_NAME)", "sky-worker-0")
                   .replace("/etc/skyshard/serve.toml", str(config_file)) for a in c["command"]]
            if cmd[:2] == ["sh", "-c"] and len(cmd) > 4:  # sh -c 'guard; exec "$@"' $0 ARGV
                cmd = cmd[4:]
            for prefix, program in programs.items():
                if tuple(cmd[:len(prefix)]) == prefix:
                    args = [str(tmp_path) if a == "/data/catalog" else a
                            for a in cmd[len(prefix):]]
                    _parse(program, " ".join(prefix), args)
                    seen.add(" ".join(cmd[:2]))
    expected = {"dask scheduler", "dask worker", "skyshard serve", "skyshard deploy",
                "skyshard replicas"}
    assert expected | ({"kopf run"} if ("kopf",) in programs else set()) <= seen


def test_worker_threads_follow_the_cpu_resources():
    from skyshard.deploy.workloads import worker_threads

    def threads(cpu):
        return worker_threads(pvc_spec(resources={"workers": {"limits": {"cpu": cpu}}}))

    # at least 4 tasks at once (scans meet in a worker's shared scans; cones do not
    # wait behind them), more on bigger workers
    assert (threads("4"), threads("2500m"), threads("500m"), threads(8)) == (4, 4, 4, 8)


def _parse(command, name: str, args: list[str], parent=None) -> None:
    """Parse ``args`` as click would, down through groups (raises on a bad option)."""
    import click

    ctx = command.make_context(name, list(args), parent=parent)
    if isinstance(command, click.Group):
        protected = vars(ctx).get("_protected_args")
        if protected is None:  # click < 8.2
            protected = ctx.protected_args
        rest = list(protected) + list(ctx.args)
        sub_name, sub, sub_args = command.resolve_command(ctx, rest)
        _parse(sub, sub_name, sub_args, parent=ctx)


def _containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    pod = spec if obj["kind"] == "Pod" else spec.get("template", {}).get("spec")
    if not pod:
        return []
    return (pod.get("initContainers") or []) + pod["containers"]
