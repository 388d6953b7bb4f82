"""What the app's verdict on a delivered event means, the same for every way of subscribing.

SUCCESS acknowledges. DROP acknowledges too, after moving the event to the dead-letter
topic when the subscription names one (and logging it when not). RETRY, an app error or
a timeout hand the event back to the broker, which redelivers it after a backoff;
when the subscription caps deliveries (`maxDeliveryAttempts`) the last failure is
treated as DROP instead. Each event's result is counted per topic
(`metrics.PUBSUB_SETTLED`: delivered, retried, dead_lettered, dropped).

A bulk subscription (`BulkDelivery`) hands the app several events per call and settles
each by its own verdict, the same way.
"""

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ottava_sidecar import metrics, tracing
from ottava_sidecar.apperrors import AppChannelError, AppUnimplementedError
from ottava_sidecar.components.pubsub import lanes
from ottava_sidecar.components.pubsub.base import Message, PubSub
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What delivery needs of the app: the app channel (`appchannel.AppChannel`) is one."""

    async def deliver(self, subscription: SubscriptionSpec, event: cloudevents.TopicEvent, path: str) -> Verdict:
        """Hand `event` to the app; its verdict, or an `apperrors.AppChannelError`."""
        ...


@dataclass(slots=True)
class BatchEntry:
    """One event of a batch, as the app sees it: its id in the batch, the event, the broker's metadata."""

    entry_id: str
    event: cloudevents.TopicEvent
    metadata: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class BulkSubscriber(Protocol):
    """What bulk delivery needs of the app: the app channel is one."""

    async def deliver_bulk(
        self, subscription: SubscriptionSpec, entries: list[BatchEntry], path: str
    ) -> dict[str, Verdict]:
        """Hand the batch to the app: its verdict per entry id (an entry it did not answer is
        missing), or an `apperrors.AppChannelError` for the whole batch."""
        ...


class Redeliver(Exception):
    """Raised to the broker: the event was not processed, deliver it again later."""


@functools.cache
def _deliveries(pubsub_name: str, topic: str, verdict: Verdict) -> Any:
    """The counter of one outcome of a topic's deliveries, looked up once rather than per event."""
    return metrics.PUBSUB_DELIVERIES.labels(pubsub_name, topic, verdict.value)


@functools.cache
def _settled(pubsub_name: str, topic: str, result: str) -> Any:
    """The counter of one result of settling a topic's events (metrics.PUBSUB_SETTLED)."""
    return metrics.PUBSUB_SETTLED.labels(pubsub_name, topic, result)


async def settle(broker: PubSub[Any], spec: SubscriptionSpec, message: Message, verdict: Verdict, reason: str) -> None:
    _deliveries(spec.pubsub_name, spec.topic, verdict).inc()
    if verdict is Verdict.SUCCESS:
        _settled(spec.pubsub_name, spec.topic, "delivered").inc()
        return
    if verdict is Verdict.RETRY:
        if not spec.max_attempts or message.attempt < spec.max_attempts:
            _settled(spec.pubsub_name, spec.topic, "retried").inc()
            raise Redeliver(reason)
        reason = f"{reason}; gave up after {message.attempt} deliveries (maxDeliveryAttempts)"
    if spec.dead_letter_topic:
        try:
            await broker.publish(
                spec.dead_letter_topic, message.data, content_type=message.content_type, metadata=message.metadata
            )
        except Exception as err:  # the dead-letter topic is full or failing: keep the event
            _settled(spec.pubsub_name, spec.topic, "retried").inc()
            raise Redeliver(f"{reason}; moving it to dead-letter topic {spec.dead_letter_topic} failed: {err}") from err
        log.warning(
            "event %s of %s/%s moved to dead-letter topic %s: %s",
            message.id,
            spec.pubsub_name,
            spec.topic,
            spec.dead_letter_topic,
            reason,
        )
        _settled(spec.pubsub_name, spec.topic, "dead_lettered").inc()
        return
    _settled(spec.pubsub_name, spec.topic, "dropped").inc()
    log.warning("event %s of %s/%s dropped: %s", message.id, spec.pubsub_name, spec.topic, reason)


