"""Readiness of the sidecar, derived from its components (DESIGN.md, "readiness").

INIT until every component has finished initialising (and while a condition such as the
app port being awaited is INIT); DOWN while a component that does not ignore errors, or
a condition, is down; UP otherwise. Liveness never depends on any of this.
"""

from typing import Any

from ottava_sidecar.components.registry import Registry, Status


def overall(registry: Registry) -> Status:
    if not registry.loaded:
        return Status.INIT
    for entry in registry.entries():
        if entry.status is Status.DOWN and not entry.manifest.spec.ignore_errors:
            return Status.DOWN
    conditions = [condition.status for condition in registry.conditions().values()]
    if Status.DOWN in conditions:
        return Status.DOWN
    if Status.INIT in conditions:
        return Status.INIT  # e.g. still waiting for the app port
    return Status.UP


def readiness_body(registry: Registry) -> dict[str, Any]:
    return {
        "status": overall(registry).value,
        "components": {
            **{entry.name: entry.describe() for entry in registry.entries()},
            **{name: condition.describe() for name, condition in registry.conditions().items()},
        },
    }
