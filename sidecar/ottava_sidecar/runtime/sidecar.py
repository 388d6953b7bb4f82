"""The sidecar process: servers up first, then components, then ready; drain on stop.

The servers start before the components so that liveness answers (and readiness says
INIT) while backends are still being connected; a slow backend must not get the pod
killed for being unresponsive.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ottava_sidecar import contract, metrics
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.server import GrpcApiServer
from ottava_sidecar.api.http.server import build_api_app, build_metrics_app
from ottava_sidecar.api.metadata import AppChannel, MetadataApi
from ottava_sidecar.resources.models import Component
from ottava_sidecar.runtime import health
from ottava_sidecar.runtime.registry import Entry, Registry, SecretResolver, Status

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


@dataclass
class BoundPorts:
    grpc: int = 0
    http: int = 0
    metrics: int | None = None


@dataclass
class Sidecar:
    options: Options
    components: list[Component]
    on_shutdown_request: Callable[[], None] = field(default=lambda: None)

    def __post_init__(self) -> None:
        self.registry = Registry(self.options.app_id)
        self.registry.on_status(_record_status)
        app = AppChannel(self.options.app_port, self.options.app_protocol)
        self.metadata = MetadataApi(self.registry, self.options.mode, app, self.on_shutdown_request)
        self.apis = Apis.create(self.registry, self.metadata)
        self.ports = BoundPorts()
        self._grpc = GrpcApiServer(self.apis, api_token=self.options.api_token)
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        o = self.options
        self.ports.grpc = self._grpc.bind(o.listen_address, o.grpc_port)
        await self._grpc.start()
        self.ports.http = await self._serve(build_api_app(self.apis, api_token=o.api_token), o.http_port, "HTTP API")
        if o.enable_metrics:
            self.ports.metrics = await self._serve(build_metrics_app(), o.metrics_port, "metrics")
        await self.registry.load(self.components, SecretResolver(self.registry))

    async def _serve(self, app: web.Application, port: int, what: str) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.options.listen_address, port, reuse_port=False)
        try:
            await site.start()
        except OSError as err:
            raise OSError(
                f"cannot listen on {self.options.listen_address}:{port} for the {what}: {err.strerror}"
            ) from None
        bound: int = runner.addresses[0][1]
        return bound

    def status_line(self) -> str:
        o, p = self.options, self.ports
        status = health.overall(self.registry)
        down = [e for e in self.registry.entries() if e.status is Status.DOWN]
        problems = "".join(f" [{e.name}: {e.reason}]" for e in down)
        metrics_part = f" metrics={o.listen_address}:{p.metrics}" if p.metrics is not None else ""
        loaded = sum(e.status is Status.UP for e in self.registry.entries())
        return (
            f"ottava sidecar {status.value}: app_id={o.app_id} grpc={o.listen_address}:{p.grpc} "
            f"http={o.listen_address}:{p.http}{metrics_part} components={loaded}{problems}"
        )

    async def stop(self) -> None:
        """Drain in-flight calls (up to the grace period), then close the components."""
        grace = self.options.shutdown_grace_seconds
        await self._grpc.stop(grace)
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.registry.close()


def _record_status(entry: Entry) -> None:
    metrics.COMPONENT_UP.labels(entry.name, entry.type).set(1 if entry.status is Status.UP else 0)
    if entry.init_seconds is not None:
        metrics.COMPONENT_INIT_SECONDS.labels(entry.name, entry.type).set(entry.init_seconds)