def consumer_span(
    spec: SubscriptionSpec, event: cloudevents.TopicEvent
) -> tuple[str, list[tuple[str, Any]], dict[str, Any], str]:
    """The span of an event's delivery: a child of the publisher's context that the CloudEvent carries."""
    carrier = [
        (name, event.extensions[name])
        for name in (tracing.TRACEPARENT, tracing.TRACESTATE)
        if isinstance(event.extensions.get(name), str)
    ]
    attributes = {
        "messaging.operation.type": "process",
        "messaging.destination.name": spec.topic,
        "messaging.message.id": event.id,
        "messaging.message.delivery_attempt": event.attempt,
        "ottava.pubsub": spec.pubsub_name,
    }
    return f"process {spec.topic}", carrier, attributes, "consumer"


class _Delivery:
    """A broker handler of one subscription: each message unwrapped, in its consumer span when traced."""

    spec: SubscriptionSpec

    async def __call__(self, message: Message) -> None:
        event = cloudevents.unwrap(message, self.spec.pubsub_name)
        if tracing.ACTIVE is None:
            await self._handle(message, event)
            return
        with tracing.server_span(*consumer_span(self.spec, event)):
            await self._handle(message, event)

    async def _handle(self, message: Message, event: cloudevents.TopicEvent) -> None:
        raise NotImplementedError


class AppDelivery(_Delivery):
    """The broker handler of a subscription read from the app: delivers over the app channel."""

    def __init__(self, spec: SubscriptionSpec, broker: PubSub[Any], channel: Subscriber) -> None:
        self.spec = spec
        self._broker = broker
        self._channel = channel

    async def _handle(self, message: Message, event: cloudevents.TopicEvent) -> None:
        path = self.spec.route(event)
        if path is None:
            await settle(
                self._broker,
                self.spec,
                message,
                Verdict.DROP,
                "no routing rule matches it and there is no default route",
            )
            return
        try:
            verdict = await self._channel.deliver(self.spec, event, path)
            reason = f"the app answered {verdict.value}"
        except AppUnimplementedError as err:
            verdict, reason = Verdict.DROP, str(err)
        except AppChannelError as err:
            verdict, reason = Verdict.RETRY, str(err)
        await settle(self._broker, self.spec, message, verdict, reason)


def broker_metadata(spec: SubscriptionSpec) -> dict[str, str]:
    """The subscription's metadata for its broker.

    A bulk subscription's keyless events may be handled together (`lanes.IN_ORDER`), by as
    many handlers as a batch holds, so that a batch fills up; a subscription's own
    `maxConcurrentHandlers` or `inOrder` win.
    """
    if spec.bulk is None:
        return spec.metadata
    return {
        lanes.IN_ORDER: "false",
        lanes.MAX_CONCURRENT_HANDLERS: str(spec.bulk.max_messages),
        **spec.metadata,
    }


@dataclass(slots=True)
class _Waiting:
    entry: BatchEntry
    outcome: "asyncio.Future[tuple[Verdict, str]]"


@dataclass(slots=True)
class _Batch:
    waiting: list[_Waiting] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


Timer = Callable[[float, Callable[[], None]], asyncio.TimerHandle]


def _loop_timer(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)


