"""The CRDs in crds/ are generated from the resource models and are valid for apiextensions v1.

The real judge of a CRD is kube-apiserver (the e2e suite applies these); the checks here
are the structural-schema rules it enforces, plus a small validator of the openAPIV3Schema
so a manifest from the docs is known to pass `kubectl apply` and a broken one to fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from ottava_operator import peering
from ottava_sidecar import contract
from ottava_sidecar.resources import crd, models, resiliency
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
CRDS_DIR = ROOT / "crds"

RENDERED = crd.render_crds()
CRDS: dict[str, dict[str, Any]] = {name: yaml.safe_load(text) for name, text in RENDERED.items()}

# Fields of apiextensions.k8s.io/v1 JSONSchemaProps; anything else is rejected by the API server.
_SCHEMA_FIELDS = frozenset(
    {
        "description",
        "type",
        "format",
        "nullable",
        "default",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "items",
        "properties",
        "additionalProperties",
        "required",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "example",
        "externalDocs",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
    }
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")

DESIGN_COMPONENT = """
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {name: statestore, namespace: shop}
spec:
  type: state.redis            # <building block>.<implementation>
  version: v1
  initTimeout: 5s
  ignoreErrors: false
  metadata:
  - {name: redisHost, value: "redis:6379"}
  - name: redisPassword
    secretKeyRef: {name: redis-auth, key: password}
scopes: [checkout, cart]       # app-ids that may load it; empty = all
"""


def _schema(crd_name: str) -> dict[str, Any]:
    (version,) = CRDS[f"{crd_name}.yaml"]["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node that describes a value (not the junctor branches), with its path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}.*")


def _junctor_branches(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in _JUNCTORS:
        value = node.get(key)
        branches = value if isinstance(value, list) else [value] if value else []
        for branch in branches:
            yield branch
            yield from _junctor_branches(branch)
            for _, sub in _nodes(branch):
                yield sub


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Errors of `value` against a structural schema, as kubectl apply --validate=strict sees them.

    Covers what the generated CRDs use; unknown fields count as errors (strict field validation)
    rather than being silently pruned.
    """
    where = path or "."
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: must not be null"]
    if "type" not in schema:
        if schema.get("x-kubernetes-int-or-string"):
            ok = isinstance(value, int | str) and not isinstance(value, bool)
            return [] if ok else [f"{where}: must be an integer or a string"]
        return []  # x-kubernetes-preserve-unknown-fields: anything goes
    kind = schema["type"]
    errors = [f"{where}: must be one of {schema['enum']}"] if "enum" in schema and value not in schema["enum"] else []
    check = _CHECKS.get(kind)
    if check is None or not check.accepts(value):
        return [f"{where}: must be of type {kind}"]
    return errors + check.errors(value, schema, path)


def _string_errors(value: str, schema: dict[str, Any], path: str) -> list[str]:
    where, errors = path or ".", []
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where}: must match {schema['pattern']}")
    if len(value) < schema.get("minLength", 0):
        errors.append(f"{where}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{where}: longer than {schema['maxLength']}")
    return errors


