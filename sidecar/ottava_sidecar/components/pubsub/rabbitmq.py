"""`pubsub.rabbitmq`: RabbitMQ with durable queues and manual acknowledgements.

Client: aio-pika, the most used asyncio AMQP 0-9-1 client (on aiormq), with robust
connections that reconnect and restore their channels by themselves. Each topic is a
durable fanout exchange; each consumer group (`consumerID`, default the app id) has a
durable queue bound to it, so the replicas of an app share its messages and each app
gets every one. Messages are persistent and published with publisher confirms, so an
acknowledged publish is on the broker. A message is acknowledged once the app accepted
it; the broker hands a message that a vanished consumer held to the next one at once.
With `maxLength` (messages) or `maxLengthBytes` (bytes of message bodies) set, a queue
that holds that much refuses new messages (the publish is nacked: `BrokerFullError`,
i.e. back-pressure). The sidecar itself holds at most `prefetchCount` messages of a
subscription, the broker keeping the rest; they go through lanes (`lanes`): in order per
partition key (and per queue without one), different keys at the same time.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata, TlsMetadata
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.pubsub import lanes
from ottava_sidecar.components.pubsub.base import BrokerFullError, Handler, Message, PubSub, Subscription
from ottava_sidecar.components.pubsub.handling import ConsumerMetadata, consumer_id, handle_until_done
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    import aio_pika.abc

log = logging.getLogger(__name__)


class RabbitMQPubSubMetadata(RetryMetadata, TlsMetadata, ConsumerMetadata, lanes.LanesMetadata):
    host: str = Field(default="localhost:5672", alias="host", description="host:port of the broker.")
    username: str = Field(default="guest", alias="username", description="User name.")
    password: str = Field(default="guest", alias="password", description="Password; use a secretKeyRef.")
    vhost: str = Field(default="/", alias="vhost", description="Virtual host.")
    prefetch_count: int = Field(
        default=10, ge=1, alias="prefetchCount", description="Messages a subscriber holds unacknowledged at once."
    )
    max_length: int = Field(
        default=0,
        ge=0,
        alias="maxLength",
        description="Messages a queue may hold waiting (besides prefetchCount in a subscriber's hands); "
        "publishing beyond it is refused (0: no bound).",
    )
    max_length_bytes: int = Field(
        default=0,
        ge=0,
        alias="maxLengthBytes",
        description="Bytes of message bodies a queue may hold waiting; publishing beyond it is refused (0: no bound).",
    )

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.host.rpartition(":")
        return (host, int(port)) if host else (self.host, 5672)


class _QueueSubscription(Subscription):
    def __init__(
        self,
        broker: "RabbitMQPubSub",
        topic: str,
        group: str,
        handler: Handler,
        concurrency: int,
        keyless_in_order: bool = True,
    ) -> None:
        self.topic = topic
        self.queue_name = f"{group}-{topic}"
        self._broker = broker
        self._handler = handler
        # The broker hands over at most prefetchCount messages unacknowledged: that bounds what the lanes hold.
        self._lanes: lanes.Lanes[tuple[aio_pika.abc.AbstractIncomingMessage, Message]] = lanes.Lanes(
            self._deliver, concurrency, name=f"{broker.name}/{topic}", keyless_in_order=keyless_in_order
        )
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._tag: str | None = None
        self._inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        broker = self._broker
        with broker.errors(f"subscribing to topic {self.topic}"):
            self._channel = await broker.connection.channel()
            await self._channel.set_qos(prefetch_count=broker.settings.prefetch_count)
            queue = await broker.declare(self._channel, self.topic, self.queue_name)
            self._tag = await queue.consume(self._inbox.put)
        self._task = asyncio.create_task(self._consume(), name=f"{broker.name}/{self.topic}")

    async def _consume(self) -> None:
        try:
            await self._take()
        finally:  # what is still in hand goes back to the queue when the channel closes
            await self._lanes.close()

    async def _take(self) -> None:
        while True:
            received = await self._inbox.get()
            headers = {str(k): str(v) for k, v in (received.headers or {}).items()}
            message = Message(
                self.topic,
                received.body,
                received.message_id or "",
                received.content_type or "",
                headers,
                2 if received.redelivered else 1,
            )
            self._lanes.put((received, message), lanes.partition_key(headers))

    async def _deliver(self, item: "tuple[aio_pika.abc.AbstractIncomingMessage, Message]") -> None:
        received, message = item
        await handle_until_done(
            self._handler, message, self._broker.settings.redelivery_backoff(), where=self._broker.name
        )
        try:
            await received.ack()
        except Exception as err:  # the channel broke: the broker redelivers it
            log.warning("acknowledging %s of topic %s failed: %s", message.id, self.topic, err)

    async def close(self) -> None:
        self._broker.subscriptions.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)
        if self._channel is not None:  # unacknowledged messages go back to the queue
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), 2)


@register("pubsub.rabbitmq", RabbitMQPubSubMetadata)
class RabbitMQPubSub(PubSub[RabbitMQPubSubMetadata]):
    """RabbitMQ: a durable queue per consumer group, manual acks, publisher confirms."""

    def __init__(self, name: str, settings: RabbitMQPubSubMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.where = f"rabbitmq at {settings.host}"
        self.subscriptions: set[_QueueSubscription] = set()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}

    @property
    def connection(self) -> "aio_pika.abc.AbstractRobustConnection":
        if self._connection is None:
            raise ComponentError(f"pubsub {self.name}: not connected to {self.where}")
        return self._connection

    async def init(self) -> None:
        import aio_pika
        import aiormq.exceptions

        s = self.settings
        host, port = s.host_port

        async def attempt() -> "aio_pika.abc.AbstractRobustConnection":
            return await aio_pika.connect_robust(
                host=host,
                port=port,
                login=s.username,
                password=s.password,
                virtualhost=s.vhost,
                ssl=s.enable_tls,
                ssl_context=s.ssl_context(),
                timeout=s.dial_timeout,
            )

        def refused(err: BaseException) -> bool:
            return isinstance(
                err, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AMQPConnectionError
            ) and ("ACCESS_REFUSED" in str(err) or "authentication" in str(err).lower())

        self._connection = await retry.connect(self.where, attempt, s, refused_credentials=refused)
        self._channel = await self._connection.channel(publisher_confirms=True)

    async def close(self) -> None:
        for subscription in list(self.subscriptions):
            await subscription.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), 5)
            self._connection = self._channel = None

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        import aio_pika.exceptions
        import aiormq.exceptions

        try:
            yield
        except aio_pika.exceptions.DeliveryError as err:
            raise BrokerFullError(f"{doing}: the broker refused it (a queue holds maxLength "
                                  f"{self.settings.max_length} messages or maxLengthBytes "
                                  f"{self.settings.max_length_bytes} bytes); publish again later") from err  # fmt: skip
        except (aiormq.exceptions.AMQPError, ConnectionError, TimeoutError, RuntimeError) as err:
            raise ComponentError(f"{doing} failed on {self.where}: {str(err) or type(err).__name__}") from err

    async def exchange(self, channel: "aio_pika.abc.AbstractChannel", topic: str) -> "aio_pika.abc.AbstractExchange":
        import aio_pika

        return await channel.declare_exchange(topic, aio_pika.ExchangeType.FANOUT, durable=True)

    async def declare(
        self, channel: "aio_pika.abc.AbstractChannel", topic: str, queue_name: str
    ) -> "aio_pika.abc.AbstractQueue":
        arguments: dict[str, Any] = {}
        if self.settings.max_length:
            arguments["x-max-length"] = self.settings.max_length
        if self.settings.max_length_bytes:
            arguments["x-max-length-bytes"] = self.settings.max_length_bytes
        if arguments:
            arguments["x-overflow"] = "reject-publish"
        exchange = await self.exchange(channel, topic)
        queue = await channel.declare_queue(queue_name, durable=True, arguments=arguments)
        await queue.bind(exchange)
        return queue

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        import aio_pika

        if self._channel is None:
            raise ComponentError(f"pubsub {self.name}: not connected to {self.where}")
        message_id = str(uuid.uuid4())
        message = aio_pika.Message(
            data,
            message_id=message_id,
            content_type=content_type or None,
            headers=dict(metadata or {}),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        with self.errors(f"publishing to topic {topic}"):
            if topic not in self._exchanges:
                self._exchanges[topic] = await self.exchange(self._channel, topic)
            await self._exchanges[topic].publish(message, routing_key="", timeout=self.settings.dial_timeout)
        return message_id

    async def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> Subscription:
        group = consumer_id(self.settings, self.app_id, metadata)
        concurrency = self.settings.concurrent_handlers(metadata)
        subscription = _QueueSubscription(
            self, topic, group, handler, concurrency, self.settings.keyless_in_order(metadata)
        )
        await subscription.start()
        self.subscriptions.add(subscription)
        return subscription
