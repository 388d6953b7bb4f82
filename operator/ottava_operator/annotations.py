"""The pod annotations that drive injection, parsed leniently.

A bad value never blocks a pod: the injector falls back to the default for that field
and reports the problem (admission warning and Event), so a typo in an annotation costs
a warning, not an outage.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ottava_sidecar import contract, limits
from ottava_sidecar.resources import models

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_APP_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_VERSION = re.compile(models.VERSION_PATTERN)

LogLevel = Literal["debug", "info", "warn", "error"]


@dataclass
class PodAnnotations:
    enabled: bool = False
    app_id: str | None = None
    app_port: int | None = None
    app_protocol: Literal["http", "grpc"] = "http"
    config: str | None = None
    log_level: LogLevel = "info"
    sidecar_image: str | None = None
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    api_token_secret: str | None = None
    app_version: str | None = None
    # `ottava run` limit flags (docs/limits.md) → their values, from `ottava.io/<flag name>`.
    limit_flags: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Annotation:
    """One annotation: the field it sets, how its value is read, and what to say when it cannot be."""

    key: str
    attribute: str
    read: Callable[[str], object | None]  # the field's value, or None when the annotation is invalid
    invalid: str  # why an invalid value is ignored
    # A problem with a valid value: reported, and the value kept.
    caveat: Callable[[str], str | None] = lambda _: None


def _matching(pattern: re.Pattern[str], max_length: int | None = None) -> Callable[[str], str | None]:
    def read(value: str) -> str | None:
        fits = max_length is None or len(value) <= max_length
        return value if pattern.match(value) and fits else None

    return read


def _one_of(*choices: str) -> Callable[[str], str | None]:
    return lambda value: value if value in choices else None


def _port(value: str) -> int | None:
    return int(value) if value.isdigit() and 1 <= int(value) <= 65535 else None


def _image(value: str) -> str | None:
    return value if value and not any(c.isspace() for c in value) else None


def _app_id_caveat(app_id: str) -> str | None:
    # Kept (the pod runs and calls others), but nothing can call it.
    problem = contract.app_service_problem(app_id)
    return None if problem is None else f"{problem}; other apps cannot invoke it"


_QUANTITY_PROBLEM = "not a Kubernetes quantity such as '100m' or '128Mi'"

# In the order their problems are reported.
_ANNOTATIONS = (
    _Annotation(
        contract.ANNOTATION_APP_ID,
        "app_id",
        _matching(_APP_ID, max_length=63),
        "an app id is a DNS label (lower case, digits, '-', '.')",
        caveat=_app_id_caveat,
    ),
    _Annotation(contract.ANNOTATION_APP_PORT, "app_port", _port, "not a port number (1-65535)"),
    _Annotation(contract.ANNOTATION_APP_PROTOCOL, "app_protocol", _one_of("http", "grpc"), "must be 'http' or 'grpc'"),
    _Annotation(contract.ANNOTATION_CONFIG, "config", _matching(_NAME), "not a Configuration name"),
    _Annotation(
        contract.ANNOTATION_LOG_LEVEL,
        "log_level",
        _one_of("debug", "info", "warn", "error"),
        "must be debug, info, warn or error",
    ),
    _Annotation(contract.ANNOTATION_SIDECAR_IMAGE, "sidecar_image", _image, "not an image reference"),
    _Annotation(contract.ANNOTATION_CPU_REQUEST, "cpu_request", _matching(_QUANTITY), _QUANTITY_PROBLEM),
    _Annotation(contract.ANNOTATION_CPU_LIMIT, "cpu_limit", _matching(_QUANTITY), _QUANTITY_PROBLEM),
    _Annotation(contract.ANNOTATION_MEMORY_REQUEST, "memory_request", _matching(_QUANTITY), _QUANTITY_PROBLEM),
    _Annotation(contract.ANNOTATION_MEMORY_LIMIT, "memory_limit", _matching(_QUANTITY), _QUANTITY_PROBLEM),
    _Annotation(contract.ANNOTATION_API_TOKEN_SECRET, "api_token_secret", _matching(_NAME), "not a Secret name"),
    _Annotation(
        contract.ANNOTATION_APP_VERSION,
        "app_version",
        _matching(_VERSION),
        "a version is a label value (at most 63 letters, digits, '-', '_', '.'; a letter or digit first and last)",
    ),
)


def parse(annotations: dict[str, str]) -> PodAnnotations:
    parsed = PodAnnotations(enabled=annotations.get(contract.ANNOTATION_ENABLED, "").lower() == "true")
    for annotation in _ANNOTATIONS:
        if (value := annotations.get(annotation.key)) is None:
            continue
        read = annotation.read(value)
        if read is None:
            parsed.problems.append(f"annotation {annotation.key}={value!r} ignored: {annotation.invalid}")
            continue
        setattr(parsed, annotation.attribute, read)
        if (caveat := annotation.caveat(value)) is not None:
            parsed.problems.append(f"annotation {annotation.key}={value!r}: {caveat}")
    _parse_limits(annotations, parsed)
    return parsed


def _parse_limits(annotations: dict[str, str], parsed: PodAnnotations) -> None:
    """The limit annotations, checked as `ottava run` checks its flags, so a bad one cannot stop the sidecar."""
    for setting in limits.SETTINGS:
        if (value := annotations.get(setting.annotation)) is None:
            continue
        try:
            setting.parse(value)
        except ValueError as err:
            parsed.problems.append(f"annotation {setting.annotation}={value!r} ignored: {err}")
            continue
        parsed.limit_flags[setting.flag] = value.strip()
