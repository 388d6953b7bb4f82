"""NATS dies mid-traffic and comes back: the sidecar reports the outage and heals by itself.

During the outage every publish fails at once with an error naming the server,
readiness stays UP (a backend blip must not pull the pod out of its Service), and once
NATS is back publishing succeeds again without touching the sidecar. JetStream keeps
messages in files, so every publish the sidecar acknowledged before the crash is still
delivered after it: a durable consumer, created before the traffic, gets them all.
"""

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.pubsub.base import Message, PubSub

from tests.conftest import SidecarFactory, SidecarProcess
from tests.servers import nats_server as nats_setup
from tests.servers.process import ServerProcess

RECOVERY_SECONDS = 15.0
TOPIC = "orders"
GROUP = "auditor"


@pytest.fixture
def nats() -> Iterator[ServerProcess]:
    """A NATS of this test's own: it gets killed."""
    server = nats_setup.start()
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    server.log_path.unlink(missing_ok=True)


def _metadata(nats: ServerProcess) -> dict[str, str]:
    return {
        "natsURL": f"nats://{nats.address}",
        "user": nats_setup.USER,
        "password": nats_setup.PASSWORD,
        "publishTimeout": "2s",
        "pollTimeout": "200ms",
    }


def _manifest(nats: ServerProcess) -> str:
    items = "\n".join(f"  - {{name: {k}, value: {v!r}}}" for k, v in _metadata(nats).items())
    return f"""
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: pubsub}}
spec:
  type: pubsub.nats
  version: v1
  metadata:
{items}
"""


def _readiness(sidecar: SidecarProcess) -> tuple[int, str]:
    response = httpx.get(f"{sidecar.http_url}/actuator/health/readiness", timeout=5)
    return response.status_code, response.json()["status"]


async def _durable_consumer(nats: ServerProcess) -> PubSub[Any]:
    broker = catalogue.lookup("pubsub.nats").create("audit", _metadata(nats), app_id=GROUP)
    await broker.init()
    assert isinstance(broker, PubSub)
    return broker


async def _drain(nats: ServerProcess, expected: set[str]) -> set[str]:
    """The payloads the durable consumer gets, until it has all of `expected` or time is up."""
    broker = await _durable_consumer(nats)
    seen: set[str] = set()
    complete = asyncio.Event()

    async def record(message: Message) -> None:
        seen.add(_payload(message.data.decode()))
        if expected <= seen:
            complete.set()

    await broker.subscribe(TOPIC, record)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), RECOVERY_SECONDS)
    await broker.close()
    return seen


def test_nats_outage_fails_publishes_clearly_keeps_readiness_and_heals(
    sidecars: SidecarFactory, nats: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def create_consumer() -> None:  # the durable consumer exists before the traffic
        broker = await _durable_consumer(nats)
        subscription = await broker.subscribe(TOPIC, _never_called)
        await subscription.close()
        await broker.close()

    asyncio.run(create_consumer())
    sidecar = sidecars.start("--app-id", "faults", resources={"pubsub.yaml": _manifest(nats)})
    assert sidecar.status == "UP", sidecar.log()
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.http_port))
    acknowledged: set[str] = set()
    with DaprClient() as client:
        for n in range(50):  # traffic before the crash
            client.publish_event("pubsub", TOPIC, f"before-{n}", data_content_type="text/plain")
            acknowledged.add(f"before-{n}")

        nats.kill()
        errors = []
        for n in range(5):  # traffic during the outage
            started = time.monotonic()
            with pytest.raises(DaprGrpcError) as failure:
                client.publish_event("pubsub", TOPIC, f"outage-{n}", data_content_type="text/plain")
            assert time.monotonic() - started < 5, "a publish during the outage must fail fast, not hang"
            errors.append(str(failure.value.details()))
        assert all("pubsub" in e and f"nats at {nats.address}" in e for e in errors), errors
        assert _readiness(sidecar) == (200, "UP")

        nats.start()  # same port, same data folder
        deadline = time.monotonic() + RECOVERY_SECONDS
        while True:
            try:
                client.publish_event("pubsub", TOPIC, "after", data_content_type="text/plain")
                acknowledged.add("after")
                break
            except DaprGrpcError:
                assert time.monotonic() < deadline, f"no recovery within {RECOVERY_SECONDS}s:\n{sidecar.log()}"
                time.sleep(0.1)
    assert _readiness(sidecar) == (200, "UP")
    seen = asyncio.run(_drain(nats, acknowledged))
    lost = acknowledged - seen
    assert not lost, f"acknowledged publishes lost across the crash: {sorted(lost)}"


async def _never_called(message: Message) -> None:
    raise AssertionError(f"no message is expected yet, got {message}")


def _payload(data: str) -> str:
    """The event's data: the sidecar wraps a publish in a CloudEvent (JSON) unless told not to."""
    import json

    try:
        event = json.loads(data)
    except ValueError:
        return data
    return str(event.get("data", data)) if isinstance(event, dict) else data
