"""Readiness of the sidecar, derived from its components (DESIGN.md, "readiness").

INIT until every component has finished initialising; DOWN while a component that does
not ignore errors is down; UP otherwise. Liveness never depends on any of this.
"""

from typing import Any

from ottava_sidecar.runtime.registry import Registry, Status


def overall(registry: Registry) -> Status:
    if not registry.loaded:
        return Status.INIT
    for entry in registry.entries():
        if entry.status is Status.DOWN and not entry.manifest.spec.ignore_errors:
            return Status.DOWN
    return Status.UP


def readiness_body(registry: Registry) -> dict[str, Any]:
    return {
        "status": overall(registry).value,
        "components": {entry.name: entry.describe() for entry in registry.entries()},
    }