def _number_errors(value: float, schema: dict[str, Any], path: str) -> list[str]:
    where, errors = path or ".", []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: less than {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{where}: more than {schema['maximum']}")
    return errors


def _array_errors(value: list[Any], schema: dict[str, Any], path: str) -> list[str]:
    return [e for index, item in enumerate(value) for e in validate(item, schema["items"], f"{path}[{index}]")]


def _object_errors(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    properties: dict[str, Any] = schema.get("properties", {})
    errors = [f"{path}.{name}: required" for name in schema.get("required", []) if name not in value]
    for name, item in value.items():
        if name in properties:
            errors += validate(item, properties[name], f"{path}.{name}")
        elif properties and not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(f"{path}.{name}: unknown field")
    return errors


@dataclass(frozen=True)
class _Check:
    accepts: Callable[[Any], bool]
    errors: Callable[[Any, dict[str, Any], str], list[str]]


_CHECKS = {
    "string": _Check(lambda v: isinstance(v, str), _string_errors),
    "integer": _Check(lambda v: _is_number(v, integer=True), _number_errors),
    "number": _Check(lambda v: _is_number(v, integer=False), _number_errors),
    "boolean": _Check(lambda v: isinstance(v, bool), lambda v, s, p: []),
    "array": _Check(lambda v: isinstance(v, list), _array_errors),
    "object": _Check(lambda v: isinstance(v, dict), _object_errors),
}


def _is_number(value: object, *, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (not integer and isinstance(value, float))


# --- generated files ---------------------------------------------------------------------


def test_committed_crds_are_up_to_date() -> None:
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(CRDS_DIR.glob("*")) if p.is_file()}
    # The resource models' CRDs, and the one kopf's peering needs (leader election).
    fresh = {**RENDERED, **peering.render_crds()}
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"crds/ is stale ({', '.join(stale)}); run `make crds` and commit the result"


def test_files_are_named_after_their_crd_and_carry_the_header() -> None:
    assert sorted(RENDERED) == [
        "components.ottava.io.yaml",
        "configurations.ottava.io.yaml",
        "resiliencies.ottava.io.yaml",
        "subscriptions.ottava.io.yaml",
        "trafficroutes.ottava.io.yaml",
    ]
    for name, text in RENDERED.items():
        assert text.startswith(crd.HEADER)
        assert name == f"{CRDS[name]['metadata']['name']}.yaml"
        # A YAML alias (&id001) would be legal but unreadable; repeated schemas are written out.
        assert not re.search(r"[&*]id\d", text), name


# --- the CustomResourceDefinition objects ------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "kind", "plural", "short_names", "columns"),
    [
        (
            "components.ottava.io.yaml",
            "Component",
            "components",
            ["comp"],
            [
                ".spec.type",
                ".spec.version",
                '.status.conditions[?(@.type=="Ready")].status',
                ".metadata.creationTimestamp",
            ],
        ),
        (
            "configurations.ottava.io.yaml",
            "Configuration",
            "configurations",
            ["ottavaconfig"],
            ['.status.conditions[?(@.type=="Ready")].status', ".metadata.creationTimestamp"],
        ),
        (
            "subscriptions.ottava.io.yaml",
            "Subscription",
            "subscriptions",
            ["ottavasub"],
            [
                ".spec.pubsubname",
                ".spec.topic",
                '.status.conditions[?(@.type=="Ready")].status',
                ".metadata.creationTimestamp",
            ],
        ),
        (
            "resiliencies.ottava.io.yaml",
            "Resiliency",
            "resiliencies",
            ["ottavaresiliency"],
            ['.status.conditions[?(@.type=="Ready")].status', ".metadata.creationTimestamp"],
        ),
    ],
)
def test_names_scope_and_columns(
    file_name: str, kind: str, plural: str, short_names: list[str], columns: list[str]
) -> None:
    document = CRDS[file_name]
    assert document["apiVersion"] == "apiextensions.k8s.io/v1"
    assert document["kind"] == "CustomResourceDefinition"
    spec = document["spec"]
    assert spec["group"] == contract.API_GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": short_names,
        "categories": ["ottava"],
    }
    (version,) = spec["versions"]
    assert version["name"] == contract.API_VERSION
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}
    assert [c["jsonPath"] for c in version["additionalPrinterColumns"]] == columns
    age = version["additionalPrinterColumns"][-1]
    assert (age["name"], age["type"]) == ("Age", "date")


# --- structural schema -------------------------------------------------------------------


@pytest.mark.parametrize("file_name", sorted(RENDERED))
def test_schema_is_structural(file_name: str) -> None:
    schema = _schema(file_name.removesuffix(".yaml"))
    assert schema["type"] == "object"
    assert not schema.get("nullable"), "nullable cannot be true at the root"
    for path, node in _nodes(schema):
        unknown = node.keys() - _SCHEMA_FIELDS
        assert not unknown, f"{path}: not a JSONSchemaProps field: {sorted(unknown)}"
        if "type" in node:
            assert node["type"] in _TYPES, f"{path}: type {node['type']!r}"
        else:
            assert node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string"), (
                f"{path}: every node needs a type"
            )
        if "properties" in node or "required" in node:
            assert node["type"] == "object", f"{path}: properties on a non-object"
            assert set(node.get("required", [])) <= node.get("properties", {}).keys(), path
        if node.get("type") == "object":
            assert "properties" not in node or "additionalProperties" not in node, (
                f"{path}: properties and additionalProperties are exclusive"
            )
        assert node.get("additionalProperties") is not False, f"{path}: additionalProperties: false"
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path}: an array needs one items schema"
        assert node.get("uniqueItems") is not True, f"{path}: uniqueItems is forbidden; use a list-type"
        if "default" in node:
            assert not path.startswith(".metadata"), f"{path}: no defaults inside metadata"
            assert validate(node["default"], node, path) == [], f"{path}: default does not validate"
        for branch in _junctor_branches(node):
            assert not {"type", "nullable", "default", "description"} & branch.keys(), (
                f"{path}: a type inside anyOf/oneOf/allOf/not is not structural"
            )