class BulkDelivery(_Delivery):
    """The broker handler of a bulk subscription: events go to the app in batches.

    Each event the broker hands over joins the batch of its route; a batch goes to the app
    when it holds `maxMessagesCount` events, or `maxAwaitDurationMs` after its first event
    joined, whichever comes first. The broker's handler for an event returns (or raises
    `Redeliver`) once the app answered the batch, by the event's own verdict: SUCCESS, RETRY
    and DROP mean what they mean for one event; an entry the app did not answer is
    redelivered; an app that could not be reached, or failed the call, gets every event of
    the batch again later. `timer` schedules the await deadline (the event loop's
    `call_later`; tests pass their own).
    """

    def __init__(
        self, spec: SubscriptionSpec, broker: PubSub[Any], channel: BulkSubscriber, *, timer: Timer = _loop_timer
    ) -> None:
        if spec.bulk is None:
            raise ValueError(f"subscription to {spec.pubsub_name}/{spec.topic} is not a bulk subscription")
        self.spec = spec
        self.bulk = spec.bulk
        self._broker = broker
        self._channel = channel
        self._timer = timer
        self._batches: dict[str, _Batch] = {}  # filling up, by route
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    async def _handle(self, message: Message, event: cloudevents.TopicEvent) -> None:
        path = self.spec.route(event)
        if path is None:
            reason = "no routing rule matches it and there is no default route"
            await settle(self._broker, self.spec, message, Verdict.DROP, reason)
            return
        if self._closed:
            raise Redeliver(f"subscription to {self.spec.pubsub_name}/{self.spec.topic} closed")
        waiting = _Waiting(
            BatchEntry(str(uuid.uuid4()), event, message.metadata), asyncio.get_running_loop().create_future()
        )
        batch = self._batches.get(path)
        if batch is None:
            batch = self._batches[path] = _Batch()
            batch.timer = self._timer(self.bulk.max_await_ms / 1000, functools.partial(self._send, path, batch))
        batch.waiting.append(waiting)
        if len(batch.waiting) >= self.bulk.max_messages:
            self._send(path, batch)
        try:
            verdict, reason = await waiting.outcome
        except asyncio.CancelledError:
            if waiting in batch.waiting and self._batches.get(path) is batch:
                batch.waiting.remove(waiting)  # not sent yet: the closing subscription keeps it back
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Not this handler but its batch was cancelled (`close`): the broker keeps the event.
            raise Redeliver(f"subscription to {self.spec.pubsub_name}/{self.spec.topic} closed") from None
        await settle(self._broker, self.spec, message, verdict, reason)

    async def close(self) -> None:
        """After the broker subscription closed: no batch goes out any more (its events stay unacknowledged)."""
        self._closed = True
        for batch in self._batches.values():
            if batch.timer is not None:
                batch.timer.cancel()
            for waiting in batch.waiting:
                waiting.outcome.cancel()  # its handler ends, the event unacknowledged
        self._batches.clear()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    @property
    def filling(self) -> dict[str, int]:
        """Events waiting in each route's batch, not yet sent."""
        return {path: len(batch.waiting) for path, batch in self._batches.items()}

    def _send(self, path: str, batch: _Batch) -> None:
        if self._batches.get(path) is not batch:
            return  # sent already (full before its deadline)
        del self._batches[path]
        if batch.timer is not None:
            batch.timer.cancel()
        if not batch.waiting:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(path, batch.waiting))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, path: str, waiting: list[_Waiting]) -> None:
        entries = [w.entry for w in waiting]
        outcomes: dict[str, tuple[Verdict, str]]
        try:
            verdicts = await self._channel.deliver_bulk(self.spec, entries, path)
        except asyncio.CancelledError:
            for w in waiting:
                w.outcome.cancel()
            raise
        except AppUnimplementedError as err:
            outcomes = {e.entry_id: (Verdict.DROP, str(err)) for e in entries}
        except AppChannelError as err:
            outcomes = {e.entry_id: (Verdict.RETRY, str(err)) for e in entries}
        except Exception as err:  # a bug must not leave the broker's handlers waiting forever
            log.exception("delivering a batch of %s/%s failed", self.spec.pubsub_name, self.spec.topic)
            outcomes = {e.entry_id: (Verdict.RETRY, f"delivering the batch failed: {err}") for e in entries}
        else:
            outcomes = {
                e.entry_id: (verdicts[e.entry_id], f"the app answered {verdicts[e.entry_id].value} in a batch")
                if e.entry_id in verdicts
                else (Verdict.RETRY, f"the app's answer to the batch has no status for entry {e.entry_id}")
                for e in entries
            }
        for w in waiting:
            if not w.outcome.done():
                w.outcome.set_result(outcomes[w.entry.entry_id])
