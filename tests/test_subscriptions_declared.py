"""Declarative subscriptions at runtime, and bulk delivery over both app channels.

* `Messaging.declare`: what the cluster's Subscription watch drives: declared before the
  app is connected, opened with it; changed, added and removed while the app runs.
* The app channels' batches: a real aiohttp app and a real gRPC server of Dapr's
  `AppCallback` (and one that serves only `AppCallbackAlpha`, one that serves no bulk
  method) answer each entry; bulk settings are read from the apps' subscription lists.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from ottava_sidecar.appchannel.grpc import GrpcAppChannel
from ottava_sidecar.appchannel.http import HttpAppChannel
from ottava_sidecar.components.pubsub.base import Message, PubSub
from ottava_sidecar.components.registry import Registry
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.delivery import BatchEntry
from ottava_sidecar.messaging.runtime import Messaging
from ottava_sidecar.messaging.subscriptions import Bulk, Kind, SubscriptionSpec, Verdict, declared_for
from ottava_sidecar.resources.models import Component, DeclarativeSubscription


def pubsub() -> Component:
    return Component.model_validate(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "pubsub"},
            "spec": {"type": "pubsub.in-memory"},
        }
    )


def subscription(name: str, topic: str, route: str, scopes: list[str] | None = None) -> DeclarativeSubscription:
    return DeclarativeSubscription.model_validate(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Subscription",
            "metadata": {"name": name},
            "spec": {"pubsubname": "pubsub", "topic": topic, "routes": {"default": route}},
            "scopes": scopes or [],
        }
    )


class Recorder:
    """An HTTP app recording (route, data) of each event."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        await self.received.put((request.path, event.get("data")))
        return web.json_response({"status": "SUCCESS"})


@pytest.fixture
async def http_app() -> AsyncIterator[tuple[Recorder, HttpAppChannel]]:
    recorder = Recorder()
    server = web.Application()
    server.router.add_post("/{route}", recorder.handle)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    channel = HttpAppChannel("shipping", "127.0.0.1", runner.addresses[0][1], timeout=5)
    yield recorder, channel
    await channel.close()
    await runner.cleanup()


async def publish(broker: PubSub[Any], topic: str, data: dict[str, Any]) -> None:
    envelope = cloudevents.wrap(
        json.dumps(data).encode(), "application/json", pubsub_name="pubsub", topic=topic, source="t", metadata={}
    )
    await broker.publish(topic, envelope.data, content_type=envelope.content_type)


def test_only_the_subscriptions_scoped_to_the_app_are_its_own() -> None:
    specs = declared_for(
        "shipping",
        [
            subscription("mine", "orders", "/orders", ["shipping"]),
            subscription("everyone", "news", "/news"),
            subscription("theirs", "bills", "/bills", ["billing"]),
        ],
    )
    assert [(s.name, s.topic, s.kind) for s in specs] == [
        ("mine", "orders", Kind.DECLARATIVE),
        ("everyone", "news", Kind.DECLARATIVE),
    ]


async def test_declared_subscriptions_open_with_the_app_and_follow_changes(
    http_app: tuple[Recorder, HttpAppChannel],
) -> None:
    recorder, channel = http_app
    registry = Registry("shipping")
    await registry.load([pubsub()])
    messaging = Messaging(registry)
    try:
        # Declared before the app is connected: kept until it is.
        assert await messaging.declare(declared_for("shipping", [subscription("orders", "orders", "/first")])) == []
        assert messaging.subscriptions() == []
        own = SubscriptionSpec.create("pubsub", "orders", default_path="/own")
        other = SubscriptionSpec.create("pubsub", "news", default_path="/news")
        problems = await messaging.subscribe_app(channel, [own, other])
        # The app's own subscription to the same topic is left out, and said so.
        assert len(problems) == 1 and "already has a DECLARATIVE subscription" in problems[0]
        assert sorted((s.topic, s.kind.value) for s in messaging.subscriptions()) == [
            ("news", "PROGRAMMATIC"),
            ("orders", "DECLARATIVE"),
        ]
        broker = messaging.broker("pubsub")
        await publish(broker, "orders", {"n": 1})
        assert await asyncio.wait_for(recorder.received.get(), 5) == ("/first", {"n": 1})

        # Changed (a new route): from now on events go to the new route.
        await messaging.declare(declared_for("shipping", [subscription("orders", "orders", "/second")]))
        await publish(broker, "orders", {"n": 2})
        assert await asyncio.wait_for(recorder.received.get(), 5) == ("/second", {"n": 2})

        # Added, and the first one deleted.
        await messaging.declare(declared_for("shipping", [subscription("bills", "bills", "/bills")]))
        assert sorted(s.topic for s in messaging.subscriptions()) == ["bills", "news"]
        await publish(broker, "bills", {"n": 3})
        assert await asyncio.wait_for(recorder.received.get(), 5) == ("/bills", {"n": 3})
    finally:
        await messaging.close()
        await registry.close()


