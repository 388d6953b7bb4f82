"""The tests' OpenTelemetry Collector also takes Zipkin v2 spans and exports them to the same file.

A sidecar configured with `tracing.zipkin.endpointAddress` POSTs Zipkin v2 JSON to
`/api/v2/spans`; here one such span, sent as plain HTTP, comes back from the collector's file
with its name, trace id, parent id, kind, service name and tags.
"""

import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import otelcol
from tests.servers.otelcol import Collector

# The collector may be built on first use (about a minute and a half on 2 cores with cold Go caches);
# pytest-timeout counts fixture set-up against the first test.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    running = otelcol.start()
    try:
        yield running
    finally:
        running.close()


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
