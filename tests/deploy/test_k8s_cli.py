"""``skyshard deploy ...``: render, crd, operator, fetch."""

from __future__ import annotations

import re

import pytest

from skyshard.cli import main

yaml = pytest.importorskip("yaml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_defaults(capsys):
    code, out, _ = run(capsys, "deploy", "render", "--workers", "3", "--name", "lsst",
                       "--namespace", "astro", "--image", "reg.example/skyshard:1.2")
    assert code == 0
    objs = {f"{o['kind']}/{o['metadata']['name']}": o for o in yaml.safe_load_all(out)}
    assert objs["StatefulSet/lsst-worker"]["spec"]["replicas"] == 3
    assert all(o["metadata"]["namespace"] == "astro" for o in objs.values())
    assert "NetworkPolicy/lsst-default-deny" in objs
    assert "ownerReferences" not in objs["Deployment/lsst-frontend"]["metadata"]
    (front,) = objs["Deployment/lsst-frontend"]["spec"]["template"]["spec"]["containers"]
    assert front["image"] == "reg.example/skyshard:1.2"
    assert not re.search(r"[&*]id\d+", out)  # plain YAML, no anchors


def test_render_options(capsys):
    code, out, _ = run(capsys, "deploy", "render", "--workers", "2", "--no-network-policies",
                       "--storage", "s3://bucket/cat", "--replication", "2")
    assert code == 0
    kinds = [o["kind"] for o in yaml.safe_load_all(out)]
    assert "NetworkPolicy" not in kinds and "PersistentVolumeClaim" not in kinds
    code, out, _ = run(capsys, "deploy", "render", "--workers", "1",
                       "--access-mode", "ReadWriteOnce", "--storage-class", "fast")
    objs = list(yaml.safe_load_all(out))
    assert code == 0
    claim = next(o for o in objs if o["kind"] == "PersistentVolumeClaim")
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                             "resources": {"requests": {"storage": "10Gi"}}}


@pytest.mark.parametrize("argv,message", [
    (["--workers", "2", "--replication", "3"], "replicationFactor 3 exceeds workers 2"),
    (["--workers", "2", "--storage", "nfs"], "pvc or an s3:// URL"),
    (["--workers", "2", "--name", "Bad_Name"], "name 'Bad_Name'"),
])
def test_render_refuses(capsys, argv, message):
    code, out, err = run(capsys, "deploy", "render", *argv)
    assert code == 2 and out == "" and message in err


def test_loader(capsys):
    code, out, _ = run(capsys, "deploy", "loader", "--name", "sky", "--namespace", "astro",
                       "--image", "reg/sky:1")
    (pod,) = yaml.safe_load_all(out)
    assert code == 0 and pod["kind"] == "Pod" and pod["metadata"]["name"] == "sky-loader"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "catalog")
    assert volume["persistentVolumeClaim"]["claimName"] == "sky-catalog"
    assert pod["spec"]["containers"][0]["image"] == "reg/sky:1"


def test_crd_and_operator(capsys):
    code, out, _ = run(capsys, "deploy", "crd")
    assert code == 0 and yaml.safe_load(out)["kind"] == "CustomResourceDefinition"
    code, out, _ = run(capsys, "deploy", "operator", "--image", "reg/sky:9", "--namespace", "ops")
    objs = list(yaml.safe_load_all(out))
    deployment = objs[-1]
    assert code == 0 and deployment["metadata"]["namespace"] == "ops"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/sky:9"


def test_fetch_copies_once(capsys, tmp_path):
    src = tmp_path / "remote" / "cat"
    (src / "Object" / "dataset").mkdir(parents=True)
    (src / "skyshard.json").write_text("{}")
    (src / "Object" / "dataset" / "part.parquet").write_bytes(b"PAR1")
    dest = tmp_path / "local"
    code, out, _ = run(capsys, "deploy", "fetch", src.as_uri(), str(dest))
    assert code == 0 and "2 file(s) copied" in out
    assert (dest / "Object" / "dataset" / "part.parquet").read_bytes() == b"PAR1"
    code, out, _ = run(capsys, "deploy", "fetch", src.as_uri(), str(dest))
    assert code == 0 and "already fetched" in out
    code, _, err = run(capsys, "deploy", "fetch", (tmp_path / "empty").as_uri(),
                       str(tmp_path / "x"))
    assert code == 2 and "no files found" in err
