"""The Configuration applied to a running sidecar, live where it can be.

API allow/deny lists, secret scopes, access control, tracing, log level, the metrics switch and the
hot-reload feature switch take effect at once. The app health check is read at start
only: a change to it is logged and listed in `/actuator/info` as needing a restart.
"""

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ottava_sidecar import tracing
from ottava_sidecar.api import access
from ottava_sidecar.invocation.access_control import AccessPolicy
from ottava_sidecar.resources.models import Configuration, Tracing

if TYPE_CHECKING:
    from ottava_sidecar.runtime.sidecar import Sidecar

log = logging.getLogger(__name__)

HOT_RELOAD = "HotReload"
RESTART_FIELDS = ("app_health_check",)


class RuntimeSettings:
    def __init__(self, sidecar: "Sidecar") -> None:
        self.sidecar = sidecar
        self.configuration: Configuration | None = None
        self._started_with: dict[str, Any] | None = None
        self.restart_required: list[str] = []
        self._pending: set[asyncio.Task[None]] = set()

    def hot_reload(self) -> bool:
        features = self.configuration.spec.features if self.configuration else []
        return next((f.enabled for f in features if f.name == HOT_RELOAD), True)

    def apply(self, configuration: Configuration | None) -> None:
        self.configuration = configuration
        name = configuration.metadata.name if configuration else "(none)"
        spec = configuration.spec if configuration else None
        access.set_policy(access.Policy.from_configuration(spec.api if spec else None, f"Configuration {name}"))
        self.sidecar.access_policy = AccessPolicy.from_configuration(
            spec.access_control if spec else None, f"Configuration {name}"
        )
        self.sidecar.apis.secrets.set_scopes(
            spec.secrets.scopes if spec and spec.secrets else [], f"Configuration {name}"
        )
        if spec is not None and spec.logging is not None:
            logging.getLogger().setLevel({"warn": "WARNING"}.get(spec.logging.level, spec.logging.level.upper()))
        traced = tracing_settings(spec.tracing if spec else None, self.sidecar.options.app_id)
        tracing.configure(traced)
        if spec is not None and spec.metric is not None:
            self._spawn(self.enable_metrics(spec.metric.enabled))
        current = {f: getattr(spec, f, None) for f in RESTART_FIELDS}
        if self._started_with is None:
            self._started_with = current
        self.restart_required = [
            f"spec.{'appHealthCheck' if f == 'app_health_check' else f}"
            for f in RESTART_FIELDS
            if current[f] != self._started_with[f]
        ]
        if self.restart_required:
            log.warning(
                "Configuration %s changed settings that apply after a restart: %s",
                name,
                ", ".join(self.restart_required),
            )
        self.sidecar.metadata.extra_info = {
            "configuration": name if configuration else None,
            "restartRequired": self.restart_required,
            "hotReload": self.hot_reload(),
            "tracing": {"samplingRate": traced.sampling_rate, "exporters": traced.exporters()},
        }
        log.info("Configuration %s applied", name)

    async def enable_metrics(self, enabled: bool) -> None:
        s = self.sidecar
        if enabled and s._metrics_runner is None:
            from ottava_sidecar.api.http.server import build_metrics_app  # late: aiohttp and prometheus_client

            o = s.options
            address = o.metrics_listen_address or o.listen_address
            bound, s.metrics_sockets = s.metrics_sockets, []  # bound at start, or none: bind now
            s._metrics_runner = await s._start_runner(
                build_metrics_app(), o.metrics_port, "metrics", address, sockets=bound or None
            )
            s.ports.metrics = s._metrics_runner.addresses[0][1]
        elif not enabled and s.metrics_sockets:  # disabled before it was served
            for sock in s.metrics_sockets:
                sock.close()
            s.metrics_sockets = []
            s.ports.metrics = None
        elif not enabled and s._metrics_runner is not None:
            runner, s._metrics_runner = s._metrics_runner, None
            s.ports.metrics = None
            await runner.cleanup()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def tracing_settings(spec: Tracing | None, app_id: str) -> tracing.Settings:
    """What a Configuration's `tracing` asks for; spans name the app id as their service."""
    if spec is None:
        return tracing.Settings(service_name=app_id)
    return tracing.Settings(
        sampling_rate=float(spec.sampling_rate),
        service_name=app_id,
        otlp_endpoint=spec.otel.endpoint_address if spec.otel else "",
        otlp_protocol=spec.otel.protocol if spec.otel else "grpc",
        otlp_secure=spec.otel.is_secure if spec.otel else False,
        zipkin_endpoint=spec.zipkin.endpoint_address if spec.zipkin else "",
        stdout=spec.stdout,
    )
