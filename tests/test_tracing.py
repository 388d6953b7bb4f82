"""Tracing end to end: apps and `ottava run` sidecars export to a real OpenTelemetry Collector.

The test process is app A, instrumented with the OpenTelemetry SDK. It calls its sidecar
(`caller`), which invokes app B (`tests/apps/traced_app.py`, instrumented too) through B's
sidecar (`callee`), over mTLS as any two standalone sidecars do. Each sidecar's
`--config` turns tracing on: the caller exports over OTLP/gRPC, the callee over
OTLP/HTTP. A third sidecar (`quiet`) has a sampling rate of 0. The collector writes every
span it receives to a file, which the tests read back (`tests/servers/otelcol.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Tracer, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from ottava_sidecar.resources.models import Configuration
from ottava_sidecar.runtime.defaults import default_components
from ottava_sidecar.runtime.sidecar import Options, Sidecar

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import events, free_port, start_with_app, stop_all_gracefully, wait_for, wait_ready
from tests.servers import otelcol
from tests.servers.otelcol import Collector, Span

# Building the collector on a cold cache takes a minute or more; fixture set-up counts.
pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[1]
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP's span kinds

CONFIG = """\
apiVersion: ottava.io/v1alpha1
kind: Configuration
metadata:
  name: {name}
spec:
  tracing:
    samplingRate: "{rate}"
    otel:
      endpointAddress: "{endpoint}"
      protocol: {protocol}
      isSecure: false
