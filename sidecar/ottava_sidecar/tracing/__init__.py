"""Distributed tracing (`Configuration.spec.tracing`): what every layer calls, cheap when it is off.

Tracing is on when the Configuration's `samplingRate` is above 0. Then `ACTIVE` holds a
`tracing.otel.Tracer` (the OpenTelemetry SDK and its exporters, imported only then), and:

* each API call (gRPC, HTTP) is a server span, the child of the app's `traceparent`
  when it sent one (gRPC's own `grpc-trace-bin` never reaches a grpcio server: gRPC's
  core keeps it from the application, so W3C's headers are the way in);
* each component call is a client span (`db.system`, `messaging.system`, ...);
* an invocation carries the context to the target's sidecar (its `CallLocal` span) and
  on to the app (the app callback span's `traceparent`, and `grpc-trace-bin` for gRPC apps);
* a publish writes `traceparent`/`tracestate` into the CloudEvent, and its delivery is
  a consumer span, the child of that context, whose callback carries it to the subscriber;
* log lines name the span they were written in (`trace_id`, `span_id`).

When it is off, `ACTIVE` is None: every call site checks that first, so an untraced call
pays one global lookup, and nothing of OpenTelemetry is imported. A new Configuration
applies at once (`configure`): spans started before it end under the old settings.

This module imports nothing of the sidecar; `tracing.otel` only OpenTelemetry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ottava_sidecar.tracing.otel import Tracer

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
GRPC_TRACE_BIN = "grpc-trace-bin"

# Read on the hot path of every call: None unless tracing is on.
ACTIVE: Tracer | None = None

_NO_SPAN: AbstractContextManager[None] = nullcontext()


@dataclass(frozen=True)
class Settings:
    """What `Configuration.spec.tracing` asks for, without the Configuration's model."""

    sampling_rate: float = 0.0
    service_name: str = "ottava"
    otlp_endpoint: str = ""  # host:port, or a URL
    otlp_protocol: str = "grpc"  # or "http"
    otlp_secure: bool = False
    zipkin_endpoint: str = ""  # e.g. http://127.0.0.1:9411/api/v2/spans
    stdout: bool = False  # each span as JSON on standard output

    @property
    def on(self) -> bool:
        return self.sampling_rate > 0

    def exporters(self) -> list[str]:
        """The exporters these settings name, for log lines and `/actuator/info`."""
        named = []
        if self.otlp_endpoint:
            named.append(f"otlp/{self.otlp_protocol} {self.otlp_endpoint}")
        if self.zipkin_endpoint:
            named.append(f"zipkin {self.zipkin_endpoint}")
        if self.stdout:
            named.append("stdout")
        return named


_settings = Settings()
# component name -> its type ("state.redis"), for the semantic conventions' `db.system`.
_component_type: Callable[[str], str | None] = lambda name: None  # noqa: E731
_lock = threading.Lock()


def settings() -> Settings:
    return _settings


def configure(new: Settings) -> None:
    """Apply `new` at once; the tracer it replaces flushes its spans in a thread of its own."""
    global ACTIVE, _settings
    with _lock:
        if new == _settings:
            return
        old, _settings = ACTIVE, new
        if new.on:
            from ottava_sidecar.tracing.otel import Tracer  # late: the SDK loads only when tracing is on

            ACTIVE = Tracer(new, _component_type)
            log.info(
                "tracing on: sampling rate %g, exporting to %s",
                new.sampling_rate,
                ", ".join(new.exporters()) or "nowhere (spans are only propagated)",
            )
        else:
            ACTIVE = None
            if old is not None:
                log.info("tracing off")
    if old is not None:
        threading.Thread(target=old.shutdown, name="tracing-shutdown", daemon=True).start()


def set_component_types(lookup: Callable[[str], str | None]) -> None:
    """How a component's name gives its type; set once by the sidecar, from its registry."""
    global _component_type
    _component_type = lookup
    if ACTIVE is not None:
        ACTIVE.component_type = lookup


def shutdown() -> None:
    """Flush and stop the exporter (the sidecar's shutdown); tracing is off afterwards."""
    global ACTIVE, _settings
    with _lock:
        old, ACTIVE, _settings = ACTIVE, None, Settings()
    if old is not None:
        old.shutdown()


def server_span(
    name: str, carrier: Iterable[tuple[str, Any]], attributes: dict[str, Any] | None = None, kind: str = "server"
) -> AbstractContextManager[Any]:
    """A span for work the sidecar was asked to do, the child of the context in `carrier`
    (header or metadata pairs, names lower case) or a new trace's root; current inside."""
    tracer = ACTIVE
    if tracer is None:
        return _NO_SPAN
    return tracer.server_span(name, carrier, attributes, kind)


def span(name: str, attributes: dict[str, Any] | None = None, kind: str = "client") -> AbstractContextManager[Any]:
    """A child of the current span (a call the sidecar makes); current inside."""
    tracer = ACTIVE
    if tracer is None:
        return _NO_SPAN
    return tracer.child_span(name, attributes, kind)


def inject(headers: list[tuple[str, str]]) -> None:
    """Replace the trace context among `headers` with the current span's, if tracing is on."""
    tracer = ACTIVE
    if tracer is not None:
        tracer.inject(headers)


def inject_into(headers: MutableMapping[str, str]) -> None:
    """As `inject`, into a mapping (HTTP headers of a request the sidecar makes)."""
    tracer = ACTIVE
    if tracer is not None:
        tracer.inject_into(headers)


def outcome(span: Any, error: str | None, attributes: dict[str, Any] | None = None) -> None:
    """Record a call's result on the span `server_span` or `span` gave (None when tracing was off)."""
    if span is not None:
        from ottava_sidecar.tracing.otel import mark  # loaded: there is a span

        mark(span, error, attributes)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None if there is none."""
    tracer = ACTIVE
    if tracer is None:
        return None
    return tracer.current_ids()


def binary_from_traceparent(traceparent: str) -> bytes | None:
    """The `grpc-trace-bin` value (OpenCensus' binary format) equal to a W3C `traceparent`."""
    # version 0; field 0: trace id (16 bytes); field 1: span id (8); field 2: options (1).
    parts = traceparent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = bytes.fromhex(parts[1]), bytes.fromhex(parts[2]), int(parts[3][:2], 16)
    except ValueError:
        return None
    return b"\x00\x00" + trace_id + b"\x01" + span_id + b"\x02" + bytes([flags & 1])
