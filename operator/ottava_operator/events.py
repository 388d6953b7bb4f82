"""Kubernetes Events about pods the injector saw (bad annotations) and Components, for `kubectl describe`.

A pod being created has no name or uid yet when a Deployment makes it, so the Event is
about its owner (the ReplicaSet), where users look when pods misbehave.
"""

import datetime
import logging
from typing import Any

from kubernetes_asyncio import client

log = logging.getLogger(__name__)


class EventPoster:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)

    async def warn(self, namespace: str, obj: dict[str, Any], reason: str, message: str) -> None:
        """A Warning Event about `obj` (a pod: about its owner, if it has one)."""
        metadata = obj.get("metadata") or {}
        owners = metadata.get("ownerReferences") or []
        if owners:
            owner = owners[0]
            involved = client.V1ObjectReference(
                api_version=owner.get("apiVersion"),
                kind=owner.get("kind"),
                name=owner.get("name"),
                uid=owner.get("uid"),
                namespace=namespace,
            )
        else:
            involved = client.V1ObjectReference(  # the object itself: a Pod, or a Component
                api_version=obj.get("apiVersion") or "v1",
                kind=obj.get("kind") or "Pod",
                name=metadata.get("name") or metadata.get("generateName"),
                uid=metadata.get("uid"),
                namespace=namespace,
            )
        now = datetime.datetime.now(datetime.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="ottava-injector-", namespace=namespace),
            involved_object=involved,
            reason=reason,
            message=message,
            type="Warning",
            source=client.V1EventSource(component="ottava-injector"),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            await self.core.create_namespaced_event(namespace, event)
        except Exception:
            log.exception("could not post an Event", extra={"namespace": namespace, "reason": reason})
