"""Subscriptions over a gRPC stream: the app receives events on the stream and answers each.

The broker hands events over lane by lane (`components.pubsub.lanes`): one event of a
lane is outstanding at a time, so events without a partition key go one at a time in
publish order, and events of different partition keys may be outstanding together (at
most `maxConcurrentHandlers`). An event stays outstanding until the app answers with its
id; the answer is settled as for any subscription (`delivery.settle`). When the stream
ends, the subscription ends with it.

That is the stream's back-pressure: an app that does not answer holds an event per
lane, and the broker keeps every later message unacknowledged (its own bounds, such as the
in-memory broker's `maxPendingBytes`, then refuse publishers). The bytes in flight to
streams are on `/metrics` as `ottava_subscriber_buffered_bytes{api="pubsub"}`.
"""

import asyncio
import contextlib
from typing import Any

from ottava_sidecar import metrics
from ottava_sidecar.components.pubsub.base import Message, PubSub, Subscription
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.delivery import settle
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict


class StreamClosedError(Exception):
    pass


class StreamSubscription:
    def __init__(self, spec: SubscriptionSpec, broker: PubSub[Any]) -> None:
        self.spec = spec
        self._broker = broker
        self._outbox: asyncio.Queue[cloudevents.TopicEvent | None] = asyncio.Queue()  # None: closed
        self._answers: dict[str, asyncio.Future[Verdict]] = {}
        self._handle: Subscription | None = None

    async def start(self) -> None:
        self._handle = await self._broker.subscribe(self.spec.topic, self._deliver, metadata=self.spec.metadata)

    async def _deliver(self, message: Message) -> None:
        event = cloudevents.unwrap(message, self.spec.pubsub_name)
        # The app answers by event id: an event whose id is outstanding already (a publisher
        # may set the CloudEvent id itself) waits until that one is answered.
        earlier = self._answers.get(event.id)
        while earlier is not None and not earlier.done():
            await asyncio.wait([earlier])
            earlier = self._answers.get(event.id)
        answer: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._answers[event.id] = answer
        self._outbox.put_nowait(event)
        in_flight = metrics.SUBSCRIBER_BUFFERED_BYTES.labels("pubsub")
        in_flight.inc(len(message.data))
        try:
            verdict = await answer
        finally:
            in_flight.dec(len(message.data))
            if self._answers.get(event.id) is answer:
                del self._answers[event.id]
        await settle(self._broker, self.spec, message, verdict, f"the app answered {verdict.value} on its stream")

    async def next_event(self) -> cloudevents.TopicEvent:
        """The next event to send; `StreamClosedError` once the subscription is closed."""
        event = await self._outbox.get()
        if event is None:
            self._outbox.put_nowait(None)  # every later call sees the end too
            raise StreamClosedError(f"subscription to {self.spec.pubsub_name}/{self.spec.topic} is closed")
        return event

    def answer(self, event_id: str, verdict: Verdict) -> bool:
        """Settle the outstanding event `event_id`; False when no such event is outstanding."""
        waiting = self._answers.get(event_id)
        if waiting is None or waiting.done():
            return False
        waiting.set_result(verdict)
        return True

    async def close(self) -> None:
        if self._handle is not None:
            await self._handle.close()
            self._handle = None
        for waiting in self._answers.values():
            with contextlib.suppress(asyncio.InvalidStateError):
                waiting.cancel()
        self._outbox.put_nowait(None)
