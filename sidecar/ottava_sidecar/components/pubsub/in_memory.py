"""`pubsub.in-memory`: a process-local broker.

Each subscription has its own bounded queue and one consumer task, so messages of a
topic reach each subscriber in publish order. A handler that raises gets the message
again after an exponential backoff (at-least-once) and, meanwhile, later messages wait
behind it (ordering). A message counts against its subscription's bound from publish
until acknowledged, so a stuck subscriber makes publishing fail with `BrokerFullError`
instead of making the sidecar grow.
"""

import asyncio
import contextlib
import uuid
from collections import defaultdict, deque
from collections.abc import Mapping

from pydantic import Field

from ottava_sidecar import backoff
from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.pubsub import handling
from ottava_sidecar.components.pubsub.base import BrokerFullError, Handler, Message, PubSub, Subscription
from ottava_sidecar.components.registration import register


class InMemoryPubSubMetadata(ComponentMetadata):
    redelivery_backoff_seconds: float = Field(
        default=0.2,
        gt=0,
        alias="redeliveryBackoffSeconds",
        description="Wait before a failed message is delivered again; doubles on each failure.",
    )
    max_redelivery_backoff_seconds: float = Field(
        default=5.0,
        gt=0,
        alias="maxRedeliveryBackoffSeconds",
        description="Longest wait between two deliveries of a failing message.",
    )
    max_pending_messages: int = Field(
        default=10_000,
        ge=1,
        alias="maxPendingMessages",
        description="Messages a subscription may hold unacknowledged; publishing beyond it is refused.",
    )

    def redelivery_backoff(self) -> backoff.Backoff:
        return backoff.Backoff(self.redelivery_backoff_seconds, self.max_redelivery_backoff_seconds)


class _QueueSubscription(Subscription):
    def __init__(self, broker: "InMemoryPubSub", topic: str, handler: Handler) -> None:
        self.topic = topic
        self._broker = broker
        self._handler = handler
        self._queue: deque[Message] = deque()
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._consume(), name=f"{broker.name}/{topic}")

    @property
    def pending(self) -> int:
        """Messages published to this subscription and not yet acknowledged."""
        return len(self._queue) + self._in_flight

    def put(self, message: Message) -> None:
        self._queue.append(message)
        self._wakeup.set()

    async def _consume(self) -> None:
        settings = self._broker.settings
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            message = self._queue.popleft()
            self._in_flight = 1
            try:
                await handling.handle_until_done(
                    self._handler, message, settings.redelivery_backoff(), where=self._broker.name
                )
            finally:
                self._in_flight = 0

    async def close(self) -> None:
        self._broker.unsubscribe(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@register("pubsub.in-memory", InMemoryPubSubMetadata)
class InMemoryPubSub(PubSub[InMemoryPubSubMetadata]):
    """Process-local broker: ordered per topic, at-least-once per subscription, bounded."""

    def __init__(self, name: str, settings: InMemoryPubSubMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._subscriptions: dict[str, list[_QueueSubscription]] = defaultdict(list)

    async def close(self) -> None:
        for subscriptions in list(self._subscriptions.values()):
            for subscription in list(subscriptions):
                await subscription.close()

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        subscriptions = self._subscriptions.get(topic, ())
        limit = self.settings.max_pending_messages
        # All or nothing: a message refused by one subscriber is not delivered to the others.
        for subscription in subscriptions:
            if subscription.pending >= limit:
                raise BrokerFullError(
                    f"topic {topic} of pubsub {self.name} has {subscription.pending} undelivered messages "
                    f"for a subscriber (maxPendingMessages {limit}); publish again later"
                )
        message_id = str(uuid.uuid4())
        for subscription in subscriptions:
            subscription.put(Message(topic, data, message_id, content_type, dict(metadata or {})))
        return message_id

    async def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> Subscription:
        subscription = _QueueSubscription(self, topic, handler)
        self._subscriptions[topic].append(subscription)
        return subscription

    def unsubscribe(self, subscription: _QueueSubscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions[subscription.topic].remove(subscription)
