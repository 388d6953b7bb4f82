"""What the MQTT pub/sub (`pubsub.mqtt`) and the MQTT binding (`bindings.mqtt`) share: how a
client is made (MQTT v5, a persistent session or a clean start), which refusal means bad
credentials, how failures read, and how a client is let go."""

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ottava_sidecar.components.errors import ComponentError

if TYPE_CHECKING:
    import aiomqtt


def client(
    host: str,
    port: int,
    user: str,
    password: str,
    identifier: str,
    *,
    persistent: bool,
    session_expiry: float,
    dial_timeout: float,
    keep_alive: int,
    tls: ssl.SSLContext | None,
) -> "aiomqtt.Client":
    """An MQTT v5 client; `persistent`: the broker keeps its session `session_expiry` seconds."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if persistent:
        properties.SessionExpiryInterval = int(session_expiry)
    return aiomqtt.Client(
        host,
        port,
        username=user or None,
        password=password or None,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=properties,
        timeout=dial_timeout,
        keepalive=keep_alive,
        tls_context=tls,
    )


def refused_credentials(err: BaseException) -> bool:
    """Whether the broker refused the connection for its credentials (retrying cannot help)."""
    text = str(err).lower()
    return "not authorized" in text or "bad user name or password" in text


@contextlib.contextmanager
def errors(where: str, doing: str) -> Iterator[None]:
    """MQTT failures as `ComponentError`s naming what was being done and the broker."""
    import aiomqtt

    try:
        yield
    except (aiomqtt.MqttError, TimeoutError) as err:
        raise ComponentError(f"{doing} failed on {where}: {str(err) or type(err).__name__}") from err


async def disconnect(connected: "aiomqtt.Client") -> None:
    """Leave the broker, waiting at most 2 s; a client already gone is no error."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connected.__aexit__(None, None, None), 2)
