"""A watch that the apiserver cuts mid-stream resumes; it never silently stops.

A stopping kube-apiserver ends its watches' chunked responses without the last chunk,
which aiohttp reports as a ClientPayloadError. Reproducing that with the real apiserver
takes its whole shutdown (a minute) and does not cut every watch the same way, so this
fault is made by a small HTTP server that plays the apiserver's part exactly there: a
list, a watch stream cut after one event, then a watch that goes on.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ottava_sidecar.kube.client import Credentials, KubeClient
from ottava_sidecar.kube.watch import Reflector

PATH = "/apis/ottava.io/v1alpha1/namespaces/shop/components"


def _event(kind: str, name: str, version: str) -> bytes:
    obj = {"metadata": {"name": name, "resourceVersion": version}}
    line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
    return f"{len(line):x}\r\n".encode() + line + b"\r\n"


class CuttingApiserver:
    """Lists nothing; the first watch sends one event and is cut; later watches send one more and stay open."""

    def __init__(self) -> None:
        self.watches: list[str] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        target = request.split(" ", 2)[1]
        if "watch=1" not in target:
            body = json.dumps({"items": [], "metadata": {"resourceVersion": "1"}}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            writer.close()
            return
        self.watches.append(target)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        if len(self.watches) == 1:
            writer.write(_event("ADDED", "statestore", "2"))
            await writer.drain()
            writer.close()  # cut: no terminating chunk, as a stopping apiserver does
            return
        writer.write(_event("ADDED", "later", "3"))
        await writer.drain()
        await reader.read()  # an open watch, until the client goes
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def apiserver() -> AsyncIterator[tuple[CuttingApiserver, str]]:
    fake = CuttingApiserver()
    async with fake as url:
        yield fake, url


async def test_a_watch_cut_mid_stream_resumes_from_the_last_version(apiserver: tuple[CuttingApiserver, str]) -> None:
    fake, url = apiserver
    client = KubeClient(Credentials(server=url, ssl_context=False))
    seen: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def on_event(kind: str, obj: dict[str, Any]) -> None:
        await seen.put((kind, obj["metadata"]["name"]))

    reflector = Reflector(client, PATH, on_event, what="components", min_backoff=0.01)
    task = asyncio.create_task(reflector.run())
    try:
        assert await asyncio.wait_for(seen.get(), timeout=5) == ("ADDED", "statestore")
        # The cut stream is resumed, from the version of the last event it carried.
        assert await asyncio.wait_for(seen.get(), timeout=5) == ("ADDED", "later")
        assert "resourceVersion=2" in fake.watches[1]
        assert set(reflector.objects) == {"statestore", "later"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
