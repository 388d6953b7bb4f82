"""Input binding readers follow their components: one that arrives after the app connected
is read, a reload moves the reader to the new instance, a removed one is read no more.

The app is a real HTTP server; the binding is `bindings.cron`, driven through the
registry as the Kubernetes wiring drives it.
"""

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from ottava_sidecar.api.bindings import InputBindings
from ottava_sidecar.appchannel.http import HttpAppChannel
from ottava_sidecar.components.registry import Registry
from ottava_sidecar.resources.models import Component


def cron(route: str) -> Component:
    metadata = {"schedule": "@every 50ms", "route": route}
    return Component.model_validate(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "tick"},
            "spec": {"type": "bindings.cron", "metadata": [{"name": k, "value": v} for k, v in metadata.items()]},
        }
    )


class App:
    """Records the path of every event; takes bindings on /first and /second."""

    def __init__(self) -> None:
        self.paths: asyncio.Queue[str] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        await self.paths.put(request.path)
        return web.Response(status=200)

    async def next_path(self) -> str:
        return await asyncio.wait_for(self.paths.get(), timeout=10)


@pytest.fixture
async def app() -> AsyncIterator[tuple[App, HttpAppChannel]]:
    recorder = App()
    server = web.Application()
    server.router.add_post("/first", recorder.handle)
    server.router.add_post("/second", recorder.handle)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    channel = HttpAppChannel("ticker", "127.0.0.1", runner.addresses[0][1], timeout=5)
    yield recorder, channel
    await channel.close()
    await runner.cleanup()


async def until_only(app: App, path: str) -> None:
    """Events reach `path` and, from some event on, nothing else (a reader may finish one tick)."""
    async with asyncio.timeout(10):
        streak = 0
        while streak < 5:
            streak = streak + 1 if await app.next_path() == path else 0


async def test_readers_follow_the_registry(app: tuple[App, HttpAppChannel]) -> None:
    recorder, channel = app
    registry = Registry("ticker")
    bindings = InputBindings(registry)
    try:
        assert await bindings.start(channel) == []  # nothing to read yet

        await registry.upsert(cron("/first"))
        assert await recorder.next_path() == "/first"
        assert bindings.names == ["tick"]

        await registry.upsert(cron("/second"))  # a reload: the reader moves to the new instance
        await until_only(recorder, "/second")

        registry.remove("tick")
        # A removed binding's reader stops at its next tick: then half a second passes quietly.
        async with asyncio.timeout(10):
            while True:
                try:
                    await asyncio.wait_for(recorder.paths.get(), timeout=0.5)
                except TimeoutError:
                    break
        assert bindings.names == []
    finally:
        await bindings.close()
        await registry.close()
