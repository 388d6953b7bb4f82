"""`pubsub.in-memory`: a process-local broker.

Each subscription delivers through its own lanes (`lanes`): messages of one partition
key, and messages without a key, in publish order; different keys at the same time, at
most `maxConcurrentHandlers` at once. A handler that raises gets the message again after
an exponential backoff (at-least-once) and, meanwhile, later messages of its lane wait
behind it (ordering). A message counts against its subscription's bounds, in messages
(`maxPendingMessages`) and in bytes (`maxPendingBytes`), from publish until acknowledged,
so a stuck subscriber makes publishing fail with `BrokerFullError` instead of making the
sidecar grow. A subscription that holds nothing takes any one message, however large.
"""

import contextlib
import uuid
from collections import defaultdict
from collections.abc import Mapping

from pydantic import Field

from ottava_sidecar import backoff, limits
from ottava_sidecar.components.pubsub import handling, lanes
from ottava_sidecar.components.pubsub.base import BrokerFullError, Handler, Message, PubSub, Subscription
from ottava_sidecar.components.registration import register


class InMemoryPubSubMetadata(lanes.LanesMetadata):
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
    max_pending_bytes: int = Field(
        default=1 * limits.MIB,
        ge=1,
        alias="maxPendingBytes",
        description="Bytes of message data a subscription may hold unacknowledged; publishing beyond it is "
        "refused (a subscription holding nothing takes any one message).",
    )

    def redelivery_backoff(self) -> backoff.Backoff:
        return backoff.Backoff(self.redelivery_backoff_seconds, self.max_redelivery_backoff_seconds)


class _QueueSubscription(Subscription):
    def __init__(
        self, broker: "InMemoryPubSub", topic: str, handler: Handler, concurrency: int, keyless_in_order: bool = True
    ) -> None:
        self.topic = topic
        self._broker = broker
        self._handler = handler
        self._backoff = broker.settings.redelivery_backoff()
        self._lanes = lanes.Lanes(
            self._deliver, concurrency, name=f"{broker.name}/{topic}", keyless_in_order=keyless_in_order
        )
        self.pending_bytes = 0  # bytes of the messages counted by `pending`

    @property
    def pending(self) -> int:
        """Messages published to this subscription and not yet acknowledged."""
        return self._lanes.held

    def put(self, message: Message) -> None:
        self.pending_bytes += len(message.data)
        self._lanes.put(message, lanes.partition_key(message.metadata))

    async def _deliver(self, message: Message) -> None:
        try:
            await handling.handle_until_done(self._handler, message, self._backoff, where=self._broker.name)
        finally:
            self.pending_bytes -= len(message.data)

    async def close(self) -> None:
        self._broker.unsubscribe(self)
        await self._lanes.close()
        self.pending_bytes = 0


@register("pubsub.in-memory", InMemoryPubSubMetadata)
class InMemoryPubSub(PubSub[InMemoryPubSubMetadata]):
    """Process-local broker: ordered per partition key (per topic without one), at-least-once, bounded."""

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
        # All or nothing: a message refused by one subscriber is not delivered to the others.
        for subscription in subscriptions:
            self._check_room(topic, subscription, len(data))
        message_id = str(uuid.uuid4())
        for subscription in subscriptions:
            subscription.put(Message(topic, data, message_id, content_type, dict(metadata or {})))
        return message_id

    def _check_room(self, topic: str, subscription: _QueueSubscription, size: int) -> None:
        limit, byte_limit = self.settings.max_pending_messages, self.settings.max_pending_bytes
        if subscription.pending >= limit:
            raise BrokerFullError(
                f"topic {topic} of pubsub {self.name} has {subscription.pending} undelivered messages "
                f"for a subscriber (maxPendingMessages {limit}); publish again later"
            )
        held = subscription.pending_bytes
        if subscription.pending and held + size > byte_limit:
            raise BrokerFullError(
                f"topic {topic} of pubsub {self.name} holds {held} bytes of undelivered messages for a "
                f"subscriber, and {size} more would pass maxPendingBytes {byte_limit}; publish again later"
            )

    async def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> Subscription:
        concurrency = self.settings.concurrent_handlers(metadata)
        subscription = _QueueSubscription(self, topic, handler, concurrency, self.settings.keyless_in_order(metadata))
        self._subscriptions[topic].append(subscription)
        return subscription

    def unsubscribe(self, subscription: _QueueSubscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions[subscription.topic].remove(subscription)
