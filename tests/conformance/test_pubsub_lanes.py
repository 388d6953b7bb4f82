"""Delivery lanes, for every `pubsub.*` implementation that delivers by partition key.

A message published with the metadata `partitionKey` waits only behind the earlier
messages of its key: a handler that holds or keeps failing one key's message does not
hold back another key's, and at most `maxConcurrentHandlers` messages of a subscription
are in handlers at once. (Messages without a key keep a topic's order: `test_pubsub.py`.)
"""

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.pubsub.base import Message, PubSub

from tests.conformance.conftest import Components, unique

BUILDING_BLOCK = "pubsub"
DEADLINE = 10.0
#: The types that deliver by partition key; MQTT keeps one order per topic (PUBACKs go in order).
KEYED = {"pubsub.in-memory", "pubsub.redis", "pubsub.nats", "pubsub.rabbitmq"}
SEQUENTIAL = {"pubsub.mqtt"}


def test_every_pubsub_says_whether_it_delivers_by_key() -> None:
    names = {t.name for t in catalogue.all_types() if t.building_block == BUILDING_BLOCK}
    assert names <= KEYED | SEQUENTIAL, "add the new pubsub types to KEYED or SEQUENTIAL"


@dataclass
class Handler:
    """Records deliveries and in-flight counts; `behave` decides what each delivery does."""

    behave: Callable[["Handler", Message], Coroutine[Any, Any, None]]
    received: list[Message] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    finished: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __call__(self, message: Message) -> None:
        async with self.changed:
            self.received.append(message)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.changed.notify_all()
        try:
            await self.behave(self, message)
        finally:
            async with self.changed:
                self.in_flight -= 1
                self.finished += 1
                self.changed.notify_all()

    def of(self, key: str) -> list[bytes]:
        return [m.data for m in self.received if m.metadata.get("partitionKey") == key]

    async def until(self, check: Callable[[], bool], what: str) -> None:
        async with self.changed:
            deadline = time.monotonic() + DEADLINE
            try:
                await asyncio.wait_for(self.changed.wait_for(check), deadline - time.monotonic())
            except TimeoutError:
                seen = [(m.data, m.attempt) for m in self.received]
                raise AssertionError(f"{what} within {DEADLINE:g}s; received {seen}") from None


async def _broker(components: Components) -> PubSub[Any]:
    broker = await components.create(redeliveryBackoffSeconds="0.01")
    assert isinstance(broker, PubSub)
    return broker


async def _publish(broker: PubSub[Any], topic: str, key: str, data: bytes) -> None:
    await broker.publish(topic, data, metadata={"partitionKey": key})


@pytest.mark.only.with_args(lambda type_name: type_name in KEYED)
async def test_a_held_message_does_not_hold_back_other_keys(components: Components) -> None:
    broker = await _broker(components)
    topic = unique("topic")
    release = asyncio.Event()

    async def behave(handler: Handler, message: Message) -> None:
        if message.data == b"slow-1":
            await release.wait()

    handler = Handler(behave)
    await broker.subscribe(topic, handler)
    await _publish(broker, topic, "slow", b"slow-1")
    await handler.until(lambda: handler.of("slow") == [b"slow-1"], "the slow key's first message")
    await _publish(broker, topic, "slow", b"slow-2")
    fast = [f"fast-{n}".encode() for n in range(5)]
    for data in fast:
        await _publish(broker, topic, "fast", data)
    await handler.until(lambda: handler.of("fast") == fast, "the other key's messages, in order")
    assert handler.of("slow") == [b"slow-1"], "a message overtook the held message of its own key"
    release.set()
    await handler.until(lambda: handler.of("slow") == [b"slow-1", b"slow-2"], "the slow key's next message")


@pytest.mark.only.with_args(lambda type_name: type_name in KEYED)
async def test_a_failing_message_is_retried_without_holding_back_other_keys(components: Components) -> None:
    broker = await _broker(components)
    topic = unique("topic")
    good = [f"good-{n}".encode() for n in range(3)]

    async def behave(handler: Handler, message: Message) -> None:
        if message.data == b"bad-1" and handler.of("good") != good:
            raise RuntimeError("fails until the other key's messages are in")

    handler = Handler(behave)
    await broker.subscribe(topic, handler)
    await _publish(broker, topic, "bad", b"bad-1")
    await handler.until(lambda: handler.of("bad") == [b"bad-1"], "the failing message")
    await _publish(broker, topic, "bad", b"bad-2")
    for data in good:
        await _publish(broker, topic, "good", data)
    await handler.until(lambda: handler.of("bad")[-1:] == [b"bad-2"], "the failing key's next message")
    bad = [m for m in handler.received if m.metadata.get("partitionKey") == "bad"]
    assert [m.data for m in bad[:-1]] == [b"bad-1"] * (len(bad) - 1) and len(bad) >= 3, bad
    assert [m.attempt for m in bad[:2]] == [1, 2], "a redelivery counts its attempts"
    assert handler.of("good") == good


@pytest.mark.only.with_args(lambda type_name: type_name in KEYED)
async def test_messages_in_handlers_stay_within_max_concurrent_handlers(components: Components) -> None:
    broker = await _broker(components)
    topic = unique("topic")
    limit, count = 2, 6
    gates = {f"k{n}": asyncio.Event() for n in range(count)}

    async def behave(handler: Handler, message: Message) -> None:
        await gates[message.metadata["partitionKey"]].wait()

    handler = Handler(behave)
    await broker.subscribe(topic, handler, metadata={"maxConcurrentHandlers": str(limit)})
    for key in gates:
        await _publish(broker, topic, key, key.encode())
    for released in range(count):
        expected = min(limit, count - released)

        def settled(expected: int = expected, done: int = released) -> bool:
            return handler.finished == done and handler.in_flight == expected

        await handler.until(settled, f"{expected} messages in handlers, {released} done")
        held = next(m for m in handler.received if not gates[m.metadata["partitionKey"]].is_set())
        gates[held.metadata["partitionKey"]].set()
    await handler.until(lambda: handler.finished == count, "every message")
    assert handler.most_in_flight == limit
