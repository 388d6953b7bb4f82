"""The tests' OpenTelemetry Collector receives spans over OTLP gRPC and HTTP, and Zipkin v2 JSON, and exports them to its file.

This is the ground the trace tests stand on: a span that the OpenTelemetry SDK sends, as an app or
a sidecar would, comes back from the collector's file with its trace id and its parent link intact.
"""

import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from tests.servers import otelcol
from tests.servers.otelcol import Collector

# The first test also pays for building the collector when the cache is cold (61 to 77 s measured on
# 2 cores with empty Go caches); pytest-timeout counts fixture set-up against that test.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    running = otelcol.start()
    try:
        yield running
    finally:
        running.close()


def _exporter(collector: Collector, protocol: str) -> SpanExporter:
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=f"http://{collector.grpc_endpoint}", insecure=True, timeout=10)
    return HttpSpanExporter(endpoint=f"{collector.http_endpoint}/v1/traces", timeout=10)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_parent_and_its_child_span_reach_the_collector_file_in_one_trace(collector: Collector, protocol: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": f"otelcol-test-{protocol}"}))
    provider.add_span_processor(SimpleSpanProcessor(_exporter(collector, protocol)))
    tracer = provider.get_tracer("tests.test_otel_collector")
    try:
        with (
            tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as parent,
            tracer.start_as_current_span(
                "GetState", kind=SpanKind.CLIENT, attributes={"db.system": "redis", "attempt": 1}
            ) as child,
        ):
            pass  # the child starts inside the parent, so the SDK links them
    finally:
        provider.shutdown()
    trace_id = format_trace_id(parent.get_span_context().trace_id)
    parent_id = format_span_id(parent.get_span_context().span_id)
    child_id = format_span_id(child.get_span_context().span_id)

    exported = {span.name: span for span in collector.wait_for_spans(lambda s: s.trace_id == trace_id, count=2)}

    assert set(exported) == {"GET /orders", "GetState"}
    assert exported["GET /orders"].span_id == parent_id
    assert exported["GET /orders"].parent_span_id == ""
    assert exported["GET /orders"].kind == SpanKind.SERVER.value + 1  # OTLP counts from "unspecified" = 0
    assert exported["GetState"].span_id == child_id
    assert exported["GetState"].parent_span_id == parent_id
    assert exported["GetState"].attributes == {"db.system": "redis", "attempt": 1}
    assert exported["GetState"].resource["service.name"] == f"otelcol-test-{protocol}"
    assert exported["GetState"].scope == "tests.test_otel_collector"


def test_a_zipkin_v2_json_span_reaches_the_collector_file(collector: Collector) -> None:
    trace_id, parent_id, span_id = secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8)
    span = {
        "traceId": trace_id,
        "parentId": parent_id,
        "id": span_id,
        "name": "getstate",  # Zipkin names are lowercase by convention
        "kind": "CLIENT",
        "timestamp": time.time_ns() // 1000,  # microseconds since the epoch
        "duration": 1500,
        "localEndpoint": {"serviceName": "zipkin-test"},
        "tags": {"db.system": "redis"},
    }

    response = httpx.post(collector.zipkin_endpoint, json=[span], timeout=10)
    assert response.status_code == 202, response.text  # Zipkin's "accepted"

    exported = collector.wait_for_span(lambda s: s.trace_id == trace_id)
    assert exported.name == "getstate"
    assert exported.span_id == span_id
    assert exported.parent_span_id == parent_id
    assert exported.kind == 3  # OTLP's SPAN_KIND_CLIENT
    assert exported.resource["service.name"] == "zipkin-test"
    assert exported.attributes["db.system"] == "redis"
