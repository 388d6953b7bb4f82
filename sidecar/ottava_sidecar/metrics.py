"""Prometheus metrics of the sidecar (served on the metrics port, DESIGN.md).

prometheus_client is imported when a metric is first used, not when this module is
(module `__getattr__`): a sidecar's start-up does not wait for it, and the modules that
count things import this one freely.
"""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ottava_sidecar import tracing

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

    API_REQUESTS: Counter
    API_LATENCY: Histogram
    API_REFUSED: Counter
    COMPONENT_LATENCY: Histogram
    COMPONENT_UP: Gauge
    COMPONENT_INIT_SECONDS: Gauge
    PUBSUB_DELIVERIES: Counter
    PUBSUB_SETTLED: Counter
    INVOCATIONS: Counter
    SUBSCRIBER_BUFFERED_BYTES: Gauge
    SUBSCRIBERS_DROPPED: Counter
    EVENT_LOOP_LAG: Histogram
    EVENT_LOOP_LAG_LAST: Gauge
    INVOCATION_ENDPOINTS: Gauge
    INVOCATION_VERSIONS: Counter
    INVOCATION_FAULTS: Counter
    ACCESS_DENIALS: Counter
    IDENTITY_CERT_EXPIRY: Gauge
    IDENTITY_RENEWALS: Counter
    FUNCTION_CALLS: Counter
    FUNCTION_SECONDS: Histogram
    FUNCTION_RUNNING: Gauge
    FUNCTION_LIMIT_HITS: Counter
    FUNCTION_RELOADS: Counter
    RESILIENCY_RETRIES: Counter
    RESILIENCY_TIMEOUTS: Counter
    RESILIENCY_BREAKER_CHANGES: Counter


