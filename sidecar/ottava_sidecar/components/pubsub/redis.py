"""`pubsub.redis`: Redis Streams with consumer groups.

A topic is a stream; a subscription reads it through the consumer group named by
`consumerID` (default: the app id), so the replicas of an app share the work and each
app gets every message. An entry is acknowledged (XACK) once the handler returns. Entries
that a consumer took and never acknowledged — its sidecar crashed — stay pending in the
group; every `redeliverInterval` each subscriber takes over (XAUTOCLAIM) those idle longer
than `processingTimeout` and delivers them again, before reading new ones. Entries go
through lanes (`lanes`): in order per partition key (and per stream without one),
different keys at the same time; each is acknowledged on its own once the app accepted it.
"""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any, cast

from pydantic import Field

from ottava_sidecar.components.backends.options import Seconds
from ottava_sidecar.components.backends.redis import RedisConnection, RedisMetadata
from ottava_sidecar.components.pubsub import lanes
from ottava_sidecar.components.pubsub.base import Handler, Message, PubSub, Subscription
from ottava_sidecar.components.pubsub.handling import ConsumerMetadata, consumer_id, handle_until_done
from ottava_sidecar.components.registration import register

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]
_READ_COUNT = 10  # entries one read asks for, at least


class RedisPubSubMetadata(RedisMetadata, ConsumerMetadata, lanes.LanesMetadata):
    processing_timeout: Seconds = Field(
        default=60.0,
        gt=0,
        alias="processingTimeout",
        description="A pending entry idle this long is taken over from its consumer (it crashed) and redelivered.",
    )
    redeliver_interval: Seconds = Field(
        default=15.0,
        gt=0,
        alias="redeliverInterval",
        description="How often a subscriber looks for pending entries to take over.",
    )
    max_len_approx: int = Field(
        default=0,
        ge=0,
        alias="maxLenApprox",
        description="Trim each stream to about this many entries on publish (0: never trim).",
    )
    poll_timeout: Seconds = Field(
        default=1.0,
        gt=0,
        alias="pollTimeout",
        description="How long one read waits for new entries (keep it below readTimeout).",
    )


