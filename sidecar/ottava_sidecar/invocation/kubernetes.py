"""Name resolution in a cluster: app ids from the EndpointSlices of `<app-id>-ottava`.

The operator keeps a headless Service `<app-id>-ottava` per app id and namespace; the
EndpointSlice controller lists its pods in EndpointSlices, with their readiness, and
copies the Service's `app.kubernetes.io/managed-by: ottava` label onto them. A sidecar
watches those slices (one list-then-watch per namespace it calls into, never a lookup per
call) and spreads calls round robin over the ready endpoints, on the port named
`internal`.

A WebAssembly function is resolved the same way, from the slices of its Service, which
the operator writes (one per app that runs it, labelled with that app's id, which its
sidecars' certificates name).

Versions (traffic routing, docs/routing.md): a pod's version is its label
`ottava.io/app-version`, which EndpointSlices do not carry and sidecars may not read pods
for. The operator, which watches the injected pods, writes one more EndpointSlice per app
and version, labelled with both and with no Service: an index from pod (uid, and address)
to version, that the same watch receives. Readiness still comes from the Service's own
slices only; a pod the index does not list yet serves no version (calls a TrafficRoute
sends to a version skip it until the index catches up).

`id` is an app of the sidecar's own namespace, `id.namespace` one of another (Dapr's
form). Until a namespace's first listing arrives, a call waits for it, briefly; a call
into a namespace the sidecar may not read fails with the apiserver's reason.
"""

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ottava_sidecar import contract, metrics
from ottava_sidecar.invocation.resolution import Address, AppNotFoundError, NameResolver
from ottava_sidecar.kube.client import Credentials, KubeClient
from ottava_sidecar.kube.watch import Reflector

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # set by the EndpointSlice controller, reserved
SELECTOR = f"{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}"
SYNC_WAIT_SECONDS = 5.0  # how long calls wait for a namespace's first listing
FORGET_SECONDS = 5.0  # an address that refused a call is skipped this long (or until its slices change)
IDLE_SECONDS = 600.0  # the watch of another namespace stops after this long without a call
MAX_NAMESPACES = 32  # watched at once; beyond it the least recently called namespace's watch stops
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def split_app_id(target: str, own_namespace: str) -> tuple[str, str]:
    """(app id, namespace) of `id` or `id.namespace`; `AppNotFoundError` saying why not."""
    app_id, _, namespace = target.partition(".")
    problem = contract.app_service_problem(app_id)
    if problem is not None:
        raise AppNotFoundError(f"app id {target!r} cannot be resolved in a cluster: {problem}")
    if namespace and not _NAMESPACE.match(namespace):
        raise AppNotFoundError(
            f"app id {target!r} cannot be resolved in a cluster: {namespace!r} is not a namespace name "
            "(the form is 'id' or 'id.namespace')"
        )
    return app_id, namespace or own_namespace


def _ready(endpoint: dict[str, Any]) -> bool:
    conditions = endpoint.get("conditions") or {}
    # A missing `ready` means "unknown", which the API says to treat as ready; a terminating
    # endpoint takes no new calls even while it still serves.
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def _internal_port(slice_: dict[str, Any]) -> int | None:
    for port in slice_.get("ports") or []:
        if port.get("name") == contract.SERVICE_PORT_INTERNAL and port.get("port"):
            return int(port["port"])
    return None


@dataclass(frozen=True)
class Endpoints:
    """What the slices of one Service say: the ready addresses, and how many are not ready."""

    ready: tuple[Address, ...] = ()
    not_ready: int = 0


def _host_app(slice_: dict[str, Any], app: str) -> str:
    """For a function's slice (labelled with the function `app`), the app whose sidecars there run it."""
    labels = (slice_.get("metadata") or {}).get("labels") or {}
    if not app or labels.get(contract.LABEL_FUNCTION) != app:
        return ""
    host = str(labels.get(contract.LABEL_APP_ID, ""))
    return "" if host == app else host


