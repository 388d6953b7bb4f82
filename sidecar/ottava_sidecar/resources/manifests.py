"""Reading manifests from a folder (`ottava run --resources-path`).

Every YAML document of every `*.yaml`/`*.yml` file is read. Components and
Configurations (of `ottava.io/v1alpha1` or `dapr.io/v1alpha1`) are validated; documents of
other kinds are skipped with a log line, as Dapr does, so a shared folder of Dapr
resources can be pointed at unchanged.
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from ottava_sidecar.resources.models import Component, Configuration

log = logging.getLogger(__name__)

M = TypeVar("M", Component, Configuration)

_KNOWN_GROUPS = ("ottava.io/", "dapr.io/")


class ManifestError(ValueError):
    """A manifest that cannot be loaded; the message names file, document and field."""


@dataclass(frozen=True)
class Source:
    path: Path
    document: int  # 1-based index of the YAML document in the file

    def __str__(self) -> str:
        return f"{self.path}, document {self.document}"


@dataclass(frozen=True)
class Manifests:
    components: list[tuple[Source, Component]]
    configurations: list[tuple[Source, Configuration]]


def load_folder(folder: Path, *, check: Callable[[Component], Sequence[str]]) -> Manifests:
    """Every Component and Configuration in `folder`, validated.

    `check` names what is wrong with a Component beyond its schema (an unknown type,
    metadata its type does not accept: `components.catalogue.manifest_problems`); this
    layer knows the resource models, not the catalogue of implementations.
    """
    if not folder.is_dir():
        raise ManifestError(f"resources path {folder} is not a folder")
    components: list[tuple[Source, Component]] = []
    configurations: list[tuple[Source, Configuration]] = []
    names: dict[str, Source] = {}
    for source, document in _documents(folder):
        kind, api_version = document.get("kind"), document.get("apiVersion", "")
        if not str(api_version).startswith(_KNOWN_GROUPS) or kind not in ("Component", "Configuration"):
            log.info("skipping a resource that is not a Component or Configuration", extra={"source": str(source)})
            continue
        if kind == "Component":
            component = _validate(Component, document, source)
            problems = check(component)
            if problems:
                raise ManifestError(f"{source} (Component {component.name!r}): " + "; ".join(problems))
            if component.name in names:
                raise ManifestError(
                    f"{source}: component {component.name!r} is already defined in {names[component.name]}"
                )
            names[component.name] = source
            components.append((source, component))
        else:
            configurations.append((source, _validate(Configuration, document, source)))
    return Manifests(components, configurations)


def _documents(folder: Path) -> Iterator[tuple[Source, dict[str, Any]]]:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as err:
            raise ManifestError(f"{path}: not valid YAML: {err}") from None
        for index, document in enumerate(documents, start=1):
            if document is None:
                continue
            if not isinstance(document, dict):
                raise ManifestError(f"{Source(path, index)}: expected a mapping, found {type(document).__name__}")
            yield Source(path, index), document


def _validate(model: type[M], document: dict[str, Any], source: Source) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as err:
        name = document.get("metadata", {}).get("name", "?") if isinstance(document.get("metadata"), dict) else "?"
        raise ManifestError(f"{source} ({model.__name__} {name!r}): " + describe_errors(err)) from None


def describe_errors(err: ValidationError) -> str:
    """One line per problem: the field's path in the manifest, then the reason."""
    problems = []
    for error in err.errors():
        path = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-")) or "(document)"
        reason = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{path}: {reason}")
    return "; ".join(problems)
