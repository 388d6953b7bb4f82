"""`GET /actuator/info` tells a platform team what it needs to troubleshoot a sidecar.

Real `ottava run` processes and real clients: a component whose file appears after start
(its last error stays once it is UP), apps that declare subscriptions over HTTP and gRPC, a
streaming subscription and configuration subscriptions over gRPC (Dapr's and Layotto's),
and a call to another sidecar (the peer it resolved).
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
from dapr.proto.runtime.v1 import configuration_pb2, dapr_pb2_grpc, pubsub_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import ROOT, start_with_app, stop_all_gracefully, wait_for, wait_ready

SECRETS_STORE = """
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: vault}}
spec:
  type: secretstores.local.file
  ignoreErrors: true
  metadata:
  - {{name: secretsFile, value: "{path}"}}
---
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: orders}}
spec:
  type: state.in-memory
"""


def info(sidecar: SidecarProcess) -> dict[str, Any]:
    answer = httpx.get(f"{sidecar.http_url}/actuator/info")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def component(sidecar: SidecarProcess, name: str) -> dict[str, Any]:
    return next(c for c in info(sidecar)["components"] if c["name"] == name)


def test_a_component_that_recovered_still_shows_its_last_error(sidecars: SidecarFactory, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"  # not there yet
    sidecar = sidecars.start("--app-id", "recovering", resources={"vault.yaml": SECRETS_STORE.format(path=secrets)})

    down = component(sidecar, "vault")
    assert down["status"] == "DOWN"
    assert str(secrets) in down["reason"]
    assert down["lastError"]["reason"] == down["reason"]
    assert down["lastError"]["at"].endswith("Z")
    # Info keeps its other fields.
    body = info(sidecar)
    assert body["appId"] == "recovering" and body["mode"] == "standalone" and body["version"]

    secrets.write_text(json.dumps({"token": "t0k3n"}), encoding="utf-8")
    up = wait_for(lambda: (c := component(sidecar, "vault"))["status"] == "UP" and c, "vault to be UP")
    assert "reason" not in up
    assert up["lastError"]["reason"] == down["reason"]
    assert str(secrets) in up["lastError"]["reason"]
    got = httpx.get(f"{sidecar.http_url}/v1.0/secrets/vault/token")
    assert got.status_code == 200 and got.json() == {"token": "t0k3n"}

    # A component that never failed has no last error.
    assert "lastError" not in component(sidecar, "orders")


async def _subscribe_to(topic: str) -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1]:
    initial = pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(pubsub_name="pubsub", topic=topic)
    yield pubsub_pb2.SubscribeTopicEventsRequestAlpha1(initial_request=initial)
    await asyncio.Event().wait()  # open until the call is cancelled


async def test_info_shows_where_subscriptions_came_from_and_the_peers_invocation_resolved(
    sidecars: SidecarFactory, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    target_id = f"orders-{uuid.uuid4().hex[:6]}"
    try:
        target = start_with_app(
            sidecars, target_id, "http", "http_app.py", events_file=tmp_path / "events", registry_dir=registry
        )
        wait_ready(target)
        caller = sidecars.start(
            "--app-id", "checkout", env={"OTTAVA_REGISTRY_DIR": str(registry), "PYTHONPATH": str(ROOT)}
        )

        # The app's subscriptions, read from its GET /dapr/subscribe.
        declared = {s["topic"]: s for s in info(target)["subscriptions"]}
        assert declared["orders"]["pubsubname"] == "pubsub"
        assert declared["orders"]["type"] == "PROGRAMMATIC"
        assert declared["orders"]["source"] == "GET /dapr/subscribe"
        assert declared["orders"]["declarative"] is False
        assert declared["orders"]["rules"][-1]["path"]  # Dapr's HTTP metadata fields, unchanged
        # A gRPC app's, read from its ListTopicSubscriptions.
        grpc_target = start_with_app(
            sidecars,
            f"stock-{uuid.uuid4().hex[:6]}",
            "grpc",
            "grpc_app.py",
            events_file=tmp_path / "events",
            registry_dir=registry,
        )
        wait_ready(grpc_target)
        sources = {(s["topic"], s["source"], s["declarative"]) for s in info(grpc_target)["subscriptions"]}
        assert ("orders", "ListTopicSubscriptions", False) in sources

        # No call yet: no peer. One call: the target's sidecar, at the address it registered.
        assert info(caller)["peers"] == []
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(f"{caller.http_url}/v1.0/invoke/{target_id}/method/echo/hello", content=b"hi")
        assert answer.status_code == 200, answer.text
        registered = json.loads(next((registry / target_id).glob("*.json")).read_text(encoding="utf-8"))
        peers = info(caller)["peers"]
        assert [(p["appId"], p["address"]) for p in peers] == [
            (target_id, f"{registered['host']}:{registered['port']}")
        ]
        assert peers[0]["resolvedAt"].endswith("Z")
        assert info(target)["peers"] == []  # the callee resolved nobody

        # A streaming subscription is listed as such while it is open.
        async with grpc.aio.insecure_channel(caller.grpc_address) as channel:
            stub = dapr_pb2_grpc.DaprStub(channel)
            stream = stub.SubscribeTopicEventsAlpha1(_subscribe_to("shipments"))
            assert (await asyncio.wait_for(stream.read(), 10)).HasField("initial_response")
            streamed = [s for s in info(caller)["subscriptions"] if s["topic"] == "shipments"]
            assert [(s["type"], s["source"], s["declarative"]) for s in streamed] == [("STREAMING", "streaming", False)]
            stream.cancel()
        wait_for(lambda: not any(s["topic"] == "shipments" for s in info(caller)["subscriptions"]), "stream closed")
    finally:
        stop_all_gracefully(sidecars)


async def test_open_configuration_subscriptions_are_listed_until_closed(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start("--app-id", "settings")
    assert info(sidecar)["configurationSubscriptions"] == []
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        dapr = dapr_pb2_grpc.DaprStub(channel)
        request = configuration_pb2.SubscribeConfigurationRequest(store_name="configstore", keys=["color", "size"])
        stream = dapr.SubscribeConfiguration(request)
        first = await asyncio.wait_for(stream.read(), 10)
        assert first.id

        layotto_requests: asyncio.Queue[layotto.SubscribeConfigurationRequest] = asyncio.Queue()
        await layotto_requests.put(
            layotto.SubscribeConfigurationRequest(store_name="configstore", app_id="shop", keys=["theme"])
        )

        async def outgoing() -> AsyncIterator[layotto.SubscribeConfigurationRequest]:
            while True:
                yield await layotto_requests.get()

        stub = layotto_grpc.RuntimeStub(channel)
        layotto_stream = stub.SubscribeConfiguration(outgoing())
        # Polled off the event loop, which sends the Layotto request meanwhile.
        listed = await asyncio.to_thread(
            wait_for,
            lambda: len(subs := info(sidecar)["configurationSubscriptions"]) == 2 and subs,
            "two subscriptions",
        )
        by_api = {s["api"]: s for s in listed}
        assert by_api["dapr"]["id"] == first.id
        assert by_api["dapr"]["store"] == "configstore"
        assert by_api["dapr"]["keys"] == ["color", "size"]
        assert by_api["dapr"]["appId"] == "settings"
        assert by_api["layotto"]["keys"] == ["theme"] and by_api["layotto"]["appId"] == "shop"
        assert by_api["layotto"]["id"] and by_api["layotto"]["since"].endswith("Z")

        unsubscribed = await dapr.UnsubscribeConfiguration(
            configuration_pb2.UnsubscribeConfigurationRequest(store_name="configstore", id=first.id)
        )
        assert unsubscribed.ok
        await asyncio.to_thread(
            wait_for,
            lambda: [s["api"] for s in info(sidecar)["configurationSubscriptions"]] == ["layotto"],
            "the Dapr subscription to go",
        )
        stream.cancel()
        layotto_stream.cancel()
    wait_for(lambda: info(sidecar)["configurationSubscriptions"] == [], "the Layotto stream to go")
