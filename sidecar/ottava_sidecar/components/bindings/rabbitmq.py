"""`bindings.rabbitmq`: one RabbitMQ queue — output `create` sends to it, input reads it.

Client: aio-pika. The queue `queueName` is declared at start (`durable`,
`deleteWhenUnused`, `exclusive`, `maxPriority` as in Dapr's binding). Output publishes
through the default exchange with publisher confirms, so `create` returns once the
broker has the message; a request's `ttlInSeconds` and `priority` metadata set the
message's expiry and priority. Input consumes the queue and acknowledges a message only
once the app accepted it: a message the app refused is handed over again, and one the
sidecar held when it stopped goes back to the queue.
"""

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from pydantic import Field

from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata, TlsMetadata
from ottava_sidecar.components.bindings.base import (
    BindingEvent,
    BindingMetadata,
    BindingRequest,
    BindingRequestError,
    BindingResponse,
    Handler,
    InputBinding,
    OutputBinding,
    handle_until_done,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    import aio_pika.abc
    from pamqp.common import FieldTable


class RabbitMQBindingMetadata(RetryMetadata, TlsMetadata, BindingMetadata):
    host: str = Field(
        default="localhost:5672",
        alias="host",
        description="The broker: an AMQP URL as Dapr takes it (amqp://user:password@host:5672/vhost), or host:port.",
    )
    username: str = Field(default="guest", alias="username", description="User name (when `host` has none).")
    password: str = Field(default="guest", alias="password", description="Password (when `host` has none).")
    queue_name: str = Field(alias="queueName", min_length=1, description="The queue.")
    durable: bool = Field(default=False, alias="durable", description="The queue survives a broker restart.")
    delete_when_unused: bool = Field(
        default=False, alias="deleteWhenUnused", description="The broker deletes the queue when its last reader goes."
    )
    exclusive: bool = Field(default=False, alias="exclusive", description="The queue belongs to this connection only.")
    max_priority: int = Field(
        default=0, ge=0, le=255, alias="maxPriority", description="Highest message priority; 0: none."
    )
    ttl_in_seconds: int = Field(
        default=0, ge=0, alias="ttlInSeconds", description="Default expiry of the queue's messages; 0: none."
    )
    prefetch_count: int = Field(
        default=1, ge=1, alias="prefetchCount", description="Input: messages held unacknowledged at once."
    )
    content_type: str = Field(default="", alias="contentType", description="Content type of published messages.")

    def connection(self) -> tuple[str, int, str, str, str]:
        """host, port, user, password, virtual host."""
        if "://" in self.host:
            url = urlsplit(self.host)
            vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
            return (
                url.hostname or "localhost",
                url.port or 5672,
                unquote(url.username or self.username),
                unquote(url.password or self.password),
                vhost,
            )
        host, _, port = self.host.rpartition(":")
        return (
            (host, int(port), self.username, self.password, "/")
            if host
            else (self.host, 5672, self.username, self.password, "/")
        )


@register("bindings.rabbitmq", RabbitMQBindingMetadata)
class RabbitMQBinding(InputBinding[RabbitMQBindingMetadata], OutputBinding[RabbitMQBindingMetadata]):
    """A RabbitMQ queue: create sends to it; as input, its messages are the app's events."""

    operations = ("create",)

    def __init__(self, name: str, settings: RabbitMQBindingMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        host, port, *_ = settings.connection()
        self.where = f"rabbitmq at {host}:{port}"
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def init(self) -> None:
        import aio_pika
        import aiormq.exceptions

        s = self.settings
        host, port, user, password, vhost = s.connection()

        async def attempt() -> "aio_pika.abc.AbstractRobustConnection":
            return await aio_pika.connect_robust(
                host=host,
                port=port,
                login=user,
                password=password,
                virtualhost=vhost,
                ssl=s.enable_tls or self.settings.host.startswith("amqps://"),
                ssl_context=s.ssl_context(),
                timeout=s.dial_timeout,
            )

        def refused(err: BaseException) -> bool:
            return isinstance(
                err, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AMQPConnectionError
            ) and ("ACCESS_REFUSED" in str(err) or "authentication" in str(err).lower())

        self._connection = await retry.connect(self.where, attempt, s, refused_credentials=refused)
        with self.errors(f"declaring queue {s.queue_name}"):
            self._channel = await self._connection.channel(publisher_confirms=True)
            await self._declare(self._channel)

    async def _declare(self, channel: "aio_pika.abc.AbstractChannel") -> "aio_pika.abc.AbstractQueue":
        s = self.settings
        arguments: FieldTable = {}
        if s.max_priority:
            arguments["x-max-priority"] = s.max_priority
        if s.ttl_in_seconds:
            arguments["x-message-ttl"] = s.ttl_in_seconds * 1000
        return await channel.declare_queue(
            s.queue_name,
            durable=s.durable,
            auto_delete=s.delete_when_unused,
            exclusive=s.exclusive,
            arguments=arguments or None,
        )

    async def close(self) -> None:
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
        except (
            aio_pika.exceptions.AMQPException,
            aiormq.exceptions.AMQPError,
            ConnectionError,
            TimeoutError,
            RuntimeError,
        ) as err:
            raise ComponentError(f"{doing} failed on {self.where}: {str(err) or type(err).__name__}") from err

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        import aio_pika

        if self._channel is None:
            raise ComponentError(f"binding {self.name}: not connected to {self.where}")
        message = aio_pika.Message(
            request.data,
            content_type=request.metadata.get("contentType") or self.settings.content_type or None,
            expiration=_whole(request, "ttlInSeconds", self.name),
            priority=_whole(request, "priority", self.name),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if self.settings.durable else None,
        )
        with self.errors(f"sending to queue {self.settings.queue_name}"):
            await self._channel.default_exchange.publish(message, routing_key=self.settings.queue_name)
        return BindingResponse()

    async def read(self, handler: Handler) -> None:
        if self._connection is None:
            raise ComponentError(f"binding {self.name}: not connected to {self.where}")
        with self.errors(f"reading queue {self.settings.queue_name}"):
            channel = await self._connection.channel()
        try:
            with self.errors(f"reading queue {self.settings.queue_name}"):
                await channel.set_qos(prefetch_count=self.settings.prefetch_count)
                queue = await self._declare(channel)
                async with queue.iterator() as messages:
                    async for message in messages:
                        event = BindingEvent(bytes(message.body), _metadata(message))
                        await handle_until_done(handler, event, where=f"input binding {self.name}")
                        await message.ack()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), 2)


def _metadata(message: "aio_pika.abc.AbstractIncomingMessage") -> dict[str, str]:
    metadata = {"queueName": message.routing_key or ""}
    if message.content_type:
        metadata["contentType"] = message.content_type
    if message.priority is not None:
        metadata["priority"] = str(message.priority)
    return metadata


def _whole(request: BindingRequest, name: str, binding: str) -> int | None:
    text = request.metadata.get(name, "")
    if not text:
        return None
    if not text.isdigit():
        raise BindingRequestError(f"binding {binding}: metadata {name}={text!r} is not a whole number")
    return int(text)
