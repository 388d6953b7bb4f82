"""`bindings.mqtt`: publish to one MQTT topic (output `create`), and read it (input).

Client: aiomqtt (on Eclipse paho-mqtt), MQTT 5. Output publishes the data to `topic`
(a request's `topic` metadata overrides it) at `qos`, with `retain`. Input subscribes
to `topic` (wildcards allowed) in a session of its own, named after `consumerID` (the
app id by default) that outlives the connection, and acknowledges a message (PUBACK)
only once the app accepted it: a message the app refused is handed over again, and one
the sidecar held when it stopped is sent again by the broker to the next reader. Each
event's metadata carries the topic it came from (`topic`).
"""

import contextlib
import hashlib
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pydantic import Field

from ottava_sidecar.components.backends import mqtt, retry
from ottava_sidecar.components.backends.options import RetryMetadata, Seconds, TlsMetadata
from ottava_sidecar.components.bindings.base import (
    BindingEvent,
    BindingMetadata,
    BindingRequest,
    BindingResponse,
    Handler,
    InputBinding,
    OutputBinding,
    handle_until_done,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    import aiomqtt


class MqttBindingMetadata(RetryMetadata, TlsMetadata, BindingMetadata):
    url: str = Field(
        default="localhost:1883",
        alias="url",
        description="The broker: host:port, or a URL as Dapr takes it (tcp://user:password@host:1883).",
    )
    username: str = Field(default="", alias="username", description="User name.")
    password: str = Field(default="", alias="password", description="Password; use a secretKeyRef.")
    topic: str = Field(alias="topic", min_length=1, description="The topic published to and read from.")
    qos: int = Field(
        default=1, ge=0, le=2, alias="qos", description="QoS of published messages and of the subscription."
    )
    retain: bool = Field(default=False, alias="retain", description="Publish retained messages.")
    consumer_id: str = Field(
        default="", alias="consumerID", description="Names the input's broker session; default: the app id."
    )
    clean_session: bool = Field(
        default=False,
        alias="cleanSession",
        description="Input: start a new session each time (messages sent while away are lost).",
    )
    session_expiry: Seconds = Field(
        default=3600.0, gt=0, alias="sessionExpiry", description="How long the broker keeps a gone reader's session."
    )
    keep_alive: int = Field(default=30, ge=5, alias="keepAlive", description="MQTT keep-alive, seconds.")

    @property
    def host_port(self) -> tuple[str, int]:
        address = self._address()[0]
        host, _, port = address.rpartition(":")
        return (host, int(port)) if host else (address, 1883)

    def _address(self) -> tuple[str, str, str]:
        """host:port, user and password: Dapr's URLs carry the credentials (tcp://user:pass@host:1883); the
        `username` and `password` fields, when set, take precedence (a secretKeyRef for the password)."""
        rest = self.url.split("://", 1)[-1].rstrip("/")
        credentials, _, address = rest.rpartition("@")
        user, _, password = credentials.partition(":")
        return address, self.username or unquote(user), self.password or unquote(password)

    @property
    def credentials(self) -> tuple[str, str]:
        _, user, password = self._address()
        return user, password


@register("bindings.mqtt", MqttBindingMetadata)
class MqttBinding(InputBinding[MqttBindingMetadata], OutputBinding[MqttBindingMetadata]):
    """An MQTT topic: create publishes to it; as input, its messages are the app's events."""

    operations = ("create",)

    def __init__(self, name: str, settings: MqttBindingMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        host, port = settings.host_port
        self.where = f"mqtt at {host}:{port}"
        self._publisher: aiomqtt.Client | None = None

    def _client(self, identifier: str, *, persistent: bool) -> "aiomqtt.Client":
        s = self.settings
        host, port = s.host_port
        user, password = s.credentials
        return mqtt.client(
            host,
            port,
            user,
            password,
            identifier,
            persistent=persistent,
            session_expiry=s.session_expiry,
            dial_timeout=s.dial_timeout,
            keep_alive=s.keep_alive,
            tls=s.ssl_context(),
        )

    async def _connect(self, identifier: str, *, persistent: bool) -> "aiomqtt.Client":
        async def attempt() -> "aiomqtt.Client":
            client = self._client(identifier, persistent=persistent)
            await client.__aenter__()
            return client

        return await retry.connect(self.where, attempt, self.settings, refused_credentials=mqtt.refused_credentials)

    async def init(self) -> None:
        if self.settings.allows("output"):
            self._publisher = await self._connect(f"{self.app_id[:40]}-{uuid.uuid4().hex[:12]}", persistent=False)

    async def close(self) -> None:
        if self._publisher is not None:
            await mqtt.disconnect(self._publisher)
            self._publisher = None

    def errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return mqtt.errors(self.where, doing)

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        if self._publisher is None:
            raise ComponentError(f"binding {self.name}: not connected to {self.where}")
        topic = request.metadata.get("topic") or self.settings.topic
        with self.errors(f"publishing to topic {topic}"):
            await self._publisher.publish(
                topic,
                request.data,
                qos=self.settings.qos,
                retain=self.settings.retain,
                timeout=self.settings.dial_timeout,
            )
        return BindingResponse()

    def session_id(self) -> str:
        group = self.settings.consumer_id or self.app_id
        digest = hashlib.sha256(f"{group}\0{self.settings.topic}\0binding".encode()).hexdigest()[:16]
        return f"{group[:40]}-{digest}"

    async def read(self, handler: Handler) -> None:
        """Until cancelled; a lost connection is a ComponentError (the caller reads again, resuming the session)."""
        persistent = not self.settings.clean_session
        client = await self._connect(self.session_id(), persistent=persistent)
        # aiomqtt acknowledges on receipt; paho (underneath) can leave it to us, which is
        # what makes a message the app has not accepted yet a redelivery instead of a loss.
        client._client.manual_ack_set(True)
        try:
            with self.errors(f"reading topic {self.settings.topic}"):
                await client.subscribe(self.settings.topic, qos=max(self.settings.qos, 1))
                async for received in client.messages:
                    await self._deliver(client, received, handler)
        finally:
            await mqtt.disconnect(client)

    async def _deliver(self, client: "aiomqtt.Client", received: "aiomqtt.Message", handler: Handler) -> None:
        payload: Any = received.payload
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        event = BindingEvent(data, {"topic": str(received.topic)})
        await handle_until_done(handler, event, where=f"input binding {self.name}")
        client._client.ack(received.mid, received.qos)
