"""Subscribers that do not read, streams that repeat themselves, oversized metadata: the
sidecar stays bounded and says why it refuses (issue 12).

The sidecar runs in this process, built the way `ottava run` builds it but with a small
`Limits(subscriber_buffer_bytes=…)`; the tests reach it only through its gRPC, HTTP and
metrics ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import httpx
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, configuration_pb2, dapr_pb2_grpc, metadata_pb2, pubsub_pb2
from ottava_sidecar import contract
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as pb
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc
from ottava_sidecar.limits import MAX_EXTENDED_METADATA_BYTES, Limits
from ottava_sidecar.resources.models import Component
from ottava_sidecar.runtime.defaults import default_components
from ottava_sidecar.runtime.sidecar import Options, Sidecar
from prometheus_client.parser import text_string_to_metric_families

BUFFER = 64 * 1024  # the subscriber buffer limit of the sidecar under test
PENDING = 256 * 1024  # maxPendingBytes of its in-memory broker `boundedpubsub`


class Readable(Protocol):
    def read(self) -> Awaitable[object]: ...


@dataclass
class Running:
    sidecar: Sidecar
    dapr: dapr_pb2_grpc.DaprStub
    layotto: runtime_pb2_grpc.RuntimeAsyncStub
    http: httpx.AsyncClient
    metrics: httpx.AsyncClient

    async def sample(self, metric: str, **labels: str) -> float:
        text = (await self.metrics.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0


def bounded_pubsub() -> Component:
    return Component.model_validate(
        {
            "apiVersion": contract.GROUP_VERSION,
            "kind": "Component",
            "metadata": {"name": "boundedpubsub"},
            "spec": {"type": "pubsub.in-memory", "metadata": [{"name": "maxPendingBytes", "value": str(PENDING)}]},
        }
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    options = Options(
        app_id=f"limits-{uuid.uuid4().hex[:8]}",
        grpc_port=0,
        http_port=0,
        metrics_port=0,
        internal_grpc_port=0,
        registry_dir=tmp_path,
        shutdown_grace_seconds=1.0,
        limits=Limits(subscriber_buffer_bytes=BUFFER),
    )
    sidecar = Sidecar(options, [*default_components(), bounded_pubsub()])
    await sidecar.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports.grpc}") as channel,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{sidecar.ports.http}") as http,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{sidecar.ports.metrics}") as metrics,
        ):
            yield Running(
                sidecar, dapr_pb2_grpc.DaprStub(channel), runtime_pb2_grpc.RuntimeStub(channel), http, metrics
            )
    finally:
        await sidecar.stop()


async def save(running: Running, key: str, content: str, app_id: str = "") -> None:
    await running.layotto.SaveConfiguration(
        pb.SaveConfigurationRequest(
            store_name="configstore",
            app_id=app_id or running.sidecar.options.app_id,
            items=[pb.ConfigurationItem(key=key, content=content)],
        )
    )


async def read_to_end(stream: Readable) -> grpc.aio.AioRpcError:
    """Read what was already on its way until the stream's end, which must be an error."""
    while True:
        try:
            await asyncio.wait_for(stream.read(), 10)
        except grpc.aio.AioRpcError as err:
            return err


async def next_update(stream: Readable, seconds: float = 10) -> pb.SubscribeConfigurationResponse:
    update = await asyncio.wait_for(stream.read(), seconds)
    assert isinstance(update, pb.SubscribeConfigurationResponse)
    return update


# --- configuration subscribers ---------------------------------------------------------


