"""The CRD: a valid apiextensions/v1 object with a structural schema; the example
resource validates against it; the checked-in YAML files are what the code renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyshard.deploy.crd import crd
from skyshard.deploy.install import operator_manifests
from skyshard.deploy.render import to_yaml
from skyshard.deploy.spec import DEFAULT_IMAGE, KIND, from_resource

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict, path: str = ""):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    """Every node has a type (or is int-or-string); no properties beside
    additionalProperties; anyOf only under int-or-string; objects say what they hold
    (the root's metadata is the API server's)."""
    for path, node in _walk(SCHEMA):
        if node.get("x-kubernetes-int-or-string"):
            assert all(set(alt) == {"type"} for alt in node.get("anyOf", [])), path
            continue
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "anyOf" not in node and "oneOf" not in node, path
        if node["type"] == "object" and path not in ("", ".metadata"):
            assert "properties" in node or "additionalProperties" in node or \
                node.get("x-kubernetes-preserve-unknown-fields"), path


def test_defaults_validate_against_their_own_schema():
    import jsonschema

    for path, node in _walk(SCHEMA):
        if "default" in node:
            jsonschema.validate(node["default"], {k: v for k, v in node.items()
                                                  if k != "default"})


def test_printer_columns_and_scale_paths_exist_in_the_schema():
    version = crd()["spec"]["versions"][0]
    paths = {p for p, _ in _walk(SCHEMA)}
    for col in version["additionalPrinterColumns"]:
        field = col["jsonPath"].split("[")[0]
        assert field in paths or field == ".metadata.creationTimestamp", col
    scale = version["subresources"]["scale"]
    for key in ("specReplicasPath", "statusReplicasPath", "labelSelectorPath"):
        assert scale[key] in paths
    assert version["subresources"]["status"] == {}
    names = crd()["spec"]["names"]
    assert names["kind"] == KIND and crd()["metadata"]["name"] == "skyshards.skyshard.io"


def test_crd_validates_against_the_kubernetes_schema():
    kv = pytest.importorskip("kubernetes_validate")
    kv.validate(crd(), "1.30", strict=True)
    kv.validate(crd(), kv.latest_version(), strict=True)


def example_resource() -> dict:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "examples" / "skyshard.yaml").read_text()))
    (found,) = [d for d in docs if d["kind"] == KIND]
    return found


def test_example_resource_validates_and_parses():
    import jsonschema

    example = example_resource()
    jsonschema.validate(example, SCHEMA)
    spec = from_resource(example)
    assert spec.image == DEFAULT_IMAGE  # the tag the docs tell to build
    assert spec.workers == 2 and spec.auth.name == "skyshard-auth"


@pytest.mark.parametrize("change,match", [
    ({"workers": 0}, "minimum"),
    ({"storage": {"s3": {"url": "http://x"}}}, "does not match|required"),
    ({"authSecretRef": {}}, "required"),
    ({"limits": {"timeout_s": -1}}, "minimum"),
])
def test_schema_refuses_bad_specs(change, match):
    import jsonschema

    bad = example_resource()
    bad["spec"] = {**bad["spec"], **change}
    with pytest.raises(jsonschema.ValidationError, match=match):
        jsonschema.validate(bad, SCHEMA)


def test_cel_rules_are_mirrored_in_python():
    from skyshard.deploy.spec import SpecError, from_dict

    rules = [r["rule"] for _, node in _walk(SCHEMA)
             for r in node.get("x-kubernetes-validations", [])]
    assert rules == ["!has(self.replicationFactor) || self.replicationFactor <= self.workers",
                     "has(self.pvc) != has(self.s3)"]
    auth = {"authSecretRef": {"name": "a"}}
    with pytest.raises(SpecError):
        from_dict("x", "y", {**auth, "workers": 1, "replicationFactor": 2})
    with pytest.raises(SpecError):
        from_dict("x", "y", {**auth, "storage": {"pvc": {}, "s3": {"url": "s3://b"}}})


def _without_comments(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


def test_checked_in_manifests_are_the_rendered_ones():
    """deploy/crd.yaml and deploy/operator.yaml are generated: regenerate them with
    `skyshard deploy crd` and `skyshard deploy operator` after a change."""
    assert _without_comments((REPO / "deploy" / "crd.yaml").read_text()) == to_yaml([crd()])
    assert _without_comments((REPO / "deploy" / "operator.yaml").read_text()) == \
        to_yaml(operator_manifests())
