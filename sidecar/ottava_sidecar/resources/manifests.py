"""Reading manifests from a folder (`ottava run --resources-path`) and a file (`--config`).

Every YAML document of every `*.yaml`/`*.yml` file is read. Components, Configurations,
Resiliencies (of `ottava.io/v1alpha1` or `dapr.io/v1alpha1`), Subscriptions (also of
`dapr.io/v2alpha1`) and TrafficRoutes (`ottava.io/v1alpha1`) are validated. The other kinds that Dapr defines (an `HTTPEndpoint`,
say) are skipped with a warning, so a shared
folder of Dapr resources can be pointed at unchanged; documents of other API groups (a
Kubernetes `Secret`) are skipped quietly. Any other kind in those two groups is a
mistake (`kind: component`, `kind: Componnent`) that would otherwise load nothing
without a word: it stops start-up, naming the file, the document and the kind.

`--config FILE` names one Configuration manifest (as `dapr run --config` does), the only
document of its file.
"""

import difflib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from ottava_sidecar.resources.models import Component, Configuration, DeclarativeSubscription, TrafficRoute
from ottava_sidecar.resources.resiliency import Resiliency

log = logging.getLogger(__name__)

M = TypeVar("M", Component, Configuration, DeclarativeSubscription, TrafficRoute, Resiliency)

_KNOWN_GROUPS = ("ottava.io", "dapr.io")
_LOADED_KINDS = ("Component", "Configuration", "Subscription", "TrafficRoute", "Resiliency")
# Kinds the groups define that a folder may hold but `ottava run` does not load.
_SKIPPED_KINDS = {
    "dapr.io": ("HTTPEndpoint",),
    "ottava.io": (),
}
# Kinds that only one group defines: the other's is a mistake.
_OWN_KINDS = {"TrafficRoute": "ottava.io"}


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
    subscriptions: list[tuple[Source, DeclarativeSubscription]] = field(default_factory=list)
    traffic_routes: list[tuple[Source, TrafficRoute]] = field(default_factory=list)
    resiliencies: list[tuple[Source, Resiliency]] = field(default_factory=list)


def load_folder(folder: Path, *, check: Callable[[Component], Sequence[str]]) -> Manifests:
    """Every Component, Configuration, Subscription, TrafficRoute and Resiliency in `folder`, validated.

    `check` names what is wrong with a Component beyond its schema (an unknown type,
    metadata its type does not accept: `components.catalogue.manifest_problems`); this
    layer knows the resource models, not the catalogue of implementations.
    """
    if not folder.is_dir():
        raise ManifestError(f"resources path {folder} is not a folder")
    components: list[tuple[Source, Component]] = []
    configurations: list[tuple[Source, Configuration]] = []
    subscriptions: list[tuple[Source, DeclarativeSubscription]] = []
    names: dict[str, Source] = {}
    subscription_names: dict[str, Source] = {}
    routes: list[tuple[Source, TrafficRoute]] = []
    route_names: dict[str, Source] = {}
    resiliencies: list[tuple[Source, Resiliency]] = []
    for source, document in _documents(folder):
        kind = _kind(document, source)
        if kind is None:
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
        elif kind == "Subscription":
            subscription = _validate(DeclarativeSubscription, document, source)
            if subscription.name in subscription_names:
                raise ManifestError(
                    f"{source}: subscription {subscription.name!r} is already defined in "
                    f"{subscription_names[subscription.name]}"
                )
            subscription_names[subscription.name] = source
            subscriptions.append((source, subscription))
        elif kind == "TrafficRoute":
            route = _validate(TrafficRoute, document, source)
            if route.name in route_names:
                raise ManifestError(
                    f"{source}: the TrafficRoute of app {route.name!r} is already defined in {route_names[route.name]}"
                )
            route_names[route.name] = source
            routes.append((source, route))
        elif kind == "Resiliency":
            resiliencies.append((source, _validate(Resiliency, document, source)))
        else:
            configurations.append((source, _validate(Configuration, document, source)))
    return Manifests(components, configurations, subscriptions, routes, resiliencies)


