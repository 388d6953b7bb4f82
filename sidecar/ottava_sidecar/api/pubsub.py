"""What the pub/sub calls mean, for every wire API.

Publishing wraps the payload as a CloudEvent (`messaging.cloudevents.wrap`) and returns
the broker's message id, which each surface hands back as `message-id` response
metadata. A full broker is RESOURCE_EXHAUSTED (HTTP 429): publish again later.

On a stream subscription (`open_stream`, then `stream_events`), events flow out and the
app's verdicts flow in, each naming the event id. It ends when the app closes its side
or the call is cancelled.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import grpc

from ottava_sidecar.api import errors
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.pubsub.base import BrokerFullError, PubSub
from ottava_sidecar.components.registry import LookupFailure
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.routing import RuleError
from ottava_sidecar.messaging.runtime import AlreadySubscribedError, Messaging
from ottava_sidecar.messaging.streams import StreamClosedError, StreamSubscription
from ottava_sidecar.messaging.subscriptions import Kind, SubscriptionSpec, Verdict
from ottava_sidecar.metrics import ComponentCalls

_CALLS = ComponentCalls("pubsub")  # latency of each component's operations
MESSAGE_ID = "message-id"  # response metadata / HTTP header carrying the broker's message id


def resource_exhausted(message: str) -> errors.ApiError:
    return errors.ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=429, error_code="ERR_PUBSUB_BACKPRESSURE"
    )


@dataclass(slots=True)
class BulkEntry:
    entry_id: str
    data: bytes
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


# Printable ASCII but for what would make `<entry id>=<message id>` ambiguous or unreadable.
_ENTRY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%=")


@dataclass(slots=True)
class BulkResult:
    message_ids: dict[str, str] = field(default_factory=dict)  # entry id → broker message id
    failed: dict[str, str] = field(default_factory=dict)  # entry id → error

    def message_id_metadata(self) -> list[tuple[str, str]]:
        """One `message-id: <entry id>=<message id>` per published entry, in entry order.

        Headers and gRPC metadata carry printable ASCII only, so an entry id with other
        characters (or `%`, `=`, spaces) is percent-encoded, as in a URL: `é` → `%C3%A9`.
        """
        return [
            (MESSAGE_ID, f"{quote(entry, safe=_ENTRY_SAFE)}={message}") for entry, message in self.message_ids.items()
        ]


class PubSubApi:
    def __init__(self, messaging: Messaging, app_id: str) -> None:
        self.messaging = messaging
        self._app_id = app_id

    def broker(self, name: str) -> PubSub[Any]:
        if not name:
            raise errors.invalid_argument("pubsub name is empty", "ERR_PUBSUB_EMPTY")
        try:
            return self.messaging.broker(name)
        except LookupFailure as failure:
            raise errors.from_lookup(failure) from None

    @staticmethod
    def _topic(broker: PubSub[Any], topic: str) -> None:
        if not topic:
            raise errors.invalid_argument(f"topic is empty in pubsub {broker.name}", "ERR_TOPIC_NAME_EMPTY")

    async def publish(
        self, pubsub_name: str, topic: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> str:
        """The broker's message id."""
        broker = self.broker(pubsub_name)
        self._topic(broker, topic)
        return await self._publish(broker, topic, data, content_type, metadata)

    async def _publish(
        self, broker: PubSub[Any], topic: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> str:
        envelope = cloudevents.wrap(
            data, content_type, pubsub_name=broker.name, topic=topic, source=self._app_id, metadata=metadata
        )
        started = time.perf_counter()
        ok = False
        try:
            message_id = await broker.publish(
                topic, envelope.data, content_type=envelope.content_type, metadata=metadata
            )
            ok = True
            return message_id
        except BrokerFullError as err:
            raise resource_exhausted(str(err)) from None
        except ComponentError as err:
            raise errors.internal(
                f"error when publishing to topic {topic} in pubsub {broker.name}: {err}", "ERR_PUBSUB_PUBLISH_MESSAGE"
            ) from None
        finally:
            _CALLS.observe(broker.name, "publish", started, ok)

    async def bulk_publish(
        self, pubsub_name: str, topic: str, entries: Sequence[BulkEntry], metadata: Mapping[str, str]
    ) -> BulkResult:
        """Publishes each entry in order; one entry's failure does not stop the others."""
        broker = self.broker(pubsub_name)
        self._topic(broker, topic)
        seen: set[str] = set()
        for entry in entries:
            if not entry.entry_id:
                raise errors.invalid_argument(f"an entry id is empty (pubsub {broker.name})", "ERR_PUBSUB_EVENTS_SER")
            if entry.entry_id in seen:
                raise errors.invalid_argument(
                    f"entry id {entry.entry_id!r} is not unique (pubsub {broker.name})", "ERR_PUBSUB_EVENTS_SER"
                )
            seen.add(entry.entry_id)
        result = BulkResult()
        exhausted = 0
        for entry in entries:
            try:
                result.message_ids[entry.entry_id] = await self._publish(
                    broker, topic, entry.data, entry.content_type, {**metadata, **entry.metadata}
                )
            except errors.ApiError as err:
                result.failed[entry.entry_id] = err.message
                exhausted += err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        if entries and exhausted == len(entries):
            raise resource_exhausted(next(iter(result.failed.values())))
        return result

    async def open_stream(
        self, pubsub_name: str, topic: str, metadata: Mapping[str, str], dead_letter_topic: str
    ) -> StreamSubscription:
        broker = self.broker(pubsub_name)
        self._topic(broker, topic)
        try:
            spec = SubscriptionSpec.create(
                broker.name,
                topic,
                kind=Kind.STREAMING,
                metadata=metadata,
                dead_letter_topic=dead_letter_topic,
            )
            return await self.messaging.open_stream(spec)
        except AlreadySubscribedError as err:
            raise errors.ApiError(
                grpc.StatusCode.ALREADY_EXISTS, str(err), http_status=409, error_code="ERR_PUBSUB_SUBSCRIBE"
            ) from None
        except (RuleError, LookupFailure) as err:
            raise errors.invalid_argument(str(err), "ERR_PUBSUB_SUBSCRIBE") from None

    async def close_stream(self, stream: StreamSubscription) -> None:
        await self.messaging.close_stream(stream)

    def subscriptions(self) -> list[SubscriptionSpec]:
        return self.messaging.subscriptions()


async def stream_events(
    stream: StreamSubscription, verdicts: AsyncIterator[tuple[str, Verdict]]
) -> AsyncIterator[cloudevents.TopicEvent]:
    """Yield each event of `stream`, while settling the app's `(event id, verdict)` pairs."""

    async def read_verdicts() -> None:
        async for event_id, verdict in verdicts:
            stream.answer(event_id, verdict)

    reader = asyncio.create_task(read_verdicts())
    next_event: asyncio.Task[cloudevents.TopicEvent] = asyncio.create_task(stream.next_event())
    try:
        while True:
            await asyncio.wait({reader, next_event}, return_when=asyncio.FIRST_COMPLETED)
            if next_event.done():
                try:
                    event = next_event.result()
                except StreamClosedError:
                    return  # the sidecar is stopping
                yield event
                next_event = asyncio.create_task(stream.next_event())
                continue
            reader.result()  # raises what ended the app's side abnormally
            return
    finally:
        for task in (reader, next_event):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(reader, next_event, return_exceptions=True)
