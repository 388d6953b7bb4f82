"""What the metadata and info calls report: the app, the runtime and its components.

The app's extended metadata (SetMetadata) is bounded, keys and values together, by
`limits.MAX_EXTENDED_METADATA_BYTES`, so that GetMetadata always fits the 4 MiB message
a default gRPC client accepts.

The info endpoint adds what a platform team asks first when troubleshooting: each
component's last error (kept once it is UP again), where each subscription came from,
the configuration subscriptions open now, the peers service invocation resolved, and the
TrafficRoutes its calls follow.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ottava_sidecar import __version__, limits
from ottava_sidecar.api import errors
from ottava_sidecar.components.registry import Registry, Status
from ottava_sidecar.messaging.subscriptions import Kind, SubscriptionSpec


@dataclass
class AppConnectionProperties:
    """Where the app listens, as Dapr's metadata API reports it (not the channel that calls it)."""

    port: int | None = None
    protocol: str = "http"
    address: str = "127.0.0.1"


@dataclass
class MetadataApi:
    registry: Registry
    mode: str  # "standalone" | "kubernetes"
    app: AppConnectionProperties
    request_shutdown: Callable[[], None]
    extended: dict[str, str] = field(default_factory=dict)
    # The app's active subscriptions (set by the sidecar once pub/sub runs).
    subscriptions: Callable[[], list[SubscriptionSpec]] = field(default=list)
    version: str = __version__
    # Mode-specific facts for the info endpoint (e.g. the Configuration in a cluster).
    extra_info: dict[str, Any] = field(default_factory=dict)
    # The configuration subscriptions open now, as their `describe()` shows them (set with the APIs).
    configuration_subscriptions: Callable[[], list[dict[str, Any]]] = field(default=list)
    # app id -> {address: when calls last switched to it (wall clock)}: the invoker's resolved peers.
    peers: Callable[[], dict[str, dict[Any, float]]] = field(default=dict)
    # The TrafficRoutes this sidecar's calls follow now (the invoker's router).
    traffic_routes: Callable[[], list[dict[str, Any]]] = field(default=list)
    # The Resiliency resources whose policies apply to this sidecar now, by name.
    resiliencies: Callable[[], list[str]] = field(default=list)

    @property
    def app_id(self) -> str:
        return self.registry.app_id

    def set(self, key: str, value: str) -> None:
        """Set an extended metadata entry; INVALID_ARGUMENT naming the limit when they would grow too large."""
        if not key:
            raise errors.invalid_argument("metadata key is empty")
        others = sum(len(k.encode()) + len(v.encode()) for k, v in self.extended.items() if k != key)
        total = others + len(key.encode()) + len(value.encode())
        if total > limits.MAX_EXTENDED_METADATA_BYTES:
            raise errors.invalid_argument(
                f"metadata {key!r} refused: extended metadata would take {total} bytes, above the limit of "
                f"{limits.MAX_EXTENDED_METADATA_BYTES} bytes for all keys and values together; "
                "store large values in a state store instead"
            )
        self.extended[key] = value

    def components(self) -> list[dict[str, Any]]:
        """Loaded (UP) components, as Dapr's metadata API lists them."""
        return [
            {
                "name": e.name,
                "type": e.type,
                "version": e.manifest.spec.version,
                "capabilities": list(e.instance.features) if e.instance is not None else [],
            }
            for e in self.registry.entries()
            if e.status is Status.UP
        ]

    def info(self) -> dict[str, Any]:
        """The actuator's view: every declared component, with why it is not loaded if so."""
        return {
            "appId": self.app_id,
            "version": self.version,
            "mode": self.mode,
            "app": {"port": self.app.port, "protocol": self.app.protocol},
            "components": [
                {
                    "name": e.name,
                    "type": e.type,
                    "version": e.manifest.spec.version,
                    "status": e.status.value,
                    **({"reason": e.reason} if e.reason else {}),
                    **(
                        {"lastError": {"reason": e.last_error, "at": wall_time(e.last_error_at)}}
                        if e.last_error_at is not None
                        else {}
                    ),
                }
                for e in self.registry.entries()
            ],
            "subscriptions": [
                {
                    **s.describe(),
                    "declarative": s.kind is Kind.DECLARATIVE,
                    "source": s.source(self.app.protocol),
                }
                for s in self.subscriptions()
            ],
            "configurationSubscriptions": self.configuration_subscriptions(),
            "peers": [
                {
                    "appId": app_id,
                    "address": str(address),
                    **({"version": address.version} if getattr(address, "version", "") else {}),
                    "resolvedAt": wall_time(at),
                }
                for app_id, addresses in sorted(self.peers().items())
                for address, at in addresses.items()
            ],
            "trafficRoutes": self.traffic_routes(),
            "resiliencies": self.resiliencies(),
            **self.extra_info,
        }


def wall_time(epoch: float) -> str:
    """An instant as the info endpoint shows it: ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
