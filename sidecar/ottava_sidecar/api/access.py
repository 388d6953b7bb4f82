"""Who may call which API: the Configuration's allow/deny lists, and loopback-only access.

One process-wide `POLICY`, consulted by the gRPC and HTTP surfaces on every call before
the handler runs. With no rules it costs one attribute check, so the hot path does not
pay for a feature it does not use; it is replaced whole when the Configuration changes.
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from ottava_sidecar import metrics
from ottava_sidecar.api import errors
from ottava_sidecar.resources.models import ApiAccess

# Dapr's names for its APIs, mapped to the names Ottava's surfaces label calls with.
ALIASES = {
    "publish": "pubsub",
    "subscribe": "pubsub",
    "invoke": "invocation",
    "shutdown": "lifecycle",
    "secret": "secrets",
    "statestore": "state",
}


def _api(name: str) -> str:
    return ALIASES.get(name.lower(), name.lower())


@dataclass(frozen=True)
class ApiMatcher:
    api: str
    protocol: str  # "" = both

    def matches(self, api: str, protocol: str) -> bool:
        return self.api == api and self.protocol in ("", protocol)


@dataclass(frozen=True)
class Policy:
    allowed: tuple[ApiMatcher, ...] | None = None  # None: every API
    denied: tuple[ApiMatcher, ...] = ()
    source: str = ""  # e.g. "Configuration tracing", for messages
    active: bool = field(default=False)

    @classmethod
    def from_configuration(cls, access: ApiAccess | None, source: str) -> "Policy":
        if access is None:
            return cls()
        allowed = (
            None if access.allowed is None else tuple(ApiMatcher(_api(r.name), r.protocol) for r in access.allowed)
        )
        denied = tuple(ApiMatcher(_api(r.name), r.protocol) for r in access.denied)
        return cls(allowed, denied, source, active=allowed is not None or bool(denied))

    def check(self, api: str, protocol: str, surface: str = "dapr") -> None:
        """Raise PERMISSION_DENIED, counted in metrics.API_REFUSED, when the lists refuse `api` over `protocol`."""
        if not self.active:
            return
        if any(rule.matches(api, protocol) for rule in self.denied) or (
            self.allowed is not None and not any(rule.matches(api, protocol) for rule in self.allowed)
        ):
            metrics.count_refused(protocol, surface, metrics.REFUSED_POLICY)
            raise errors.permission_denied(f"the {api} API is not allowed over {protocol} by {self.source}")


POLICY = Policy()

# When the HTTP port listens beyond loopback (in a pod, so that kubelet can probe it), the
# app-facing routes still answer only the pod itself; probes and metrics stay open.
LOOPBACK_ONLY = False


def set_policy(policy: Policy) -> None:
    global POLICY
    POLICY = policy


def set_loopback_only(value: bool) -> None:
    global LOOPBACK_ONLY
    LOOPBACK_ONLY = value


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def names(apis: Iterable[str]) -> list[str]:
    return sorted({_api(a) for a in apis})
