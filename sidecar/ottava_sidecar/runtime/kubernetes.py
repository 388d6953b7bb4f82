"""Wiring from the cluster: this pod's Components and Configuration, read and followed.

The sidecar lists and watches `components.ottava.io` in its namespace and the one
`configurations.ottava.io` its pod names (`ottava.io/config`), with the pod's own
service-account credentials: one watch per kind, resumed across apiserver restarts.
Until the first listing succeeds it stays INIT (readiness says why) and keeps retrying;
once loaded, it keeps serving through any apiserver outage and applies changes when
they come: a changed Component is re-initialised and swapped in, a deleted one closed.

It also follows `subscriptions.ottava.io` (declarative subscriptions), handing every
change to `on_subscriptions`, and `trafficroutes.ottava.io` (routing of this sidecar's
calls between the versions of other apps, docs/routing.md), handing every change to
`on_traffic_routes`. Readiness waits for neither: a cluster whose CRDs predate them
(Helm does not upgrade CRDs) must not keep every pod unready; the watch retries, and
says why in the log.

`resiliencies.ottava.io` are followed the same way: every change hands the namespace's
valid Resiliencies to `on_resiliencies`, which applies those in scope of the app, live.
"""

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pydantic import ValidationError

from ottava_sidecar import contract
from ottava_sidecar.components.registry import Registry, SecretResolver, Status
from ottava_sidecar.kube.client import KubeClient, KubeError
from ottava_sidecar.kube.watch import Reflector
from ottava_sidecar.resources.manifests import describe_errors
from ottava_sidecar.resources.models import Component, Configuration, DeclarativeSubscription, TrafficRoute
from ottava_sidecar.resources.resiliency import Resiliency

log = logging.getLogger(__name__)

CONDITION = "kubernetes"


class SecretReadError(LookupError):
    pass


# Each watch holds a connection of the wiring's client for as long as it runs; reads (a
# Secret a Component references, the apiserver's answers to each first listing) need
# room beside them, or they wait for a connection until they time out.
WATCHES = 5  # components, configurations, subscriptions, traffic routes, resiliencies
CONNECTIONS = WATCHES + 3


