"""The Python models, the CRD schemas and the examples agree."""

import copy
import dataclasses
import re
import typing
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import yaml

from tierwise import API_VERSION
from tierwise.api import SpecError, load_manifests, parse_resource
from tierwise.api.manifests import SPEC_TYPES
from tierwise.api.parsing import json_name, type_hints

ROOT = Path(__file__).resolve().parents[2]
CRDS = {
    yaml.safe_load(p.read_text())["spec"]["names"]["kind"]: yaml.safe_load(p.read_text())
    for p in (ROOT / "crds").glob("*.yaml")
}
INVALID = yaml.safe_load((ROOT / "tests/data/invalid_resources.yaml").read_text())


def schema_of(kind: str) -> dict:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def mismatches(cls: type, schema: dict, path: str) -> list[str]:
    """Every way the dataclass and the schema node disagree."""
    problems = []
    props = schema.get("properties", {})
    fields = {json_name(f): f for f in dataclasses.fields(cls)}
    for name in sorted(set(props) - set(fields)):
        problems.append(f"{path}.{name}: in the CRD, missing from {cls.__name__}")
    for name in sorted(set(fields) - set(props)):
        problems.append(f"{path}.{name}: in {cls.__name__}, missing from the CRD")
    required = {
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if required != set(schema.get("required", [])):
        problems.append(
            f"{path}: required {sorted(required)} in Python, {sorted(schema.get('required', []))} in the CRD"
        )
    hints = type_hints(cls)
    for name in sorted(set(props) & set(fields)):
        problems += type_mismatches(hints[fields[name].name], props[name], f"{path}.{name}")
        problems += default_mismatches(
            fields[name], hints[fields[name].name], props[name], f"{path}.{name}"
        )
    return problems


def type_mismatches(hint, node: dict, path: str) -> list[str]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        hint = args[0]
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        problems = (
            []
            if node.get("type") == "string"
            else [f"{path}: Literal but CRD type {node.get('type')}"]
        )
        if list(typing.get_args(hint)) != allowed_values(node):
            problems.append(
                f"{path}: values {list(typing.get_args(hint))} vs CRD {allowed_values(node)}"
            )
        return problems
    if origin is tuple:
        if node.get("type") != "array":
            return [f"{path}: list in Python, {node.get('type')} in the CRD"]
        return type_mismatches(typing.get_args(hint)[0], node["items"], f"{path}[]")
    if origin is dict:
        return (
            []
            if node.get("type") == "object" and "additionalProperties" in node
            else [f"{path}: map mismatch"]
        )
    if dataclasses.is_dataclass(hint):
        return (
            [f"{path}: object expected"]
            if node.get("type") != "object"
            else mismatches(hint, node, path)
        )
    expected = {str: "string", int: "integer", Decimal: "number", bool: "boolean"}[hint]
    problems = (
        []
        if node.get("type") == expected
        else [f"{path}: {expected} in Python, {node.get('type')} in the CRD"]
    )
    if allowed_values(node) is not None:
        problems.append(f"{path}: the CRD restricts the values, Python has no Literal")
    return problems


IN_RULE = re.compile(r"^self in \[(.*)\]$")


def allowed_values(node: dict) -> list[str] | None:
    """A string field's allowed values: a CEL rule ``self in [...]`` (used instead of
    ``enum`` so a wrong value gets a clean message), or an enum."""
    if "enum" in node:
        return node["enum"]
    for rule in node.get("x-kubernetes-validations") or []:
        match = IN_RULE.match(rule["rule"].strip())
        if match:
            return [v.strip().strip("'") for v in match.group(1).split(",")]
    return None


def default_mismatches(field, hint, node: dict, path: str) -> list[str]:
    if field.default_factory is not dataclasses.MISSING:
        python_default = field.default_factory()
        if dataclasses.is_dataclass(python_default):
            return []  # an absent object parses to its defaults on both sides
    else:
        python_default = None if field.default is dataclasses.MISSING else field.default
    crd_default = node.get("default")
    if isinstance(python_default, tuple):
        python_default = list(python_default)
    if isinstance(python_default, Decimal) and crd_default is not None:
        crd_default = Decimal(str(crd_default))
    if python_default != crd_default:
        return [f"{path}: default {python_default!r} in Python, {crd_default!r} in the CRD"]
    return []


@pytest.mark.parametrize("kind", sorted(SPEC_TYPES))
def test_models_match_crd_schemas(kind):
    assert mismatches(SPEC_TYPES[kind], schema_of(kind)["properties"]["spec"], "spec") == []


def test_a_field_added_on_one_side_only_is_caught():
    schema = copy.deepcopy(schema_of("CascadePolicy")["properties"]["spec"])
    schema["properties"]["routes"]["items"]["properties"]["priority"] = {"type": "integer"}
    del schema["properties"]["retry"]["properties"]["maxAttempts"]["default"]
    problems = mismatches(SPEC_TYPES["CascadePolicy"], schema, "spec")
    assert any("priority: in the CRD, missing" in p for p in problems)
    assert any("maxAttempts: default 3 in Python, None in the CRD" in p for p in problems)


def walk(node: dict, path: str):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_field_is_described(kind):
    # Fields and object list items need a description; a scalar list item is not a field.
    undescribed = [
        p
        for p, node in walk(schema_of(kind), kind)
        if not node.get("description")
        and not p.endswith(".metadata")
        and not (p.endswith("[]") and node.get("type") != "object")
    ]
    assert undescribed == []


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_crd_conventions(kind):
    crd = CRDS[kind]["spec"]
    assert crd["group"] == "tierwise.dev" and crd["scope"] == "Namespaced"
    assert "tierwise" in crd["names"]["categories"] and crd["names"]["shortNames"]
    version = crd["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Ready" in columns and "Age" in columns


def example_documents():
    # Tierwise resources only: examples/gitops also holds Argo CD objects.
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in CRDS:  # the dataset ConfigMap is plain Kubernetes
                yield pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")


@pytest.mark.parametrize("doc", list(example_documents()))
def test_examples_validate_against_the_crd_schema(doc):
    jsonschema.validate(doc, schema_of(doc["kind"]))
    parse_resource(doc)


def test_examples_load_as_resources():
    kinds = sorted(r.kind for r in load_manifests([ROOT / "examples"]))
    # support-triage (a cache profile, a policy, three tiers) and self-hosted-cheap-tier (two
    # policies, two tiers)
    assert kinds == ["CacheProfile"] + ["CascadePolicy"] * 3 + ["ModelTier"] * 5


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_resources_are_rejected_offline_with_the_same_message(case):
    manifest = {"apiVersion": API_VERSION, "metadata": {"name": "bad"}, **case["manifest"]}
    with pytest.raises(SpecError) as error:
        parse_resource(manifest)
    expected = case.get("offline", case["message"])
    assert expected in str(error.value)


def test_errors_name_the_field_path():
    doc = {
        "apiVersion": API_VERSION,
        "kind": "CascadePolicy",
        "metadata": {"name": "p"},
        "spec": {"routes": [{"name": "a", "steps": [{"tier": "x", "maxTokens": "many"}]}]},
    }
    with pytest.raises(SpecError) as error:
        parse_resource(doc)
    assert error.value.path == "spec.routes[0].steps[0].maxTokens"
    assert "must be an integer" in str(error.value) and "CascadePolicy p" in str(error.value)


def test_unknown_fields_are_rejected_with_the_known_ones_listed():
    doc = {
        "apiVersion": API_VERSION,
        "kind": "ModelTier",
        "metadata": {"name": "t"},
        "spec": {"model": "m", "modle": "x"},
    }
    with pytest.raises(SpecError, match=r"spec.modle: unknown field \(known: .*model"):
        parse_resource(doc)


def test_an_invalid_regex_is_rejected_beyond_the_crd():
    doc = {
        "apiVersion": API_VERSION,
        "kind": "CascadePolicy",
        "metadata": {"name": "p"},
        "spec": {
            "routes": [
                {
                    "name": "a",
                    "steps": [{"tier": "x", "escalateWhen": [{"signal": "regex", "pattern": "("}]}],
                }
            ]
        },
    }
    with pytest.raises(SpecError, match="not a valid regular expression"):
        parse_resource(doc)


def test_example_dataset_config_map_holds_dataset_jsonl():
    folder = ROOT / "examples" / "support-triage"
    config_map = yaml.safe_load((folder / "dataset-configmap.yaml").read_text())
    assert config_map["data"]["dataset.jsonl"] == (folder / "dataset.jsonl").read_text()