async def test_configuration_subscriber_that_never_reads_is_dropped(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    request = configuration_pb2.SubscribeConfigurationRequest(store_name="configstore", keys=["big"])
    stream = running.dapr.SubscribeConfiguration(request)
    first = await asyncio.wait_for(stream.read(), 10)
    assert first.id and not first.items
    dropped_before = await running.sample("ottava_subscribers_dropped_total", api="configuration")
    # The metrics are the process's: other sidecars of this test run may hold a little.
    held_before = await running.sample("ottava_subscriber_buffered_bytes", api="configuration")

    # 300 saves of 32 KiB that the subscriber never reads: 9.6 MB unbounded, far above the limit.
    highest = 0.0
    for n in range(300):
        await save(running, "big", f"{n:04d}" + "x" * 32 * 1024)
        if n % 25 == 0:
            highest = max(highest, await running.sample("ottava_subscriber_buffered_bytes", api="configuration"))
    # What the sidecar holds for it never passed the limit (plus the one batch that overflowed it).
    assert highest - held_before <= BUFFER + 33 * 1024
    assert await running.sample("ottava_subscribers_dropped_total", api="configuration") == dropped_before + 1
    assert await running.sample("ottava_subscriber_buffered_bytes", api="configuration") == held_before

    # The stream ends, after what was already on its way, with a status that says why and what to do.
    ended = await read_to_end(stream)
    assert ended.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = ended.details() or ""
    assert "subscriber_buffer_bytes" in details and str(BUFFER) in details
    assert "raise" in details and "configstore" in details
    assert any("configuration subscriber dropped" in r.getMessage() for r in caplog.records)


async def test_configuration_subscriber_that_reads_is_not_dropped(running: Running) -> None:
    request = configuration_pb2.SubscribeConfigurationRequest(store_name="configstore", keys=["steady"])
    stream = running.dapr.SubscribeConfiguration(request)
    await asyncio.wait_for(stream.read(), 10)
    for n in range(20):  # each change alone is larger than the whole buffer
        content = f"{n:04d}" + "y" * 2 * BUFFER
        await save(running, "steady", content)
        update = await asyncio.wait_for(stream.read(), 10)
        assert update.items["steady"].value == content
    stream.cancel()


async def test_layotto_stream_that_never_reads_is_dropped(running: Running) -> None:
    app = f"slow-{uuid.uuid4().hex[:8]}"
    requests: asyncio.Queue[pb.SubscribeConfigurationRequest] = asyncio.Queue()
    await requests.put(pb.SubscribeConfigurationRequest(store_name="configstore", app_id=app, keys=["big"]))

    async def outgoing() -> AsyncIterator[pb.SubscribeConfigurationRequest]:
        while True:
            yield await requests.get()

    stream = running.layotto.SubscribeConfiguration(outgoing())
    dropped_before = await running.sample("ottava_subscribers_dropped_total", api="configuration")
    for n in range(300):
        await save(running, "big", f"{n:04d}" + "x" * 32 * 1024, app_id=app)
    assert await running.sample("ottava_subscribers_dropped_total", api="configuration") == dropped_before + 1
    ended = await read_to_end(stream)
    assert ended.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "subscriber_buffer_bytes" in (ended.details() or "")


async def test_identical_layotto_subscribes_make_one_subscription(running: Running) -> None:
    app = f"dup-{uuid.uuid4().hex[:8]}"
    await save(running, "marker", "here", app_id=app)
    same = pb.SubscribeConfigurationRequest(store_name="configstore", app_id=app, keys=["color", "size"])
    reordered = pb.SubscribeConfigurationRequest(store_name="configstore", app_id=app, keys=["size", "color"])
    marker = pb.SubscribeConfigurationRequest(store_name="configstore", app_id=app, keys=["marker"])

    async def outgoing() -> AsyncIterator[pb.SubscribeConfigurationRequest]:
        for _ in range(2500):
            yield same
            yield reordered
        yield marker  # read after all the others: its current items say they were all handled
        await asyncio.Event().wait()

    stream = running.layotto.SubscribeConfiguration(outgoing())
    first = await next_update(stream, 30)
    assert [(i.key, i.content) for i in first.items] == [("marker", "here")]

    await save(running, "color", "red", app_id=app)
    await save(running, "color", "blue", app_id=app)
    updates = [await next_update(stream) for _ in range(2)]
    # Each change arrives once: the second message is the second change, not a copy of the first.
    assert [[(i.key, i.content) for i in u.items] for u in updates] == [[("color", "red")], [("color", "blue")]]
    stream.cancel()


async def test_repeated_keys_in_one_request_count_once(running: Running) -> None:
    app = f"rep-{uuid.uuid4().hex[:8]}"
    await save(running, "color", "red", app_id=app)
    got = await running.layotto.GetConfiguration(
        pb.GetConfigurationRequest(store_name="configstore", app_id=app, keys=["color"] * 1000)
    )
    assert [(i.key, i.content) for i in got.items] == [("color", "red")]


# --- pub/sub streams ---------------------------------------------------------------------


async def test_pubsub_stream_that_does_not_ack_holds_bounded_bytes(running: Running) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    answers: asyncio.Queue[pubsub_pb2.SubscribeTopicEventsRequestAlpha1] = asyncio.Queue()
    await answers.put(
        pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
            initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                pubsub_name="boundedpubsub", topic=topic
            )
        )
    )

    async def outgoing() -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1]:
        while True:
            yield await answers.get()

    stream = running.dapr.SubscribeTopicEventsAlpha1(outgoing())
    assert (await asyncio.wait_for(stream.read(), 10)).HasField("initial_response")

    held_before = await running.sample("ottava_subscriber_buffered_bytes", api="pubsub")
    size = 64 * 1024
    accepted: list[str] = []
    refusal: grpc.aio.AioRpcError | None = None
    for n in range(40):  # 2.5 MB unbounded
        try:
            await running.dapr.PublishEvent(
                pubsub_pb2.PublishEventRequest(
                    pubsub_name="boundedpubsub", topic=topic, data=f"{n:04d}".encode() + b"z" * size
                )
            )
        except grpc.aio.AioRpcError as err:
            refusal = err
            break
        accepted.append(f"{n:04d}")
    assert refusal is not None, "publishing to a subscriber that does not ack was never refused"
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maxPendingBytes" in (refusal.details() or "")
    # What the sidecar holds for this subscriber stays within the component's byte bound.
    assert 1 <= len(accepted) <= PENDING // size + 1
    # One event (with its CloudEvent envelope) is in flight to the stream, however many wait behind it.
    assert await running.sample("ottava_subscriber_buffered_bytes", api="pubsub") - held_before <= size + 1024

    # Back-pressure, not loss: acking each event brings the next, and every accepted one arrives.
    received = []
    for _ in accepted:
        event = (await asyncio.wait_for(stream.read(), 10)).event_message
        received.append(event.data[:4].decode())
        await answers.put(
            pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
                    id=event.id,
                    status=appcallback_pb2.TopicEventResponse(status=appcallback_pb2.TopicEventResponse.SUCCESS),
                )
            )
        )
    assert received == accepted
    stream.cancel()


