"""Tracing on the OpenTelemetry SDK: the sampler, the exporters, spans and W3C propagation.

Imported by `tracing.configure` only when tracing is on. Spans go to every exporter the
Configuration names through a batch processor (its own thread, a batch a second at most);
the caller's decision rules when it sent one (the sampled flag of its `traceparent`), and
`samplingRate` of the new traces are sampled. An unsampled call makes no span at all: it
only holds ids with the flag off (`_unsampled`), which its outgoing calls pass on.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    format_span_id,
    format_trace_id,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ottava_sidecar import tracing
from ottava_sidecar._version import __version__

_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "consumer": SpanKind.CONSUMER,
    "producer": SpanKind.PRODUCER,
    "internal": SpanKind.INTERNAL,
}
_PROPAGATOR = TraceContextTextMapPropagator()
_EMPTY = otel_context.Context()
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EXPORT_EVERY_MS = 1000
_TRACE_HEADERS = (tracing.TRACEPARENT, tracing.TRACESTATE)
# Building blocks whose components are message brokers (`messaging.*`); the others are stores (`db.*`).
_MESSAGING = frozenset({"pubsub", "bindings"})


class Tracer:
    def __init__(self, settings: tracing.Settings, component_type: Callable[[str], str | None]) -> None:
        self.settings = settings
        self.component_type = component_type
        self._rate = min(settings.sampling_rate, 1.0)
        # New traces are sampled here (`server_span`), before any span is made: the SDK's sampler
        # only sees the roots to record, and follows the parent's flag for the rest.
        self._provider = TracerProvider(
            sampler=ParentBased(ALWAYS_ON),
            resource=Resource.create(
                {"service.name": settings.service_name, "service.version": __version__, "telemetry.sdk.name": "ottava"}
            ),
        )
        for exporter in _exporters(settings):
            self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=_EXPORT_EVERY_MS))
        self._tracer = self._provider.get_tracer("ottava_sidecar", __version__)
        self._components: dict[tuple[str, str, str], tuple[str, SpanKind, dict[str, str]]] = {}

    def shutdown(self) -> None:
        self._provider.shutdown()

    # Spans -------------------------------------------------------------------------------

    def server_span(
        self, name: str, carrier: Iterable[tuple[str, Any]], attributes: dict[str, Any] | None, kind: str
    ) -> _Current:
        fields = {key: value for key, value in carrier if key in _TRACE_HEADERS and isinstance(value, str)}
        if not fields:
            if random.random() >= self._rate:  # a new trace, not sampled: no span, only ids to pass on
                return _Current(_unsampled(), None)
            return _Current(self._tracer.start_span(name, _EMPTY, _KINDS[kind], attributes), _EMPTY)
        parent = _PROPAGATOR.extract(fields, context=otel_context.Context())
        remote = get_current_span(parent)
        if not remote.get_span_context().trace_flags.sampled:  # the caller's decision: pass its ids on
            return _Current(remote, parent)
        return _Current(self._tracer.start_span(name, parent, _KINDS[kind], attributes), parent)

    def child_span(self, name: str, attributes: dict[str, Any] | None, kind: str) -> _Current:
        current = get_current_span()
        if not current.get_span_context().is_valid:  # outside any call: a root, sampled at the rate
            return self.server_span(name, (), attributes, kind)
        if not current.is_recording():
            return _Current(current, None)
        return _Current(self._tracer.start_span(name, None, _KINDS[kind], attributes), None)

    def component_call(self, building_block: str, component: str, operation: str, started: float, ok: bool) -> None:
        """The span of a component call that began at `started` (`time.perf_counter`) and ended now,
        recorded when the call it serves is (a component call of an unsampled trace costs one check)."""
        if not get_current_span().is_recording():
            return
        ended = time.time_ns()
        began = ended - int((time.perf_counter() - started) * 1e9)
        name, kind, attributes = self._component(building_block, component, operation)
        span = self._tracer.start_span(name, kind=kind, attributes=attributes, start_time=began)
        if not ok:
            span.set_status(Status(StatusCode.ERROR, f"{operation} on {component} failed"))
        span.end(end_time=ended)

    def _component(self, building_block: str, component: str, operation: str) -> tuple[str, SpanKind, dict[str, str]]:
        key = (building_block, component, operation)
        known = self._components.get(key)
        if known is None:
            type_ = self.component_type(component) or building_block
            system = type_.partition(".")[2] or type_
            attributes = {"ottava.component": component, "ottava.component.type": type_}
            if building_block in _MESSAGING:
                attributes.update({"messaging.system": system, "messaging.operation.name": operation})
                kind = SpanKind.PRODUCER if operation == "publish" else SpanKind.CLIENT
            else:
                attributes.update({"db.system": system, "db.operation.name": operation, "db.namespace": component})
                kind = SpanKind.CLIENT
            known = self._components[key] = (f"{operation} {component}", kind, attributes)
        return known

    # Propagation -------------------------------------------------------------------------

    def inject(self, headers: list[tuple[str, str]]) -> None:
        fields: dict[str, str] = {}
        _PROPAGATOR.inject(fields)
        headers[:] = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
        headers.extend(fields.items())

    def inject_into(self, headers: MutableMapping[str, str]) -> None:
        for name in _TRACE_HEADERS:
            headers.pop(name, None)
        _PROPAGATOR.inject(headers)

    def current_ids(self) -> tuple[str, str] | None:
        context = get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format_trace_id(context.trace_id), format_span_id(context.span_id)


class _Current:
    """A started span, current inside `with` and ended on leaving it; the SDK's
    `start_as_current_span` does the same through two generator-based context managers."""

    __slots__ = ("_parent", "_span", "_token")

    def __init__(self, span: Span, parent: otel_context.Context | None) -> None:
        self._span = span
        self._parent = parent
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(set_span_in_context(self._span, self._parent))
        return self._span

    def __exit__(self, *exc: object) -> None:
        try:
            self._span.end()
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]


def _unsampled() -> NonRecordingSpan:
    """A new trace's ids with the sampled flag off: what an unsampled call passes on, so the
    sidecars and apps after it leave the trace unsampled too."""
    return NonRecordingSpan(
        SpanContext(random.getrandbits(128) or 1, random.getrandbits(64) or 1, is_remote=False, trace_flags=_UNSAMPLED)
    )


def mark(span: Any, error: str | None, attributes: dict[str, Any] | None = None) -> None:
    """Record the outcome of a span the caller holds (a no-op without one)."""
    if span is None or not span.is_recording():
        return
    if attributes:
        span.set_attributes(attributes)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))


def _exporters(settings: tracing.Settings) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    if settings.otlp_endpoint:
        if settings.otlp_protocol == "http":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporters.append(HttpExporter(endpoint=_http_url(settings.otlp_endpoint, settings.otlp_secure)))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            endpoint = settings.otlp_endpoint.split("://", 1)[-1]
            exporters.append(GrpcExporter(endpoint=endpoint, insecure=not settings.otlp_secure))
    if settings.zipkin_endpoint:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        exporters.append(ZipkinExporter(endpoint=settings.zipkin_endpoint))
    if settings.stdout:
        exporters.append(_StdoutExporter())
    return exporters


def _http_url(endpoint: str, secure: bool) -> str:
    """OTLP/HTTP's traces URL for Dapr's `endpointAddress` (host:port, or a URL with or without a path)."""
    if "://" not in endpoint:
        endpoint = f"{'https' if secure else 'http'}://{endpoint}"
    scheme, _, rest = endpoint.partition("://")
    if "/" not in rest:
        return f"{scheme}://{rest}/v1/traces"
    return endpoint


class _StdoutExporter(SpanExporter):
    """Each span as one JSON line on standard output (Dapr's `tracing.stdout`)."""

    def export(self, spans: Any) -> SpanExportResult:
        for span in spans:
            assert isinstance(span, ReadableSpan)
            sys.stdout.write(json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return SpanExportResult.SUCCESS
