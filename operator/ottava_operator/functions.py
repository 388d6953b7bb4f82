"""The Service `<function>-ottava` of each `function.wasm` Component, so other pods can call it.

A function runs inside the sidecars that load its Component: those of every Ottava app
of its namespace, or of the apps its `scopes` name. Those sidecars are already listed,
with their readiness, in the EndpointSlices of their apps' Services (services.py). A
Service selector cannot say "app a or app b", so the function's Service has none and the
operator writes its EndpointSlices itself: the endpoints of the hosting apps' slices,
copied with their conditions, one slice per hosting app and address type, labelled
`ottava.io/app-id` with that app. A caller's sidecar resolves the function's name as it
resolves an app id (same label selector, same `internal` port), and the label tells it
which app's certificate the sidecar it reaches must hold.

What triggers a reconcile: an event of a Component (its type or scopes may have changed),
of an app's EndpointSlice (a pod of a hosting app became ready or went away: every
function of that namespace), or of a function's Service (edited or deleted by someone).
Each reconcile reads the Component and the slices from the apiserver, so nothing here
depends on the order in which kopf's watches start. The slices are owned by the Service,
so deleting it deletes them.
"""

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar import contract

from ottava_operator import services
from ottava_operator.events import EventPoster

log = logging.getLogger(__name__)

FUNCTION_TYPE = "function.wasm"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_MANAGER_LABEL = "endpointslice.kubernetes.io/managed-by"
# Not the EndpointSlice controller's name, so that it leaves these slices alone.
SLICE_MANAGER = "operator.ottava.io"
_CONFLICT_ATTEMPTS = 3


@dataclass(frozen=True)
class HostedFunction:
    namespace: str
    name: str
    scopes: tuple[str, ...]  # the apps that run it; () is every app of the namespace

    def hosted_by(self, app_id: str) -> bool:
        return app_id != self.name and (not self.scopes or app_id in self.scopes)


def function_of(component: dict[str, Any]) -> HostedFunction | None:
    """The function a Component declares, or None when it is of another type."""
    metadata = component.get("metadata") or {}
    if (component.get("spec") or {}).get("type") != FUNCTION_TYPE:
        return None
    scopes = tuple(str(s) for s in component.get("scopes") or ())
    return HostedFunction(str(metadata.get("namespace", "")), str(metadata.get("name", "")), scopes)


def is_function_service(service: dict[str, Any]) -> bool:
    labels = (service.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(contract.LABEL_FUNCTION))


def function_service(function: HostedFunction) -> dict[str, Any]:
    """The function's Service: an app's Service (same ports, headless), without a selector."""
    document = services.app_service(function.name, function.namespace)
    document["metadata"]["labels"][contract.LABEL_FUNCTION] = function.name
    document["spec"]["selector"] = None
    return document


def _app_of(slice_: dict[str, Any]) -> str | None:
    """The app whose Service a slice belongs to, when the EndpointSlice controller wrote it."""
    labels = (slice_.get("metadata") or {}).get("labels") or {}
    service = str(labels.get(SERVICE_NAME_LABEL, ""))
    if labels.get(SLICE_MANAGER_LABEL) == SLICE_MANAGER or not service.endswith(contract.APP_SERVICE_SUFFIX):
        return None
    return service[: -len(contract.APP_SERVICE_SUFFIX)]


def function_slices(
    function: HostedFunction, service_uid: str, app_slices: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The function's EndpointSlices: the hosting apps' endpoints, one slice per app and address type.

    `app_slices` are the namespace's Ottava EndpointSlices as listed (the functions' own
    among them are ignored). Endpoints keep their addresses, conditions, pod and node.
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    ports: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for slice_ in sorted(app_slices, key=lambda s: str((s.get("metadata") or {}).get("name", ""))):
        app = _app_of(slice_)
        if app is None or not function.hosted_by(app) or slice_.get("addressType") not in ("IPv4", "IPv6"):
            continue
        key = (app, str(slice_["addressType"]))
        ports.setdefault(key, list(slice_.get("ports") or []))
        for endpoint in slice_.get("endpoints") or []:
            grouped[key].append(
                {k: endpoint[k] for k in ("addresses", "conditions", "targetRef", "nodeName", "zone") if k in endpoint}
            )
    service = contract.app_service_name(function.name)
    slices = []
    for (app, address_type), endpoints in sorted(grouped.items()):
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service}-{app}-{address_type.lower()}",
                    "namespace": function.namespace,
                    "labels": {
                        SERVICE_NAME_LABEL: service,
                        SLICE_MANAGER_LABEL: SLICE_MANAGER,
                        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
                        contract.LABEL_FUNCTION: function.name,
                        contract.LABEL_APP_ID: app,
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": service,
                            "uid": service_uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "addressType": address_type,
                "endpoints": endpoints,
                "ports": ports[(app, address_type)],
            }
        )
    return slices


