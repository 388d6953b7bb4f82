"""What the metadata and info calls report: the app, the runtime and its components.

The app's extended metadata (SetMetadata) is bounded, keys and values together, by
`limits.MAX_EXTENDED_METADATA_BYTES`, so that GetMetadata always fits the 4 MiB message
a default gRPC client accepts.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ottava_sidecar import __version__, limits
from ottava_sidecar.api import errors
from ottava_sidecar.components.registry import Registry, Status
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec


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
                }
                for e in self.registry.entries()
            ],
            "subscriptions": [s.describe() for s in self.subscriptions()],
            **self.extra_info,
        }