@pytest.mark.parametrize("file_name", sorted(RENDERED))
def test_kubernetes_owns_apiversion_kind_and_metadata(file_name: str) -> None:
    properties = _schema(file_name.removesuffix(".yaml"))["properties"]
    assert properties["metadata"] == {"type": "object"}
    for name in ("apiVersion", "kind"):
        assert properties[name]["type"] == "string"
        assert properties[name].keys() <= {"type", "description"}


@pytest.mark.parametrize("file_name", sorted(RENDERED))
def test_status_has_standard_conditions(file_name: str) -> None:
    status = _schema(file_name.removesuffix(".yaml"))["properties"]["status"]
    assert status["properties"]["observedGeneration"]["type"] == "integer"
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    condition = conditions["items"]
    assert set(condition["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Valid",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    assert validate({"conditions": [ready], "observedGeneration": 1}, status) == []


# --- content taken from the models -------------------------------------------------------


def test_spec_type_has_the_models_pattern_and_description() -> None:
    spec = _schema("components.ottava.io")["properties"]["spec"]
    field = models.ComponentSpec.model_fields["type"]
    node = spec["properties"]["type"]
    assert node["type"] == "string"
    assert node["description"] == field.description
    assert node["pattern"] == r"^[a-z]+\.[a-z0-9][a-z0-9.\-]*$"
    assert spec["required"] == ["type"]
    assert spec["description"] == models.ComponentSpec.__doc__


def test_top_level_descriptions_come_from_the_models() -> None:
    component = _schema("components.ottava.io")
    assert component["description"] == models.Component.__doc__
    assert component["properties"]["scopes"]["description"] == models.Component.model_fields["scopes"].description
    assert component["required"] == ["spec"]
    configuration = _schema("configurations.ottava.io")
    assert configuration["description"] == models.Configuration.__doc__
    assert configuration["properties"]["spec"]["description"] == models.ConfigurationSpec.__doc__


@pytest.mark.parametrize("file_name", sorted(RENDERED))
def test_every_field_is_documented_for_kubectl_explain(file_name: str) -> None:
    schema = _schema(file_name.removesuffix(".yaml"))
    undocumented = [
        f"{path}.{name}"
        for path, node in _nodes(schema)
        for name, sub in node.get("properties", {}).items()
        if not sub.get("description") and f"{path}.{name}" != ".metadata"
    ]
    assert not undocumented, f"add a Field(description=...) in models.py for {undocumented}"


def test_optional_fields_are_nullable_and_enums_come_from_literals() -> None:
    spec = _schema("configurations.ottava.io")["properties"]["spec"]
    assert spec["properties"]["tracing"]["nullable"] is True
    assert spec["properties"]["logging"]["properties"]["level"]["enum"] == ["debug", "info", "warn", "error"]
    assert spec["properties"]["logging"]["properties"]["level"]["default"] == "info"


# --- manifests against the schema --------------------------------------------------------


def test_design_component_is_valid_for_the_crd_and_the_model() -> None:
    manifest = yaml.safe_load(DESIGN_COMPONENT)
    assert validate(manifest, _schema("components.ottava.io")) == []
    assert models.Component.model_validate(manifest).spec.type == "state.redis"


def test_unquoted_numbers_and_booleans_are_accepted_like_dapr_does() -> None:
    manifest = yaml.safe_load(DESIGN_COMPONENT)
    manifest["spec"]["metadata"] += [{"name": "redisDB", "value": 0}, {"name": "enableTLS", "value": True}]
    assert validate(manifest, _schema("components.ottava.io")) == []
    values = {m.name: m.value for m in models.Component.model_validate(manifest).spec.metadata}
    assert (values["redisDB"], values["enableTLS"]) == ("0", "true")


def test_a_dapr_v2alpha1_subscription_ports_by_changing_its_api_version() -> None:
    spec: dict[str, Any] = {
        "pubsubname": "pubsub",
        "topic": "orders",
        "routes": {"rules": [{"match": 'event.type == "widget"', "path": "/widgets"}], "default": "/orders"},
        "metadata": {"maxDeliveryAttempts": "3"},
        "deadLetterTopic": "orders-dead",
        "bulkSubscribe": {"enabled": True, "maxMessagesCount": 50, "maxAwaitDurationMs": 200},
    }
    manifest: dict[str, Any] = {
        "apiVersion": contract.GROUP_VERSION,
        "kind": "Subscription",
        "metadata": {"name": "orders"},
        "spec": spec,
        "scopes": ["checkout"],
    }
    assert validate(manifest, _schema("subscriptions.ottava.io")) == []
    assert models.DeclarativeSubscription.model_validate(manifest).spec.bulk_subscribe is not None
    without_topic = {**manifest, "spec": {k: v for k, v in spec.items() if k != "topic"}}
    assert validate(without_topic, _schema("subscriptions.ottava.io")) == [".spec.topic: required"]


def test_configuration_is_valid_for_the_crd_and_the_model() -> None:
    manifest = {
        "apiVersion": contract.GROUP_VERSION,
        "kind": "Configuration",
        "metadata": {"name": "tracing"},
        "spec": {
            "tracing": {"samplingRate": "1", "otel": {"endpointAddress": "otel:4317"}},
            "api": {"denied": [{"name": "state", "protocol": "http"}]},
            "features": [{"name": "x", "enabled": True}],
            "secrets": {"scopes": [{"storeName": "vault", "defaultAccess": "deny"}]},
        },
    }
    assert validate(manifest, _schema("configurations.ottava.io")) == []
    models.Configuration.model_validate(manifest)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"type": "Redis"}, ".spec.type: must match"),
        ({"initTimeout": "soon"}, ".spec.initTimeout: must match"),
        ({"version": "1"}, ".spec.version: must match"),
        ({"ignoreErrors": "yes"}, ".spec.ignoreErrors: must be of type boolean"),
        ({"bogus": 1}, ".spec.bogus: unknown field"),
        ({"metadata": [{"value": "x"}]}, ".spec.metadata[0].name: required"),
    ],
)
def test_broken_component_is_rejected(change: dict[str, Any], error: str) -> None:
    manifest = yaml.safe_load(DESIGN_COMPONENT)
    manifest["spec"].update(change)
    errors = validate(manifest, _schema("components.ottava.io"))
    assert any(e.startswith(error) for e in errors), errors