def version_index(slices: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Pod uid (and each address) → version, from the operator's version slices of one app."""
    index: dict[str, str] = {}
    for slice_ in slices:
        version = str(((slice_.get("metadata") or {}).get("labels") or {}).get(contract.LABEL_APP_VERSION, ""))
        if not version:
            continue
        for endpoint in slice_.get("endpoints") or []:
            uid = (endpoint.get("targetRef") or {}).get("uid")
            if uid:
                index[str(uid)] = version
            for address in endpoint.get("addresses") or []:
                index[str(address)] = version
    return index


def version_slice_app(slice_: dict[str, Any]) -> str | None:
    """The app whose version index a slice is (the operator's, labelled with a version and no Service); else None."""
    labels = (slice_.get("metadata") or {}).get("labels") or {}
    if SERVICE_NAME_LABEL in labels or not labels.get(contract.LABEL_APP_VERSION):
        return None
    app = labels.get(contract.LABEL_APP_ID)
    return str(app) if app else None


def endpoints_of(
    slices: Iterable[dict[str, Any]], app: str = "", versions: Mapping[str, str] | None = None
) -> Endpoints:
    """Ready internal addresses of a Service's EndpointSlices, each pod once, in a stable order.

    A dual-stack Service has an IPv4 and an IPv6 slice listing the same pods; a pod counts
    once (IPv4 first). Slices without a port named `internal` or of FQDN type are ignored.
    The slices of a function's Service (`app` is its name) are the operator's, one per app
    that runs it: their addresses say that the sidecar there is certified as that app.
    `versions` (a `version_index`) gives each address the version its pod serves.
    """
    versions = versions or {}
    seen: set[str] = set()
    ready: set[Address] = set()
    not_ready = 0
    ordered = sorted(slices, key=lambda s: (s.get("addressType") != "IPv4", s.get("metadata", {}).get("name", "")))
    for slice_ in ordered:
        port = _internal_port(slice_)
        host = _host_app(slice_, app)
        if port is None or slice_.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for endpoint in slice_.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            target = endpoint.get("targetRef") or {}
            identity = str(target.get("uid") or target.get("name") or addresses[0])
            if identity in seen:
                continue
            seen.add(identity)
            if _ready(endpoint):
                version = versions.get(str(target.get("uid") or ""), "") or versions.get(str(addresses[0]), "")
                ready.add(Address(str(addresses[0]), port, host, version))
            else:
                not_ready += 1
    return Endpoints(tuple(sorted(ready, key=lambda a: (a.host, a.port))), not_ready)


class RoundRobin:
    """Hands out each app's addresses in turn, skipping those that recently refused a call."""

    def __init__(self) -> None:
        self._turns: dict[tuple[tuple[str, str], str | None], int] = {}
        self._forgotten: dict[tuple[str, str], dict[Address, float]] = {}

    def pick(
        self, key: tuple[str, str], addresses: tuple[Address, ...], now: float, version: str | None = None
    ) -> Address:
        """The next of `addresses` (those of `version`, when one is asked for: each version takes its own turns)."""
        forgotten = self._forgotten.get(key, {})
        usable = [a for a in addresses if forgotten.get(a, 0.0) <= now] or list(addresses)
        turn = self._turns.get((key, version), -1) + 1
        self._turns[(key, version)] = turn
        return usable[turn % len(usable)]

    def forget(self, key: tuple[str, str], address: Address, until: float) -> None:
        self._forgotten.setdefault(key, {})[address] = until

    def changed(self, key: tuple[str, str]) -> None:
        """The slices changed: what was forgotten gets a fresh chance."""
        self._forgotten.pop(key, None)


@dataclass
class _Namespace:
    """The watch of one namespace's Ottava EndpointSlices, indexed by app id."""

    namespace: str
    reflector: Reflector
    task: "asyncio.Task[None]"
    started: float
    used: float
    slices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # app id → slice name → slice
    versions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # the operator's version slices
    endpoints: dict[str, Endpoints] = field(default_factory=dict)


class KubernetesResolver(NameResolver):
    def __init__(self, credentials: Credentials, namespace: str) -> None:
        # A client of its own: every watched namespace holds a connection, which must not
        # starve the wiring's requests.
        self.client = KubeClient(credentials, connections=MAX_NAMESPACES + 2)
        self.namespace = namespace
        self._namespaces: dict[str, _Namespace] = {}
        self._round_robin = RoundRobin()

    async def register(self, app_id: str, address: Address) -> None:
        # Others find this sidecar through its pod's readiness in the Service's
        # EndpointSlices, not through anything it writes; watching our own namespace now
        # spares the first call the wait for its listing.
        self._watch(self.namespace, time.monotonic())
        problem = contract.app_service_problem(app_id)
        if problem is not None:
            log.warning("this app cannot be invoked by other apps: %s", problem)
        log.info(
            "resolving app ids from EndpointSlices",
            extra={"namespace": self.namespace, "service": contract.app_service_name(app_id)},
        )

    async def unregister(self) -> None:
        """Nothing to undo: a terminating pod leaves its Service's ready endpoints by itself."""

    async def register_function(self, name: str, address: Address, host_app_id: str) -> None:
        """Nothing to write: the operator lists this pod in the function's Service `<name>-ottava`
        (its slices copy the hosting apps' endpoints), so others find it as they find apps."""
        problem = contract.app_service_problem(name)
        if problem is not None:
            raise AppNotFoundError(problem.replace("app id", "function name"))
        log.info(
            "other pods call the function through its Service",
            extra={"function": name, "service": contract.app_service_name(name), "appId": host_app_id},
        )

    def served_namespace(self, target: str) -> str | None:
        return split_app_id(target, self.namespace)[1]

    async def resolve(self, app_id: str, version: str | None = None) -> Address:
        name, namespace = split_app_id(app_id, self.namespace)
        now = time.monotonic()
        self._stop_idle(now)
        view = self._watch(namespace, now)
        view.used = now
        if not view.reflector.synced.is_set():
            remaining = view.started + SYNC_WAIT_SECONDS - now
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(view.reflector.synced.wait(), remaining)
            if not view.reflector.synced.is_set():
                reason = view.reflector.last_error or f"no answer from the apiserver within {SYNC_WAIT_SECONDS:g}s"
                raise AppNotFoundError(
                    f"no ready pod of app {name!r} in namespace {namespace!r}: cannot read the EndpointSlices "
                    f"of namespace {namespace} ({reason}); sidecars may read them only in namespaces that run "
                    "Ottava apps, as the operator grants"
                )
        endpoints = view.endpoints.get(name)
        if endpoints is None or not endpoints.ready:
            service = contract.app_service_name(name)
            if endpoints is None:
                why = (
                    f"Service {service} has no endpoints (is a pod with annotation {contract.ANNOTATION_APP_ID}: "
                    f"{name} running there, or a pod of an app that runs function {name}, and the Ottava operator?)"
                )
            else:
                why = f"none of the {endpoints.not_ready} endpoint(s) of Service {service} is ready"
            raise AppNotFoundError(f"no ready pod of app {name!r} in namespace {namespace!r}: {why}")
        ready = endpoints.ready
        if version is not None:
            ready = tuple(a for a in ready if a.version == version)
            if not ready:
                found = ", ".join(sorted({a.version or "(none)" for a in endpoints.ready}))
                raise AppNotFoundError(
                    f"no ready pod of app {name!r} in namespace {namespace!r} serves version {version!r} "
                    f"(versions of its ready pods: {found}; label {contract.LABEL_APP_VERSION}, from the annotation "
                    f"{contract.ANNOTATION_APP_VERSION})"
                )
        return self._round_robin.pick((namespace, name), ready, now, version)

    def served_app_id(self, target: str) -> str:
        """`id.namespace` is served by the sidecars of app `id`."""
        return target.partition(".")[0]

    def forget(self, app_id: str, address: Address) -> None:
        try:
            name, namespace = split_app_id(app_id, self.namespace)
        except AppNotFoundError:
            return
        self._round_robin.forget((namespace, name), address, time.monotonic() + FORGET_SECONDS)

    async def close(self) -> None:
        views, self._namespaces = list(self._namespaces.values()), {}
        for view in views:
            view.task.cancel()
        await asyncio.gather(*(v.task for v in views), return_exceptions=True)
        await self.client.close()

    def _watch(self, namespace: str, now: float) -> _Namespace:
        view = self._namespaces.get(namespace)
        if view is not None:
            return view

        async def on_event(kind: str, obj: dict[str, Any]) -> None:
            self._apply(namespace, kind, obj)

        reflector = Reflector(
            self.client,
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            on_event,
            label_selector=SELECTOR,
            what=f"EndpointSlices of namespace {namespace}",
        )
        task = asyncio.create_task(reflector.run(), name=f"watch endpointslices {namespace}")
        view = self._namespaces[namespace] = _Namespace(namespace, reflector, task, now, now)
        log.info("watching EndpointSlices for service invocation", extra={"namespace": namespace})
        return view

    def _apply(self, namespace: str, kind: str, obj: dict[str, Any]) -> None:
        view = self._namespaces.get(namespace)
        if view is None:
            return
        metadata = obj.get("metadata") or {}
        slice_name = str(metadata.get("name", ""))
        service = str((metadata.get("labels") or {}).get(SERVICE_NAME_LABEL, ""))
        touched = {app for app, slices in view.slices.items() if slices.pop(slice_name, None) is not None}
        touched |= {app for app, slices in view.versions.items() if slices.pop(slice_name, None) is not None}
        versioned = version_slice_app(obj)
        if service.endswith(contract.APP_SERVICE_SUFFIX) and kind != "DELETED":
            app = service[: -len(contract.APP_SERVICE_SUFFIX)]
            view.slices.setdefault(app, {})[slice_name] = obj
            touched.add(app)
        elif versioned is not None and kind != "DELETED":
            view.versions.setdefault(versioned, {})[slice_name] = obj
            touched.add(versioned)
        for app in touched:
            slices = view.slices.get(app)
            self._round_robin.changed((namespace, app))
            if not slices:
                view.slices.pop(app, None)
                view.endpoints.pop(app, None)
                _remove_gauge(namespace, app)
                continue
            index = version_index(view.versions.get(app, {}).values())
            endpoints = view.endpoints[app] = endpoints_of(slices.values(), app, index)
            metrics.INVOCATION_ENDPOINTS.labels(namespace, app).set(len(endpoints.ready))
            log.debug(
                "endpoints changed",
                extra={"namespace": namespace, "appId": app, "ready": [str(a) for a in endpoints.ready]},
            )

    def _stop_idle(self, now: float) -> None:
        others = sorted((v.used, n) for n, v in self._namespaces.items() if n != self.namespace)
        excess = len(self._namespaces) - MAX_NAMESPACES + 1  # room for one more
        for used, namespace in others:
            if now - used > IDLE_SECONDS or excess > 0:
                excess -= 1
                view = self._namespaces.pop(namespace)
                view.task.cancel()
                for app in view.endpoints:
                    _remove_gauge(namespace, app)
                log.info("stopped watching a namespace no call went to lately", extra={"namespace": namespace})


def _remove_gauge(namespace: str, app: str) -> None:
    with contextlib.suppress(KeyError):
        metrics.INVOCATION_ENDPOINTS.remove(namespace, app)
