"""The OpenTelemetry Collector, built from tools/otelcol/ (cached after the first build).

It listens on loopback, each on a free port, for OTLP over gRPC and over HTTP, and for
Zipkin v2 spans (JSON or protobuf, `POST /api/v2/spans`); its file exporter writes what
it receives, from either, as OTLP JSON, one line per batch, into its folder.
`Collector.spans()` reads that file back; `wait_for_span` polls it until a span that
matches turns up, so a test waits only as long as the export takes.
"""

import base64
import functools
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers.process import ServerProcess, accepts_connections, free_port, scratch_dir

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "otelcol" / "build.sh"
HOST = "127.0.0.1"

# An OTLP attribute value in JSON (its `AnyValue`) becomes a plain Python value.
AttributeValue = str | bool | int | float | bytes | list[Any] | dict[str, Any] | None


@functools.cache
def binary() -> Path:
    """Build the collector (or find it in the cache) and return its path.

    The first build on a machine downloads the collector's modules and compiles them
    (about a minute and a half on 2 cores); later ones only print the cached path.
    """
    proc = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=1800
    )
    for line in proc.stderr.splitlines():
        print(f"[servers] {line}", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Span:
    """One exported span; ids are lowercase hex, as in W3C `traceparent` ("" for no parent)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int  # 1 internal, 2 server, 3 client, 4 producer, 5 consumer (0 unspecified)
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    resource: dict[str, AttributeValue] = field(default_factory=dict)  # e.g. service.name
    scope: str = ""  # the instrumentation scope's name


def _value(any_value: dict[str, Any]) -> AttributeValue:
    """The Python value of an OTLP JSON `AnyValue` (int64s arrive as strings, bytes as base64)."""
    if "stringValue" in any_value:
        return str(any_value["stringValue"])
    if "boolValue" in any_value:
        return bool(any_value["boolValue"])
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])
    if "bytesValue" in any_value:
        return base64.b64decode(any_value["bytesValue"])
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    if "kvlistValue" in any_value:
        return _attributes(any_value["kvlistValue"].get("values", []))
    return None


def _attributes(key_values: list[dict[str, Any]]) -> dict[str, AttributeValue]:
    return {kv["key"]: _value(kv.get("value", {})) for kv in key_values}


def parse_spans(line: str) -> Iterator[Span]:
    """The spans of one line of the file exporter's output (an OTLP JSON `TracesData`)."""
    for resource_spans in json.loads(line).get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = scope_spans.get("scope", {}).get("name", "")
            for span in scope_spans.get("spans", []):
                yield Span(
                    trace_id=span.get("traceId", "").lower(),
                    span_id=span.get("spanId", "").lower(),
                    parent_span_id=span.get("parentSpanId", "").lower(),
                    name=span.get("name", ""),
                    kind=int(span.get("kind", 0)),
                    attributes=_attributes(span.get("attributes", [])),
                    resource=resource,
                    scope=scope,
                )


@dataclass
class Collector:
    """A running collector: where to send OTLP, and what it has exported so far."""

    server: ServerProcess
    grpc_port: int
    http_port: int
    zipkin_port: int
    spans_file: Path

    @property
    def grpc_endpoint(self) -> str:
        """For OTLP/gRPC exporters (`OTEL_EXPORTER_OTLP_ENDPOINT` with the gRPC protocol): host:port."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base URL; traces go to `{http_endpoint}/v1/traces`."""
        return f"http://{HOST}:{self.http_port}"

    @property
    def zipkin_endpoint(self) -> str:
        """Where Zipkin v2 spans are POSTed (a Zipkin exporter's full URL)."""
        return f"http://{HOST}:{self.zipkin_port}/api/v2/spans"

    def spans(self) -> list[Span]:
        """Every span exported so far, in the order the collector wrote them."""
        try:
            text = self.spans_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        # A line is whole once its newline is written; a line still being written is left for the next read.
        lines = text.split("\n")[:-1]
        return [span for line in lines if line.strip() for span in parse_spans(line)]

    def trace(self, trace_id: str) -> list[Span]:
        return [span for span in self.spans() if span.trace_id == trace_id.lower()]

    def wait_for_spans(self, predicate: Callable[[Span], bool], count: int = 1, timeout: float = 30.0) -> list[Span]:
        """Poll the exported file until at least `count` spans match; return those that do."""
        deadline = time.monotonic() + timeout
        while True:
            found = [span for span in self.spans() if predicate(span)]
            if len(found) >= count:
                return found
            if self.server.process is not None and self.server.process.poll() is not None:
                raise AssertionError(f"the collector exited with {self.server.process.returncode}:\n{self.output()}")
            if time.monotonic() >= deadline:
                names = sorted({span.name for span in self.spans()})
                raise AssertionError(
                    f"{len(found)} of {count} expected spans exported within {timeout:.0f}s; "
                    f"spans seen: {names}\n{self.output()}"
                )
            time.sleep(0.05)

    def wait_for_span(self, predicate: Callable[[Span], bool], timeout: float = 30.0) -> Span:
        return self.wait_for_spans(predicate, 1, timeout)[0]

    def output(self) -> str:
        return self.server.output()

    def stop(self) -> None:
        """Stop it; on SIGTERM it flushes the batch processor and the file before exiting."""
        self.server.stop()

    def close(self) -> None:
        """Stop it and remove its folder (config, exported file) and its log."""
        self.stop()
        shutil.rmtree(self.server.data_dir, ignore_errors=True)
        self.server.log_path.unlink(missing_ok=True)


CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {host}:{grpc_port}
      http:
        endpoint: {host}:{http_port}
  zipkin:
    endpoint: {host}:{zipkin_port}
processors:
  batch:
    timeout: 50ms  # hand spans on quickly: a test waits for them
exporters:
  file:
    path: {spans_file}
    format: json
    flush_interval: 50ms
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none  # no Prometheus endpoint of its own (its default, :8888, may be taken)
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      processors: [batch]
      exporters: [file, debug]
"""


def start() -> Collector:
    """Start a collector on three free loopback ports, exporting spans to a file in a fresh folder."""
    otelcol = binary()
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port()
        if port not in ports:
            ports.append(port)
    grpc_port, http_port, zipkin_port = ports
    data = scratch_dir("otelcol")
    spans_file = data / "spans.jsonl"
    config = data / "config.yaml"
    config.write_text(
        CONFIG.format(
            host=HOST,
            grpc_port=grpc_port,
            http_port=http_port,
            zipkin_port=zipkin_port,
            spans_file=json.dumps(str(spans_file)),
        ),
        encoding="utf-8",
    )
    listening = [accepts_connections(port, HOST) for port in ports]

    def ready() -> bool:
        # The receivers start last, once the exporters and processors run: every port open means ready.
        return all(check() for check in listening)

    command = [str(otelcol), "--config", f"file:{config}"]
    server = ServerProcess("otelcol", command, ready, data, grpc_port, host=HOST).start()
    return Collector(server, grpc_port, http_port, zipkin_port, spans_file)
