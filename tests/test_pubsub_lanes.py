"""Delivery lanes, as a subscriber app sees them: events of one partition key in publish
order, events of different keys at the same time, at most `maxConcurrentHandlers` at once,
and a failing event retried without holding back the other keys; over a streaming
subscription, one outstanding event per key.

The sidecar runs in this process with a gRPC subscriber app (Dapr's `AppCallback`) served
by the test; events are published through the sidecar's Dapr gRPC API with a
`partitionKey`, as an app would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc, dapr_pb2_grpc, pubsub_pb2
from google.protobuf import empty_pb2
from ottava_sidecar import contract
from ottava_sidecar.components.registry import Status
from ottava_sidecar.resources.models import Component
from ottava_sidecar.runtime.defaults import default_components
from ottava_sidecar.runtime.sidecar import Options, Sidecar

from tests.messaging import free_port

PUBSUB = "lanes"
DEADLINE = 10.0
SUCCESS = appcallback_pb2.TopicEventResponse.SUCCESS
RETRY = appcallback_pb2.TopicEventResponse.RETRY
Answer = Callable[[dict[str, Any]], Awaitable[int]]  # an event's data → the app's status


@dataclass
class App:
    """A subscriber app: each topic's events go to its `answers` entry; what it saw is recorded."""

    topics: dict[str, dict[str, str]]  # topic → subscription metadata
    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)  # every delivery, in arrival order
    in_flight: int = 0
    most_in_flight: int = 0
    finished: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def deliver(self, topic: str, data: dict[str, Any]) -> int:
        async with self.changed:
            self.seen.append(data)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.changed.notify_all()
        try:
            return await self.answers[topic](data)
        finally:
            async with self.changed:
                self.in_flight -= 1
                self.finished += 1
                self.changed.notify_all()

    async def until(self, check: Callable[[], bool], what: str) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(check), DEADLINE)
            except TimeoutError:
                raise AssertionError(f"{what} within {DEADLINE:g}s; the app saw {self.seen}") from None

    def keys_seen(self, key: str) -> list[int]:
        return [data["n"] for data in self.seen if data["key"] == key]


class _Callback(appcallback_pb2_grpc.AppCallbackServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def ListTopicSubscriptions(self, request: empty_pb2.Empty, context: Any) -> Any:
        return appcallback_pb2.ListTopicSubscriptionsResponse(
            subscriptions=[
                appcallback_pb2.TopicSubscription(pubsub_name=PUBSUB, topic=topic, metadata=metadata)
                for topic, metadata in self.app.topics.items()
            ]
        )

    async def OnTopicEvent(self, request: appcallback_pb2.TopicEventRequest, context: Any) -> Any:
        status = await self.app.deliver(request.topic, json.loads(request.data))
        return appcallback_pb2.TopicEventResponse(status=status)  # type: ignore[arg-type]


@dataclass
class Running:
    app: App
    dapr: dapr_pb2_grpc.DaprStub

    async def publish(self, topic: str, key: str, n: int) -> None:
        await self.dapr.PublishEvent(
            pubsub_pb2.PublishEventRequest(
                pubsub_name=PUBSUB,
                topic=topic,
                data=json.dumps({"key": key, "n": n}).encode(),
                data_content_type="application/json",
                metadata={"partitionKey": key},
            )
        )


def lanes_pubsub() -> Component:
    return Component.model_validate(
        {
            "apiVersion": contract.GROUP_VERSION,
            "kind": "Component",
            "metadata": {"name": PUBSUB},
            "spec": {
                "type": "pubsub.in-memory",
                "metadata": [{"name": "redeliveryBackoffSeconds", "value": "0.01"}],
            },
        }
    )


@contextlib.asynccontextmanager
async def running_with(tmp_path: Path, topics: dict[str, dict[str, str]]) -> AsyncIterator[Running]:
    app = App(topics)
    server = grpc.aio.server()
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(_Callback(app), server)
    port = server.add_insecure_port("127.0.0.1:0") or free_port()
    await server.start()
    options = Options(
        app_id=f"lanes-{uuid.uuid4().hex[:8]}",
        app_port=port,
        app_protocol="grpc",
        grpc_port=0,
        http_port=0,
        metrics_port=0,
        internal_grpc_port=0,
        registry_dir=tmp_path,
        shutdown_grace_seconds=1.0,
    )
    sidecar = Sidecar(options, [*default_components(), lanes_pubsub()])
    await sidecar.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while (condition := sidecar.registry.conditions().get("app")) is None or condition.status is not Status.UP:
            assert time.monotonic() < deadline, "the sidecar never read the app's subscriptions"
            await asyncio.sleep(0.01)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports.grpc}") as channel:
            yield Running(app, dapr_pb2_grpc.DaprStub(channel))
    finally:
        await sidecar.stop()
        await server.stop(None)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_with(tmp_path, {"orders": {}}) as started:
        yield started