def test_component_without_spec_is_rejected() -> None:
    manifest = yaml.safe_load(DESIGN_COMPONENT)
    del manifest["spec"]
    assert validate(manifest, _schema("components.ottava.io")) == [".spec: required"]


# --- the renderer refuses what it cannot express -----------------------------------------


class _Mixed(BaseModel):
    """A union of an object and a scalar has no structural form."""

    value: int | list[str]


def test_a_union_that_is_not_structural_is_an_error() -> None:
    with pytest.raises(crd.SchemaError, match="only unions of scalars"):
        crd.openapi_schema(_Mixed)


def test_chart_installs_the_same_crds() -> None:
    chart_crds = ROOT / "charts" / "ottava" / "crds"
    chart = {p.name: p.read_text(encoding="utf-8") for p in sorted(chart_crds.glob("*.yaml"))}
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(CRDS_DIR.glob("*.yaml"))}
    assert chart == committed, "charts/ottava/crds differs from crds/: run `make crds`"


def test_the_resiliency_of_the_docs_passes_the_crd_and_the_model() -> None:
    """docs/resiliency.md's full example, as `kubectl apply` and the sidecar read it."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "resiliency.md").read_text(encoding="utf-8")
    manifest = yaml.safe_load(page.split("## The resource", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0])
    assert validate(manifest, _schema("resiliencies.ottava.io")) == []
    resource = resiliency.Resiliency.model_validate(manifest)
    assert resource.spec.targets.apps["billing"].circuit_breaker == "billingBreaker"
    timeouts = _schema("resiliencies.ottava.io")["properties"]["spec"]["properties"]["policies"]["properties"]
    assert timeouts["timeouts"]["additionalProperties"]["pattern"] == models.DURATION_PATTERN
