"""An app's subscriptions follow its pub/sub component: opened when it arrives, moved when it reloads.

In a pod the sidecar reads the app's subscriptions as soon as the app listens, which can
be before its pub/sub component is UP (a Secret not created yet); and a hot reload swaps
the component's instance. Either way the app must go on receiving events. The app here
is a real HTTP server; the broker is the in-memory one, driven through the registry as
the Kubernetes wiring drives it.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from ottava_sidecar.appchannel.http import HttpAppChannel
from ottava_sidecar.components.pubsub.base import PubSub
from ottava_sidecar.components.registry import Registry
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.runtime import Messaging
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec
from ottava_sidecar.resources.models import Component


def pubsub(**metadata: str) -> Component:
    return Component.model_validate(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "pubsub"},
            "spec": {"type": "pubsub.in-memory", "metadata": [{"name": k, "value": v} for k, v in metadata.items()]},
        }
    )


class App:
    """An app that records the `data` of every event delivered to POST /events/orders."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[Any] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        await self.received.put(event.get("data"))
        return web.json_response({"status": "SUCCESS"})


@pytest.fixture
async def app() -> AsyncIterator[tuple[App, HttpAppChannel]]:
    recorder = App()
    server = web.Application()
    server.router.add_post("/events/orders", recorder.handle)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    channel = HttpAppChannel("shipping", "127.0.0.1", port, timeout=5)
    yield recorder, channel
    await channel.close()
    await runner.cleanup()


async def publish(broker: PubSub[Any], data: dict[str, Any]) -> None:
    envelope = cloudevents.wrap(
        json.dumps(data).encode(),
        "application/json",
        pubsub_name=broker.name,
        topic="orders",
        source="checkout",
        metadata={},
    )
    await broker.publish("orders", envelope.data, content_type=envelope.content_type)


async def test_a_subscription_waits_for_its_component_then_follows_its_reloads(
    app: tuple[App, HttpAppChannel],
) -> None:
    recorder, channel = app
    registry = Registry("shipping")
    messaging = Messaging(registry)
    spec = SubscriptionSpec.create("pubsub", "orders", default_path="/events/orders")
    try:
        # The app asks before the component exists: a problem that names it, not an error.
        problems = await messaging.subscribe_app(channel, [spec])
        assert len(problems) == 1 and "pubsub" in problems[0] and "waits for its component" in problems[0]
        assert messaging.subscriptions() == []

        # The component arrives: the subscription opens, and events flow.
        await registry.upsert(pubsub())
        await asyncio.wait_for(messaging.settled(), timeout=5)
        assert messaging.subscriptions() == [spec]
        await publish(messaging.broker("pubsub"), {"order": 1})
        assert await asyncio.wait_for(recorder.received.get(), timeout=5) == {"order": 1}

        # A reload swaps the instance: the subscription moves to the new one.
        first = messaging.broker("pubsub")
        await registry.upsert(pubsub(maxPendingMessages="500"))
        second = messaging.broker("pubsub")
        assert second is not first
        await asyncio.wait_for(messaging.settled(), timeout=5)
        assert _opened_on(messaging, second)
        await publish(second, {"order": 2})
        assert await asyncio.wait_for(recorder.received.get(), timeout=5) == {"order": 2}
    finally:
        await messaging.close()
        await registry.close()


def _opened_on(messaging: Messaging, broker: PubSub[Any]) -> bool:
    return any(active.broker is broker for active in messaging._active.values())
