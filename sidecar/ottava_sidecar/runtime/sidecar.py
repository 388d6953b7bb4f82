"""The sidecar process: ports bound and components loaded, then ready; then the APIs served; drain on stop.

Start-up has two steps, so that the ready line comes as early as it can honestly come:

* `open` binds every listening socket (gRPC API, HTTP API, metrics, internal), loads the
  components (standalone), certifies the sidecar and registers its app id. From here on
  a client that connects is never refused: its connection waits in the listen backlog.
  Standalone, the ready line is printed after this step: what it reports (the status,
  the components, the ports) is settled. While it waits for the local CA's certificate
  (made in a child process), it imports what `serve` serves first.
* `serve` imports and builds what answers calls (the proto stubs, aiohttp, the building-
  block APIs, prometheus_client) and starts serving on the bound sockets; the calls that
  waited are answered then, in order. `start` does both.

In a cluster, the servers are served before the components arrive, so that liveness
answers (and readiness says INIT) while backends are still being connected; a slow
backend must not get the pod killed for being unresponsive.

With `--app-port`, the sidecar then waits in the background for the app to listen
(readiness stays INIT, its `app` entry saying so), reads the app's subscriptions and
starts delivering. Meanwhile it has registered its app id with name resolution, so
other sidecars can invoke the app as soon as it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import logging
import socket
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ottava_sidecar import backoff, contract, metrics, tracing
from ottava_sidecar.api import access
from ottava_sidecar.api.grpc.server import GrpcApiServer
from ottava_sidecar.components import health
from ottava_sidecar.components.registry import Entry, Registry, SecretResolver, Status
from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.identity.workload import IdentityError, WorkloadIdentity
from ottava_sidecar.invocation.access_control import AccessPolicy
from ottava_sidecar.invocation.filters import InvocationFilter
from ottava_sidecar.invocation.internal import InternalServer
from ottava_sidecar.invocation.resolution import Address, NameResolver
from ottava_sidecar.invocation.standalone import LocalRegistry
from ottava_sidecar.limits import Limits
from ottava_sidecar.resiliency import outbound as resilient_components
from ottava_sidecar.resiliency.provider import Provider as ResiliencyProvider
from ottava_sidecar.resources.models import Component, Configuration, DeclarativeSubscription, TrafficRoute
from ottava_sidecar.resources.resiliency import Resiliency
from ottava_sidecar.runtime import memory
from ottava_sidecar.runtime.loop_lag import LoopLagMonitor
from ottava_sidecar.runtime.memory import MemoryTrimmer
from ottava_sidecar.runtime.settings import RuntimeSettings

# What answers calls (the API modules, aiohttp, the stubs) is imported by `serve`, after
# the ready line; the kube client and the operator's CA only in kubernetes mode.
if TYPE_CHECKING:
    from aiohttp import web

    from ottava_sidecar import appchannel
    from ottava_sidecar.api.apis import Apis
    from ottava_sidecar.api.bindings import BindingApp, InputBindings
    from ottava_sidecar.api.metadata import MetadataApi
    from ottava_sidecar.identity.local_issuer import LocalIssuer
    from ottava_sidecar.invocation.invoker import Invoker
    from ottava_sidecar.kube.client import Credentials
    from ottava_sidecar.messaging.runtime import Messaging
    from ottava_sidecar.runtime.kubernetes import KubernetesWiring

log = logging.getLogger(__name__)

# The readiness entry naming what the app declared but the sidecar could not use.
APP_SUBSCRIPTIONS = "app-subscriptions"
# The readiness entry of the workload certificate (mTLS on the internal port).
IDENTITY = "identity"
# Connections an HTTP port holds unanswered (aiohttp's default backlog).
_BACKLOG = 128
# When start-up's objects are left out of garbage collections (and its freed memory given
# back), after serving began.
_SETTLE_AFTER_SECONDS = 0.5


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
    app_api_token: str | None = None  # presented to the app as `dapr-api-token`
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
    # Standalone: the Configuration of `--config FILE`, applied at start (in a cluster the
    # one named by `configuration_name` is read and followed instead).
    configuration: Configuration | None = None
    # Standalone: the Subscription resources of the resources folder (in a cluster they are
    # read and followed instead); delivered to the app with its own subscriptions.
    subscriptions: list[DeclarativeSubscription] = field(default_factory=list)
    # The version of the app this sidecar serves (`--app-version`; the pod label in a cluster),
    # which callers' TrafficRoutes pick by.
    app_version: str = ""
    # Standalone: the TrafficRoutes of the resources folder, followed live (in a cluster they
    # are read and followed instead); applied to this sidecar's calls to other apps.
    traffic_routes: list[TrafficRoute] = field(default_factory=list)
    # Standalone: the Resiliency resources of the resources folder (in a cluster they are read
    # and followed instead): timeouts, retries and circuit breakers (docs/resiliency.md).
    resiliencies: list[Resiliency] = field(default_factory=list)
    # mTLS on the internal port, with a workload certificate (docs/security.md): from the
    # local CA standalone, from the operator's CA in a cluster.
    mtls: bool = True
    ca_dir: Path | None = None  # standalone: the local CA's folder; None: the default
    # Standalone: the local CA's issuer, its child process already started (`ottava run` does
    # so first thing); None: one is made for `ca_dir` and `workload_cert_ttl_seconds`.
    local_issuer: LocalIssuer | None = None
    workload_cert_ttl_seconds: float = 24 * 3600.0  # standalone: the lifetime of the local CA's certificates
    identity_endpoint: str = ""  # kubernetes: the operator's signing endpoint, its certificate's name,
    identity_server_name: str = ""  # and the roots that certificate is checked against
    trust_anchors: bytes = b""
    token_dir: Path = Path(contract.TOKEN_MOUNT_PATH)


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
        # The Resiliency policies of this app's calls: components' through the registry's
        # stand-ins, invocations through the invoker, deliveries through the app channel.
        self.resiliency = ResiliencyProvider(self.options.app_id, self.options.resiliencies)
        self.registry.wrap = resilient_components.wrapper(self.resiliency)
        # Weakly: a module global must not keep a stopped sidecar (and its gRPC objects) alive to exit.
        component_type = weakref.WeakMethod(self._component_type)
        tracing.set_component_types(lambda name: lookup(name) if (lookup := component_type()) else None)
        o = self.options
        self.app_channel: appchannel.AppChannel | None = None  # made by `serve` (its client library loads then)
        self.kube_credentials: Credentials | None = None
        self.resolver: NameResolver
        if o.mode == "kubernetes":
            from ottava_sidecar.invocation.kubernetes import KubernetesResolver
            from ottava_sidecar.kube import client as kube_client

            self.kube_credentials = kube_client.from_environment()
            self.resolver = KubernetesResolver(self.kube_credentials, o.namespace or "default")
        else:
            self.resolver = LocalRegistry(o.registry_dir)
        self.identity = _workload_identity(o) if o.mtls else None
        self.ports = BoundPorts()
        # Who may invoke this app: replaced whole by `settings.apply` when the Configuration changes.
        self.access_policy = AccessPolicy()
        self._grpc = GrpcApiServer(api_token=o.api_token, limits=o.limits)
        self._internal = InternalServer(
            o.app_id,
            lambda: self.app_channel,
            o.limits,
            identity=self.identity,
            policy=lambda: self.access_policy,
            functions=lambda name: self._services.apis.functions.for_peers(name) if self._services else None,
        )
        self._internal_task: asyncio.Task[None] | None = None
        # The HTTP ports' sockets (one per address the listen address names), bound by `open`
        # and served by `serve` (empty: not bound, or served).
        self._http_sockets: list[socket.socket] = []
        self.metrics_sockets: list[socket.socket] = []
        self._runners: list[web.AppRunner] = []
        self._app_task: asyncio.Task[None] | None = None
        self.wiring: KubernetesWiring | None = None
        self._wiring_task: asyncio.Task[None] | None = None
        self._folder_task: asyncio.Task[None] | None = None  # standalone: the resources folder's TrafficRoutes
        self._metrics_runner: web.AppRunner | None = None
        self._services: _Services | None = None
        self.settings = RuntimeSettings(self)
        self.loop_lag = LoopLagMonitor()
        self.memory_trimmer = MemoryTrimmer()

    # The building-block APIs and what they call, made on first use (by `serve` at the latest).
    @property
    def apis(self) -> Apis:
        return self._built().apis

    @property
    def messaging(self) -> Messaging:
        return self._built().messaging

    @property
    def invoker(self) -> Invoker:
        return self._built().invoker

    @property
    def metadata(self) -> MetadataApi:
        return self._built().metadata

    def _built(self) -> _Services:
        if self._services is None:
            self._services = _Services.build(self)
        return self._services

    async def start(self) -> None:
        """`open`, then `serve`: everything up."""
        await self.open()
        await self.serve()

    async def open(self) -> None:
        """Bind every port and, standalone, load the components: what the ready line reports.

        Nothing is served yet; connections wait in the listen backlogs until `serve`.
        """
        o = self.options
        if o.app_port is not None:  # until `serve` connects the app (readiness and the ready line say so)
            self.registry.set_condition("app", Status.INIT, f"waiting for app port {o.app_port}")
        self.ports.grpc = self._grpc.bind(o.listen_address, o.grpc_port)
        http_address = o.http_listen_address or o.listen_address
        access.set_loopback_only(not access.is_loopback(http_address))
        self._http_sockets = _listen(http_address, o.http_port, "HTTP API")
        self.ports.http = self._http_sockets[0].getsockname()[1]
        if o.enable_metrics:
            self.metrics_sockets = _listen(o.metrics_listen_address or o.listen_address, o.metrics_port, "metrics")
            self.ports.metrics = self.metrics_sockets[0].getsockname()[1]
        if self.kube_credentials is not None:
            return  # the components come from the cluster once serving (`serve`)
        if o.configuration is not None:
            self.settings.apply(o.configuration)
        resolver = SecretResolver(self.registry)
        await self.registry.load(self.components, resolver)
        self.registry.retry_down(resolver)  # a backend that comes up later is used then
        if self.identity is not None:
            # The local CA's child process makes the certificate on the other core: while this
            # process waits for it, it imports what `serve` imports first, a module at a time.
            certified = asyncio.Event()
            importing = asyncio.create_task(_import_apis(until=certified), name="import-apis")
            try:
                await self._certify(self.identity)
            finally:
                certified.set()
                importing.cancel()  # what it has not imported yet, `serve` imports
        await self._open_internal()

    async def serve(self) -> None:
        """Serve the APIs on the ports `open` bound; the calls that waited are answered now.

        The gRPC API first. What the HTTP ports, the metrics and the app channel need
        (aiohttp, prometheus_client) is then imported in a thread, so that the event loop
        answers gRPC calls meanwhile (the two take turns on the GIL), and served after.
        """
        o = self.options
        self.loop_lag.start()
        self.memory_trimmer.start()
        await self._grpc.serve(self.apis)
        if o.subscriptions:
            from ottava_sidecar.messaging.subscriptions import declared_for

            await self.messaging.declare(declared_for(o.app_id, o.subscriptions))
            if o.app_port is None:
                log.warning(
                    "the resources folder declares %d Subscription(s), delivered to an app: without --app-port "
                    "there is none, so they are not opened",
                    len(o.subscriptions),
                )
        await asyncio.to_thread(_import_http_libraries, o.app_protocol if o.app_port is not None else None)
        from ottava_sidecar.api.http.server import build_api_app  # imported just above

        metrics.define_all()
        self.registry.on_status(_record_status)
        for entry in self.registry.entries():
            _record_status(entry)
        if o.app_port is not None:
            from ottava_sidecar import appchannel

            self.app_channel = appchannel.create(
                o.app_protocol, o.app_id, o.app_port, timeout=o.app_timeout_seconds, app_token=o.app_api_token
            )
        http_sockets, self._http_sockets = self._http_sockets, []
        if http_sockets:
            app = build_api_app(self.apis, api_token=o.api_token, limits=o.limits)
            self._runners.append(await self._start_runner(app, o.http_port, "HTTP API", sockets=http_sockets))
        if self.metrics_sockets:
            await self.settings.enable_metrics(True)
        if self.kube_credentials is not None:
            from ottava_sidecar.kube.client import KubeClient
            from ottava_sidecar.runtime.kubernetes import CONNECTIONS, KubernetesWiring

            self.wiring = KubernetesWiring(
                self.registry,
                KubeClient(self.kube_credentials, connections=CONNECTIONS),
                o.namespace or "default",
                o.configuration_name,
                self.settings.apply,
                self.settings.hot_reload,
                on_subscriptions=self._subscriptions_changed,
                on_traffic_routes=self._traffic_routes_changed,
                on_resiliencies=self.resiliency.replace,
            )
            self._wiring_task = asyncio.create_task(self.wiring.run(), name="kubernetes-wiring")
            if self.identity is not None:
                # In a pod the certificate comes from the operator, which may take a moment (or be
                # restarting): readiness waits for it, the rest of the sidecar serves meanwhile.
                self._internal_task = asyncio.create_task(self._serve_internal(), name="internal-port")
            else:
                await self._serve_internal()
        else:
            await self._internal.start()  # bound by `open`
            if o.resources_path is not None:
                self._folder_task = asyncio.create_task(self._follow_folder(o.resources_path), name="follow-folder")
        if self.app_channel is not None:
            self._app_task = asyncio.create_task(self._connect_app(self.app_channel), name="connect-app")
        # Once the calls that waited for start-up are answered (a full collection blocks the loop).
        asyncio.get_running_loop().call_later(_SETTLE_AFTER_SECONDS, self._settle)

    async def _subscriptions_changed(self, resources: list[DeclarativeSubscription]) -> None:
        """The cluster's Subscriptions changed: deliver what they declare for this app from now on."""
        from ottava_sidecar.messaging.subscriptions import declared_for

        await self.messaging.declare(declared_for(self.options.app_id, resources))

    def _traffic_routes_changed(self, routes: list[TrafficRoute]) -> None:
        """The TrafficRoutes changed (in the folder, or in the cluster): this sidecar's calls follow them."""
        self.invoker.traffic.set_routes(routes, "the cluster" if self.wiring is not None else "the resources folder")

    async def _follow_folder(self, folder: Path) -> None:
        from ottava_sidecar.components import catalogue
        from ottava_sidecar.runtime.folder import follow_traffic_routes

        await follow_traffic_routes(folder, catalogue.manifest_problems, self._traffic_routes_changed)

    def _settle(self) -> None:
        """Leave start-up's objects out of later collections, and give back what start-up freed."""
        memory.freeze_startup_objects()
        self.memory_trimmer.trim_now()

    def _component_type(self, name: str) -> str | None:
        """A loaded component's type ("state.redis"), for its spans' `db.system`/`messaging.system`."""
        entry = self.registry.get(name)
        return entry.type if entry is not None else None

    def loaded(self) -> bool:
        """Whether the components are loaded (standalone: once `open` returns; in a cluster: once read)."""
        return self.wiring.loaded.is_set() if self.wiring is not None else self.kube_credentials is None

    async def _serve_internal(self) -> None:
        """In a cluster: certify (waiting for the operator as long as it takes), then open and serve the internal port."""
        if self.identity is not None:
            await self._certify(self.identity)
        await self._open_internal()
        await self._internal.start()

    async def _open_internal(self) -> None:
        """Open the internal port (mTLS: with the certificate obtained) and make the app id resolvable."""
        o = self.options
        internal_address = o.internal_listen_address or o.listen_address
        self.ports.internal = self._internal.bind(internal_address, o.internal_grpc_port)
        advertised = "127.0.0.1" if internal_address in ("0.0.0.0", "::", "") else internal_address
        try:
            await self.resolver.register(o.app_id, Address(advertised, self.ports.internal, version=o.app_version))
        except (OSError, LookupError) as err:  # invocation of this app will not work; the rest does
            log.error("cannot register app %s for service invocation: %s", o.app_id, err)
        for entry in self.registry.entries():
            if entry.building_block == "function" and entry.status is not Status.SKIPPED:
                try:  # other sidecars find the function at this sidecar's internal port
                    await self.resolver.register_function(
                        entry.name, Address(advertised, self.ports.internal), o.app_id
                    )
                except (OSError, LookupError, NotImplementedError) as err:
                    log.warning("function %s is reachable from this sidecar's app only: %s", entry.name, err)

    async def _certify(self, identity: WorkloadIdentity) -> None:
        """The first workload certificate, then renewal in the background.

        Standalone, the local CA answers at once or never: its error stops the sidecar. In a
        cluster the operator is asked again with backoff, readiness saying why it waits.
        """
        if self.kube_credentials is None:
            try:
                await identity.obtain()
            except IdentityError as err:
                raise OSError(f"mTLS: {err} (or run with --disable-mtls)") from None
        else:
            delays = backoff.IDENTITY_RENEWAL.delays()
            attempt = 1
            while True:
                try:
                    await identity.obtain()
                    break
                except IdentityError as err:
                    delay = next(delays)
                    reason = f"no workload certificate yet (attempt {attempt}): {err}"
                    self.registry.set_condition(IDENTITY, Status.INIT, reason)
                    log.warning("%s; asking again in %.1fs", reason, delay)
                    attempt += 1
                    await asyncio.sleep(delay)
        self.registry.set_condition(IDENTITY, Status.UP, str(identity.identity))
        identity.on_trouble(self._identity_trouble)
        identity.start()  # renewal, in the background

    def _identity_trouble(self, reason: str | None) -> None:
        # An expired certificate is refused by every peer: not ready, so callers go elsewhere.
        if reason is None and self.identity is not None:
            self.registry.set_condition(IDENTITY, Status.UP, str(self.identity.identity))
        elif reason is not None:
            self.registry.set_condition(IDENTITY, Status.DOWN, reason)

    async def _connect_app(self, channel: appchannel.AppChannel) -> None:
        """Wait for the app to listen, then read its subscriptions and start delivering.

        Readiness is INIT meanwhile, its `app` entry saying what the sidecar waits for.
        Reading is retried only while asking again may help (the app is unreachable,
        slow, or not ready yet); an answer the sidecar cannot use does not hold the
        sidecar back: it delivers what it could read, and names the rest under
        `app-subscriptions` in the readiness body (UP, with the reason) and in the log.
        """
        from ottava_sidecar.appchannel import AppChannelError

        log.info("waiting for the app to listen on port %d", channel.port)
        waited = await channel.wait_until_listening()
        log.info("app is listening on port %d (waited %.1fs)", channel.port, waited)
        delays = backoff.APP_SUBSCRIPTIONS.delays()
        attempt = 1
        while True:
            self.registry.set_condition("app", Status.INIT, f"reading subscriptions from {channel.describe()}")
            try:
                answer = await channel.list_subscriptions()
                break
            except AppChannelError as err:
                delay = next(delays)
                self.registry.set_condition(
                    "app", Status.INIT, f"reading subscriptions failed (attempt {attempt}), retrying: {err}"
                )
                log.warning(
                    "reading the app's subscriptions failed (attempt %d); retrying in %.1fs: %s", attempt, delay, err
                )
                attempt += 1
                await asyncio.sleep(delay)
        for problem in answer.problems:
            log.error("app subscriptions: %s", problem)
        if answer.problems:
            self.registry.set_condition(APP_SUBSCRIPTIONS, Status.UP, "; ".join(answer.problems))
        from ottava_sidecar.messaging import resilient

        app = resilient.wrap(channel, self.resiliency)  # deliveries under inbound Resiliency policies
        problems = await self.messaging.subscribe_app(app, answer.specs)
        problems += await self._read_input_bindings(app)
        self.registry.set_condition("app", Status.UP, "; ".join(problems))

    async def _read_input_bindings(self, channel: BindingApp) -> list[str]:
        """Start the readers of the input bindings the app listens to; what kept them from starting."""
        from ottava_sidecar.appchannel import AppChannelError

        try:
            await self._built().input_bindings.start(channel)
        except AppChannelError as err:
            log.error("input bindings: asking the app which it listens to failed: %s", err)
            return [f"input bindings not read: {err}"]
        return []

    async def _start_runner(
        self,
        app: web.Application,
        port: int,
        what: str,
        address: str | None = None,
        *,
        sockets: list[socket.socket] | None = None,
    ) -> web.AppRunner:
        """Serve `app` on the sockets given (bound by `open`), else on new ones at `address:port`."""
        from ottava_sidecar.api.http import listening

        o = self.options
        address = address or o.listen_address
        try:
            return await listening.start(
                app, address, port, limits=o.limits, grace=o.shutdown_grace_seconds, sockets=sockets or ()
            )
        except OSError as err:
            raise OSError(f"cannot listen on {address}:{port} for the {what}: {err.strerror}") from None

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
        internal_part = (
            f" internal={o.internal_listen_address or o.listen_address}:{p.internal or o.internal_grpc_port}"
        )
        loaded = sum(e.status is Status.UP for e in self.registry.entries())
        return (
            f"ottava sidecar {status.value}: app_id={o.app_id} grpc={o.listen_address}:{p.grpc} "
            f"http={o.http_listen_address or o.listen_address}:{p.http}{metrics_part}{internal_part} components={loaded}{problems}"
        )

    async def stop(self) -> None:
        """Drain in-flight calls for up to the grace period, then close the components.

        Bounded whatever the clients and backends do: the servers stop taking calls at once
        and get `shutdown_grace_seconds` to drain (then what still runs is cancelled), while
        the app id is unregistered and subscriptions end; closing the components after that
        gets `_CLOSE_SECONDS`. The process ends within the grace period plus two seconds.
        """
        grace = self.options.shutdown_grace_seconds
        await asyncio.gather(self._stop_taking_work(grace), self._drain_servers(grace))
        await _bounded("closing the components and clients", self._close(), _CLOSE_SECONDS)

    async def _stop_taking_work(self, grace: float) -> None:
        # No new calls from other sidecars; no new deliveries; streams end, so their calls finish.
        await _bounded("unregistering the app id", self.resolver.unregister(), grace)
        for task in (self._wiring_task, self._app_task, self._internal_task, self._folder_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.wiring is not None:
            await _bounded("closing the Kubernetes client", self.wiring.client.close(), grace)
        if self._services is not None:
            await _bounded("closing the subscriptions", self._services.messaging.close(), grace)
            await _bounded("stopping the input bindings", self._services.input_bindings.close(), grace)

    async def _drain_servers(self, grace: float) -> None:
        for unserved in (*self._http_sockets, *self.metrics_sockets):
            unserved.close()  # stopped before `serve`: what waited in the backlog is dropped
        self._http_sockets, self.metrics_sockets = [], []
        metrics_runner, self._metrics_runner = self._metrics_runner, None
        self.ports.metrics = None
        runners = [*reversed(self._runners), *([metrics_runner] if metrics_runner is not None else [])]
        self._runners = []
        stops = [self._grpc.stop(grace), self._internal.stop(grace)]
        if runners:
            from ottava_sidecar.api.http import listening

            stops += [listening.stop(runner, grace) for runner in runners]
        await asyncio.gather(*stops)

    async def _close(self) -> None:
        if self.identity is not None:
            await self.identity.stop()
        if self.options.local_issuer is not None:
            await asyncio.to_thread(self.options.local_issuer.close)
        if self._services is not None:
            await self._services.invoker.close()
        await self.resolver.close()
        if self.app_channel is not None:
            await self.app_channel.close()
        await self.registry.close()
        await asyncio.to_thread(tracing.shutdown)  # the last spans go out
        await self.loop_lag.stop()
        await self.memory_trimmer.stop()


# What closing the components may take once the servers are drained: closing a backend
# client is quick unless the backend is gone, and then there is nothing left to wait for.
_CLOSE_SECONDS = 1.0


async def _bounded(what: str, step: Awaitable[None], seconds: float) -> None:
    """Run one step of stopping for at most `seconds`; a stuck backend must not keep the process up."""
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.warning("stopping: %s took over %.1fs; going on without it", what, seconds)
    except Exception:
        log.exception("stopping: %s failed; going on", what)


def _namespace(o: Options) -> str:
    return (o.namespace or "default") if o.mode == "kubernetes" else contract.STANDALONE_NAMESPACE


def _workload_identity(o: Options) -> WorkloadIdentity:
    """Who this sidecar is, and which CA says so; `ValueError` naming what is missing."""
    access = o.configuration.spec.access_control if o.configuration is not None else None
    trust_domain = access.trust_domain if access is not None else contract.DEFAULT_TRUST_DOMAIN
    # In a cluster the operator sets the trust domain from the pod's Configuration.
    requested = SpiffeId(trust_domain, _namespace(o), o.app_id)
    if o.mode != "kubernetes":
        from ottava_sidecar.identity.local_issuer import LocalIssuer

        issuer = o.local_issuer or LocalIssuer(o.ca_dir, datetime.timedelta(seconds=o.workload_cert_ttl_seconds))
        return WorkloadIdentity(requested, issuer)
    missing = [
        name
        for name, value in (
            (contract.ENV_IDENTITY_ENDPOINT, o.identity_endpoint),
            (contract.ENV_IDENTITY_SERVER_NAME, o.identity_server_name),
            (contract.ENV_TRUST_ANCHORS, o.trust_anchors),
        )
        if not value
    ]
    if missing:
        raise ValueError(
            f"mTLS in kubernetes mode needs {', '.join(missing)} (the injector sets them), or --disable-mtls"
        )
    from ottava_sidecar.identity.operator_ca import OperatorCa

    source = OperatorCa(
        o.identity_endpoint, o.identity_server_name, o.trust_anchors, o.token_dir / contract.IDENTITY_TOKEN_FILE
    )
    return WorkloadIdentity(requested, source)


# What `serve` imports before it serves the gRPC API (`_Services.build`, `GrpcApiServer.serve`).
_API_MODULES = (
    "dapr.proto.runtime.v1.dapr_pb2",
    "ottava_sidecar.messaging.runtime",
    "ottava_sidecar.invocation.invoker",
    "ottava_sidecar.api.metadata",
    "ottava_sidecar.api.state",
    "ottava_sidecar.api.pubsub",
    "ottava_sidecar.api.apis",
    "dapr.proto.runtime.v1.dapr_pb2_grpc",
    "ottava_sidecar._gen.spec.proto.runtime.v1.runtime_pb2",
    "ottava_sidecar._gen.spec.proto.runtime.v1.runtime_pb2_grpc",
    "ottava_sidecar.api.grpc.dapr",
    "ottava_sidecar.api.grpc.layotto",
)


async def _import_apis(*, until: asyncio.Event) -> None:
    """Import what serves the gRPC API a module at a time, letting the loop run between them, until `until` is set."""
    for name in _API_MODULES:
        if until.is_set():
            return
        importlib.import_module(name)
        await asyncio.sleep(0)


def _import_http_libraries(app_protocol: str | None) -> None:
    """Import what the HTTP API, the metrics and the app channel (of `app_protocol`, if any) use."""
    import prometheus_client  # noqa: F401

    from ottava_sidecar.api.http import server  # noqa: F401

    if app_protocol == "http":
        from ottava_sidecar.appchannel import http  # noqa: F401
    elif app_protocol == "grpc":
        from ottava_sidecar.appchannel import grpc  # noqa: F401


def _listen(address: str, port: int, what: str) -> list[socket.socket]:
    """Listening TCP sockets on `address:port` (0: a free port), as asyncio's `create_server` makes them.

    One per address the name resolves to (`localhost`: IPv4 and IPv6), all on the same
    port. Bound before the server that will serve them exists: a client that connects
    meanwhile waits in the backlog instead of being refused.
    """
    failure = f"cannot listen on {address}:{port} for the {what}"
    try:
        found = socket.getaddrinfo(address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as err:
        raise OSError(f"{failure}: {err.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, where in dict.fromkeys(found):
            if sockets and port == 0:  # the free port the first one got, on every address
                where = (where[0], sockets[0].getsockname()[1], *where[2:])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(where)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
    except OSError as err:
        for sock in sockets:
            sock.close()
        raise OSError(f"{failure}: {err.strerror}") from None
    return sockets


@dataclass
class _Services:
    """The building-block APIs and what they call: made by `serve`, after the ready line."""

    messaging: Messaging
    invoker: Invoker
    metadata: MetadataApi
    apis: Apis
    input_bindings: InputBindings

    @classmethod
    def build(cls, sidecar: Sidecar) -> _Services:
        from ottava_sidecar.api.apis import Apis
        from ottava_sidecar.api.bindings import InputBindings
        from ottava_sidecar.api.metadata import AppConnectionProperties, MetadataApi
        from ottava_sidecar.invocation.invoker import Invoker
        from ottava_sidecar.messaging.runtime import Messaging

        o = sidecar.options
        messaging = Messaging(sidecar.registry)
        invoker = Invoker(
            o.app_id,
            sidecar.resolver,
            default_timeout=o.app_timeout_seconds,
            extra_filters=o.invocation_filters,
            namespace=_namespace(o),
            identity=sidecar.identity,
        )
        invoker.traffic.set_routes(o.traffic_routes, "the resources folder")
        invoker.resiliency = sidecar.resiliency
        app = AppConnectionProperties(o.app_port, o.app_protocol)
        metadata = MetadataApi(sidecar.registry, o.mode, app, sidecar.on_shutdown_request)
        metadata.subscriptions = messaging.subscriptions
        apis = Apis.create(sidecar.registry, metadata, messaging=messaging, invoker=invoker, limits=o.limits)
        return cls(messaging, invoker, metadata, apis, InputBindings(sidecar.registry))


def _record_status(entry: Entry) -> None:
    metrics.COMPONENT_UP.labels(entry.name, entry.type).set(1 if entry.status is Status.UP else 0)
    if entry.init_seconds is not None:
        metrics.COMPONENT_INIT_SECONDS.labels(entry.name, entry.type).set(entry.init_seconds)