def entries(*items: dict[str, Any]) -> list[BatchEntry]:
    batch = []
    for n, item in enumerate(items):
        envelope = cloudevents.wrap(
            json.dumps(item).encode(), "application/json", pubsub_name="pubsub", topic="orders", source="t", metadata={}
        )
        event = cloudevents.unwrap(Message("orders", envelope.data, f"m{n}", envelope.content_type), "pubsub")
        batch.append(BatchEntry(f"e{n}", event, {"k": "v"}))
    return batch


BULK = SubscriptionSpec.create("pubsub", "orders", default_path="/batch", bulk=Bulk(10, 100))


class BulkHttpApp:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answer: tuple[int, Any] = (200, None)

    async def subscribe(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {"pubsubname": "pubsub", "topic": "orders", "route": "/batch", "bulkSubscribe": {"enabled": True}},
                {
                    "pubsubname": "pubsub",
                    "topic": "big",
                    "route": "/big",
                    "bulkSubscribe": {"enabled": True, "maxMessagesCount": 500, "maxAwaitDurationMs": 0},
                },
                {"pubsubname": "pubsub", "topic": "single", "route": "/one", "bulkSubscribe": {"enabled": False}},
            ]
        )

    async def batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        status, answer = self.answer
        if answer is None:
            answer = {
                "statuses": [{"entryId": e["entryId"], "status": e["event"]["data"]["v"]} for e in body["entries"]]
            }
        return web.json_response(answer, status=status)


async def test_an_http_app_gets_dapr_bulk_bodies_and_answers_each_entry() -> None:
    app = BulkHttpApp()
    server = web.Application()
    server.router.add_get("/dapr/subscribe", app.subscribe)
    server.router.add_post("/batch", app.batch)
    runner = web.AppRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    channel = HttpAppChannel("shipping", "127.0.0.1", runner.addresses[0][1], timeout=5)
    try:
        listed = await channel.list_subscriptions()
        assert [(s.topic, s.bulk) for s in listed.specs] == [
            ("orders", Bulk(100, 1000)),  # Dapr's defaults
            ("big", Bulk(500, 0)),
            ("single", None),
        ]
        verdicts = await channel.deliver_bulk(BULK, entries({"v": "SUCCESS"}, {"v": "RETRY"}, {"v": "DROP"}), "/batch")
        assert verdicts == {"e0": Verdict.SUCCESS, "e1": Verdict.RETRY, "e2": Verdict.DROP}
        body = app.bodies[-1]
        assert (body["type"], body["topic"], body["pubsubname"]) == ("com.dapr.event.sent.bulk", "orders", "pubsub")
        first = body["entries"][0]
        assert (first["entryId"], first["contentType"], first["metadata"]) == (
            "e0",
            "application/cloudevents+json",
            {"k": "v"},
        )
        assert first["event"]["data"] == {"v": "SUCCESS"} and first["event"]["specversion"] == "1.0"

        app.answer = (200, {"statuses": [{"entryId": "e0", "status": "SUCCESS"}]})  # e1 left out: redelivered
        assert await channel.deliver_bulk(BULK, entries({"v": 1}, {"v": 2}), "/batch") == {"e0": Verdict.SUCCESS}
        app.answer = (200, {})  # no statuses at all: every entry delivered
        assert await channel.deliver_bulk(BULK, entries({"v": 1}), "/batch") == {"e0": Verdict.SUCCESS}
        assert await channel.deliver_bulk(BULK, entries({"v": 1}), "/nowhere") == {"e0": Verdict.DROP}  # 404
        app.answer = (500, {"error": "down"})
        with pytest.raises(Exception, match="answered a batch of 1 events with HTTP 500"):
            await channel.deliver_bulk(BULK, entries({"v": 1}), "/batch")
    finally:
        await channel.close()
        await runner.cleanup()


