"""`pubsub.nats`: NATS JetStream with durable pull consumers.

Client: nats-py, the NATS maintainers' own asyncio client (JetStream included). Each
topic is a subject with its own stream (file storage by default, so an acknowledged
publish survives a server crash). A subscription is a durable consumer named by
`consumerID` (default: the app id), so a restarted sidecar resumes where the last one
stopped and a message it took and never acknowledged is delivered again once `ackWait`
has passed. Streams keep messages while some consumer still has to acknowledge them
(interest retention); with `maxMsgs` set, a stream that holds that many refuses new
ones (`BrokerFullError`, i.e. back-pressure) instead of discarding old ones. Fetched
messages go through lanes (`lanes`): in order per partition key (and per topic without
one), different keys at the same time; each is acknowledged once the app accepted it.
"""

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field

from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata, Seconds, TlsMetadata
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.pubsub import lanes
from ottava_sidecar.components.pubsub.base import BrokerFullError, Handler, Message, PubSub, Subscription
from ottava_sidecar.components.pubsub.handling import ConsumerMetadata, consumer_id, handle_until_done
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

log = logging.getLogger(__name__)

_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_-]")
_FETCH_COUNT = 10  # messages one fetch asks for, at least


class NatsPubSubMetadata(RetryMetadata, TlsMetadata, ConsumerMetadata, lanes.LanesMetadata):
    nats_url: str = Field(default="nats://localhost:4222", alias="natsURL", description="URL of the server.")
    user: str = Field(default="", alias="user", description="User name.")
    password: str = Field(default="", alias="password", description="Password; use a secretKeyRef.")
    token: str = Field(default="", alias="token", description="Authentication token, instead of user and password.")
    stream_prefix: str = Field(
        default="ottava-", alias="streamPrefix", description="Prefix of the stream created for each topic."
    )
    storage: Literal["file", "memory"] = Field(
        default="file", alias="storage", description="Where streams keep messages; memory loses them on a crash."
    )
    ack_wait: Seconds = Field(
        default=30.0,
        gt=0,
        alias="ackWait",
        description="A message taken and not acknowledged within this time (its sidecar crashed) is redelivered.",
    )
    max_msgs: int = Field(
        default=-1,
        ge=-1,
        alias="maxMsgs",
        description="Messages a stream may hold unacknowledged; publishing beyond it is refused (-1: no bound).",
    )
    publish_timeout: Seconds = Field(
        default=5.0, gt=0, alias="publishTimeout", description="How long a publish waits for the server's ack."
    )
    poll_timeout: Seconds = Field(
        default=1.0, gt=0, alias="pollTimeout", description="How long one fetch waits for new messages."
    )


class _DurableSubscription(Subscription):
    def __init__(
        self,
        broker: "NatsPubSub",
        topic: str,
        durable: str,
        handler: Handler,
        concurrency: int,
        keyless_in_order: bool = True,
    ) -> None:
        self.topic = topic
        self.durable = durable
        self._broker = broker
        self._handler = handler
        self._lanes: lanes.Lanes[tuple[Msg, Message]] = lanes.Lanes(
            self._deliver, concurrency, name=f"{broker.name}/{topic}", keyless_in_order=keyless_in_order
        )
        # Messages fetched and not yet acknowledged, at most (as many as deliver at once, or one fetch's worth).
        self._read_ahead = max(concurrency, _FETCH_COUNT)
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        settings = self._broker.settings
        stream = await self._broker.stream(self.topic)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait,
            deliver_policy=DeliverPolicy.NEW,
        )
        with self._broker.errors(f"subscribing to topic {self.topic}"):
            subscription = await self._broker.js.pull_subscribe(
                self.topic, durable=self.durable, stream=stream, config=config
            )
        self._task = asyncio.create_task(self._consume(subscription), name=f"{self._broker.name}/{self.topic}")

    async def _consume(self, subscription: "JetStreamContext.PullSubscription") -> None:
        try:
            await self._fetch_until_closed(subscription)
        finally:  # what is still in hand stays unacknowledged: redelivered after ackWait
            await self._lanes.close()

    async def _fetch_until_closed(self, subscription: "JetStreamContext.PullSubscription") -> None:
        from nats import errors

        settings = self._broker.settings
        delays = settings.connection_backoff().delays()
        while not self._closing:
            try:
                await self._lanes.until_below(self._read_ahead)
                messages = await subscription.fetch(self._read_ahead - self._lanes.held, timeout=settings.poll_timeout)
            except errors.TimeoutError:
                continue
            except Exception as err:
                delay = next(delays)
                log.warning("fetching topic %s of pubsub %s failed, retrying in %.1fs: %s",
                            self.topic, self._broker.name, delay, err)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            delays = settings.connection_backoff().delays()  # a good fetch: start over
            for msg in messages:
                headers = msg.headers or {}
                message = Message(
                    self.topic,
                    msg.data,
                    str(msg.metadata.sequence.stream),
                    headers.get("Content-Type", ""),
                    json.loads(headers.get("Ottava-Metadata", "{}")),
                    msg.metadata.num_delivered,
                )
                self._lanes.put((msg, message), lanes.partition_key(message.metadata))

    async def _deliver(self, item: "tuple[Msg, Message]") -> None:
        msg, message = item
        await handle_until_done(
            self._handler,
            message,
            self._broker.settings.redelivery_backoff(),
            where=self._broker.name,
            still_working=msg.in_progress,
        )
        try:
            await msg.ack()
        except Exception as err:  # delivered again after ackWait: at-least-once
            log.warning("acknowledging %s of topic %s failed: %s", message.id, self.topic, err)

    async def close(self) -> None:
        self._broker.subscriptions.discard(self)
        if self._task is not None:
            # nats-py's fetch may swallow a cancellation, so the loop also checks the flag.
            self._closing = True
            self._task.cancel()
            await asyncio.wait([self._task], timeout=self._broker.settings.poll_timeout + 1)


