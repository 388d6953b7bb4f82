"""`pubsub.in-memory`: a process-local broker.

Each subscription has its own queue and one consumer task, so messages of a topic reach
a subscriber in publish order; a handler that raises gets the message again after a
backoff (at-least-once).
"""

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict

from pydantic import Field

from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.catalogue import register
from ottava_sidecar.components.pubsub.base import Handler, Message, PubSub, Subscription

log = logging.getLogger(__name__)


class InMemoryPubSubMetadata(ComponentMetadata):
    redelivery_backoff_seconds: float = Field(
        default=0.5,
        gt=0,
        alias="redeliveryBackoffSeconds",
        description="Wait before a failed message is delivered again.",
    )


class _QueueSubscription(Subscription):
    def __init__(self, broker: "InMemoryPubSub", topic: str, handler: Handler) -> None:
        self.topic = topic
        self._broker = broker
        self._handler = handler
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self._task = asyncio.create_task(self._consume(), name=f"{broker.name}/{topic}")

    async def _consume(self) -> None:
        backoff = self._broker.settings.redelivery_backoff_seconds
        while True:
            message = await self.queue.get()
            while True:
                try:
                    await self._handler(message)
                    break
                except Exception:
                    log.warning(
                        "delivery failed; redelivering",
                        extra={"topic": self.topic, "id": message.id},
                    )
                    await asyncio.sleep(backoff)

    async def close(self) -> None:
        self._broker.unsubscribe(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@register("pubsub.in-memory", InMemoryPubSubMetadata)
class InMemoryPubSub(PubSub[InMemoryPubSubMetadata]):
    """Process-local broker: ordered per topic, at-least-once per subscription."""

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
        metadata: dict[str, str] | None = None,
    ) -> str:
        message_id = str(uuid.uuid4())
        for subscription in self._subscriptions.get(topic, ()):
            subscription.queue.put_nowait(Message(topic, data, message_id, content_type, dict(metadata or {})))
        return message_id

    async def subscribe(self, topic: str, handler: Handler) -> Subscription:
        subscription = _QueueSubscription(self, topic, handler)
        self._subscriptions[topic].append(subscription)
        return subscription

    def unsubscribe(self, subscription: _QueueSubscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions[subscription.topic].remove(subscription)