# --- metadata ----------------------------------------------------------------------------


async def test_set_metadata_beyond_the_limit_is_refused(running: Running) -> None:
    value = "m" * (MAX_EXTENDED_METADATA_BYTES // 2)
    await running.dapr.SetMetadata(metadata_pb2.SetMetadataRequest(key="first", value=value))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.dapr.SetMetadata(metadata_pb2.SetMetadataRequest(key="second", value=value))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_EXTENDED_METADATA_BYTES) in (refused.value.details() or "")

    answer = await running.http.put("/v1.0/metadata/third", content=value * 2)
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert str(MAX_EXTENDED_METADATA_BYTES) in answer.json()["message"]

    # Replacing a value counts the new one, not both.
    await running.dapr.SetMetadata(metadata_pb2.SetMetadataRequest(key="first", value=value + "!"))
    metadata = await running.dapr.GetMetadata(metadata_pb2.GetMetadataRequest())
    assert dict(metadata.extended_metadata) == {"first": value + "!"}
    assert (await running.http.get("/v1.0/metadata")).json()["extended"] == {"first": value + "!"}


async def test_get_metadata_fits_a_default_client_after_many_sets(running: Running) -> None:
    value = "v" * (900 * 1024)
    for n in range(6):  # 5.4 MB if nothing refused it
        with pytest.raises(grpc.aio.AioRpcError) if n >= 1 else contextlib.nullcontext():
            await running.dapr.SetMetadata(metadata_pb2.SetMetadataRequest(key=f"k{n}", value=value))
    metadata = await running.dapr.GetMetadata(metadata_pb2.GetMetadataRequest())
    assert metadata.ByteSize() < 4 * 1024 * 1024
    assert list(metadata.extended_metadata) == ["k0"]


# --- event loop lag ----------------------------------------------------------------------


async def test_event_loop_lag_is_on_metrics(running: Running) -> None:
    deadline = time.monotonic() + 10
    while await running.sample("ottava_event_loop_lag_seconds_count") < 2:
        assert time.monotonic() < deadline, "no event loop lag measured"
        await asyncio.sleep(0.1)
    assert 0 <= await running.sample("ottava_event_loop_lag_last_seconds") < 1.0

    count = await running.sample("ottava_event_loop_lag_seconds_count")
    total = await running.sample("ottava_event_loop_lag_seconds_sum")
    # The fault under test: a blocking call on the sidecar's event loop.
    asyncio.get_running_loop().call_soon(time.sleep, 1.2)
    deadline = time.monotonic() + 10
    while await running.sample("ottava_event_loop_lag_seconds_count") <= count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    # The timer due during the block ran at least 0.7 s late (1.2 s blocked, 0.5 s interval).
    assert await running.sample("ottava_event_loop_lag_seconds_sum") - total >= 0.6
