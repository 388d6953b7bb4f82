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
import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ottava_sidecar import appchannel, backoff, contract, metrics
from ottava_sidecar.api import access
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.server import GrpcApiServer
from ottava_sidecar.api.http import listening
from ottava_sidecar.api.http.server import build_api_app
from ottava_sidecar.api.metadata import AppConnectionProperties, MetadataApi
from ottava_sidecar.components import health
from ottava_sidecar.components.registry import Entry, Registry, SecretResolver, Status
from ottava_sidecar.identity.local_ca import LocalCa
from ottava_sidecar.identity.operator_ca import OperatorCa
from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.identity.workload import IdentityError, WorkloadIdentity
from ottava_sidecar.invocation.access_control import AccessPolicy
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
from ottava_sidecar.resources.models import Component, Configuration
from ottava_sidecar.runtime import memory
from ottava_sidecar.runtime.kubernetes import KubernetesWiring
from ottava_sidecar.runtime.loop_lag import LoopLagMonitor
from ottava_sidecar.runtime.memory import MemoryTrimmer
from ottava_sidecar.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

# The readiness entry naming what the app declared but the sidecar could not use.
APP_SUBSCRIPTIONS = "app-subscriptions"
# The readiness entry of the workload certificate (mTLS on the internal port).
IDENTITY = "identity"


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
    # Standalone: the Configuration of `--config FILE`, applied at start (in a cluster the
    # one named by `configuration_name` is read and followed instead).
    configuration: Configuration | None = None
    # mTLS on the internal port, with a workload certificate (docs/security.md): from the
    # local CA standalone, from the operator's CA in a cluster.
    mtls: bool = True
    ca_dir: Path | None = None  # standalone: the local CA's folder; None: the default
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
        self.identity = _workload_identity(o) if o.mtls else None
        self.invoker = Invoker(
            o.app_id,
            self.resolver,
            default_timeout=o.app_timeout_seconds,
            extra_filters=o.invocation_filters,
            namespace=_namespace(o),
            identity=self.identity,
        )
        self.metadata = MetadataApi(self.registry, o.mode, app, self.on_shutdown_request)
        self.metadata.subscriptions = self.messaging.subscriptions
        self.apis = Apis.create(
            self.registry, self.metadata, messaging=self.messaging, invoker=self.invoker, limits=o.limits
        )
        self.ports = BoundPorts()
        # Who may invoke this app: replaced whole by `settings.apply` when the Configuration changes.
        self.access_policy = AccessPolicy()
        self._grpc = GrpcApiServer(self.apis, api_token=o.api_token, limits=o.limits)
        self._internal = InternalServer(
            o.app_id, lambda: self.app_channel, o.limits, identity=self.identity, policy=lambda: self.access_policy
        )
        self._internal_task: asyncio.Task[None] | None = None
        self._runners: list[web.AppRunner] = []
        self._app_task: asyncio.Task[None] | None = None
        self.wiring: KubernetesWiring | None = None
        self._wiring_task: asyncio.Task[None] | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.settings = RuntimeSettings(self)
        self.loop_lag = LoopLagMonitor()
        self.memory_trimmer = MemoryTrimmer()

    async def start(self) -> None:
        o = self.options
        self.loop_lag.start()
        self.memory_trimmer.start()
        self.ports.grpc = self._grpc.bind(o.listen_address, o.grpc_port)
        await self._grpc.start()
        http_address = o.http_listen_address or o.listen_address
        access.set_loopback_only(not access.is_loopback(http_address))
        self.ports.http = await self._serve(
            build_api_app(self.apis, api_token=o.api_token, limits=o.limits), o.http_port, "HTTP API", http_address
        )
        if o.enable_metrics:
            await self.settings.enable_metrics(True)
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
            if o.configuration is not None:
                self.settings.apply(o.configuration)
            resolver = SecretResolver(self.registry)
            await self.registry.load(self.components, resolver)
            self.registry.retry_down(resolver)  # a backend that comes up later is used then
        if self.kube_credentials is not None and self.identity is not None:
            # In a pod the certificate comes from the operator, which may take a moment (or be
            # restarting): readiness waits for it, the rest of the sidecar serves meanwhile.
            self._internal_task = asyncio.create_task(self._serve_internal(), name="internal-port")
        else:
            await self._serve_internal()
        if self.app_channel is not None:
            self._app_task = asyncio.create_task(self._connect_app(self.app_channel), name="connect-app")
        memory.freeze_startup_objects()

    async def _serve_internal(self) -> None:
        """Certify this sidecar (with mTLS), open the internal port, and make the app id resolvable."""
        o = self.options
        if self.identity is not None:
            await self._certify(self.identity)
        internal_address = o.internal_listen_address or o.listen_address
        self.ports.internal = self._internal.bind(internal_address, o.internal_grpc_port)
        await self._internal.start()
        advertised = "127.0.0.1" if internal_address in ("0.0.0.0", "::", "") else internal_address
        try:
            await self.resolver.register(o.app_id, Address(advertised, self.ports.internal))
        except (OSError, LookupError) as err:  # invocation of this app will not work; the rest does
            log.error("cannot register app %s for service invocation: %s", o.app_id, err)

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
            except appchannel.AppChannelError as err:
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
        problems = await self.messaging.subscribe_app(channel, answer.specs)
        self.registry.set_condition("app", Status.UP, "; ".join(problems))

    async def _serve(self, app: web.Application, port: int, what: str, address: str | None = None) -> int:
        runner = await self._start_runner(app, port, what, address or self.options.listen_address)
        self._runners.append(runner)
        bound: int = runner.addresses[0][1]
        return bound

    async def _start_runner(self, app: web.Application, port: int, what: str, address: str) -> web.AppRunner:
        o = self.options
        try:
            return await listening.start(app, address, port, limits=o.limits, grace=o.shutdown_grace_seconds)
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
        for task in (self._wiring_task, self._app_task, self._internal_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.wiring is not None:
            await _bounded("closing the Kubernetes client", self.wiring.client.close(), grace)
        await _bounded("closing the subscriptions", self.messaging.close(), grace)

    async def _drain_servers(self, grace: float) -> None:
        metrics_runner, self._metrics_runner = self._metrics_runner, None
        self.ports.metrics = None
        runners = [*reversed(self._runners), *([metrics_runner] if metrics_runner is not None else [])]
        self._runners = []
        await asyncio.gather(
            self._grpc.stop(grace),
            self._internal.stop(grace),
            *(listening.stop(runner, grace) for runner in runners),
        )

    async def _close(self) -> None:
        if self.identity is not None:
            await self.identity.stop()
        await self.invoker.close()
        await self.resolver.close()
        if self.app_channel is not None:
            await self.app_channel.close()
        await self.registry.close()
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
        ttl = datetime.timedelta(seconds=o.workload_cert_ttl_seconds)
        return WorkloadIdentity(requested, LocalCa(o.ca_dir, ttl))
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
    source = OperatorCa(
        o.identity_endpoint, o.identity_server_name, o.trust_anchors, o.token_dir / contract.IDENTITY_TOKEN_FILE
    )
    return WorkloadIdentity(requested, source)


def _record_status(entry: Entry) -> None:
    metrics.COMPONENT_UP.labels(entry.name, entry.type).set(1 if entry.status is Status.UP else 0)
    if entry.init_seconds is not None:
        metrics.COMPONENT_INIT_SECONDS.labels(entry.name, entry.type).set(entry.init_seconds)