class _StreamSubscription(Subscription):
    def __init__(
        self,
        broker: "RedisPubSub",
        topic: str,
        group: str,
        handler: Handler,
        concurrency: int,
        keyless_in_order: bool = True,
    ) -> None:
        self.topic = topic
        self.group = group
        self.consumer = f"{broker.app_id}-{uuid.uuid4().hex[:12]}"
        self._broker = broker
        self._handler = handler
        self._lanes: lanes.Lanes[tuple[bytes, Message]] = lanes.Lanes(
            self._deliver, concurrency, name=f"{broker.name}/{topic}", keyless_in_order=keyless_in_order
        )
        # Entries read ahead and not yet acknowledged, at most (as many as deliver at once, or one read's worth).
        self._read_ahead = max(concurrency, _READ_COUNT)
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        from redis import exceptions

        with self._broker.redis.errors(f"creating consumer group {self.group} of topic {self.topic}"):
            try:
                await self._broker.redis.client.xgroup_create(self.topic, self.group, id="$", mkstream=True)
            except exceptions.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        self._task = asyncio.create_task(self._consume(), name=f"{self._broker.name}/{self.topic}")

    async def _consume(self) -> None:
        try:
            await self._read_until_closed()
            # Entries already read are delivered even while closing (a hot reload closes
            # this subscription while its last blocking read is in flight): left pending,
            # they would wait a whole processingTimeout for another consumer to reclaim them.
            await self._lanes.drained()
        finally:
            await self._lanes.close()

    async def _read_until_closed(self) -> None:
        settings = self._broker.settings
        last_claim = -float("inf")
        delays = settings.connection_backoff().delays()
        while not self._closing:
            try:
                await self._lanes.until_below(self._read_ahead)
                entries: list[tuple[Entry, int]] = []
                if time.monotonic() - last_claim >= settings.redeliver_interval:
                    last_claim = time.monotonic()
                    entries = await self._reclaim()
                if not entries:
                    entries = [(entry, 1) for entry in await self._read(self._read_ahead - self._lanes.held)]
                for entry, attempt in entries:
                    message = self._message(entry, attempt)
                    self._lanes.put((entry[0], message), lanes.partition_key(message.metadata))
                delays = settings.connection_backoff().delays()  # a good read: start over
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = next(delays)
                log.warning("reading topic %s of pubsub %s failed, retrying in %.1fs: %s",
                            self.topic, self._broker.name, delay, err)  # fmt: skip
                await asyncio.sleep(delay)

    async def _read(self, count: int) -> list[Entry]:
        client = self._broker.redis.client
        block = int(self._broker.settings.poll_timeout * 1000)
        with self._broker.redis.errors(f"reading topic {self.topic}"):
            reply = await client.xreadgroup(self.group, self.consumer, {self.topic: ">"}, count=count, block=block)
        streams = cast(list[tuple[bytes, list[Entry]]], reply or [])
        return [(entry_id, fields) for _, stream in streams for entry_id, fields in stream if fields]

    async def _reclaim(self) -> list[tuple[Entry, int]]:
        client = self._broker.redis.client
        idle = int(self._broker.settings.processing_timeout * 1000)
        with self._broker.redis.errors(f"reclaiming pending entries of topic {self.topic}"):
            reply = await client.xautoclaim(self.topic, self.group, self.consumer, idle, "0-0", count=_READ_COUNT)
            claimed: list[tuple[Entry, int]] = []
            for entry_id, fields in reply[1]:
                if not fields:
                    continue
                pending = await client.xpending_range(self.topic, self.group, entry_id, entry_id, 1)
                attempt = int(pending[0]["times_delivered"]) if pending else 2
                claimed.append(((entry_id, fields), attempt))
        return claimed

    def _message(self, entry: Entry, attempt: int) -> Message:
        entry_id, fields = entry
        return Message(
            self.topic,
            fields.get(b"data", b""),
            entry_id.decode(),
            fields.get(b"contentType", b"").decode(),
            json.loads(fields.get(b"metadata", b"{}")),
            attempt,
        )

    async def _deliver(self, item: tuple[bytes, Message]) -> None:
        entry_id, message = item
        redis = self._broker.redis

        async def still_working() -> None:  # resets the idle time, so no one takes it over meanwhile
            await redis.client.xclaim(self.topic, self.group, self.consumer, 0, [entry_id], justid=True)

        await handle_until_done(
            self._handler,
            message,
            self._broker.settings.redelivery_backoff(),
            where=self._broker.name,
            still_working=still_working,
        )
        try:
            with redis.errors(f"acknowledging {message.id} of topic {self.topic}"):
                await redis.client.xack(self.topic, self.group, entry_id)
        except Exception as err:  # left pending: reclaimed and delivered again, at-least-once
            log.warning("%s", err)

    async def close(self) -> None:
        self._broker.subscriptions.discard(self)
        if self._task is not None:
            # Let a blocking read end by itself: redis-py does not survive a cancellation
            # in the middle of a blocking XREADGROUP (the cancellation never completes).
            self._closing = True
            await asyncio.wait([self._task], timeout=self._broker.settings.poll_timeout + 1)
            if not self._task.done():  # stuck in the app's handler: the entry stays pending
                self._task.cancel()
                await asyncio.wait([self._task], timeout=1)


@register("pubsub.redis", RedisPubSubMetadata)
class RedisPubSub(PubSub[RedisPubSubMetadata]):
    """Redis Streams: at-least-once per consumer group, ordered per key, crashed consumers' entries reclaimed."""

    def __init__(self, name: str, settings: RedisPubSubMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.redis = RedisConnection(settings, f"pubsub {name}")
        self.subscriptions: set[_StreamSubscription] = set()

    async def init(self) -> None:
        await self.redis.open()

    async def close(self) -> None:
        for subscription in list(self.subscriptions):
            await subscription.close()
        await self.redis.close()

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        fields: dict[Any, Any] = {
            "data": data,
            "contentType": content_type,
            "metadata": json.dumps(dict(metadata or {})),
        }
        maxlen = self.settings.max_len_approx or None
        with self.redis.errors(f"publishing to topic {topic}"):
            entry_id = await self.redis.client.xadd(topic, fields, maxlen=maxlen, approximate=True)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> Subscription:
        group = consumer_id(self.settings, self.app_id, metadata)
        concurrency = self.settings.concurrent_handlers(metadata)
        subscription = _StreamSubscription(
            self, topic, group, handler, concurrency, self.settings.keyless_in_order(metadata)
        )
        await subscription.start()
        self.subscriptions.add(subscription)
        return subscription
