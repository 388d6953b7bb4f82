"""`status.conditions` of Components and Configurations, in Kubernetes' standard shape."""

import datetime
from typing import Any


def ready_condition(
    problems: list[str], generation: int | None, previous: list[dict[str, Any]] | None
) -> dict[str, Any]:
    status = "False" if problems else "True"
    reason = "Invalid" if problems else "Valid"
    message = "; ".join(problems) if problems else "validated against the component catalogue"
    transition = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for old in previous or []:
        # The transition time changes only when the status does (Kubernetes' convention).
        if old.get("type") == "Ready" and old.get("status") == status and old.get("lastTransitionTime"):
            transition = old["lastTransitionTime"]
    condition: dict[str, Any] = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition
