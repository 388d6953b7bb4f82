"""Prometheus metrics of the sidecar (served on the metrics port, DESIGN.md).

prometheus_client is imported when a metric is first used, not when this module is
(module `__getattr__`): a sidecar's start-up does not wait for it, and the modules that
count things import this one freely.
"""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

    API_REQUESTS: Counter
    API_LATENCY: Histogram
    COMPONENT_UP: Gauge
    COMPONENT_INIT_SECONDS: Gauge
    PUBSUB_DELIVERIES: Counter
    INVOCATIONS: Counter
    SUBSCRIBER_BUFFERED_BYTES: Gauge
    SUBSCRIBERS_DROPPED: Counter
    EVENT_LOOP_LAG: Histogram
    EVENT_LOOP_LAG_LAST: Gauge
    INVOCATION_ENDPOINTS: Gauge
    ACCESS_DENIALS: Counter
    IDENTITY_CERT_EXPIRY: Gauge
    IDENTITY_RENEWALS: Counter


def _define() -> dict[str, Any]:
    import prometheus_client

    return {
        "API_REQUESTS": prometheus_client.Counter(
            "ottava_api_requests_total",
            "API calls served, by wire protocol, API, method and status.",
            ["protocol", "api", "method", "status"],
        ),
        "API_LATENCY": prometheus_client.Histogram(
            "ottava_api_request_duration_seconds",
            "Time to serve an API call, by wire protocol, API, method and status.",
            ["protocol", "api", "method", "status"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
        "COMPONENT_UP": prometheus_client.Gauge(
            "ottava_component_initialized",
            "1 when the component initialised and is ready, 0 otherwise.",
            ["name", "type"],
        ),
        "COMPONENT_INIT_SECONDS": prometheus_client.Gauge(
            "ottava_component_init_seconds", "Time the component took to initialise.", ["name", "type"]
        ),
        "PUBSUB_DELIVERIES": prometheus_client.Counter(
            "ottava_pubsub_deliveries_total",
            "Events delivered to the app, by pub/sub component, topic and outcome (SUCCESS, RETRY, DROP).",
            ["pubsub", "topic", "outcome"],
        ),
        "INVOCATIONS": prometheus_client.Counter(
            "ottava_invocations_total",
            "Service invocations sent to other apps, by target app id and outcome (gRPC status name).",
            ["target", "outcome"],
        ),
        "SUBSCRIBER_BUFFERED_BYTES": prometheus_client.Gauge(
            "ottava_subscriber_buffered_bytes",
            "Bytes held for subscribers that have not read them yet (configuration subscriptions, pub/sub streams), by API.",
            ["api"],
        ),
        "SUBSCRIBERS_DROPPED": prometheus_client.Counter(
            "ottava_subscribers_dropped_total",
            "Subscribers ended because more than the subscriber buffer limit was queued for them unread, by API.",
            ["api"],
        ),
        "EVENT_LOOP_LAG": prometheus_client.Histogram(
            "ottava_event_loop_lag_seconds",
            "How late the sidecar's event loop ran a timer: time the loop was blocked or too busy to serve calls.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
        "EVENT_LOOP_LAG_LAST": prometheus_client.Gauge(
            "ottava_event_loop_lag_last_seconds",
            "The latest event loop lag measured (see ottava_event_loop_lag_seconds).",
        ),
        "INVOCATION_ENDPOINTS": prometheus_client.Gauge(
            "ottava_invocation_ready_endpoints",
            "In a cluster: ready endpoints of each app id the sidecar resolves, from its Service's EndpointSlices.",
            ["namespace", "app_id"],
        ),
        "ACCESS_DENIALS": prometheus_client.Counter(
            "ottava_access_control_denials_total",
            "Service invocations this sidecar refused under its Configuration's accessControl, by caller app id and "
            "what decided (operation, app-default, default, no-identity).",
            ["caller_app_id", "decided_by"],
        ),
        "IDENTITY_CERT_EXPIRY": prometheus_client.Gauge(
            "ottava_identity_certificate_expiry_timestamp_seconds",
            "When the sidecar's workload certificate expires (Unix time); it is renewed well before.",
        ),
        "IDENTITY_RENEWALS": prometheus_client.Counter(
            "ottava_identity_certificate_renewals_total",
            "Workload certificates the sidecar obtained, by outcome (success, failure).",
            ["outcome"],
        ),
    }


_defined: dict[str, Any] = {}
_waiting: list[Callable[[], None]] = []


def define_all() -> dict[str, Any]:
    """Every metric by name, created now if not yet (the metrics port serves them all, zeros included)."""
    if not _defined:
        _defined.update(_define())
        globals().update(_defined)
        while _waiting:
            _waiting.pop(0)()
    return _defined


def once_defined(record: Callable[[], None]) -> None:
    """`record` now if the metrics exist, else when they are created (what start-up counts before loading them)."""
    if _defined:
        record()
    else:
        _waiting.append(record)


def __getattr__(name: str) -> Any:
    if name.isupper() and not name.startswith("_") and name in define_all():
        return _defined[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CallMetrics:
    """Counter and histogram children of one method, cached per status.

    Looking label children up costs more than observing; a call pays for it once per
    status rather than on every request.
    """

    __slots__ = ("_children", "_labels")

    def __init__(self, protocol: str, api: str, method: str) -> None:
        self._labels = (protocol, api, method)
        self._children: dict[str, tuple[Counter, Histogram]] = {}

    def observe(self, status: str, started: float) -> None:
        children = self._children.get(status)
        if children is None:
            defined = define_all()
            labels = (*self._labels, status)
            children = self._children[status] = (
                defined["API_REQUESTS"].labels(*labels),
                defined["API_LATENCY"].labels(*labels),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