class KubernetesWiring:
    def __init__(
        self,
        registry: Registry,
        client: KubeClient,
        namespace: str,
        configuration_name: str | None,
        on_configuration: Callable[[Configuration | None], None],
        hot_reload: Callable[[], bool],
        *,
        on_subscriptions: Callable[[list[DeclarativeSubscription]], Awaitable[None]] | None = None,
        on_traffic_routes: Callable[[list[TrafficRoute]], None] | None = None,
        on_resiliencies: Callable[[list[Resiliency]], None] | None = None,
    ) -> None:
        self.registry = registry
        self.client = client
        self.namespace = namespace
        self.configuration_name = configuration_name
        self.on_configuration = on_configuration
        self.hot_reload = hot_reload
        self.resolver = SecretResolver(registry, self.read_secret)
        self.loaded = asyncio.Event()
        self.restart_needed: list[str] = []
        self._changes: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        base = f"/apis/{contract.API_GROUP}/{contract.API_VERSION}/namespaces/{namespace}"
        self.components = Reflector(client, f"{base}/components", self._component_event, what="components")
        self.on_subscriptions = on_subscriptions
        self.subscriptions = Reflector(client, f"{base}/subscriptions", self._subscription_event, what="subscriptions")
        self.on_traffic_routes = on_traffic_routes
        self.traffic_routes = Reflector(
            client, f"{base}/trafficroutes", self._traffic_route_event, what="traffic routes"
        )
        self.on_resiliencies = on_resiliencies
        self.resiliencies = Reflector(client, f"{base}/resiliencies", self._resiliency_event, what="resiliencies")
        self.configurations = (
            Reflector(
                client,
                f"{base}/configurations",
                self._configuration_event,
                field_selector=f"metadata.name={configuration_name}",
                what=f"configuration {configuration_name}",
            )
            if configuration_name
            else None
        )

    async def run(self) -> None:
        reflectors = [r for r in (self.components, self.configurations) if r is not None]
        tasks = [asyncio.create_task(r.run(), name=f"watch {r.what}") for r in reflectors]
        if self.on_subscriptions is not None:
            tasks.append(asyncio.create_task(self.subscriptions.run(), name="watch subscriptions"))
        if self.on_traffic_routes is not None:
            tasks.append(asyncio.create_task(self.traffic_routes.run(), name="watch traffic routes"))
        if self.on_resiliencies is not None:
            tasks.append(asyncio.create_task(self.resiliencies.run(), name="watch resiliencies"))
        try:
            await self._initial_load(reflectors)
            # Failures are often transient in a cluster: the operator grants a referenced
            # Secret a moment after the Component appears, a backend's Service is still
            # coming up. The registry retries DOWN components, as it does standalone.
            self.registry.retry_down(self.resolver)
            while True:
                kind, obj = await self._changes.get()
                await self._apply(kind, obj)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _initial_load(self, reflectors: list[Reflector]) -> None:
        self.registry.set_condition(CONDITION, Status.INIT, f"reading Components from namespace {self.namespace}")
        while not all(r.synced.is_set() for r in reflectors):
            errors = [str(r.last_error) for r in reflectors if r.last_error is not None]
            if errors:
                self.registry.set_condition(
                    CONDITION, Status.INIT, "cannot read the wiring yet, retrying: " + "; ".join(errors)
                )
            waits = [asyncio.create_task(r.synced.wait()) for r in reflectors if not r.synced.is_set()]
            await asyncio.wait(waits, timeout=1.0)
            for wait in waits:
                wait.cancel()
        if self.configurations is not None:
            found = self.configurations.objects.get(self.configuration_name or "")
            self.on_configuration(self._configuration(found) if found else None)
        manifests = [m for m in (self._component(obj) for obj in self.components.objects.values()) if m is not None]
        await self.registry.load(manifests, self.resolver)
        self.registry.set_condition(CONDITION, Status.UP, "")
        self.loaded.set()
        # Whatever changed while the components initialised is caught up now (an
        # unchanged Component is a no-op for the registry).
        for obj in list(self.components.objects.values()):
            await self._changes.put(("MODIFIED", obj))
        for name in {m.name for m in manifests} - set(self.components.objects):
            await self._changes.put(("DELETED", {"metadata": {"name": name}}))
        log.info("wiring loaded from the cluster", extra={"namespace": self.namespace, "components": len(manifests)})

    async def _component_event(self, kind: str, obj: dict[str, Any]) -> None:
        if self.loaded.is_set():
            await self._changes.put((kind, obj))

    async def _subscription_event(self, kind: str, obj: dict[str, Any]) -> None:
        if self.on_subscriptions is None:
            return
        resources = [s for s in (self._subscription(o) for o in self.subscriptions.objects.values()) if s is not None]
        await self.on_subscriptions(resources)

    def _subscription(self, obj: dict[str, Any]) -> DeclarativeSubscription | None:
        document = {k: v for k, v in obj.items() if k != "status"}
        try:
            return DeclarativeSubscription.model_validate(document)
        except ValidationError as err:
            name = obj.get("metadata", {}).get("name", "?")
            log.error("ignoring invalid Subscription %s: %s", name, describe_errors(err))
            return None

    async def _traffic_route_event(self, kind: str, obj: dict[str, Any]) -> None:
        if self.on_traffic_routes is None:
            return
        routes = [r for r in (self._traffic_route(o) for o in self.traffic_routes.objects.values()) if r is not None]
        self.on_traffic_routes(routes)

    def _traffic_route(self, obj: dict[str, Any]) -> TrafficRoute | None:
        try:
            return TrafficRoute.model_validate({k: v for k, v in obj.items() if k != "status"})
        except ValidationError as err:
            name = obj.get("metadata", {}).get("name", "?")
            log.error("ignoring invalid TrafficRoute %s: %s", name, describe_errors(err))
            return None

    async def _resiliency_event(self, kind: str, obj: dict[str, Any]) -> None:
        if self.on_resiliencies is not None:
            self.on_resiliencies(valid_resiliencies(self.resiliencies.objects.values()))

    async def _configuration_event(self, kind: str, obj: dict[str, Any]) -> None:
        if not self.loaded.is_set():
            return
        self.on_configuration(None if kind == "DELETED" else self._configuration(obj))

    async def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj.get("metadata", {}).get("name", "")
        if not self.hot_reload():
            log.warning("Component %s changed; hot reload is off, so it applies after a restart", name)
            if name not in self.restart_needed:
                self.restart_needed.append(name)
            return
        if kind == "DELETED":
            self.registry.remove(name)
            return
        manifest = self._component(obj)
        if manifest is not None:
            await self.registry.upsert(manifest, self.resolver)

    def _component(self, obj: dict[str, Any]) -> Component | None:
        document = {k: v for k, v in obj.items() if k != "status"}
        try:
            return Component.model_validate(document)
        except ValidationError as err:
            name = obj.get("metadata", {}).get("name", "?")
            log.error("ignoring invalid Component %s: %s", name, describe_errors(err))
            return None

    def _configuration(self, obj: dict[str, Any]) -> Configuration | None:
        try:
            return Configuration.model_validate({k: v for k, v in obj.items() if k != "status"})
        except ValidationError as err:
            log.error("ignoring invalid Configuration %s: %s", self.configuration_name, describe_errors(err))
            return None

    async def read_secret(self, name: str, key: str) -> str:
        """A key of a Kubernetes Secret in the pod's namespace, with errors that say what to fix."""
        try:
            secret = await self.client.get(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        except KubeError as err:
            if err.status == 403:
                raise SecretReadError(
                    f"cannot read Secret {self.namespace}/{name}: the sidecar's Role does not grant it "
                    f"(is a Component referencing it applied, and the operator running?): {err.message}"
                ) from None
            if err.status == 404:
                raise SecretReadError(f"Secret {self.namespace}/{name} does not exist") from None
            raise SecretReadError(f"cannot read Secret {self.namespace}/{name}: {err}") from None
        data = secret.get("data") or {}
        if key not in data:
            raise SecretReadError(
                f"Secret {self.namespace}/{name} has no key {key!r} (keys: {', '.join(sorted(data))})"
            )
        return base64.b64decode(data[key]).decode()


def valid_resiliencies(objects: Iterable[dict[str, Any]]) -> list[Resiliency]:
    """The Resiliency objects that validate (an invalid one, which got in while the webhook was
    down, is logged and left out: the others still apply)."""
    found = []
    for obj in objects:
        try:
            found.append(Resiliency.model_validate({k: v for k, v in obj.items() if k != "status"}))
        except ValidationError as err:
            name = obj.get("metadata", {}).get("name", "?")
            log.error("ignoring invalid Resiliency %s: %s", name, describe_errors(err))
    return found
