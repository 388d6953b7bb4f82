"""The pod annotations that drive injection, parsed leniently.

A bad value never blocks a pod: the injector falls back to the default for that field
and reports the problem (admission warning and Event), so a typo in an annotation costs
a warning, not an outage.
"""

import re
from dataclasses import dataclass, field
from typing import Literal

from ottava_sidecar import contract

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_APP_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

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
    problems: list[str] = field(default_factory=list)


def parse(annotations: dict[str, str]) -> PodAnnotations:
    parsed = PodAnnotations(enabled=annotations.get(contract.ANNOTATION_ENABLED, "").lower() == "true")
    problems = parsed.problems

    def bad(key: str, value: str, why: str) -> None:
        problems.append(f"annotation {key}={value!r} ignored: {why}")

    if (value := annotations.get(contract.ANNOTATION_APP_ID)) is not None:
        if _APP_ID.match(value) and len(value) <= 63:
            parsed.app_id = value
            if (problem := contract.app_service_problem(value)) is not None:
                # Kept (the pod runs and calls others), but nothing can call it.
                problems.append(
                    f"annotation {contract.ANNOTATION_APP_ID}={value!r}: {problem}; other apps cannot invoke it"
                )
        else:
            bad(contract.ANNOTATION_APP_ID, value, "an app id is a DNS label (lower case, digits, '-', '.')")
    if (value := annotations.get(contract.ANNOTATION_APP_PORT)) is not None:
        if value.isdigit() and 1 <= int(value) <= 65535:
            parsed.app_port = int(value)
        else:
            bad(contract.ANNOTATION_APP_PORT, value, "not a port number (1-65535)")
    if (value := annotations.get(contract.ANNOTATION_APP_PROTOCOL)) is not None:
        if value in ("http", "grpc"):
            parsed.app_protocol = value  # type: ignore[assignment]
        else:
            bad(contract.ANNOTATION_APP_PROTOCOL, value, "must be 'http' or 'grpc'")
    if (value := annotations.get(contract.ANNOTATION_CONFIG)) is not None:
        if _NAME.match(value):
            parsed.config = value
        else:
            bad(contract.ANNOTATION_CONFIG, value, "not a Configuration name")
    if (value := annotations.get(contract.ANNOTATION_LOG_LEVEL)) is not None:
        if value in ("debug", "info", "warn", "error"):
            parsed.log_level = value  # type: ignore[assignment]
        else:
            bad(contract.ANNOTATION_LOG_LEVEL, value, "must be debug, info, warn or error")
    if (value := annotations.get(contract.ANNOTATION_SIDECAR_IMAGE)) is not None:
        if value and not any(c.isspace() for c in value):
            parsed.sidecar_image = value
        else:
            bad(contract.ANNOTATION_SIDECAR_IMAGE, value, "not an image reference")
    for key, attribute in (
        (contract.ANNOTATION_CPU_REQUEST, "cpu_request"),
        (contract.ANNOTATION_CPU_LIMIT, "cpu_limit"),
        (contract.ANNOTATION_MEMORY_REQUEST, "memory_request"),
        (contract.ANNOTATION_MEMORY_LIMIT, "memory_limit"),
    ):
        if (value := annotations.get(key)) is not None:
            if _QUANTITY.match(value):
                setattr(parsed, attribute, value)
            else:
                bad(key, value, "not a Kubernetes quantity such as '100m' or '128Mi'")
    if (value := annotations.get(contract.ANNOTATION_API_TOKEN_SECRET)) is not None:
        if _NAME.match(value):
            parsed.api_token_secret = value
        else:
            bad(contract.ANNOTATION_API_TOKEN_SECRET, value, "not a Secret name")
    return parsed
