"""How an implementation joins the catalogue: `@register("state.redis", Metadata)`.

The table of types lives here, below the implementations that register themselves;
`catalogue`, above them, imports the built-in ones and answers lookups.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata

__all__ = [
    "BUILDING_BLOCKS",
    "ComponentType",
    "MetadataError",
    "UnknownComponentTypeError",
    "register",
]

BUILDING_BLOCKS = (
    "state",
    "pubsub",
    "configuration",
    "lock",
    "sequencer",
    "secretstores",
    "file",
    "bindings",
    "function",
)


@dataclass(frozen=True)
class ComponentType:
    name: str  # "state.in-memory"
    version: str
    implementation: type[ComponentInstance[Any]]
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

    def create(self, name: str, values: Mapping[str, str], *, app_id: str) -> ComponentInstance[Any]:
        return self.implementation(name, self.parse_metadata(values), app_id=app_id)


class UnknownComponentTypeError(LookupError):
    def __init__(self, type_name: str, version: str, known: set[str] | None = None) -> None:
        names = known if known is not None else set(TYPES)
        known_text = ", ".join(sorted(t for t in names if t.split(".")[0] == type_name.split(".")[0]))
        hint = f" (known {type_name.split('.')[0]} types: {known_text})" if known_text else ""
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


TYPES: dict[str, dict[str, ComponentType]] = {}

ComponentT = TypeVar("ComponentT", bound=type[ComponentInstance[Any]])


def register(
    type_name: str, metadata: type[ComponentMetadata], *, version: str = "v1"
) -> Callable[[ComponentT], ComponentT]:
    """Class decorator that adds an implementation to the catalogue."""

    def decorate(cls: ComponentT) -> ComponentT:
        block = type_name.split(".", 1)[0]
        if block not in BUILDING_BLOCKS:
            raise ValueError(f"{type_name}: unknown building block {block!r}")
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        TYPES.setdefault(type_name, {})[version] = ComponentType(
            type_name, version, cls, metadata, " ".join(doc.split())
        )
        return cls

    return decorate
