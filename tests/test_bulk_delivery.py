"""Bulk delivery's batching, with the in-memory broker and a recording app channel.

The await deadline is a timer the test holds (`BulkDelivery(timer=...)`): a batch that
waits for it goes out when the test fires it, so nothing here waits on the clock.
"""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ottava_sidecar.components import catalogue
from ottava_sidecar.components.pubsub.base import Message
from ottava_sidecar.components.pubsub.in_memory import InMemoryPubSub
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.delivery import BatchEntry, BulkDelivery, broker_metadata
from ottava_sidecar.messaging.subscriptions import Bulk, SubscriptionSpec, Verdict


@dataclass
class Deadline:
    """A timer that fires when the test says so."""

    delay: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Timers:
    scheduled: list[Deadline] = field(default_factory=list)

    def __call__(self, delay: float, callback: Callable[[], None]) -> Any:
        self.scheduled.append(Deadline(delay, callback))
        return self.scheduled[-1]

    def fire_pending(self) -> None:
        for deadline in self.scheduled:
            if not deadline.cancelled:
                deadline.cancelled = True
                deadline.callback()


@dataclass
class App:
    """What the app answers per entry: by the payload's `verdict`, `RETRY` on the first delivery only."""

    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    forget: set[str] = field(default_factory=set)  # payload markers the app leaves out of its answer

    async def deliver_bulk(
        self, subscription: SubscriptionSpec, entries: list[BatchEntry], path: str
    ) -> dict[str, Verdict]:
        batch = [json.loads(e.event.data) for e in entries]
        self.batches.append(batch)
        verdicts = {}
        for entry, data in zip(entries, batch, strict=True):
            self.seen[data["marker"]] = self.seen.get(data["marker"], 0) + 1
            verdict = Verdict(data.get("verdict", "SUCCESS"))
            if verdict is Verdict.RETRY and self.seen[data["marker"]] > 1:
                verdict = Verdict.SUCCESS
            if data["marker"] not in self.forget or self.seen[data["marker"]] > 1:
                verdicts[entry.entry_id] = verdict
        return verdicts

    async def deliver(self, subscription: SubscriptionSpec, event: cloudevents.TopicEvent, path: str) -> Verdict:
        raise AssertionError("a bulk subscription delivers in batches")


async def until(check: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not check():  # noqa: ASYNC110 - polling the condition, with a deadline below
            await asyncio.sleep(0.001)

    try:
        await asyncio.wait_for(poll(), timeout=10)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@dataclass
class Running:
    broker: InMemoryPubSub
    delivery: BulkDelivery
    handle: Any  # the in-memory broker's subscription: `pending` counts its unacknowledged messages


async def start(spec: SubscriptionSpec, app: App, timers: Timers) -> Running:
    broker = catalogue.lookup("pubsub.in-memory").create("pubsub", {"redeliveryBackoffSeconds": "0.001"}, app_id="a")
    assert isinstance(broker, InMemoryPubSub)
    delivery = BulkDelivery(spec, broker, app, timer=timers)
    handle = await broker.subscribe(spec.topic, delivery, metadata=broker_metadata(spec))
    return Running(broker, delivery, handle)


async def publish(broker: InMemoryPubSub, topic: str, *items: dict[str, Any]) -> None:
    for item in items:
        envelope = cloudevents.wrap(
            json.dumps(item).encode(), "application/json", pubsub_name="pubsub", topic=topic, source="t", metadata={}
        )
        await broker.publish(topic, envelope.data, content_type=envelope.content_type)


def bulk(max_messages: int, *, dead_letter_topic: str = "") -> SubscriptionSpec:
    return SubscriptionSpec.create(
        "pubsub",
        "orders",
        default_path="/batch",
        bulk=Bulk(max_messages, 1000),
        dead_letter_topic=dead_letter_topic,
    )


async def test_a_batch_goes_out_when_it_holds_max_messages_count() -> None:
    app, timers = App(), Timers()
    running = await start(bulk(3), app, timers)
    broker = running.broker
    await publish(broker, "orders", *({"marker": str(n)} for n in range(6)))
    await until(lambda: sum(map(len, app.batches)) == 6, "six events")
    assert [len(batch) for batch in app.batches] == [3, 3]
    assert sorted(d["marker"] for batch in app.batches for d in batch) == [str(n) for n in range(6)]
    assert {deadline.delay for deadline in timers.scheduled} == {1.0}  # maxAwaitDurationMs 1000
    assert all(deadline.cancelled for deadline in timers.scheduled)  # full before the deadline
    await broker.close()


async def test_a_batch_that_does_not_fill_up_goes_out_at_its_deadline() -> None:
    app, timers = App(), Timers()
    running = await start(bulk(100), app, timers)
    broker, delivery = running.broker, running.delivery
    await publish(broker, "orders", {"marker": "a"}, {"marker": "b"})
    await until(lambda: delivery.filling == {"/batch": 2}, "both events in the batch")
    assert app.batches == []  # not full, its deadline not passed: it waits
    timers.fire_pending()
    await until(lambda: len(app.batches) == 1, "the batch")
    assert [d["marker"] for d in app.batches[0]] == ["a", "b"]
    await until(lambda: not delivery.filling and running.handle.pending == 0, "both settled")
    await broker.close()


async def test_each_entry_is_settled_by_its_own_verdict() -> None:
    app, timers = App(forget={"forgotten"}), Timers()
    running = await start(bulk(4, dead_letter_topic="dead"), app, timers)
    broker, delivery = running.broker, running.delivery
    dead: list[bytes] = []

    async def dead_letters(message: Message) -> None:
        dead.append(message.data)

    await broker.subscribe("dead", dead_letters)
    items = [
        {"marker": "ok"},
        {"marker": "again", "verdict": "RETRY"},
        {"marker": "poison", "verdict": "DROP"},
        {"marker": "forgotten"},
    ]
    await publish(broker, "orders", *items)
    await until(lambda: len(app.batches) == 1, "the full batch")
    # RETRY and the entry the app left out come back; they make a batch of two, sent at its deadline.
    await until(lambda: delivery.filling == {"/batch": 2}, "the redelivered entries")
    timers.fire_pending()
    await until(lambda: len(app.batches) == 2 and running.handle.pending == 0, "the redeliveries settled")
    assert sorted(d["marker"] for d in app.batches[1]) == ["again", "forgotten"]
    assert app.seen == {"ok": 1, "again": 2, "poison": 1, "forgotten": 2}
    assert [json.loads(d)["data"]["marker"] for d in dead] == ["poison"]
    await broker.close()


async def test_closing_a_bulk_subscription_leaves_its_unsent_events_unacknowledged() -> None:
    app, timers = App(), Timers()
    running = await start(bulk(100), app, timers)
    await publish(running.broker, "orders", {"marker": "a"})
    await until(lambda: running.delivery.filling == {"/batch": 1}, "the event in a batch")
    await running.delivery.close()
    timers.fire_pending()  # its deadline comes: nothing is sent any more
    await until(lambda: not running.delivery.filling, "the batch dropped")
    assert app.batches == []
    assert running.handle.pending == 1  # not acknowledged: the broker has it still
    await running.broker.close()
