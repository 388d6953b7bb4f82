"""Publishing (Dapr gRPC/HTTP, bulk, Layotto), CloudEvents, streaming subscriptions, back-pressure, waiting for the app."""

import json
import os
import queue
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import appcallback_pb2 as layotto_callback
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import APPS, events, free_port, readiness, start_with_app, stop_all_gracefully, wait_for


@pytest.fixture
def sidecar(sidecars: SidecarFactory, monkeypatch: pytest.MonkeyPatch) -> SidecarProcess:
    started = sidecars.start("--app-id", f"pub-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("DAPR_GRPC_PORT", str(started.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(started.http_port))
    return started


def topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def test_streaming_subscribe_receives_events_and_honours_acks(sidecar: SidecarProcess) -> None:
    name = topic()
    with DaprClient() as client:
        subscription = client.subscribe(pubsub_name="pubsub", topic=name)
        try:
            info = httpx.get(f"{sidecar.http_url}/actuator/info").json()
            assert {"pubsubname": "pubsub", "topic": name, "type": "STREAMING"}.items() <= next(
                s for s in info["subscriptions"] if s["topic"] == name
            ).items()
            for n in range(3):
                client.publish_event("pubsub", name, json.dumps({"n": n}), data_content_type="application/json")

            first = subscription.next_message()
            assert json.loads(first.raw_data()) == {"n": 0}
            assert first.topic() == name and first.pubsub_name() == "pubsub"
            subscription.respond_retry(first)  # RETRY: the same event comes again, before the next
            again = subscription.next_message()
            assert again.id() == first.id()
            subscription.respond_success(again)
            second = subscription.next_message()
            assert json.loads(second.raw_data()) == {"n": 1}
            subscription.respond_drop(second)
            third = subscription.next_message()
            assert json.loads(third.raw_data()) == {"n": 2}
            subscription.respond_success(third)
        finally:
            subscription.close()
    wait_for(
        lambda: all(s["topic"] != name for s in httpx.get(f"{sidecar.http_url}/actuator/info").json()["subscriptions"]),
        "the closed stream's subscription to disappear",
    )


def test_a_second_subscription_to_the_same_topic_is_refused(sidecar: SidecarProcess) -> None:
    name = topic()
    with DaprClient() as client:
        subscription = client.subscribe(pubsub_name="pubsub", topic=name)
        try:
            with grpc.insecure_channel(sidecar.grpc_address) as channel:
                from dapr.proto.runtime.v1 import pubsub_pb2

                stub = dapr_pb2_grpc.DaprStub(channel)
                initial = pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                        pubsub_name="pubsub", topic=name
                    )
                )
                with pytest.raises(grpc.RpcError) as err:
                    next(iter(stub.SubscribeTopicEventsAlpha1(iter([initial]))))
                assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
                assert name in str(err.value.details())
        finally:
            subscription.close()