def _differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    labels = (current.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        return True
    return any(current.get(k) != desired[k] for k in ("addressType", "endpoints", "ports"))


class FunctionServices:
    """Reconciles one function's Service and slices at a time, folding in events that arrive meanwhile."""

    def __init__(self, api: client.ApiClient, events: EventPoster) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.events = events
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._warned: set[tuple[str, str, str]] = set()
        # Functions seen since start. A function deleted (or retyped) while the operator was
        # down is caught by the Service watch's first listing instead.
        self._known: set[tuple[str, str]] = set()

    async def component_event(self, event_type: str | None, component: dict[str, Any]) -> None:
        metadata = component.get("metadata") or {}
        namespace, name = metadata.get("namespace"), metadata.get("name")
        if not namespace or not name:
            return
        key = (str(namespace), str(name))
        if function_of(component) is not None and event_type != "DELETED":
            self._known.add(key)
        elif key in self._known:  # deleted, or no longer a function: its Service goes
            self._known.discard(key)
        else:
            return
        await self.reconcile(*key)

    async def slice_event(self, slice_: dict[str, Any]) -> None:
        """A hosting app's endpoints changed: every function of its namespace follows."""
        namespace = (slice_.get("metadata") or {}).get("namespace")
        if not namespace or _app_of(slice_) is None:
            return
        for function in await self._functions(namespace):
            if function.hosted_by(str(_app_of(slice_))):
                await self.reconcile(namespace, function.name)

    async def service_event(self, service: dict[str, Any]) -> None:
        metadata = service.get("metadata") or {}
        name = (metadata.get("labels") or {}).get(contract.LABEL_FUNCTION)
        if metadata.get("namespace") and name:
            await self.reconcile(str(metadata["namespace"]), str(name))

    async def reconcile(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._dirty.add(key)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._dirty:
                return
            self._dirty.discard(key)
            for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
                try:
                    await self._reconcile(namespace, name)
                    return
                except ApiException as err:
                    if err.status not in (409, 404) or attempt == _CONFLICT_ATTEMPTS:
                        raise
                    # Written or deleted between our read and our write: read again.

    async def _reconcile(self, namespace: str, name: str) -> None:
        component = await self._read_component(namespace, name)
        function = function_of(component) if component is not None else None
        service_name = contract.app_service_name(name)
        current = await self._read_service(service_name, namespace)
        if function is None:
            if current is not None and is_function_service(current):
                await self.core.delete_namespaced_service(service_name, namespace)
                log.info(
                    "deleted the Service of a function that is gone", extra={"namespace": namespace, "function": name}
                )
            return
        assert component is not None
        problem = contract.app_service_problem(name)
        if problem is not None:
            await self._warn(
                component,
                "FunctionNotInvocable",
                f"{problem.replace('app id', 'function name')}; only the sidecars that run the function can call it",
            )
            return
        if current is not None and not is_function_service(current):
            owner = "an app's" if services.ours(current) else "a Service of the user's"
            await self._warn(
                component,
                "FunctionServiceTaken",
                f"Service {namespace}/{service_name} is {owner}: other pods cannot call function {name} "
                "(an app id and a function name must differ)",
            )
            return
        desired = function_service(function)
        if current is None:
            created = await self.core.create_namespaced_service(namespace, services.as_body(desired))
            current = self.api.sanitize_for_serialization(created)
            log.info("created the Service of a function", extra={"namespace": namespace, "service": service_name})
        elif services.drift(current, desired):
            await self.core.delete_namespaced_service(service_name, namespace)  # its slices go with it
            current = self.api.sanitize_for_serialization(
                await self.core.create_namespaced_service(namespace, services.as_body(desired))
            )
            log.info("put the Service of a function back", extra={"namespace": namespace, "service": service_name})
        assert current is not None
        await self._sync_slices(function, str(current["metadata"]["uid"]))

    async def _sync_slices(self, function: HostedFunction, service_uid: str) -> None:
        namespace, service = function.namespace, contract.app_service_name(function.name)
        listed = await self.discovery.list_namespaced_endpoint_slice(namespace, label_selector=services.OUR_SERVICES)
        every = [self.api.sanitize_for_serialization(s) for s in listed.items]
        desired = {s["metadata"]["name"]: s for s in function_slices(function, service_uid, every)}
        current = {
            s["metadata"]["name"]: s
            for s in every
            if ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == service
        }
        await services.write_slices(self.discovery, namespace, desired, current, _differs)

    async def _functions(self, namespace: str) -> list[HostedFunction]:
        listed = await self.custom.list_namespaced_custom_object(
            contract.API_GROUP, contract.API_VERSION, namespace, "components"
        )
        return [f for f in (function_of(c) for c in listed.get("items") or []) if f is not None]

    async def _read_component(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            component: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, namespace, "components", name
            )
        except ApiException as err:
            if err.status != 404:
                raise
            return None
        return component

    async def _read_service(self, name: str, namespace: str) -> dict[str, Any] | None:
        return await services.read_service(self.api, name, namespace)

    async def _warn(self, component: dict[str, Any], reason: str, message: str) -> None:
        metadata = component.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")), reason)
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(message, extra={"namespace": key[0], "function": key[1]})
        await self.events.warn(key[0], component, reason, message)