async def test_events_of_a_key_arrive_in_publish_order_while_keys_overlap(running: Running) -> None:
    keys = ["a", "b", "c", "d"]
    first_of_each = asyncio.Event()

    async def answer(data: dict[str, Any]) -> int:
        if data["n"] == 0:  # each key's first event waits for the others': they must overlap
            if {k for k in keys if running.app.keys_seen(k)} == set(keys):
                first_of_each.set()
            await asyncio.wait_for(first_of_each.wait(), DEADLINE)
        return SUCCESS

    running.app.answers["orders"] = answer
    per_key = 25

    async def publish_in_order(key: str) -> None:
        for n in range(per_key):
            await running.publish("orders", key, n)

    await asyncio.gather(*(publish_in_order(key) for key in keys))
    await running.app.until(lambda: len(running.app.seen) == per_key * len(keys), "every event")
    for key in keys:
        assert running.app.keys_seen(key) == list(range(per_key)), f"key {key} out of order"
    assert running.app.most_in_flight > 1


async def test_an_event_held_by_the_app_does_not_hold_back_other_keys(running: Running) -> None:
    release = asyncio.Event()

    async def answer(data: dict[str, Any]) -> int:
        if data["key"] == "slow" and data["n"] == 1:
            await release.wait()
        return SUCCESS

    running.app.answers["orders"] = answer
    await running.publish("orders", "slow", 1)
    await running.app.until(lambda: running.app.keys_seen("slow") == [1], "the slow key's first event")
    await running.publish("orders", "slow", 2)
    for n in range(1, 6):
        await running.publish("orders", "fast", n)
    await running.app.until(lambda: running.app.keys_seen("fast") == [1, 2, 3, 4, 5], "the other key's events")
    assert running.app.keys_seen("slow") == [1], "an event overtook the held event of its own key"
    release.set()
    await running.app.until(lambda: running.app.keys_seen("slow") == [1, 2], "the slow key's second event")


async def test_a_failing_event_is_retried_without_holding_back_other_keys(running: Running) -> None:
    good = [1, 2, 3]

    async def answer(data: dict[str, Any]) -> int:
        if data["key"] == "bad" and data["n"] == 1 and running.app.keys_seen("good") != good:
            return RETRY  # fails until every event of the other key has arrived
        return SUCCESS

    running.app.answers["orders"] = answer
    await running.publish("orders", "bad", 1)
    await running.app.until(lambda: running.app.keys_seen("bad") == [1], "the failing event")
    await running.publish("orders", "bad", 2)
    for n in good:
        await running.publish("orders", "good", n)
    await running.app.until(lambda: running.app.keys_seen("bad")[-1:] == [2], "the failing key's next event")
    bad = running.app.keys_seen("bad")
    assert bad[-1] == 2 and set(bad[:-1]) == {1} and len(bad) >= 3, f"retried, then the next one: {bad}"
    assert running.app.keys_seen("good") == good


async def test_deliveries_at_once_stay_within_max_concurrent_handlers(tmp_path: Path) -> None:
    limit, events = 3, 10
    async with running_with(tmp_path, {"bounded": {"maxConcurrentHandlers": str(limit)}}) as started:
        app = started.app
        gates: dict[str, asyncio.Event] = {f"k{n}": asyncio.Event() for n in range(events)}

        async def answer(data: dict[str, Any]) -> int:
            await gates[data["key"]].wait()
            return SUCCESS

        app.answers["bounded"] = answer
        for key in gates:
            await started.publish("bounded", key, 0)
        for released in range(events):
            expected = min(limit, events - released)

            def settled(expected: int = expected, done: int = released) -> bool:
                return app.finished == done and app.in_flight == expected

            await app.until(settled, f"{expected} events in the app, {released} done")
            held = [data["key"] for data in app.seen if not gates[data["key"]].is_set()]
            gates[held[0]].set()
        await app.until(lambda: app.in_flight == 0 and len(app.seen) == events, "every event")
        assert app.most_in_flight == limit


async def test_a_stream_has_one_event_per_key_outstanding(running: Running) -> None:
    requests: asyncio.Queue[pubsub_pb2.SubscribeTopicEventsRequestAlpha1] = asyncio.Queue()
    initial = pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(pubsub_name=PUBSUB, topic="streamed")
    await requests.put(pubsub_pb2.SubscribeTopicEventsRequestAlpha1(initial_request=initial))

    async def outgoing() -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1]:
        while True:
            yield await requests.get()

    async def answer(event_id: str) -> None:
        processed = pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
            id=event_id, status=appcallback_pb2.TopicEventResponse(status=SUCCESS)
        )
        await requests.put(pubsub_pb2.SubscribeTopicEventsRequestAlpha1(event_processed=processed))

    stream = running.dapr.SubscribeTopicEventsAlpha1(outgoing())
    try:
        assert (await asyncio.wait_for(stream.read(), DEADLINE)).HasField("initial_response")

        async def next_event() -> tuple[str, dict[str, Any]]:
            event = (await asyncio.wait_for(stream.read(), DEADLINE)).event_message
            return event.id, json.loads(event.data)

        await running.publish("streamed", "a", 1)
        await running.publish("streamed", "a", 2)
        await running.publish("streamed", "b", 1)
        first_id, first = await next_event()
        assert first == {"key": "a", "n": 1}
        # a's first event is not answered: b's comes, a's second does not overtake it.
        second_id, second = await next_event()
        assert second == {"key": "b", "n": 1}
        await answer(second_id)
        await answer(first_id)
        third_id, third = await next_event()
        assert third == {"key": "a", "n": 2}
        await answer(third_id)
    finally:
        stream.cancel()
