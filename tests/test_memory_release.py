"""Once the clients that made it grow leave, the sidecar's memory (RSS) falls back.

A pod's memory limit is measured in RSS. Python frees a closed stream's buffers, but
the C allocator keeps freed blocks for reuse unless they are handed back; the sidecar
does so every few seconds (runtime/memory.py).
"""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
from dapr.proto.runtime.v1 import dapr_pb2_grpc, pubsub_pb2

from tests.conftest import SidecarFactory

MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def _subscribe_and_never_read(topic: str) -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1]:
    initial = pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(pubsub_name="pubsub", topic=topic)
    yield pubsub_pb2.SubscribeTopicEventsRequestAlpha1(initial_request=initial)
    await asyncio.Event().wait()  # the stream stays open until the call is cancelled


async def test_rss_falls_back_after_abandoned_streams_close(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start()
    pid = sidecar.process.pid
    # The ready line comes before the APIs' libraries load (docs/running.md): the baseline is
    # the sidecar once it answers, the HTTP API last of all.
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(f"{sidecar.http_url}/v1.0/healthz")).status_code == 204
    baseline = rss_mb(pid)
    topics = [f"held-{n}" for n in range(16)]
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        calls = []
        for topic in topics:
            call = stub.SubscribeTopicEventsAlpha1(_subscribe_and_never_read(topic))
            await call.read()  # the sidecar's answer to the initial request: subscribed
            calls.append(call)
        # Each subscriber holds up to the in-memory broker's 1 MiB; publishing past it is refused.
        # 100 KB events: below the size that glibc maps on its own, so they come from its heap.
        published, refused = 0, []
        for _ in range(12):
            for topic in topics:
                event = pubsub_pb2.PublishEventRequest(
                    pubsub_name="pubsub", topic=topic, data=b"x" * 100_000, data_content_type="text/plain"
                )
                try:
                    await stub.PublishEvent(event)
                    published += 1
                except grpc.aio.AioRpcError as err:
                    refused.append(err.code())
        grown = rss_mb(pid)
        for call in calls:
            call.cancel()
    assert published >= len(topics) * 9
    assert set(refused) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}, refused
    assert grown - baseline > 10, f"the load did not show in RSS ({baseline:.0f} → {grown:.0f} MB)"
    deadline = time.monotonic() + 30
    while (now := rss_mb(pid)) > baseline + 8:
        assert time.monotonic() < deadline, f"RSS stayed at {now:.0f} MB (baseline {baseline:.0f}, peak {grown:.0f})"
        await asyncio.sleep(0.5)
    print(f"RSS: baseline {baseline:.0f} MB, loaded {grown:.0f} MB, after the clients left {now:.0f} MB")
