"""Pub/sub to apps over the app channel: SDK-written subscribers under `ottava run`.

One gRPC app (`dapr.ext.grpc.App`) and one HTTP app (FastAPI + `DaprApp`), each behind
its own sidecar, each receiving what a `DaprClient` publishes to that sidecar.
"""

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import events, payload, start_with_app, stop_all_gracefully, wait_for, wait_ready

EVENTS = 1000


@dataclass
class Subscriber:
    protocol: str
    sidecar: SidecarProcess
    events_file: Path

    def deliveries(self, topic: str, marker: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in events(self.events_file)
            if e["topic"] == topic and (marker is None or _marker(payload(e)) == marker)
        ]


def _marker(data: Any) -> Any:
    return data.get("marker") if isinstance(data, dict) else None


@pytest.fixture(scope="module", params=["grpc", "http"])
def subscriber(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Subscriber]:
    protocol: str = request.param
    folder = tmp_path_factory.mktemp(f"{protocol}-subscriber")
    factory = SidecarFactory(folder)
    events_file = folder / "events.jsonl"
    sidecar = start_with_app(
        factory,
        f"sub-{protocol}-{uuid.uuid4().hex[:6]}",
        protocol,
        f"{protocol}_app.py",
        events_file=events_file,
        registry_dir=folder / "registry",
    )
    try:
        wait_ready(sidecar)  # UP once the app listens and its subscriptions are read
        yield Subscriber(protocol, sidecar, events_file)
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


@pytest.fixture
def client(subscriber: Subscriber, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaprClient]:
    monkeypatch.setenv("DAPR_GRPC_PORT", str(subscriber.sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(subscriber.sidecar.http_port))
    with DaprClient() as dapr:
        yield dapr


def publish(client: DaprClient, topic: str, data: dict[str, Any]) -> str:
    response = client.publish_event("pubsub", topic, json.dumps(data), data_content_type="application/json")
    message_ids = [v for k, v in response.headers.items() if k == "message-id"] if response.headers else []
    assert message_ids, f"no message-id in the response metadata: {response.headers}"
    return str(message_ids[0])


def test_every_one_of_a_thousand_events_arrives_once(subscriber: Subscriber, client: DaprClient) -> None:
    run = uuid.uuid4().hex
    message_ids = {publish(client, "orders", {"marker": run, "n": n}) for n in range(EVENTS)}
    assert len(message_ids) == EVENTS  # the broker's id, one per message

    wait_for(
        lambda: len(subscriber.deliveries("orders", run)) >= EVENTS,
        f"{EVENTS} events at the {subscriber.protocol} subscriber",
        timeout=120,
    )
    received = subscriber.deliveries("orders", run)
    numbers = Counter(payload(e)["n"] for e in received)
    assert sorted(numbers) == list(range(EVENTS)), "events lost"
    assert max(numbers.values()) == 1, "duplicates without a RETRY"
    assert [payload(e)["n"] for e in received] == list(range(EVENTS)), "order of the topic not kept"


def test_retry_twice_then_success_is_seen_three_times(subscriber: Subscriber, client: DaprClient) -> None:
    first, barrier = uuid.uuid4().hex, uuid.uuid4().hex
    publish(client, "flaky", {"marker": first})
    publish(client, "flaky", {"marker": barrier})
    # The topic keeps order: once the next event arrives, the first one is settled.
    wait_for(lambda: subscriber.deliveries("flaky", barrier), "the event published after the flaky one")
    seen = subscriber.deliveries("flaky", first)
    assert len(seen) == 3 and len({e["id"] for e in seen}) == 1


def test_drop_is_seen_once_and_goes_to_the_dead_letter_topic(subscriber: Subscriber, client: DaprClient) -> None:
    first, barrier = uuid.uuid4().hex, uuid.uuid4().hex
    publish(client, "poison", {"marker": first})
    publish(client, "poison", {"marker": barrier})
    wait_for(lambda: subscriber.deliveries("poison", barrier), "the event published after the dropped one")
    wait_for(lambda: subscriber.deliveries("poison-dead", first), "the dropped event on the dead-letter topic")
    assert len(subscriber.deliveries("poison", first)) == 1
    assert len(subscriber.deliveries("poison-dead", first)) == 1


def test_a_handler_that_raises_sees_the_event_again(subscriber: Subscriber, client: DaprClient) -> None:
    first, barrier = uuid.uuid4().hex, uuid.uuid4().hex
    publish(client, "raises", {"marker": first})
    publish(client, "raises", {"marker": barrier})
    wait_for(lambda: len(subscriber.deliveries("raises", barrier)) == 2, "the event after the failing one, twice")
    seen = subscriber.deliveries("raises", first)
    assert len(seen) == 2 and seen[0]["id"] == seen[1]["id"]


def test_subscriptions_are_listed_in_info_and_metadata(subscriber: Subscriber, client: DaprClient) -> None:
    info = httpx.get(f"{subscriber.sidecar.http_url}/actuator/info").json()
    topics = {(s["pubsubname"], s["topic"]) for s in info["subscriptions"]}
    assert {("pubsub", t) for t in ("orders", "flaky", "poison", "poison-dead", "raises")} <= topics
    poison = next(s for s in info["subscriptions"] if s["topic"] == "poison")
    assert poison["deadLetterTopic"] == "poison-dead" and poison["type"] == "PROGRAMMATIC"

    # The SDK's `get_metadata` leaves subscriptions out; the Dapr stub shows them.
    with grpc.insecure_channel(subscriber.sidecar.grpc_address) as channel:
        metadata = dapr_pb2_grpc.DaprStub(channel).GetMetadata(metadata_pb2.GetMetadataRequest())
    listed = {(s.pubsub_name, s.topic): s for s in metadata.subscriptions}
    assert {("pubsub", "orders"), ("pubsub", "poison")} <= set(listed)
    assert listed["pubsub", "poison"].dead_letter_topic == "poison-dead"
    assert listed["pubsub", "poison"].type == metadata_pb2.PROGRAMMATIC
