"""What the broker-backed pub/subs share: consumer settings and "retry the handler until it succeeds".

A broker's own redelivery (an ack deadline, a pending-entry reclaim, a session resend)
is what survives a crash of the sidecar. While the sidecar lives, a failing handler is
retried here, with a backoff, holding the message unacknowledged at the broker: later
messages of its lane (its partition key, or the topic's messages without a key) wait
behind it, the order is kept, and a crash in the meantime leaves the message with the
broker, which delivers it again.
"""

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping

from pydantic import Field

from ottava_sidecar import backoff
from ottava_sidecar.components.backends.options import Seconds
from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.pubsub.base import Handler, Message

log = logging.getLogger(__name__)

#: Subscription metadata key (and component metadata field) naming the consumer group.
CONSUMER_ID = "consumerID"


class ConsumerMetadata(ComponentMetadata):
    """Who consumes, and how a failing handler is retried (field names as in Dapr's components)."""

    consumer_id: str = Field(
        default="",
        alias="consumerID",
        description="Consumer group / durable name shared by the replicas of an app; default: the app id.",
    )
    redelivery_backoff_seconds: Seconds = Field(
        default=0.2,
        gt=0,
        alias="redeliveryBackoffSeconds",
        description="Wait before a failed message is handed to the app again; doubles on each failure.",
    )
    max_redelivery_backoff_seconds: Seconds = Field(
        default=5.0,
        gt=0,
        alias="maxRedeliveryBackoffSeconds",
        description="Longest wait between two deliveries of a failing message.",
    )

    def redelivery_backoff(self) -> backoff.Backoff:
        return backoff.Backoff(self.redelivery_backoff_seconds, self.max_redelivery_backoff_seconds)


def consumer_id(settings: ConsumerMetadata, app_id: str, metadata: Mapping[str, str] | None) -> str:
    """The subscription's consumer group: its own `consumerID`, the component's, or the app id."""
    return (metadata or {}).get(CONSUMER_ID) or settings.consumer_id or app_id


async def handle_until_done(
    handler: Handler,
    message: Message,
    redelivery: backoff.Backoff,
    *,
    where: str,
    still_working: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Call `handler` until it returns, waiting `redelivery` between calls.

    Each redelivery is a copy of `message` as the broker gave it (a handler that changed
    the metadata does not change what the next attempt sees), with `attempt` counted up.
    `still_working` tells the broker not to redeliver meanwhile.
    """
    delays: Iterator[float] | None = None  # made on the first failure: most messages never need it
    delivery = message
    while True:
        try:
            await handler(delivery)
            return
        except Exception as err:
            if delays is None:
                delays = redelivery.delays()
            delay = next(delays)
            log.info(
                "delivery failed; redelivering in %.2fs",
                delay,
                extra={"pubsub": where, "topic": message.topic, "id": message.id, "error": str(err)},
            )
            await asyncio.sleep(delay)
        delivery = dataclasses.replace(message, attempt=delivery.attempt + 1, metadata=dict(message.metadata))
        if still_working is not None:
            try:
                await still_working()
            except Exception as err:  # the broker may redeliver it: harmless, delivery is at-least-once
                log.info("could not extend the ack deadline of %s: %s", message.id, err)
