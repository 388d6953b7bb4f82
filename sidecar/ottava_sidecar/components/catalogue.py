"""The catalogue of component types: `spec.type` → implementation and metadata model.

The sidecar builds components from it, and the operator validates manifests against it,
so both always agree on which types exist and which metadata fields each one accepts.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from ottava_sidecar.components.base import Component, ComponentMetadata

__all__ = [
    "ComponentType",
    "MetadataError",
    "UnknownComponentTypeError",
    "all_types",
    "lookup",
    "register",
]

BUILDING_BLOCKS = (
    "state",
    "pubsub",
    "configuration",
    "lock",
    "sequencer",
    "secretstores",
    "bindings",
)


@dataclass(frozen=True)
class ComponentType:
    name: str  # "state.in-memory"
    version: str
    implementation: type[Component[Any]]
    metadata_model: type[ComponentMetadata]
    description: str

    @property
    def building_block(self) -> str:
        return self.name.split(".", 1)[0]

    def parse_metadata(self, values: Mapping[str, str]) -> ComponentMetadata:
        """Validate a component's metadata, naming each offending field."""
        try:
            return self.metadata_model.model_validate(dict(values))
        except ValidationError as err:
            raise MetadataError(self.name, err, self.field_names()) from None

    def check_declared(self, literal: Mapping[str, str], from_secrets: set[str]) -> list[str]:
        """Problems of a manifest's metadata before its secrets are resolved.

        Literal values are validated fully; a field whose value comes from a secret is
        only checked to exist, since its value is not known until the sidecar reads it.
        """
        accepted = set(self.field_names())
        problems = [
            f"{name}: unknown field for {self.name} (accepted: {', '.join(sorted(accepted)) or 'none'})"
            for name in sorted(from_secrets - accepted)
        ]
        try:
            self.metadata_model.model_validate(dict(literal))
        except ValidationError as err:
            for error in err.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                if error["type"] == "missing" and self._alias(field) in from_secrets:
                    continue
                problems.append(_describe(error, self.name, sorted(accepted)))
        return problems

    def _alias(self, field: str) -> str:
        info = self.metadata_model.model_fields.get(field)
        return (info.alias or field) if info is not None else field

    def field_names(self) -> list[str]:
        """Metadata field names as written in manifests."""
        return sorted(f.alias or n for n, f in self.metadata_model.model_fields.items())

    def create(self, name: str, values: Mapping[str, str], *, app_id: str) -> Component[Any]:
        return self.implementation(name, self.parse_metadata(values), app_id=app_id)


class UnknownComponentTypeError(LookupError):
    def __init__(self, type_name: str, version: str) -> None:
        known = ", ".join(sorted(t for t in _TYPES if t.split(".")[0] == type_name.split(".")[0]))
        hint = f" (known {type_name.split('.')[0]} types: {known})" if known else ""
        super().__init__(f"unknown component type {type_name!r} version {version!r}{hint}")


class MetadataError(ValueError):
    """Metadata that the component type does not accept; `problems` name each field."""

    def __init__(self, type_name: str, err: ValidationError, accepted: list[str]) -> None:
        self.problems = [_describe(e, type_name, accepted) for e in err.errors()]
        super().__init__(f"invalid metadata for {type_name}: " + "; ".join(self.problems))


def _describe(error: Any, type_name: str, accepted: list[str]) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "(metadata)"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown field for {type_name} (accepted: {', '.join(accepted) or 'none'})"
    if error["type"] == "missing":
        return f"{field}: required field is missing"
    return f"{field}: {error['msg']}"


_TYPES: dict[str, dict[str, ComponentType]] = {}

ComponentT = TypeVar("ComponentT", bound=type[Component[Any]])


def register(
    type_name: str, metadata: type[ComponentMetadata], *, version: str = "v1"
) -> Callable[[ComponentT], ComponentT]:
    """Class decorator that adds an implementation to the catalogue."""

    def decorate(cls: ComponentT) -> ComponentT:
        block = type_name.split(".", 1)[0]
        if block not in BUILDING_BLOCKS:
            raise ValueError(f"{type_name}: unknown building block {block!r}")
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        _TYPES.setdefault(type_name, {})[version] = ComponentType(
            type_name, version, cls, metadata, " ".join(doc.split())
        )
        return cls

    return decorate


def lookup(type_name: str, version: str = "v1") -> ComponentType:
    _load_builtins()
    try:
        return _TYPES[type_name][version]
    except KeyError:
        raise UnknownComponentTypeError(type_name, version) from None


def all_types() -> list[ComponentType]:
    _load_builtins()
    return [t for versions in _TYPES.values() for t in versions.values()]


def _load_builtins() -> None:
    # Implementations register themselves on import; importing here (not at module top)
    # keeps the catalogue free of import cycles with the implementations.
    from ottava_sidecar.components import builtin  # noqa: F401
