"""The sidecar process: servers up first, then components, then ready; drain on stop.

The servers start before the components so that liveness answers (and readiness says
INIT) while backends are still being connected; a slow backend must not get the pod
killed for being unresponsive.

With `--app-port`, the sidecar then waits in the background for the app to listen
(readiness stays INIT, its `app` entry saying so), reads the app's subscriptions and
starts delivering. Meanwhile it has registered its app id with name resolution, so
other sidecars can invoke the app as soon as it answers.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ottava_sidecar import appchannel, backoff, contract, metrics
from ottava_sidecar.api import access
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.server import GrpcApiServer
from ottava_sidecar.api.http.server import build_api_app
from ottava_sidecar.api.metadata import AppConnectionProperties, MetadataApi
from ottava_sidecar.components import health
from ottava_sidecar.components.registry import Entry, Registry, SecretResolver, Status
from ottava_sidecar.invocation.filters import InvocationFilter
from ottava_sidecar.invocation.internal import InternalServer
from ottava_sidecar.invocation.invoker import Invoker
from ottava_sidecar.invocation.kubernetes import KubernetesResolver
from ottava_sidecar.invocation.resolution import Address, NameResolver
from ottava_sidecar.invocation.standalone import LocalRegistry
from ottava_sidecar.kube import client as kube_client
from ottava_sidecar.kube.client import KubeClient
from ottava_sidecar.limits import Limits
from ottava_sidecar.messaging.runtime import Messaging
from ottava_sidecar.resources.models import Component
from ottava_sidecar.runtime.kubernetes import KubernetesWiring
from ottava_sidecar.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


@dataclass
class Options:
    app_id: str = "ottava"
    resources_path: Path | None = None
    app_port: int | None = None
    app_protocol: str = "http"
    listen_address: str = "127.0.0.1"
    grpc_port: int = contract.GRPC_PORT
    http_port: int = contract.HTTP_PORT
    metrics_port: int = contract.METRICS_PORT
    enable_metrics: bool = True
    api_token: str | None = None
    shutdown_grace_seconds: float = 5.0
    mode: str = "standalone"
    internal_grpc_port: int = contract.INTERNAL_GRPC_PORT
    internal_listen_address: str | None = None  # default: listen_address
    app_timeout_seconds: float = 60.0  # wait for the app to answer a delivery or a call
    invocation_filters: list[InvocationFilter] = field(default_factory=list)
    registry_dir: Path | None = None  # standalone name resolution folder; None: the default
    # Kubernetes mode: where the wiring comes from, and which addresses face the pod network.
    namespace: str | None = None
    configuration_name: str | None = None
    http_listen_address: str | None = None  # default: listen_address; app routes stay loopback-only
    metrics_listen_address: str | None = None  # default: listen_address
    # What one client may cost the sidecar: body sizes, timeouts, concurrency, buffers.
    limits: Limits = field(default_factory=Limits)


@dataclass
class BoundPorts:
    grpc: int = 0
    http: int = 0
    metrics: int | None = None
    internal: int = 0


@dataclass
class Sidecar:
    options: Options
    components: list[Component]
    on_shutdown_request: Callable[[], None] = field(default=lambda: None)

    def __post_init__(self) -> None:
        self.registry = Registry(self.options.app_id)
        self.registry.on_status(_record_status)
        o = self.options
        app = AppConnectionProperties(o.app_port, o.app_protocol)
        self.app_channel = (
            appchannel.create(o.app_protocol, o.app_id, o.app_port, timeout=o.app_timeout_seconds)
            if o.app_port is not None
            else None
        )
        self.messaging = Messaging(self.registry)
        self.kube_credentials = kube_client.from_environment() if o.mode == "kubernetes" else None
        self.resolver: NameResolver = (
            KubernetesResolver(self.kube_credentials, o.namespace or "default")
            if self.kube_credentials is not None
            else LocalRegistry(o.registry_dir)
        )
        self.invoker = Invoker(
            o.app_id, self.resolver, default_timeout=o.app_timeout_seconds, extra_filters=o.invocation_filters
        )
        self.metadata = MetadataApi(self.registry, o.mode, app, self.on_shutdown_request)
        self.metadata.subscriptions = self.messaging.subscriptions
        self.apis = Apis.create(
            self.registry, self.metadata, messaging=self.messaging, invoker=self.invoker, limits=o.limits
        )
        self.ports = BoundPorts()
        self._grpc = GrpcApiServer(self.apis, api_token=o.api_token)
        self._internal = InternalServer(o.app_id, lambda: self.app_channel)
        self._runners: list[web.AppRunner] = []
        self._app_task: asyncio.Task[None] | None = None
        self.wiring: KubernetesWiring | None = None
        self._wiring_task: asyncio.Task[None] | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.settings = RuntimeSettings(self)

    async def start(self) -> None:
        o = self.options
        self.ports.grpc = self._grpc.bind(o.listen_address, o.grpc_port)
        await self._grpc.start()
        http_address = o.http_listen_address or o.listen_address
        access.set_loopback_only(not access.is_loopback(http_address))
        self.ports.http = await self._serve(
            build_api_app(self.apis, api_token=o.api_token), o.http_port, "HTTP API", http_address
        )
        if o.enable_metrics:
            await self.settings.enable_metrics(True)
        internal_address = o.internal_listen_address or o.listen_address
        self.ports.internal = self._internal.bind(internal_address, o.internal_grpc_port)
        await self._internal.start()
        if self.app_channel is not None:
            self.registry.set_condition("app", Status.INIT, f"waiting for app port {self.app_channel.port}")
        if self.kube_credentials is not None:
            self.wiring = KubernetesWiring(
                self.registry,
                KubeClient(self.kube_credentials),
                o.namespace or "default",
                o.configuration_name,
                self.settings.apply,
                self.settings.hot_reload,
            )
            self._wiring_task = asyncio.create_task(self.wiring.run(), name="kubernetes-wiring")
        else:
            await self.registry.load(self.components, SecretResolver(self.registry))
        advertised = "127.0.0.1" if internal_address in ("0.0.0.0", "::", "") else internal_address
        try:
            await self.resolver.register(o.app_id, Address(advertised, self.ports.internal))
        except (OSError, LookupError) as err:  # invocation of this app will not work; the rest does
            log.error("cannot register app %s for service invocation: %s", o.app_id, err)
        if self.app_channel is not None:
            self._app_task = asyncio.create_task(self._connect_app(self.app_channel), name="connect-app")

    async def _connect_app(self, channel: appchannel.AppChannel) -> None:
        """Wait for the app to listen, then read its subscriptions and start delivering."""
        waited = await channel.wait_until_listening()
        log.info("app is listening on port %d (waited %.1fs)", channel.port, waited)
        delays = backoff.APP_SUBSCRIPTIONS.delays()
        while True:
            self.registry.set_condition("app", Status.INIT, f"reading subscriptions from {channel.describe()}")
            try:
                specs = await channel.list_subscriptions()
                break
            except appchannel.AppChannelError as err:
                self.registry.set_condition("app", Status.INIT, f"reading subscriptions failed, retrying: {err}")
                delay = next(delays)
                log.warning("reading the app's subscriptions failed; retrying in %.1fs: %s", delay, err)
                await asyncio.sleep(delay)
        problems = await self.messaging.subscribe_app(channel, specs)
        self.registry.set_condition("app", Status.UP, "; ".join(problems))

    async def _serve(self, app: web.Application, port: int, what: str, address: str | None = None) -> int:
        runner = await self._start_runner(app, port, what, address or self.options.listen_address)
        self._runners.append(runner)
        bound: int = runner.addresses[0][1]
        return bound

    @staticmethod
    async def _start_runner(app: web.Application, port: int, what: str, address: str) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, address, port, reuse_port=False)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise OSError(f"cannot listen on {address}:{port} for the {what}: {err.strerror}") from None
        return runner

    async def wait_loaded(self) -> None:
        """Until the components are loaded (at once standalone; in a cluster, once read)."""
        if self.wiring is not None:
            await self.wiring.loaded.wait()

    def status_line(self) -> str:
        o, p = self.options, self.ports
        status = health.overall(self.registry)
        down = [e for e in self.registry.entries() if e.status is Status.DOWN]
        problems = "".join(f" [{e.name}: {e.reason}]" for e in down)
        metrics_part = (
            f" metrics={o.metrics_listen_address or o.listen_address}:{p.metrics}" if p.metrics is not None else ""
        )
        internal_part = f" internal={o.internal_listen_address or o.listen_address}:{p.internal}"
        loaded = sum(e.status is Status.UP for e in self.registry.entries())
        return (
            f"ottava sidecar {status.value}: app_id={o.app_id} grpc={o.listen_address}:{p.grpc} "
            f"http={o.http_listen_address or o.listen_address}:{p.http}{metrics_part}{internal_part} components={loaded}{problems}"
        )

    async def stop(self) -> None:
        """Drain in-flight calls (up to the grace period), then close the components."""
        grace = self.options.shutdown_grace_seconds
        await self.resolver.unregister()  # no new calls from other sidecars
        if self._wiring_task is not None:
            self._wiring_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._wiring_task
        if self.wiring is not None:
            await self.wiring.client.close()
        await self.settings.enable_metrics(False)
        if self._app_task is not None:
            self._app_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._app_task
        await self.messaging.close()  # ends stream subscriptions, so their calls finish
        await self._grpc.stop(grace)
        await self._internal.stop(grace)
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.invoker.close()
        await self.resolver.close()
        if self.app_channel is not None:
            await self.app_channel.close()
        await self.registry.close()


def _record_status(entry: Entry) -> None:
    metrics.COMPONENT_UP.labels(entry.name, entry.type).set(1 if entry.status is Status.UP else 0)
    if entry.init_seconds is not None:
        metrics.COMPONENT_INIT_SECONDS.labels(entry.name, entry.type).set(entry.init_seconds)
