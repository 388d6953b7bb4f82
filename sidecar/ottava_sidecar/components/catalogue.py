"""The catalogue of component types: `spec.type` → implementation and metadata model.

The sidecar builds components from it, and the operator validates manifests against it,
so both always agree on which types exist and which metadata fields each one accepts.
Implementations register themselves (`registration.register`) when their module is
imported, which happens the first time their type is looked up (`builtin.MODULES`).
"""

import importlib

from ottava_sidecar.components import builtin, registration
from ottava_sidecar.components.registration import (
    BUILDING_BLOCKS,
    ComponentType,
    MetadataError,
    UnknownComponentTypeError,
)
from ottava_sidecar.resources import models

__all__ = [
    "BUILDING_BLOCKS",
    "ComponentType",
    "MetadataError",
    "UnknownComponentTypeError",
    "all_types",
    "lookup",
    "manifest_problems",
]


def lookup(type_name: str, version: str = "v1") -> ComponentType:
    if type_name not in registration.TYPES and type_name in builtin.MODULES:
        importlib.import_module(builtin.MODULES[type_name])
    try:
        return registration.TYPES[type_name][version]
    except KeyError:
        raise UnknownComponentTypeError(type_name, version, known=known_types()) from None


def known_types() -> set[str]:
    """Every type name, whether its module is imported yet or not."""
    return set(builtin.MODULES) | set(registration.TYPES)


def manifest_problems(component: models.Component) -> list[str]:
    """What is wrong with a manifest beyond its schema, one `field: reason` per problem.

    Unknown types and metadata fields are manifest errors too: the file is wrong.
    """
    try:
        component_type = lookup(component.spec.type, component.spec.version)
    except UnknownComponentTypeError as err:
        return [f"spec.type: {err}"]
    literal = {item.name: item.value for item in component.spec.metadata if item.value is not None}
    from_secrets = {item.name for item in component.spec.metadata if item.secret_key_ref is not None}
    return [f"spec.metadata.{p}" for p in component_type.check_declared(literal, from_secrets)]


def all_types() -> list[ComponentType]:
    """Every type and version (imports every implementation: for tools, not for a sidecar's start)."""
    for module in builtin.MODULES.values():
        importlib.import_module(module)
    return [t for versions in registration.TYPES.values() for t in versions.values()]
