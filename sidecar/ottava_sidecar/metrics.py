"""Prometheus metrics of the sidecar (served on the metrics port, DESIGN.md)."""

import time
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

API_REQUESTS: Final = Counter(
    "ottava_api_requests_total",
    "API calls served, by wire protocol, API, method and status.",
    ["protocol", "api", "method", "status"],
)
API_LATENCY: Final = Histogram(
    "ottava_api_request_duration_seconds",
    "Time to serve an API call, by wire protocol, API, method and status.",
    ["protocol", "api", "method", "status"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMPONENT_UP: Final = Gauge(
    "ottava_component_initialized",
    "1 when the component initialised and is ready, 0 otherwise.",
    ["name", "type"],
)
COMPONENT_INIT_SECONDS: Final = Gauge(
    "ottava_component_init_seconds", "Time the component took to initialise.", ["name", "type"]
)

PUBSUB_DELIVERIES: Final = Counter(
    "ottava_pubsub_deliveries_total",
    "Events delivered to the app, by pub/sub component, topic and outcome (SUCCESS, RETRY, DROP).",
    ["pubsub", "topic", "outcome"],
)
INVOCATIONS: Final = Counter(
    "ottava_invocations_total",
    "Service invocations sent to other apps, by target app id and outcome (gRPC status name).",
    ["target", "outcome"],
)
SUBSCRIBER_BUFFERED_BYTES: Final = Gauge(
    "ottava_subscriber_buffered_bytes",
    "Bytes held for subscribers that have not read them yet (configuration subscriptions, pub/sub streams), by API.",
    ["api"],
)
SUBSCRIBERS_DROPPED: Final = Counter(
    "ottava_subscribers_dropped_total",
    "Subscribers ended because more than the subscriber buffer limit was queued for them unread, by API.",
    ["api"],
)
EVENT_LOOP_LAG: Final = Histogram(
    "ottava_event_loop_lag_seconds",
    "How late the sidecar's event loop ran a timer: time the loop was blocked or too busy to serve calls.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENT_LOOP_LAG_LAST: Final = Gauge(
    "ottava_event_loop_lag_last_seconds",
    "The latest event loop lag measured (see ottava_event_loop_lag_seconds).",
)
INVOCATION_ENDPOINTS: Final = Gauge(
    "ottava_invocation_ready_endpoints",
    "In a cluster: ready endpoints of each app id the sidecar resolves, from its Service's EndpointSlices.",
    ["namespace", "app_id"],
)


ACCESS_DENIALS: Final = Counter(
    "ottava_access_control_denials_total",
    "Service invocations this sidecar refused under its Configuration's accessControl, by caller app id and "
    "what decided (operation, app-default, default, no-identity).",
    ["caller_app_id", "decided_by"],
)
IDENTITY_CERT_EXPIRY: Final = Gauge(
    "ottava_identity_certificate_expiry_timestamp_seconds",
    "When the sidecar's workload certificate expires (Unix time); it is renewed well before.",
)
IDENTITY_RENEWALS: Final = Counter(
    "ottava_identity_certificate_renewals_total",
    "Workload certificates the sidecar obtained, by outcome (success, failure).",
    ["outcome"],
)


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
            labels = (*self._labels, status)
            children = self._children[status] = (API_REQUESTS.labels(*labels), API_LATENCY.labels(*labels))
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
