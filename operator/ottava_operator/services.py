"""The headless Service `<app-id>-ottava` of each app, kept while the app has pods.

Sidecars resolve app ids from the EndpointSlices of these Services (DESIGN.md, "per-app
Service"). One Service per app id and namespace, selecting the app's injected pods; the
operator creates it when the first such pod appears, puts it back when it is deleted or
edited, and deletes it when no pod of the app is left.

A Service shared by many pods cannot be owned by any one of them (ownerReferences would
delete it with the first pod to go), so it is ours by label
(`app.kubernetes.io/managed-by: ottava`) and reconciled on the events of the app's pods
and of the Service itself: the Service watch's initial listing after a restart also
removes the Services of apps that went away while the operator was down. A Service of
that name without our label is the user's, and left alone.

Both watches select server-side (injected pods only, our Services only), so the operator
does not follow every pod of the cluster.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar import contract

from ottava_operator.events import EventPoster
from ottava_operator.rbac import SidecarRbac

log = logging.getLogger(__name__)

# Server-side label selectors for kopf's watches (settings.watching.label_selectors).
INJECTED_PODS = f"{contract.LABEL_SIDECAR_INJECTED}=true"
OUR_SERVICES = f"{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}"
_LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"  # a finished Job's pod serves no calls
_CONFLICT_ATTEMPTS = 3

PORTS = (
    (contract.SERVICE_PORT_GRPC, contract.GRPC_PORT),
    (contract.SERVICE_PORT_HTTP, contract.HTTP_PORT),
    (contract.SERVICE_PORT_INTERNAL, contract.INTERNAL_GRPC_PORT),
    (contract.SERVICE_PORT_METRICS, contract.METRICS_PORT),
)


def app_service(app_id: str, namespace: str) -> dict[str, Any]:
    """The Service of `app_id` in `namespace`, as the operator keeps it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": contract.app_service_name(app_id),
            "namespace": namespace,
            "labels": {
                contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
                "app.kubernetes.io/part-of": "ottava",
                contract.LABEL_APP_ID: app_id,
            },
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": {contract.LABEL_APP_ID: app_id, contract.LABEL_SIDECAR_INJECTED: "true"},
            # Only ready sidecars are listed as ready: a pod that is starting or stopping
            # takes no calls from other apps.
            "publishNotReadyAddresses": False,
            "ports": [{"name": name, "port": port, "targetPort": port, "protocol": "TCP"} for name, port in PORTS],
        },
    }


