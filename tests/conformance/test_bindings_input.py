"""The input binding contract, for every `bindings.*` type that reads events.

Each type says how an event is made to happen on its backend (`TRIGGERS`): the
contract is the same for all — the event reaches the handler with its data, a handler
that raises gets the same event again (it was not acknowledged), and a reader stops
when it is cancelled.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.bindings.base import BindingEvent, InputBinding

from tests.conformance.conftest import Components

BUILDING_BLOCK = "bindings"


def is_input(type_name: str) -> bool:
    return issubclass(catalogue.lookup(type_name).implementation, InputBinding)


pytestmark = pytest.mark.only.with_args(is_input)

DEADLINE = 20.0


@dataclass
class Recorder:
    """A handler that records what it gets, refusing the first `refuse` deliveries."""

    refuse: int = 0
    events: list[BindingEvent] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: BindingEvent) -> None:
        self.events.append(event)
        self.arrived.set()
        if len(self.events) <= self.refuse:
            raise RuntimeError("refused by the test")

    async def until(self, count: int) -> list[BindingEvent]:
        async with asyncio.timeout(DEADLINE):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events


# How a type makes an event happen: returns the data the event must carry (None: the
# type chooses its data, as a cron tick has none). Called once its reader runs.
Trigger = Callable[[Components, Any, str], Awaitable[bytes | None]]


async def _tick(components: Components, binding: Any, marker: str) -> bytes | None:
    return None  # the schedule fires by itself


async def _mqtt_publish(components: Components, binding: Any, marker: str) -> bytes | None:
    import aiomqtt

    host, port = binding.settings.host_port
    user, password = binding.settings.credentials
    s = binding.settings
    async with aiomqtt.Client(host, port, username=user, password=password) as client:
        await client.publish(s.topic, marker.encode(), qos=1)
    return marker.encode()


async def _rabbitmq_send(components: Components, binding: Any, marker: str) -> bytes | None:
    import aio_pika

    host, port, user, password, vhost = binding.settings.connection()
    connection = await aio_pika.connect(host=host, port=port, login=user, password=password, virtualhost=vhost)
    async with connection, connection.channel() as channel:
        await channel.default_exchange.publish(
            aio_pika.Message(marker.encode()), routing_key=binding.settings.queue_name
        )
    return marker.encode()


TRIGGERS: dict[str, Trigger] = {
    "bindings.cron": _tick,
    "bindings.mqtt": _mqtt_publish,
    "bindings.rabbitmq": _rabbitmq_send,
}


def trigger(type_name: str) -> Trigger:
    assert type_name in TRIGGERS, f"add how to make an event of {type_name} to TRIGGERS"
    return TRIGGERS[type_name]


async def fire(type_name: str, components: Components, binding: Any, handler: Recorder) -> bytes | None:
    """Make an event happen until one arrives: a reader may not have subscribed yet when the
    first is sent (an MQTT message published before the subscription reaches nobody)."""
    marker = uuid.uuid4().hex
    async with asyncio.timeout(DEADLINE):
        while True:
            expected = await trigger(type_name)(components, binding, marker)
            handler.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    while not handler.events:
                        await handler.arrived.wait()
            if handler.events:
                return expected


@contextlib.asynccontextmanager
async def reading(binding: InputBinding[Any], handler: Recorder) -> AsyncIterator["asyncio.Task[None]"]:
    task = asyncio.create_task(binding.read(handler))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_event_reaches_the_handler(components: Components, type_name: str) -> None:
    binding = await components.create()
    handler = Recorder()
    async with reading(binding, handler):
        expected = await fire(type_name, components, binding, handler)
        events = await handler.until(1)
    if expected is not None:
        assert events[0].data == expected


async def test_a_refused_event_comes_again(components: Components, type_name: str) -> None:
    binding = await components.create()
    handler = Recorder(refuse=2)
    async with reading(binding, handler):
        await fire(type_name, components, binding, handler)
        events = await handler.until(3)
    assert events[0] == events[1] == events[2], "the refused event was handed over again, unchanged"


async def test_a_reader_stops_when_cancelled(components: Components, type_name: str) -> None:
    binding = await components.create()
    handler = Recorder()
    async with reading(binding, handler) as task:
        await fire(type_name, components, binding, handler)
    assert task.cancelled()
    seen = len(handler.events)
    await asyncio.sleep(0)  # a stopped reader hands nothing more, however long one waits
    assert len(handler.events) == seen