@register("pubsub.nats", NatsPubSubMetadata)
class NatsPubSub(PubSub[NatsPubSubMetadata]):
    """NATS JetStream: durable consumers, at-least-once, ordered per key, bounded with maxMsgs."""

    def __init__(self, name: str, settings: NatsPubSubMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.where = f"nats at {urlsplit(settings.nats_url).netloc or settings.nats_url}"
        self.subscriptions: set[_DurableSubscription] = set()
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: dict[str, str] = {}

    @property
    def js(self) -> "JetStreamContext":
        if self._js is None:
            raise ComponentError(f"pubsub {self.name}: not connected to {self.where}")
        return self._js

    async def init(self) -> None:
        import nats.aio.client

        s = self.settings
        url = urlsplit(s.nats_url)
        host, port = url.hostname or "localhost", url.port or 4222

        async def error(err: Exception) -> None:
            log.info("%s: %s", self.where, err)

        async def attempt() -> "Client":
            # A plain TCP connection first: nats-py retries an unreachable server for a long
            # time and then reports little; this names the cause ("connection refused").
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
            client = nats.aio.client.Client()
            try:
                await client.connect(
                    s.nats_url,
                    user=s.user or None,
                    password=s.password or None,
                    token=s.token or None,
                    tls=s.ssl_context(),
                    connect_timeout=max(1, round(s.dial_timeout)),  # nats-py takes whole seconds
                    allow_reconnect=False,  # at start-up: fail (refused credentials at once) rather than loop
                    reconnect_time_wait=1,
                    error_cb=error,
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.close()
                raise
            return client

        def refused(err: BaseException) -> bool:
            return "authorization violation" in str(err).lower() or "authentication" in str(err).lower()

        self._client = await retry.connect(self.where, attempt, s, refused_credentials=refused)
        # Once up, a server that goes away is waited for, for ever: the options are read on
        # each disconnection (nats-py has no separate setting for the first connection).
        self._client.options["allow_reconnect"] = True
        self._client.options["max_reconnect_attempts"] = -1
        self._js = self._client.jetstream(timeout=s.publish_timeout)

    async def close(self) -> None:
        for subscription in list(self.subscriptions):
            await subscription.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.close(), 5)
            self._client = self._js = None

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        from nats import errors
        from nats.js import errors as js_errors

        if self._client is not None and not self._client.is_connected:
            raise ComponentError(f"{doing} failed on {self.where}: not connected (reconnecting)")
        try:
            yield
        except js_errors.APIError as err:
            if "maximum messages" in str(err.description):
                raise BrokerFullError(f"{doing}: the stream is full (maxMsgs {self.settings.max_msgs}); "
                                      "publish again later") from err  # fmt: skip
            raise ComponentError(f"{doing} failed on {self.where}: {err.description or err}") from err
        except (errors.Error, TimeoutError) as err:
            raise ComponentError(f"{doing} failed on {self.where}: {str(err) or type(err).__name__}") from err

    async def stream(self, topic: str) -> str:
        """The stream of a topic, created on first use."""
        if topic in self._streams:
            return self._streams[topic]
        from nats.js import errors as js_errors
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

        name = self.settings.stream_prefix + _NOT_A_NAME.sub("_", topic)
        config = StreamConfig(
            name=name,
            subjects=[topic],
            retention=RetentionPolicy.INTEREST,
            storage=StorageType.FILE if self.settings.storage == "file" else StorageType.MEMORY,
            discard=DiscardPolicy.NEW,
            max_msgs=self.settings.max_msgs,
        )
        with self.errors(f"creating stream {name} of topic {topic}"):
            try:
                await self.js.add_stream(config)
            except js_errors.BadRequestError as err:
                if "already in use" not in str(err.description):
                    raise
                await self.js.update_stream(config)
        self._streams[topic] = name
        return name

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        await self.stream(topic)
        headers = {"Content-Type": content_type, "Ottava-Metadata": json.dumps(dict(metadata or {}))}
        with self.errors(f"publishing to topic {topic}"):
            ack = await self.js.publish(topic, data, timeout=self.settings.publish_timeout, headers=headers)
        return str(ack.seq)

    async def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> Subscription:
        durable = _NOT_A_NAME.sub("_", consumer_id(self.settings, self.app_id, metadata))
        concurrency = self.settings.concurrent_handlers(metadata)
        subscription = _DurableSubscription(
            self, topic, durable, handler, concurrency, self.settings.keyless_in_order(metadata)
        )
        await subscription.start()
        self.subscriptions.add(subscription)
        return subscription