class GrpcApp(appcallback_pb2_grpc.AppCallbackServicer, appcallback_pb2_grpc.AppCallbackAlphaServicer):
    """Dapr's AppCallback; `bulk` says which bulk method it serves ("stable", "alpha" or "")."""

    def __init__(self, bulk: str) -> None:
        self.bulk = bulk
        self.calls: list[str] = []

    def _answer(self, request: Any) -> Any:
        return appcallback_pb2.TopicEventBulkResponse(
            statuses=[
                appcallback_pb2.TopicEventBulkResponseEntry(
                    entry_id=e.entry_id,
                    status=appcallback_pb2.TopicEventResponse.TopicEventResponseStatus.Value(
                        json.loads(e.cloud_event.data)["v"]
                    ),
                )
                for e in request.entries
            ]
        )

    async def ListTopicSubscriptions(self, request: Any, context: Any) -> Any:
        sub = appcallback_pb2.TopicSubscription(pubsub_name="pubsub", topic="orders")
        sub.bulk_subscribe.enabled = True
        sub.bulk_subscribe.max_messages_count = 7
        return appcallback_pb2.ListTopicSubscriptionsResponse(subscriptions=[sub])

    async def OnBulkTopicEvent(self, request: Any, context: Any) -> Any:
        if self.bulk != "stable":
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        self.calls.append(f"OnBulkTopicEvent {request.type} {request.path} {len(request.entries)}")
        return self._answer(request)

    async def OnBulkTopicEventAlpha1(self, request: Any, context: Any) -> Any:
        if self.bulk != "alpha":
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        self.calls.append(f"OnBulkTopicEventAlpha1 {len(request.entries)}")
        return self._answer(request)

    async def OnTopicEvent(self, request: Any, context: Any) -> Any:
        self.calls.append("OnTopicEvent")
        status = json.loads(request.data)["v"]
        return appcallback_pb2.TopicEventResponse(
            status=appcallback_pb2.TopicEventResponse.TopicEventResponseStatus.Value(status)
        )


@pytest.mark.parametrize(
    ("bulk", "calls"),
    [
        ("stable", ["OnBulkTopicEvent com.dapr.event.sent.bulk /batch 2"]),
        ("alpha", ["OnBulkTopicEventAlpha1 2"]),
        ("", ["OnTopicEvent", "OnTopicEvent"]),
    ],
)
async def test_a_grpc_app_gets_on_bulk_topic_event_or_else_one_event_at_a_time(bulk: str, calls: list[str]) -> None:
    app = GrpcApp(bulk)
    server = grpc.aio.server()
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(app, server)
    appcallback_pb2_grpc.add_AppCallbackAlphaServicer_to_server(app, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = GrpcAppChannel("shipping", "127.0.0.1", port, timeout=5)
    try:
        listed = await channel.list_subscriptions()
        assert [(s.topic, s.bulk) for s in listed.specs] == [("orders", Bulk(7, 1000))]
        verdicts = await channel.deliver_bulk(BULK, entries({"v": "SUCCESS"}, {"v": "DROP"}), "/batch")
        assert verdicts == {"e0": Verdict.SUCCESS, "e1": Verdict.DROP}
        assert app.calls == calls
    finally:
        await channel.close()
        await server.stop(None)


async def test_the_clusters_subscriptions_reach_the_sidecar_as_they_change(caplog: pytest.LogCaptureFixture) -> None:
    """What the watch of `subscriptions.ottava.io` hands over: every valid Subscription, after each event.

    The watch itself (list, watch, resume) is the Reflector of Components and
    Configurations (tests/test_kube_watch.py, and the e2e suite on a real apiserver).
    """
    from ottava_sidecar.kube.client import Credentials, KubeClient
    from ottava_sidecar.runtime.kubernetes import KubernetesWiring

    seen: list[list[str]] = []

    async def on_subscriptions(resources: list[DeclarativeSubscription]) -> None:
        seen.append([r.name for r in resources])

    client = KubeClient(Credentials(server="http://127.0.0.1:1", ssl_context=False))
    wiring = KubernetesWiring(
        Registry("shipping"), client, "shop", None, lambda _: None, lambda: True, on_subscriptions=on_subscriptions
    )
    assert wiring.subscriptions.path == "/apis/ottava.io/v1alpha1/namespaces/shop/subscriptions"
    good = {**subscription("orders", "orders", "/orders").model_dump(by_alias=True), "status": {"conditions": []}}
    bad = {"apiVersion": "ottava.io/v1alpha1", "kind": "Subscription", "metadata": {"name": "bad"}, "spec": {}}
    for name, obj in (("orders", good), ("bad", bad)):
        wiring.subscriptions.objects[name] = obj
        await wiring._subscription_event("ADDED", obj)
    del wiring.subscriptions.objects["orders"]
    await wiring._subscription_event("DELETED", good)
    assert seen == [["orders"], ["orders"], []]
    assert "ignoring invalid Subscription bad: spec.pubsubname: Field required" in caplog.text
    await client.close()