"""


@dataclass
class World:
    collector: Collector
    caller: SidecarProcess
    callee: SidecarProcess
    quiet: SidecarProcess
    factory: SidecarFactory
    ids: dict[str, str]
    events_file: Path
    tracer: Tracer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("tracing")
    suffix = uuid.uuid4().hex[:6]
    ids = {name: f"{name}-{suffix}" for name in ("app-a", "caller", "callee", "quiet")}
    collector = otelcol.start()
    configs = {
        "caller": ("1", collector.grpc_endpoint, "grpc"),
        "callee": ("1", f"{otelcol.HOST}:{collector.http_port}", "http"),
        "quiet": ("0", collector.grpc_endpoint, "grpc"),
    }
    for name, (rate, endpoint, protocol) in configs.items():
        (folder / f"{name}.yaml").write_text(
            CONFIG.format(name=f"{name}-tracing", rate=rate, endpoint=endpoint, protocol=protocol)
        )
    registry = folder / "registry"
    env = {"OTTAVA_CA_DIR": str(folder / "ca"), "OTTAVA_REGISTRY_DIR": str(registry)}
    factory = SidecarFactory(folder)
    provider = TracerProvider(resource=Resource.create({"service.name": ids["app-a"]}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=10))
    )
    try:
        callee = start_with_app(
            factory,
            ids["callee"],
            "http",
            "traced_app.py",
            events_file=folder / "events",
            registry_dir=registry,
            args=("--config", str(folder / "callee.yaml"), "--log-format", "json"),
            env={
                **env,
                "OTLP_TRACES_URL": f"{collector.http_endpoint}/v1/traces",
                "APP_NAME": f"{ids['callee']}-app",
            },
        )
        wait_ready(callee)
        caller = factory.start("--app-id", ids["caller"], "--config", str(folder / "caller.yaml"), env=env)
        quiet = factory.start("--app-id", ids["quiet"], "--config", str(folder / "quiet.yaml"), env=env)
        yield World(
            collector,
            caller,
            callee,
            quiet,
            factory,
            ids,
            folder / "events",
            provider.get_tracer("tests.test_tracing"),
        )
    finally:
        provider.shutdown()
        stop_all_gracefully(factory)
        factory.stop_all()
        collector.close()


def _headers() -> dict[str, str]:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def _ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return format_trace_id(context.trace_id), format_span_id(context.span_id)


def _one(spans: list[Span], service: str, kind: int, name_start: str = "") -> Span:
    found = [s for s in spans if s.resource.get("service.name") == service and s.kind == kind]
    found = [s for s in found if s.name.startswith(name_start)]
    assert len(found) == 1, f"one {service} span of kind {kind} named {name_start}…, not {found}"
    return found[0]


def test_one_trace_runs_from_app_a_through_both_sidecars_to_app_b(world: World) -> None:
    with world.tracer.start_as_current_span("app A checks out", kind=SpanKind.CLIENT) as root:
        answer = httpx.post(
            f"{world.caller.http_url}/v1.0/invoke/{world.ids['callee']}/method/echo/orders",
            headers=_headers(),
            content=b'{"order": 1}',
            timeout=15,
        )
    assert answer.status_code == 200, answer.text
    trace_id, root_id = _ids(root)

    spans = world.collector.wait_for_spans(lambda s: s.trace_id == trace_id, count=5)

    caller_api = _one(spans, world.ids["caller"], SERVER)
    call_local = _one(spans, world.ids["callee"], SERVER, "ottava.internal.v1.ServiceInvocation/CallLocal")
    callback = _one(spans, world.ids["callee"], CLIENT, "invoke ")
    app_b = _one(spans, f"{world.ids['callee']}-app", SERVER, "app serves POST /echo/orders")
    assert caller_api.parent_span_id == root_id
    assert caller_api.attributes["http.request.method"] == "POST"
    assert caller_api.attributes["http.response.status_code"] == 200
    assert call_local.parent_span_id == caller_api.span_id
    assert call_local.attributes["ottava.caller_app_id"] == world.ids["caller"]
    assert callback.parent_span_id == call_local.span_id
    assert callback.name == f"invoke {world.ids['callee']}/echo/orders"
    assert app_b.parent_span_id == callback.span_id
    # What app B received: the W3C header naming the callback span, not app A's own.
    received = answer.json()["headers"]["traceparent"]
    assert received.split("-")[1:3] == [trace_id, callback.span_id]


def test_a_grpc_call_continues_the_apps_trace_and_spans_its_component_call(world: World) -> None:
    trace_id, parent_id = uuid.uuid4().bytes, os.urandom(8)
    with grpc.insecure_channel(world.caller.grpc_address) as channel:
        dapr_pb2_grpc.DaprStub(channel).GetState(
            state_pb2.GetStateRequest(store_name="statestore", key="traced"),
            metadata=[("traceparent", f"00-{trace_id.hex()}-{parent_id.hex()}-01")],
            timeout=10,
        )

    spans = world.collector.wait_for_spans(lambda s: s.trace_id == trace_id.hex(), count=2)

    api = _one(spans, world.ids["caller"], SERVER)
    component = _one(spans, world.ids["caller"], CLIENT)
    assert api.name == "dapr.proto.runtime.v1.Dapr/GetState"
    assert api.parent_span_id == parent_id.hex()
    assert api.attributes["rpc.system"] == "grpc"
    assert api.attributes["rpc.grpc.status_code"] == 0
    assert component.parent_span_id == api.span_id
    assert component.name == "get statestore"
    assert component.attributes["db.system"] == "in-memory"
    assert component.attributes["db.operation.name"] == "get"
    assert component.attributes["ottava.component.type"] == "state.in-memory"


def test_a_publish_and_its_delivery_share_a_trace(world: World) -> None:
    with world.tracer.start_as_current_span("app B publishes", kind=SpanKind.CLIENT) as root:
        answer = httpx.post(
            f"{world.callee.http_url}/v1.0/publish/pubsub/traced",
            headers=_headers(),
            json={"order": 2},
            timeout=15,
        )
    assert answer.status_code == 204, answer.text
    trace_id, root_id = _ids(root)
    delivered = wait_for(
        lambda: next((e for e in events(world.events_file) if e["event"]["data"] == {"order": 2}), None),
        "the traced event's delivery",
    )

    spans = world.collector.wait_for_spans(lambda s: s.trace_id == trace_id, count=6)

    callee, app = world.ids["callee"], f"{world.ids['callee']}-app"
    publish_api = _one(spans, callee, SERVER)
    publish = _one(spans, callee, PRODUCER)
    process = _one(spans, callee, CONSUMER)
    deliver = _one(spans, callee, CLIENT)
    handled = _one(spans, app, SERVER)
    assert publish_api.parent_span_id == root_id
    assert publish.parent_span_id == publish_api.span_id
    assert publish.attributes["messaging.system"] == "in-memory"
    # The CloudEvent carries the publishing call's context, and its delivery continues it.
    assert delivered["event"]["traceparent"].split("-")[1:3] == [trace_id, publish_api.span_id]
    assert process.name == "process traced"
    assert process.parent_span_id == publish_api.span_id
    assert process.attributes["messaging.destination.name"] == "traced"
    assert deliver.parent_span_id == process.span_id
    assert handled.parent_span_id == deliver.span_id
    assert delivered["headers"]["traceparent"].split("-")[1:3] == [trace_id, deliver.span_id]


def test_a_log_line_written_in_a_traced_call_names_its_span(world: World) -> None:
    with world.tracer.start_as_current_span("app B publishes what it will drop") as root:
        answer = httpx.post(
            f"{world.callee.http_url}/v1.0/publish/pubsub/traced-drop", headers=_headers(), json={}, timeout=15
        )
    assert answer.status_code == 204, answer.text
    trace_id, _ = _ids(root)
    process = world.collector.wait_for_span(lambda s: s.trace_id == trace_id and s.kind == CONSUMER)

    def dropped() -> dict[str, Any] | None:
        for line in world.callee.log().splitlines():
            if line.startswith("{") and "dropped" in line and trace_id in line:
                entry: dict[str, Any] = json.loads(line)
                return entry
        return None

    entry = wait_for(dropped, "the sidecar's log line about the dropped event")
    assert entry["trace_id"] == trace_id
    assert entry["span_id"] == process.span_id
    assert entry["level"] == "warning"


def test_a_sampling_rate_of_0_exports_nothing(world: World) -> None:
    with world.tracer.start_as_current_span("app calls the quiet sidecar") as root:
        headers = _headers()  # sampled: only the rate keeps the sidecar from tracing
        assert int(headers["traceparent"][-2:], 16) & 1  # the sampled flag
        for _ in range(3):
            assert httpx.get(f"{world.quiet.http_url}/v1.0/state/statestore/k", headers=headers).status_code == 204
    trace_id, _ = _ids(root)
    # Stopping the sidecar would flush any span it held; then a span of the test's own, sent
    # after it, reaches the file after anything the sidecar sent.
    assert world.quiet.stop() == 0
    with world.tracer.start_as_current_span("marker") as marker:
        pass
    world.collector.wait_for_span(lambda s: s.span_id == _ids(marker)[1])

    assert [s for s in world.collector.spans() if s.resource.get("service.name") == world.ids["quiet"]] == []
    assert [s.name for s in world.collector.trace(trace_id)] == ["app calls the quiet sidecar"]
    info = httpx.get(f"{world.caller.http_url}/actuator/info", timeout=5).json()
    assert info["tracing"] == {"samplingRate": 1.0, "exporters": [f"otlp/grpc {world.collector.grpc_endpoint}"]}


def _configuration(tracing: dict[str, Any] | None) -> Configuration:
    spec = {"tracing": tracing} if tracing is not None else {}
    return Configuration.model_validate(
        {"apiVersion": "ottava.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "live"}, "spec": spec}
    )


async def test_a_new_configuration_turns_tracing_on_and_off_at_once(world: World, tmp_path: Path) -> None:
    # In-process: `settings.apply` is what a changed Configuration resource calls in a cluster.
    options = Options(
        app_id=f"live-{uuid.uuid4().hex[:6]}",
        grpc_port=0,
        http_port=0,
        internal_grpc_port=0,
        enable_metrics=False,
        registry_dir=tmp_path / "registry",
        shutdown_grace_seconds=1.0,
    )
    sidecar = Sidecar(options, default_components())
    await sidecar.start()
    traces = [uuid.uuid4().hex for _ in range(3)]

    async def get_state(trace_id: str) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports.grpc}") as channel:
            await dapr_pb2_grpc.DaprStub(channel).GetState(
                state_pb2.GetStateRequest(store_name="statestore", key="k"),
                metadata=[("traceparent", f"00-{trace_id}-{os.urandom(8).hex()}-01")],
                timeout=10,
            )

    try:
        await get_state(traces[0])  # no Configuration yet: tracing is off
        sidecar.settings.apply(
            _configuration({"samplingRate": "1", "otel": {"endpointAddress": world.collector.grpc_endpoint}})
        )
        assert sidecar.metadata.extra_info["tracing"]["samplingRate"] == 1.0
        await get_state(traces[1])
        sidecar.settings.apply(_configuration(None))
        assert sidecar.metadata.extra_info["tracing"] == {"samplingRate": 0.0, "exporters": []}
        await get_state(traces[2])
    finally:
        await sidecar.stop()  # flushes what tracing held
    await asyncio.to_thread(world.collector.wait_for_span, lambda s: s.trace_id == traces[1])
    with world.tracer.start_as_current_span("marker") as marker:
        pass
    await asyncio.to_thread(world.collector.wait_for_span, lambda s: s.span_id == _ids(marker)[1])

    assert [s.name for s in world.collector.trace(traces[0])] == []
    assert {s.name for s in world.collector.trace(traces[1])} == {
        "dapr.proto.runtime.v1.Dapr/GetState",
        "get statestore",
    }
    assert [s.name for s in world.collector.trace(traces[2])] == []


LAZY_CHECK = """
import asyncio, sys, tempfile
from pathlib import Path
import grpc
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from ottava_sidecar.runtime.defaults import default_components
from ottava_sidecar.runtime.sidecar import Options, Sidecar

