"""`pubsub.mqtt`: MQTT 5 brokers (Mosquitto, EMQX, HiveMQ…) at QoS 1 with persistent sessions.

Client: aiomqtt, the asyncio client built on Eclipse paho-mqtt (the reference Python
MQTT implementation). Every message is published at QoS 1 with an id of ours in a user
property (MQTT has no broker-side message id). A subscription is a client of its own
whose id is derived from `consumerID` and the topic, with a session that outlives the
connection (`sessionExpiry`), and acknowledges (PUBACK) only once the app accepted the
event: a message the sidecar took and never acknowledged is sent again by the broker
when the next subscriber of that consumer resumes the session. Order per topic is the
broker's (MQTT keeps it for QoS 1 on one session), and the app gets one message at a
time, partition key or not: a client acknowledges QoS 1 messages in the order it
received them (MQTT 5, 4.6), so delivering the next one before the app accepted the
previous one would mean acknowledging out of order or holding acknowledgements back.

One subscriber per consumerID and topic at a time: a second client with the same id
takes the session over from the first (MQTT's rule).
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ottava_sidecar.components.backends import mqtt, retry
from ottava_sidecar.components.backends.options import RetryMetadata, Seconds, TlsMetadata
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.pubsub.base import Handler, Message, PubSub, Subscription
from ottava_sidecar.components.pubsub.handling import ConsumerMetadata, consumer_id, handle_until_done
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    import aiomqtt

log = logging.getLogger(__name__)


class MqttPubSubMetadata(RetryMetadata, TlsMetadata, ConsumerMetadata):
    url: str = Field(default="localhost:1883", alias="url", description="host:port of the broker.")
    username: str = Field(default="", alias="username", description="User name.")
    password: str = Field(default="", alias="password", description="Password; use a secretKeyRef.")
    session_expiry: Seconds = Field(
        default=3600.0,
        gt=0,
        alias="sessionExpiry",
        description="How long the broker keeps a gone subscriber's session (and its unacknowledged messages).",
    )
    keep_alive: int = Field(default=30, ge=5, alias="keepAlive", description="MQTT keep-alive, seconds.")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("mqtt://").removeprefix("tcp://").rpartition(":")
        return (host or self.url, int(port)) if host else (self.url, 1883)


def _client(
    settings: MqttPubSubMetadata,
    identifier: str,
    *,
    persistent: bool,
    manual_ack: bool = False,
    redelivered: set[int] | None = None,
) -> "aiomqtt.Client":
    host, port = settings.host_port
    client = mqtt.client(
        host,
        port,
        settings.username,
        settings.password,
        identifier,
        persistent=persistent,
        session_expiry=settings.session_expiry,
        dial_timeout=settings.dial_timeout,
        keep_alive=settings.keep_alive,
        tls=settings.ssl_context(),
    )
    if manual_ack and redelivered is not None:
        # aiomqtt acknowledges on receipt; paho (underneath) can leave it to us, which is
        # what makes a crash mid-delivery a redelivery instead of a loss.
        client._client.manual_ack_set(True)
        # aiomqtt's messages drop the DUP flag (a redelivery); keep it by packet id.
        deliver = client._client.on_message
        assert deliver is not None

        def on_message(paho: Any, userdata: Any, received: Any) -> None:
            if received.dup:
                redelivered.add(received.mid)
            else:
                redelivered.discard(received.mid)
            deliver(paho, userdata, received)

        client._client.on_message = on_message
    return client


class _SessionSubscription(Subscription):
    def __init__(self, broker: "MqttPubSub", topic: str, group: str, handler: Handler) -> None:
        self.topic = topic
        self._broker = broker
        self._handler = handler
        digest = hashlib.sha256(f"{group}\0{topic}".encode()).hexdigest()[:16]
        self.identifier = f"{group[:40]}-{digest}"
        self._task: asyncio.Task[None] | None = None
        self._redelivered: set[int] = set()  # packet ids the broker sent with DUP set

    async def start(self) -> None:
        settings = self._broker.settings

        async def attempt() -> "aiomqtt.Client":
            client = _client(settings, self.identifier, persistent=True, manual_ack=True, redelivered=self._redelivered)
            await client.__aenter__()
            return client

        client = await retry.connect(
            self._broker.where, attempt, settings, refused_credentials=mqtt.refused_credentials
        )
        with self._broker.errors(f"subscribing to topic {self.topic}"):
            await client.subscribe(self.topic, qos=1)
        self._task = asyncio.create_task(self._consume(client), name=f"{self._broker.name}/{self.topic}")

    async def _consume(self, client: "aiomqtt.Client") -> None:
        settings = self._broker.settings
        delays = settings.connection_backoff().delays()
        while True:
            try:
                async for received in client.messages:
                    await self._deliver(client, received)
            except asyncio.CancelledError:
                await mqtt.disconnect(client)
                raise
            except Exception as err:  # the connection broke: resume the session
                delay = next(delays)
                log.warning("pubsub %s lost %s, reconnecting in %.1fs: %s", self._broker.name, self.topic, delay, err)
                await asyncio.sleep(delay)
                with contextlib.suppress(Exception):
                    client = _client(
                        settings, self.identifier, persistent=True, manual_ack=True, redelivered=self._redelivered
                    )
                    await client.__aenter__()
                    await client.subscribe(self.topic, qos=1)
                    delays = settings.connection_backoff().delays()  # connected again: start over

    async def _deliver(self, client: "aiomqtt.Client", received: "aiomqtt.Message") -> None:
        props = dict(getattr(received.properties, "UserProperty", None) or [])
        payload = received.payload
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        attempt = 2 if received.mid in self._redelivered else 1
        message = Message(
            self.topic,
            data,
            props.get("ottava-id", f"mid-{received.mid}"),
            str(getattr(received.properties, "ContentType", "") or ""),
            json.loads(props.get("ottava-metadata", "{}")),
            attempt,
        )
        await handle_until_done(
            self._handler, message, self._broker.settings.redelivery_backoff(), where=self._broker.name
        )
        self._redelivered.discard(received.mid)
        client._client.ack(received.mid, received.qos)

    async def close(self) -> None:
        self._broker.subscriptions.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=3)


@register("pubsub.mqtt", MqttPubSubMetadata)
class MqttPubSub(PubSub[MqttPubSubMetadata]):
    """MQTT 5 at QoS 1: persistent sessions, acknowledged after the app accepted the event."""

    def __init__(self, name: str, settings: MqttPubSubMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        host, port = settings.host_port
        self.where = f"mqtt at {host}:{port}"
        self.subscriptions: set[_SessionSubscription] = set()
        self._publisher: aiomqtt.Client | None = None

    async def init(self) -> None:
        async def attempt() -> "aiomqtt.Client":
            client = _client(self.settings, f"{self.app_id[:40]}-pub-{uuid.uuid4().hex[:12]}", persistent=False)
            await client.__aenter__()
            return client

        self._publisher = await retry.connect(
            self.where, attempt, self.settings, refused_credentials=mqtt.refused_credentials
        )

    async def close(self) -> None:
        for subscription in list(self.subscriptions):
            await subscription.close()
        if self._publisher is not None:
            await mqtt.disconnect(self._publisher)
            self._publisher = None

    def errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return mqtt.errors(self.where, doing)

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self._publisher is None:
            raise ComponentError(f"pubsub {self.name}: not connected to {self.where}")
        message_id = str(uuid.uuid4())
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [("ottava-id", message_id), ("ottava-metadata", json.dumps(dict(metadata or {})))]
        if content_type:
            properties.ContentType = content_type
        with self.errors(f"publishing to topic {topic}"):
            await self._publisher.publish(topic, data, qos=1, properties=properties, timeout=self.settings.dial_timeout)
        return message_id

    async def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> Subscription:
        subscription = _SessionSubscription(self, topic, consumer_id(self.settings, self.app_id, metadata), handler)
        await subscription.start()
        self.subscriptions.add(subscription)
        return subscription
