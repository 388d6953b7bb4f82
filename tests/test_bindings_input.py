"""Input bindings delivered to apps over the app channel, under `ottava run`.

A gRPC app written with the Dapr SDK (`@app.binding`) and an HTTP app (FastAPI routes
`POST /<binding>`), each behind its own sidecar with cron bindings: events arrive, an
event the app refused comes again (the same event), a binding the app does not listen
to is not read, and the sidecar stops cleanly with its readers running.
"""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dapr.clients import DaprClient

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import events, start_with_app, stop_all_gracefully, wait_for, wait_ready
from tests.servers import rabbitmq_server as rabbitmq_setup
from tests.servers.fixtures import rabbitmq_server  # noqa: F401  (the session's broker, for the queue binding)
from tests.servers.process import ServerProcess

QUEUE = """\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: queue}}
spec:
  type: bindings.rabbitmq
  version: v1
  metadata:
  - {{name: host, value: "amqp://{user}:{password}@{address}"}}
  - {{name: queueName, value: "{queue}"}}
"""

CRON = """\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: {name}}}
spec:
  type: bindings.cron
  version: v1
  metadata:
  - {{name: schedule, value: "{schedule}"}}
{extra}"""


def cron(name: str, schedule: str = "@every 1s", **extra: str) -> str:
    lines = "".join(f'  - {{name: {k}, value: "{v}"}}\n' for k, v in extra.items())
    return CRON.format(name=name, schedule=schedule, extra=lines)


@dataclass
class App:
    protocol: str
    sidecar: SidecarProcess
    events_file: Path

    def deliveries(self, binding: str) -> list[dict[str, Any]]:
        return [e for e in events(self.events_file) if e["binding"] == binding]

    def at_least(self, count: int, binding: str) -> list[dict[str, Any]] | None:
        found = self.deliveries(binding)
        return found if len(found) >= count else None


@pytest.fixture(scope="module", params=["grpc", "http"])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    protocol: str = request.param
    folder = tmp_path_factory.mktemp(f"{protocol}-binding-app")
    resources = folder / "resources"
    resources.mkdir()
    (resources / "ticks.yaml").write_text(cron("ticks"))
    (resources / "flaky.yaml").write_text(cron("flaky", "*/2 * * * * *"))
    (resources / "ignored.yaml").write_text(cron("ignored"))
    (resources / "routed.yaml").write_text(cron("routed", route="/elsewhere"))
    (resources / "output-only.yaml").write_text(cron("output-only", direction="output"))
    broker: ServerProcess = request.getfixturevalue("rabbitmq_server")
    (resources / "queue.yaml").write_text(
        QUEUE.format(
            user=rabbitmq_setup.USER,
            password=rabbitmq_setup.PASSWORD,
            address=broker.address,
            queue=f"bindings-e2e-{uuid.uuid4().hex[:8]}",
        )
    )
    factory = SidecarFactory(folder)
    events_file = folder / "events.jsonl"
    sidecar = start_with_app(
        factory,
        f"binder-{protocol}-{uuid.uuid4().hex[:6]}",
        protocol,
        f"binding_{protocol}_app.py",
        events_file=events_file,
        registry_dir=folder / "registry",
        args=("--resources-path", str(resources)),
    )
    try:
        wait_ready(sidecar)
        yield App(protocol, sidecar, events_file)
    finally:
        stop_all_gracefully(factory)  # SIGTERM: the sidecar stops its app too
        factory.stop_all()


def test_events_arrive(app: App) -> None:
    ticks = wait_for(lambda: app.at_least(3, "ticks"), "three ticks")
    times = [t["metadata"].get("readTimeUTC") or t["metadata"].get("readtimeutc") for t in ticks]
    assert len(set(times)) == len(times), "each tick is a new event"
    assert all(t["data"] == "" for t in ticks)


def test_a_refused_event_comes_again(app: App) -> None:
    deliveries = wait_for(lambda: app.at_least(3, "flaky"), "three deliveries")
    first = deliveries[:3]
    times = {d["metadata"].get("readTimeUTC") or d["metadata"].get("readtimeutc") for d in first}
    assert len(times) == 1, f"the refused event is delivered again, not a new one: {first}"


def test_the_route_metadata_moves_the_http_path(app: App) -> None:
    if app.protocol == "grpc":
        # gRPC apps name their bindings in ListInputBindings; this app does not list it.
        wait_for(lambda: len(app.deliveries("ticks")) >= 2, "ticks, the sidecar is running")
        assert app.deliveries("routed") == []
        return
    wait_for(lambda: app.deliveries("routed"), "an event on /elsewhere")


def test_bindings_the_app_does_not_listen_to_are_not_read(app: App) -> None:
    wait_for(lambda: len(app.deliveries("ticks")) >= 2, "ticks, the sidecar is running")
    assert app.deliveries("ignored") == []
    assert app.deliveries("output-only") == []
    assert "input binding ignored" in app.sidecar.log()


def test_what_the_sdk_sends_through_a_binding_reaches_the_app(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both directions with the Dapr SDK: invoke_binding sends to the queue; the app gets it as an input event."""
    monkeypatch.setenv("DAPR_GRPC_PORT", str(app.sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(app.sidecar.http_port))
    marker = f"order-{uuid.uuid4().hex}"
    with DaprClient() as client:
        client.invoke_binding("queue", "create", marker, {"contentType": "text/plain"})
    arrived = wait_for(lambda: [e for e in app.deliveries("queue") if e["data"] == marker], f"{marker} at the app")
    metadata = {k.lower(): v for k, v in arrived[0]["metadata"].items()}
    assert metadata["queuename"].startswith("bindings-e2e-")


def test_the_sidecar_stops_cleanly_while_reading(app: App) -> None:
    wait_for(lambda: app.deliveries("ticks"), "a tick")
    app.sidecar.stop()  # within its timeout, or it fails the test naming the signal
    log = app.sidecar.log()
    assert "stopping the input bindings" not in log, "stopping them took too long or failed"
    assert "Traceback" not in log