def drift(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """The fields of `current` (a Service as read) that differ from `desired`; [] when none."""
    differences = []
    labels = (current.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        differences.append("metadata.labels")
    spec, wanted = current.get("spec") or {}, desired["spec"]
    for key in ("type", "clusterIP", "selector"):
        if spec.get(key) != wanted[key]:
            differences.append(f"spec.{key}")
    if bool(spec.get("publishNotReadyAddresses")) != wanted["publishNotReadyAddresses"]:
        differences.append("spec.publishNotReadyAddresses")

    def ports(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            (p.get("name"), p.get("port"), p.get("targetPort", p.get("port")), p.get("protocol", "TCP")) for p in items
        )

    if ports(spec.get("ports") or []) != ports(wanted["ports"]):
        differences.append("spec.ports")
    return differences


def as_body(document: dict[str, Any]) -> Any:
    """A manifest as a request body: the client sends dicts as they are, though typed for models."""
    return document


def ours(service: dict[str, Any]) -> bool:
    labels = (service.get("metadata") or {}).get("labels") or {}
    return labels.get(contract.LABEL_MANAGED_BY) == contract.MANAGED_BY


async def read_service(api: client.ApiClient, name: str, namespace: str) -> dict[str, Any] | None:
    """The Service as a dict, or None when there is none of that name."""
    try:
        service: dict[str, Any] = api.sanitize_for_serialization(
            await client.CoreV1Api(api).read_namespaced_service(name, namespace)
        )
    except ApiException as err:
        if err.status != 404:
            raise
        return None
    return service


async def write_slices(
    discovery: client.DiscoveryV1Api,
    namespace: str,
    desired: dict[str, dict[str, Any]],
    current: dict[str, dict[str, Any]],
    differs: Callable[[dict[str, Any], dict[str, Any]], bool],
) -> None:
    """Make the EndpointSlices the operator writes (by name) what `desired` says: create the
    missing, replace those that `differs` from what is wanted, delete the rest of `current`."""
    for name, slice_ in desired.items():
        existing = current.get(name)
        if existing is None:
            await discovery.create_namespaced_endpoint_slice(namespace, as_body(slice_))
        elif differs(existing, slice_):
            slice_["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
            await discovery.replace_namespaced_endpoint_slice(name, namespace, as_body(slice_))
    for name in current.keys() - desired.keys():
        try:
            await discovery.delete_namespaced_endpoint_slice(name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise


class AppServices:
    """Reconciles one app's Service at a time, with every pod event of the app folded in.

    Pod events come in bursts (a rollout, a scale-up); a reconcile reads the current state,
    so events that arrive while one runs need one more run, not one each.
    """

    def __init__(self, api: client.ApiClient, rbac: SidecarRbac, events: EventPoster) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.rbac = rbac
        self.events = events
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._warned: set[tuple[str, str]] = set()
        self._rbac_namespaces: set[str] = set()  # whose sidecar Role this process has written
        self._peers_lock = asyncio.Lock()
        self._peers_dirty = True  # at start: the peer Roles follow the Services as they are now

    async def pod_event(self, pod: dict[str, Any]) -> None:
        metadata = pod.get("metadata") or {}
        namespace = metadata.get("namespace")
        app_id = (metadata.get("labels") or {}).get(contract.LABEL_APP_ID)
        if not namespace or not app_id:
            return
        problem = contract.app_service_problem(app_id)
        if problem is not None:
            if (namespace, app_id) not in self._warned:
                self._warned.add((namespace, app_id))
                message = f"{problem}; other apps cannot invoke it (set annotation {contract.ANNOTATION_APP_ID})"
                log.warning("app id cannot have a Service", extra={"namespace": namespace, "appId": app_id})
                await self.events.warn(namespace, pod, "AppIdNotInvocable", message)
            return
        await self.reconcile(namespace, app_id)

    async def service_event(self, service: dict[str, Any]) -> None:
        metadata = service.get("metadata") or {}
        if (metadata.get("labels") or {}).get(contract.LABEL_FUNCTION):
            return  # a function's (functions.py)
        namespace, app_id = metadata.get("namespace"), (metadata.get("labels") or {}).get(contract.LABEL_APP_ID)
        if namespace and app_id and contract.app_service_problem(app_id) is None:
            await self.reconcile(namespace, app_id)

    async def reconcile(self, namespace: str, app_id: str) -> None:
        key = (namespace, app_id)
        self._dirty.add(key)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._dirty:
                return  # a run that started after our event has covered it
            self._dirty.discard(key)
            for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
                try:
                    changed = await self._reconcile(namespace, app_id)
                    break
                except ApiException as err:
                    if err.status != 409 or attempt == _CONFLICT_ATTEMPTS:
                        raise
                    # Someone wrote the Service between our read and our write: read again.
        if changed or self._peers_dirty:
            await self.reconcile_peers()

    async def _reconcile(self, namespace: str, app_id: str) -> bool:
        """Make the Service match the pods; True when it was created or deleted."""
        name = contract.app_service_name(app_id)
        selector = f"{contract.LABEL_APP_ID}={app_id},{INJECTED_PODS}"
        pods = await self.core.list_namespaced_pod(
            namespace, label_selector=selector, field_selector=_LIVE_PODS, limit=1
        )
        current = await self._read_service(name, namespace)
        has_pods = bool(pods.items)
        if has_pods and namespace not in self._rbac_namespaces:
            # Sidecars need their Role (Components, EndpointSlices) even in a namespace
            # without Components, which the Component events alone would never give one.
            await self.rbac.reconcile(namespace)
            self._rbac_namespaces.add(namespace)
        if current is not None and (current.get("metadata") or {}).get("labels", {}).get(contract.LABEL_FUNCTION):
            return False  # a function holds the name; functions.py warns of the clash
        if current is not None and not ours(current):
            if has_pods:
                await self._warn_taken(namespace, app_id, self.api.sanitize_for_serialization(pods.items[0]))
            return False
        if not has_pods:
            if current is None:
                return False
            await self._delete(namespace, app_id, current)
            return True
        desired = app_service(app_id, namespace)
        if current is None:
            await self.core.create_namespaced_service(namespace, as_body(desired))
            log.info("created the Service of an app", extra={"namespace": namespace, "service": name})
            return True
        await self._repair(current, desired)
        return False

    async def _read_service(self, name: str, namespace: str) -> dict[str, Any] | None:
        return await read_service(self.api, name, namespace)

    async def _warn_taken(self, namespace: str, app_id: str, pod: dict[str, Any]) -> None:
        """Tell the app's pods, once, that a Service of the user's holds the name."""
        if (namespace, app_id) in self._warned:
            return
        self._warned.add((namespace, app_id))
        name = contract.app_service_name(app_id)
        message = (
            f"Service {namespace}/{name} exists but is not managed by Ottava (no label "
            f"{OUR_SERVICES}); other apps cannot invoke app {app_id} until it is removed"
        )
        await self.events.warn(namespace, pod, "AppServiceTaken", message)

    async def _delete(self, namespace: str, app_id: str, current: dict[str, Any]) -> None:
        """Delete the Service of an app with no pods left (the one we read, not a newer one)."""
        uid = (current.get("metadata") or {}).get("uid")
        try:
            await self.core.delete_namespaced_service(
                contract.app_service_name(app_id),
                namespace,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
            )
        except ApiException as err:
            if err.status != 404:
                raise
        log.info("deleted the Service of an app with no pods left", extra={"namespace": namespace, "appId": app_id})

    async def _repair(self, current: dict[str, Any], desired: dict[str, Any]) -> None:
        """Put back the fields of our Service that someone changed."""
        differences = drift(current, desired)
        if not differences:
            return
        name, namespace = desired["metadata"]["name"], desired["metadata"]["namespace"]
        if "spec.clusterIP" in differences:
            # A Service's clusterIP cannot change: replace the Service.
            await self.core.delete_namespaced_service(name, namespace)
            await self.core.create_namespaced_service(namespace, as_body(desired))
        else:
            body = dict(current)
            body["metadata"] = {**current["metadata"], "labels": {**current["metadata"].get("labels", {})}}
            body["metadata"]["labels"].update(desired["metadata"]["labels"])
            body["spec"] = {**current["spec"], **desired["spec"]}
            await self.core.replace_namespaced_service(name, namespace, as_body(body))
        log.info(
            "put the Service of an app back as it should be",
            extra={"namespace": namespace, "service": name, "fields": differences},
        )

    async def reconcile_peers(self) -> None:
        """Peer RBAC for every namespace that has an Ottava Service (see `rbac.reconcile_peers`)."""
        self._peers_dirty = True
        async with self._peers_lock:
            if not self._peers_dirty:
                return
            self._peers_dirty = False
            try:
                listed = await self.core.list_service_for_all_namespaces(label_selector=OUR_SERVICES)
                await self.rbac.reconcile_peers({s.metadata.namespace for s in listed.items})
            except BaseException:
                self._peers_dirty = True  # the next event tries again
                raise