async def main():
    folder = Path(tempfile.mkdtemp())
    options = Options(grpc_port=0, http_port=0, internal_grpc_port=0, registry_dir=folder / "registry")
    sidecar = Sidecar(options, default_components())
    await sidecar.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports.grpc}") as channel:
        await dapr_pb2_grpc.DaprStub(channel).GetState(
            state_pb2.GetStateRequest(store_name="statestore", key="k"),
            metadata=[("traceparent", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")],
        )
    await sidecar.stop()
    print(sorted({m.split(".")[0] + "." + m.split(".")[1] for m in sys.modules if m.startswith("opentelemetry.")}))

asyncio.run(main())
"""


def test_with_tracing_off_a_sidecar_never_loads_opentelemetry() -> None:
    # What keeps an untraced sidecar's memory as it was: the SDK and its exporters load only for tracing.
    done = subprocess.run([sys.executable, "-c", LAZY_CHECK], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_a_sidecar_exports_to_zipkin(world: World, sidecars: SidecarFactory, tmp_path: Path) -> None:
    app_id = f"zipkin-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "zipkin.yaml"
    config.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: zipkin}\n"
        f'spec:\n  tracing:\n    samplingRate: "1"\n    zipkin: {{endpointAddress: "{world.collector.zipkin_endpoint}"}}\n'
    )
    sidecar = sidecars.start("--app-id", app_id, "--config", str(config))
    trace_id = uuid.uuid4().hex
    answer = httpx.get(
        f"{sidecar.http_url}/v1.0/state/statestore/k",
        headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"},
        timeout=10,
    )
    assert answer.status_code == 204

    spans = world.collector.wait_for_spans(lambda s: s.trace_id == trace_id, count=2)

    assert {s.resource.get("service.name") for s in spans} == {app_id}
    api = next(s for s in spans if s.kind == SERVER)
    component = next(s for s in spans if s.kind == CLIENT)
    assert api.name.startswith("GET /v1.0/state/")
    assert component.parent_span_id == api.span_id


def test_the_example_in_the_docs_shows_a_trace_across_two_sidecars(tmp_path: Path) -> None:
    # docs/observability.md#a-trace-you-can-see runs examples/tracing/run.sh; here on free ports.
    names = [
        "OTLP_PORT", "SHOP_HTTP", "SHOP_GRPC", "SHOP_INTERNAL", "SHOP_METRICS",
        "ECHO_HTTP", "ECHO_GRPC", "ECHO_INTERNAL", "ECHO_METRICS", "APP_PORT",
    ]  # fmt: skip
    ports = {name: str(free_port()) for name in names}
    env = {
        **os.environ,
        **ports,
        "OTTAVA": str(Path(sys.executable).parent / "ottava"),
        "PYTHON": sys.executable,
        "OTTAVA_REGISTRY_DIR": str(tmp_path / "registry"),
        "OTTAVA_CA_DIR": str(tmp_path / "ca"),
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        ["examples/tracing/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr
    tree = done.stdout.split("==> the trace, as the collector received it\n")[1].splitlines()
    assert tree[0].startswith("(parent 00f067aa0ba902b7: not in the collector")
    assert tree[1].startswith("  shop: GET /v1.0/invoke/{appId}/method/{method} (server,")
    assert tree[2].startswith("    echo: ottava.internal.v1.ServiceInvocation/CallLocal (server,")
    assert tree[3].startswith("      echo: invoke echo/otelcol.yaml (client,")