def test_back_pressure_gives_publishers_resource_exhausted(
    sidecars: SidecarFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = {
        "pubsub.yaml": """
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {name: pubsub}
spec:
  type: pubsub.in-memory
  metadata:
  - {name: maxPendingMessages, value: "3"}
"""
    }
    started = sidecars.start("--app-id", "bounded", resources=resources)
    monkeypatch.setenv("DAPR_GRPC_PORT", str(started.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(started.http_port))
    name = topic()
    with DaprClient() as client:
        subscription = client.subscribe(pubsub_name="pubsub", topic=name)
        try:
            for n in range(3):  # one in flight at the subscriber, two queued
                client.publish_event("pubsub", name, f"m{n}")
            with pytest.raises(DaprGrpcError) as err:
                client.publish_event("pubsub", name, "one too many")
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "maxPendingMessages 3" in str(err.value.details()) and name in str(err.value.details())

            response = httpx.post(f"{started.http_url}/v1.0/publish/pubsub/{name}", content=b"x")
            assert response.status_code == 429 and response.json()["errorCode"] == "ERR_PUBSUB_BACKPRESSURE"

            subscription.respond_success(subscription.next_message())  # room for one again, once the ack lands

            def fits() -> bool:
                try:
                    client.publish_event("pubsub", name, "fits again")
                except DaprGrpcError as refused:
                    if refused.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    return False
                return True

            wait_for(fits, "publishing to work again after an ack")
        finally:
            subscription.close()


def test_payloads_are_wrapped_as_cloudevents_unless_raw(sidecar: SidecarProcess) -> None:
    """Published over HTTP and Layotto; received on a Layotto SubscribeTopicEvents stream."""
    name = topic()
    acks: queue.Queue[str | None] = queue.Queue()

    def requests() -> Iterator[layotto.SubscribeTopicEventsRequest]:
        yield layotto.SubscribeTopicEventsRequest(
            initial_request=layotto.SubscribeTopicEventsRequestInitial(pubsub_name="pubsub", topic=name)
        )
        for event_id in iter(acks.get, None):
            yield layotto.SubscribeTopicEventsRequest(
                event_processed=layotto.SubscribeTopicEventsRequestProcessed(
                    id=event_id,
                    status=layotto_callback.TopicEventResponse(status=layotto_callback.TopicEventResponse.SUCCESS),
                )
            )

    http = f"{sidecar.http_url}/v1.0/publish/pubsub/{name}"
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        stub = layotto_grpc.RuntimeStub(channel)
        stream: Any = stub.SubscribeTopicEvents(requests())
        try:
            assert next(stream).HasField("initial_response")
            published = httpx.post(http, json={"sku": "ottava-8"})
            assert published.status_code == 204 and published.headers["message-id"]
            _, call = stub.PublishEvent.with_call(
                layotto.PublishEventRequest(
                    pubsub_name="pubsub", topic=name, data=b"plain", data_content_type="text/plain"
                )
            )
            assert dict(call.initial_metadata())["message-id"]
            raw = httpx.post(
                http,
                content=b"\x00\x01raw",
                params={"metadata.rawPayload": "true"},
                headers={"Content-Type": "application/octet-stream"},
            )
            assert raw.status_code == 204
            own = {"specversion": "1.0", "id": "my-id", "source": "me", "type": "my.type", "data": {"a": 1}}
            own["datacontenttype"] = "application/json"
            httpx.post(http, json=own, headers={"Content-Type": "application/cloudevents+json"})

            received = []
            for _ in range(4):
                message = next(stream).event_message
                received.append(message)
                acks.put(message.id)
        finally:
            acks.put(None)
            stream.cancel()
    json_event, text_event, raw_event, own_event = received
    assert json.loads(json_event.data) == {"sku": "ottava-8"}
    assert json_event.data_content_type == "application/json" and json_event.spec_version == "1.0"
    assert json_event.type == "com.dapr.event.sent" and json_event.metadata["pubsubname"] == "pubsub"
    assert text_event.data == b"plain" and text_event.data_content_type == "text/plain"
    assert raw_event.data == b"\x00\x01raw"
    assert own_event.id == "my-id" and own_event.source == "me" and own_event.type == "my.type"
    assert json.loads(own_event.data) == {"a": 1}


def test_bulk_publish_returns_a_message_id_per_entry(sidecar: SidecarProcess) -> None:
    name = topic()
    with DaprClient() as client:
        subscription = client.subscribe(pubsub_name="pubsub", topic=name)
        try:
            response = client.publish_events("pubsub", name, ["a", "b", "c"], data_content_type="text/plain")
            assert response.failed_entries == []
            ids = [v for k, v in response.headers.items() if k == "message-id"] if response.headers else []
            assert ids, response.headers
            bulk = httpx.post(
                f"{sidecar.http_url}/v1.0-alpha1/publish/bulk/pubsub/{name}",
                json=[{"entryId": "1", "event": {"n": 1}, "contentType": "application/json"}],
            )
            assert bulk.status_code == 204 and bulk.headers["message-id"].startswith("1=")
            got = []
            for _ in range(4):
                message = subscription.next_message()
                got.append(message.raw_data())
                subscription.respond_success(message)
            assert got[:3] == [b"a", b"b", b"c"] and json.loads(got[3]) == {"n": 1}
        finally:
            subscription.close()


def test_bulk_publish_entry_keys_match_in_any_case_as_in_dapr(sidecar: SidecarProcess) -> None:
    # Dapr's Go decoder matches JSON keys case-insensitively; the JavaScript SDK sends `entryID`.
    name = topic()
    with DaprClient() as client:
        subscription = client.subscribe(pubsub_name="pubsub", topic=name)
        try:
            bulk = httpx.post(
                f"{sidecar.http_url}/v1.0-alpha1/publish/bulk/pubsub/{name}",
                json=[
                    {"entryID": "js-1", "event": {"n": 1}, "contentType": "application/json", "metadata": {}},
                    {"ENTRYID": "2", "Event": "two", "CONTENTTYPE": "text/plain"},
                ],
            )
            assert bulk.status_code == 204, bulk.text
            assert sorted(v.split("=")[0] for v in bulk.headers.get_list("message-id")) == ["2", "js-1"]
            got = []
            for _ in range(2):
                message = subscription.next_message()
                got.append((message.raw_data(), message.data_content_type()))
                subscription.respond_success(message)
            assert got == [(b'{"n":1}', "application/json"), (b"two", "text/plain")]
        finally:
            subscription.close()


def test_publish_errors_name_the_pubsub_and_topic(sidecar: SidecarProcess) -> None:
    with DaprClient() as client:
        with pytest.raises(DaprGrpcError) as unknown:
            client.publish_event("nosuch", "t", "x")
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nosuch" in str(unknown.value.details())
        with pytest.raises(DaprGrpcError) as empty:
            client.publish_event("pubsub", "", "x")
        assert "topic is empty" in str(empty.value.details())
    response = httpx.post(f"{sidecar.http_url}/v1.0/publish/nosuch/t", content=b"x")
    assert response.status_code == 400 and response.json()["errorCode"] == "ERR_PUBSUB_NOT_FOUND"


def test_readiness_waits_for_the_app_port_then_reads_subscriptions(sidecars: SidecarFactory, tmp_path: Path) -> None:
    port = free_port()
    started = sidecars.start("--app-id", "late", "--app-port", str(port), "--app-protocol", "http")
    assert started.status == "INIT"
    body = readiness(started)
    assert body["status"] == "INIT"
    assert body["components"]["app"]["details"]["reason"] == f"waiting for app port {port}"
    assert httpx.get(f"{started.http_url}/v1.0/healthz").status_code == 500
    assert httpx.get(f"{started.http_url}/actuator/health/liveness").status_code == 200  # liveness does not wait

    # The app starts on its own, later (not under `ottava run`).
    app = subprocess.Popen(
        [sys.executable, str(APPS / "http_app.py")],
        env={**os.environ, "APP_PORT": str(port), "EVENTS_FILE": str(tmp_path / "events.jsonl")},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: readiness(started)["status"] == "UP", "readiness UP once the app listens")
        info = httpx.get(f"{started.http_url}/actuator/info").json()
        assert any(s["topic"] == "orders" for s in info["subscriptions"])
        with grpc.insecure_channel(started.grpc_address) as channel:
            metadata = dapr_pb2_grpc.DaprStub(channel).GetMetadata(metadata_pb2.GetMetadataRequest())
        assert any(s.topic == "orders" for s in metadata.subscriptions)
    finally:
        app.terminate()
        app.wait(timeout=30)
        stop_all_gracefully(sidecars)


def test_an_app_serving_only_layottos_app_callback_gets_events(
    sidecars: SidecarFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_file = tmp_path / "events.jsonl"
    started = start_with_app(
        sidecars, "layotto-app", "grpc", "layotto_app.py", events_file=events_file, registry_dir=tmp_path / "registry"
    )
    try:
        wait_for(lambda: readiness(started)["status"] == "UP", "the Layotto app's subscriptions to be read")
        monkeypatch.setenv("DAPR_GRPC_PORT", str(started.grpc_port))
        monkeypatch.setenv("DAPR_HTTP_PORT", str(started.http_port))
        with DaprClient() as client:
            client.publish_event("pubsub", "orders", "from dapr", data_content_type="text/plain")
        received = wait_for(lambda: events(events_file), "the event at the Layotto app")
        assert received[0]["topic"] == "orders" and received[0]["data"] == "from dapr"
    finally:
        stop_all_gracefully(sidecars)