def load_configuration_file(path: Path) -> Configuration:
    """The Configuration of `ottava run --config FILE`, validated; `ManifestError` naming file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no such file (in standalone mode --config names a Configuration manifest file)"
        ) from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot be read: {err.strerror or err}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML: {err}") from None
    if len(documents) != 1:
        raise ManifestError(f"{path}: holds {len(documents)} YAML documents; --config takes one Configuration")
    source, document = Source(path, 1), documents[0]
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: expected a mapping, found {type(document).__name__}")
    if document.get("kind") != "Configuration":
        raise ManifestError(
            f"{source}: kind is {document.get('kind')!r}, --config takes a Configuration "
            "(Components go in the --resources-path folder)"
        )
    return _validate(Configuration, document, source)


def _kind(document: dict[str, Any], source: Source) -> str | None:
    """The kind of a document to load, None for one to skip; `ManifestError` for a kind that cannot be right."""
    kind, api_version = document.get("kind"), str(document.get("apiVersion") or "")
    group = api_version.partition("/")[0] if "/" in api_version else ""
    if group not in _KNOWN_GROUPS:
        if not api_version and str(kind).lower() in (k.lower() for k in _LOADED_KINDS):
            raise ManifestError(
                f"{source}: a {kind} without apiVersion (ottava.io/v1alpha1 or dapr.io/v1alpha1) would not be loaded"
            )
        log.info(
            "skipping a %s of %s: not an Ottava or Dapr resource",
            kind,
            api_version or "no apiVersion",
            extra={"source": str(source)},
        )
        return None
    if kind in _LOADED_KINDS and _OWN_KINDS.get(str(kind), group) != group:
        raise ManifestError(
            f"{source} ({api_version} {_name(document)!r}): a {kind} is of apiVersion {_OWN_KINDS[str(kind)]}/v1alpha1"
        )
    if kind in _LOADED_KINDS:
        return str(kind)
    skipped = _SKIPPED_KINDS[group]
    if kind in skipped:
        log.warning(
            "skipping the %s %r in %s: `ottava run` loads only Component, Configuration, Subscription, TrafficRoute and Resiliency from a "
            "resources folder (other %s kinds are accepted, unread, so that a shared folder of Dapr resources works unchanged)",
            kind,
            _name(document),
            source,
            group,
            extra={"source": str(source), "kind": kind},
        )
        return None
    if not isinstance(kind, str) or not kind:
        raise ManifestError(f"{source} ({api_version} {_name(document)!r}): kind is missing")
    known = (*_LOADED_KINDS, *skipped)
    raise ManifestError(
        f"{source} ({api_version} {_name(document)!r}): unknown kind {kind!r}{_suggestion(kind, known)}; "
        f"kinds loaded: {', '.join(_LOADED_KINDS)}"
        + (f"; {group} kinds skipped: {', '.join(skipped)}" if skipped else "")
    )


def _suggestion(kind: str, known: Sequence[str]) -> str:
    """`, did you mean 'Component'?` for a kind in the wrong case or misspelt, else nothing."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(kind.lower(), list(by_lower), n=1, cutoff=0.75)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _name(document: dict[str, Any]) -> str:
    metadata = document.get("metadata")
    return str(metadata.get("name", "?")) if isinstance(metadata, dict) else "?"


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
        raise ManifestError(
            f"{source} ({document.get('kind') or model.__name__} {_name(document)!r}): " + describe_errors(err)
        ) from None


def describe_errors(err: ValidationError) -> str:
    """One line per problem: the field's path in the manifest, then the reason."""
    problems = []
    for error in err.errors():
        path = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-")) or "(document)"
        reason = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{path}: {reason}")
    return "; ".join(problems)