_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _define() -> dict[str, Any]:
    import prometheus_client

    return {
        "API_REQUESTS": prometheus_client.Counter(
            "ottava_api_requests_total",
            "API calls served, by wire protocol, API, method, status and surface (dapr, layotto).",
            ["protocol", "api", "method", "status", "surface"],
        ),
        "API_LATENCY": prometheus_client.Histogram(
            "ottava_api_request_duration_seconds",
            "Time to serve an API call, by wire protocol, API, method, status and surface (dapr, layotto).",
            ["protocol", "api", "method", "status", "surface"],
            buckets=_LATENCY_BUCKETS,
        ),
        "API_REFUSED": prometheus_client.Counter(
            "ottava_api_refused_total",
            "API calls refused before any handler ran, by wire protocol, surface (dapr, layotto, or unknown) and"
            " reason (api-token, api-access-policy, not-loopback, unimplemented).",
            ["protocol", "surface", "reason"],
        ),
        "COMPONENT_LATENCY": prometheus_client.Histogram(
            "ottava_component_operation_duration_seconds",
            "Time a component took to answer an operation the API asked of it, by component kind (state, pubsub,"
            " lock, configuration, secrets, sequencer), component name, operation and success (true, false).",
            ["kind", "component", "operation", "success"],
            buckets=_LATENCY_BUCKETS,
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
        "PUBSUB_SETTLED": prometheus_client.Counter(
            "ottava_pubsub_settled_total",
            "Events the sidecar settled after handing them to the app, by pub/sub component, topic and result:"
            " delivered (SUCCESS, acknowledged), retried (handed back to the broker to redeliver), dead_lettered"
            " (moved to the subscription's dead-letter topic), dropped (acknowledged unprocessed, not moved).",
            ["pubsub", "topic", "result"],
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
        "INVOCATION_VERSIONS": prometheus_client.Counter(
            "ottava_invocation_version_calls_total",
            "Service invocations sent to another app's sidecar, by target app id, the version that sidecar serves"
            " (empty: none declared) and outcome (gRPC status name); retries count once each.",
            ["target", "version", "outcome"],
        ),
        "INVOCATION_FAULTS": prometheus_client.Counter(
            "ottava_invocation_faults_total",
            "Faults a TrafficRoute injected into service invocations, by target app id and fault (delay, abort).",
            ["target", "fault"],
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
        "FUNCTION_CALLS": prometheus_client.Counter(
            "ottava_function_calls_total",
            "Calls of the sidecar's functions (function.wasm), by function and outcome (ok, failed, trapped, "
            "time_limit, memory_limit, invalid).",
            ["function", "outcome"],
        ),
        "FUNCTION_SECONDS": prometheus_client.Histogram(
            "ottava_function_call_seconds",
            "How long a function call took, waiting for a free slot included, by function.",
            ["function"],
            buckets=_LATENCY_BUCKETS,
        ),
        "FUNCTION_RUNNING": prometheus_client.Gauge(
            "ottava_function_calls_running",
            "Function calls running now (each on a thread of its function's own), by function.",
            ["function"],
        ),
        "FUNCTION_LIMIT_HITS": prometheus_client.Counter(
            "ottava_function_limit_hits_total",
            "Function calls stopped at a limit of their Component, by function and limit (time, memory).",
            ["function", "limit"],
        ),
        "FUNCTION_RELOADS": prometheus_client.Counter(
            "ottava_function_reloads_total",
            "Changed modules of functions, by function and result (reloaded; failed: the previous one keeps serving).",
            ["function", "result"],
        ),
        "RESILIENCY_RETRIES": prometheus_client.Counter(
            "ottava_resiliency_retries_total",
            "Tries made again by a Resiliency retry policy, by target (app:<id>, component:<name>:outbound|inbound)"
            " and policy name.",
            ["target", "policy"],
        ),
        "RESILIENCY_TIMEOUTS": prometheus_client.Counter(
            "ottava_resiliency_timeouts_total",
            "Tries stopped by a Resiliency timeout, by target and timeout name.",
            ["target", "policy"],
        ),
        "RESILIENCY_BREAKER_CHANGES": prometheus_client.Counter(
            "ottava_resiliency_circuit_breaker_changes_total",
            "Circuit breakers changing state, by target, breaker name and the state entered (open, half-open, closed).",
            ["target", "policy", "state"],
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

    __slots__ = ("_children", "_labels", "_surface")

    def __init__(self, protocol: str, api: str, method: str, surface: str = "dapr") -> None:
        self._labels = (protocol, api, method)
        self._surface = surface
        self._children: dict[str, tuple[Counter, Histogram]] = {}

    def observe(self, status: str, started: float) -> None:
        children = self._children.get(status)
        if children is None:
            defined = define_all()
            labels = (*self._labels, status, self._surface)
            children = self._children[status] = (
                defined["API_REQUESTS"].labels(*labels),
                defined["API_LATENCY"].labels(*labels),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)


# API_REFUSED's reasons.
REFUSED_TOKEN = "api-token"
REFUSED_POLICY = "api-access-policy"
REFUSED_NOT_LOOPBACK = "not-loopback"
REFUSED_UNIMPLEMENTED = "unimplemented"

_refused: "dict[tuple[str, str, str], Counter]" = {}


def count_refused(protocol: str, surface: str, reason: str) -> None:
    """One more call refused before its handler ran (see API_REFUSED); children looked up once."""
    key = (protocol, surface, reason)
    child = _refused.get(key)
    if child is None:
        child = _refused[key] = define_all()["API_REFUSED"].labels(*key)
    child.inc()


class ComponentCalls:
    """Latency histogram children of one kind of component, cached per (component, operation, success).

    `observe` is on the hot path of every API call that reaches a component: after the
    first call of a component's operation it costs one dict lookup and the observation.
    """

    __slots__ = ("_children", "_kind")

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._children: dict[tuple[str, str, bool], Histogram] = {}

    def observe(self, component: str, operation: str, started: float, success: bool = True) -> None:
        tracer = tracing.ACTIVE
        if tracer is not None:  # the call's span, a child of the API call's
            tracer.component_call(self._kind, component, operation, started, success)
        elapsed = time.perf_counter() - started
        key = (component, operation, success)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = define_all()["COMPONENT_LATENCY"].labels(
                self._kind, component, operation, "true" if success else "false"
            )
        child.observe(elapsed)
