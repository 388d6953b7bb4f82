"""The pub/sub contract, for every `pubsub.*` implementation.

Publish returns the broker's id, the one each delivery carries. Delivery is at-least-once
per subscription (consumer group): a handler that raises gets the message again, and a
subscriber that dies without acknowledging (its sidecar crashed) gets it again from the
broker once it subscribes anew under the same consumer group. Order per topic and
back-pressure are checked where the implementation promises them (`TRAITS`).
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.pubsub.base import BrokerFullError, Message, PubSub

from tests.conformance.conftest import Components, unique

BUILDING_BLOCK = "pubsub"
DEADLINE = 10.0  # seconds a delivery may take in these tests (crash redelivery waits for the broker's timeout)


@dataclass(frozen=True)
class Traits:
    ordered: bool = True  # a topic's messages reach a subscription in publish order
    # Metadata that bounds the broker to few undelivered messages (None: no back-pressure).
    full_after: tuple[int, dict[str, str]] | None = None


TRAITS: dict[str, Traits] = {
    "pubsub.in-memory": Traits(full_after=(3, {"maxPendingMessages": "3"})),
    "pubsub.redis": Traits(),  # a stream grows (or is trimmed, losing messages): no back-pressure
    "pubsub.nats": Traits(full_after=(3, {"maxMsgs": "3"})),
    "pubsub.rabbitmq": Traits(full_after=(4, {"maxLength": "3", "prefetchCount": "1"})),  # + 1 in hand
    "pubsub.mqtt": Traits(),  # the broker queues per session (Mosquitto drops beyond max_queued_messages)
}


def test_every_pubsub_declares_its_traits() -> None:
    names = [t.name for t in catalogue.all_types() if t.building_block == BUILDING_BLOCK]
    assert not [n for n in names if n not in TRAITS], "add the new pubsub types to TRAITS"


@dataclass
class Inbox:
    """A handler that records deliveries; `fail` decides, per message, whether it raises."""

    fail: Callable[[Message], bool] = lambda _: False
    received: list[Message] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, message: Message) -> None:
        self.received.append(message)
        self.changed.set()
        if self.fail(message):
            raise RuntimeError(f"handler failed on attempt {message.attempt}")

    async def wait_for(self, done: Callable[[list[Message]], bool], what: str, within: float = DEADLINE) -> None:
        deadline = time.monotonic() + within
        while not done(self.received):
            left = deadline - time.monotonic()
            assert left > 0, f"{what} within {within:g}s; received {[(m.data, m.attempt) for m in self.received]}"
            self.changed.clear()
            if done(self.received):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def datas(self) -> list[bytes]:
        return [m.data for m in self.received]


async def _broker(components: Components, **kwargs: str) -> PubSub[Any]:
    broker = await components.create(**kwargs)
    assert isinstance(broker, PubSub)
    return broker


async def test_publish_returns_the_id_that_the_delivery_carries(components: Components) -> None:
    broker = await _broker(components)
    topic = unique("topic")
    inbox = Inbox()
    await broker.subscribe(topic, inbox)
    message_id = await broker.publish(topic, b"hello", content_type="text/plain", metadata={"k": "v"})
    assert message_id
    await inbox.wait_for(lambda r: len(r) == 1, "no delivery")
    (message,) = inbox.received
    assert (message.topic, message.data, message.id, message.attempt) == (topic, b"hello", message_id, 1)
    assert message.content_type == "text/plain"
    assert message.metadata.get("k") == "v"
    assert await broker.publish(topic, b"again") != message_id


async def test_every_consumer_group_gets_every_message(components: Components) -> None:
    broker = await _broker(components)
    topic = unique("topic")
    inboxes = [Inbox(), Inbox()]
    for number, inbox in enumerate(inboxes):
        await broker.subscribe(topic, inbox, metadata={"consumerID": f"group-{number}"})
    other_topic = Inbox()
    await broker.subscribe(unique("other"), other_topic)
    sent = [f"m{n}".encode() for n in range(20)]
    for data in sent:
        await broker.publish(topic, data)
    for inbox in inboxes:
        await inbox.wait_for(lambda r: set(sent) <= {m.data for m in r}, "not every message delivered")
    assert not other_topic.received, "a subscription got messages of another topic"


async def test_a_failing_handler_gets_the_message_again(components: Components) -> None:
    broker = await _broker(components)
    topic = unique("topic")
    inbox = Inbox(fail=lambda m: m.data == b"poison" and m.attempt < 3)
    await broker.subscribe(topic, inbox)
    message_id = await broker.publish(topic, b"poison")
    await broker.publish(topic, b"after")
    await inbox.wait_for(lambda r: b"after" in [m.data for m in r], "the message after a failing one never came")
    poison = [m for m in inbox.received if m.data == b"poison"]
    assert [m.attempt for m in poison][:3] == [1, 2, 3], poison
    assert {m.id for m in poison} == {message_id}, "a redelivery carries the id of the first delivery"


async def test_a_message_that_the_subscriber_never_acknowledged_comes_back_after_its_crash(
    components: Components,
) -> None:
    topic = unique("topic")
    group = unique("group")
    first = await _broker(components)
    stuck = asyncio.Event()

    async def crashes(message: Message) -> None:  # takes the message and never returns: no ack
        stuck.set()
        await asyncio.Event().wait()

    subscription = await first.subscribe(topic, crashes, metadata={"consumerID": group})
    message_id = await first.publish(topic, b"unacked")
    await asyncio.wait_for(stuck.wait(), DEADLINE)
    await subscription.close()  # the sidecar dies with the message in its hands
    await components.close(first)

    second = await _broker(components)  # the sidecar restarted
    inbox = Inbox()
    await second.subscribe(topic, inbox, metadata={"consumerID": group})
    if not components.backend.persistent:  # a process-local broker loses what it held with the process
        return
    await inbox.wait_for(lambda r: b"unacked" in [m.data for m in r], "the unacknowledged message did not come back")
    assert inbox.received[0].id == message_id
    assert inbox.received[0].attempt >= 2, "a redelivery after a crash counts the first delivery"


async def test_messages_acknowledged_before_a_crash_do_not_come_back(components: Components) -> None:
    topic = unique("topic")
    group = unique("group")
    first = await _broker(components)
    inbox = Inbox()
    subscription = await first.subscribe(topic, inbox, metadata={"consumerID": group})
    for n in range(5):
        await first.publish(topic, f"m{n}".encode())
    await inbox.wait_for(lambda r: len(r) == 5, "not all delivered")
    await subscription.close()
    await components.close(first)

    second = await _broker(components)
    again = Inbox()
    await second.subscribe(topic, again, metadata={"consumerID": group})
    await second.publish(topic, b"new")
    await again.wait_for(lambda r: b"new" in [m.data for m in r], "a new message after the restart never came")
    assert again.datas() == [b"new"], "acknowledged messages were delivered again"


@pytest.mark.only.with_args(lambda type_name: TRAITS[type_name].ordered)
async def test_order_per_topic_is_kept(components: Components) -> None:
    broker = await _broker(components)
    topic = unique("topic")
    inbox = Inbox(fail=lambda m: m.data == b"m3" and m.attempt == 1)  # a redelivery must not be overtaken
    await broker.subscribe(topic, inbox)
    sent = [f"m{n}".encode() for n in range(30)]
    for data in sent:
        await broker.publish(topic, data)
    await inbox.wait_for(lambda r: sum(m.attempt == 1 or m.data == b"m3" for m in r) >= 31, "not all delivered")
    firsts: list[bytes] = []
    for message in inbox.received:
        if message.data == b"m3" and message.attempt == 1:
            continue
        if message.data not in firsts:
            firsts.append(message.data)
    assert firsts == sent


@pytest.mark.only.with_args(lambda type_name: TRAITS[type_name].full_after is not None)
async def test_a_full_broker_refuses_publishing(components: Components) -> None:
    traits = TRAITS[components.type_name]
    assert traits.full_after is not None
    bound, metadata = traits.full_after
    broker = await _broker(components, **metadata)
    topic = unique("topic")
    release = asyncio.Event()
    inbox = Inbox()

    async def stuck(message: Message) -> None:
        await release.wait()
        await inbox(message)

    await broker.subscribe(topic, stuck)
    accepted = 0
    refused: BrokerFullError | None = None
    while refused is None and accepted < bound + 5:
        try:
            await broker.publish(topic, f"m{accepted}".encode())
            accepted += 1
        except BrokerFullError as err:
            refused = err
    assert refused is not None, f"accepted {accepted} messages with a bound of {bound}"
    assert accepted <= bound + 1, f"accepted {accepted} messages with a bound of {bound}"
    release.set()
    await inbox.wait_for(lambda r: len(r) >= accepted, "the accepted messages were not delivered")
    deadline = time.monotonic() + DEADLINE
    while True:  # drained: publishing works again
        try:
            await broker.publish(topic, b"later")
            break
        except BrokerFullError:
            assert time.monotonic() < deadline, "still full after the subscriber caught up"
            await asyncio.sleep(0.05)
