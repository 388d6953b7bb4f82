"""Declarative and bulk subscriptions under `ottava run`, driven with the Dapr Python SDK.

Subscription manifests sit in the resources folder beside the pub/sub component, as
with `dapr run --resources-path`; a `DaprClient` publishes; an HTTP app (FastAPI) and a
gRPC app (`dapr.ext.grpc.App`) receive. Batches are told apart from single events by
what the apps see: the bulk body (HTTP), the `OnBulkTopicEvent` call (gRPC).
"""

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from dapr.clients import DaprClient

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import events, start_with_app, stop_all_gracefully, wait_for, wait_ready

PUBSUB = """\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {name: pubsub}
spec: {type: pubsub.in-memory}
"""


def routed(app_id: str) -> str:
    """A Dapr v2alpha1 Subscription, unchanged: routing rules over the event's data, scoped to `app_id`."""
    return f"""\
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {{name: shapes}}
spec:
  pubsubname: pubsub
  topic: shapes
  routes:
    rules:
    - {{match: 'event.data.kind == "widget"', path: /widgets}}
    - {{match: 'event.data.kind == "gadget"', path: /gadgets}}
    default: /fallback
scopes: [{app_id}]
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {{name: not-mine}}
spec:
  pubsubname: pubsub
  topic: not-mine
  routes: {{default: /fallback}}
scopes: [some-other-app]
"""


BULK_DECLARED = """\
apiVersion: ottava.io/v1alpha1
kind: Subscription
metadata: {name: bulk-declared}
spec:
  pubsubname: pubsub
  topic: bulk-declared
  routes: {default: /batch}
  deadLetterTopic: bulk-dead
  bulkSubscribe: {enabled: true, maxMessagesCount: 100, maxAwaitDurationMs: 20}
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {name: bulk-dead}
spec: {pubsubname: pubsub, topic: bulk-dead, route: /dead}
"""


@dataclass
class App:
    sidecar: SidecarProcess
    events_file: Path
    app_id: str

    def lines(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in events(self.events_file) if all(e.get(k) == v for k, v in match.items())]

    def info(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.sidecar.http_url}/actuator/info").json()
        return body


def start_app(folder: Path, protocol: str, script: str, resources: dict[str, str]) -> tuple[SidecarFactory, App]:
    factory = SidecarFactory(folder)
    events_file = folder / "events.jsonl"
    events_file.touch()
    app_id = f"{protocol}-declared-{uuid.uuid4().hex[:6]}"
    resources_folder = folder / "resources"
    resources_folder.mkdir()
    for name, text in resources.items():
        (resources_folder / name).write_text(text.replace("APP_ID", app_id), encoding="utf-8")
    sidecar = start_with_app(
        factory,
        app_id,
        protocol,
        script,
        events_file=events_file,
        registry_dir=folder / "registry",
        args=("--resources-path", str(resources_folder)),
    )
    wait_ready(sidecar)
    return factory, App(sidecar, events_file, app_id)


@pytest.fixture(scope="module")
def http_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    resources = {"pubsub.yaml": PUBSUB, "routed.yaml": routed("APP_ID"), "bulk.yaml": BULK_DECLARED}
    factory, app = start_app(tmp_path_factory.mktemp("http"), "http", "bulk_http_app.py", resources)
    try:
        yield app
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


@pytest.fixture(scope="module")
def grpc_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    grpc_routes = routed("APP_ID").replace("/widgets", "widgets").replace("/gadgets", "gadgets")
    grpc_routes = grpc_routes.replace("default: /fallback", "default: gadgets")
    bulk = """\
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: bulk-widgets}
spec:
  pubsubname: pubsub
  topic: bulk-widgets
  routes: {default: widgets}
  bulkSubscribe: {enabled: true, maxMessagesCount: 3, maxAwaitDurationMs: 600000}
"""
    resources = {"pubsub.yaml": PUBSUB, "routed.yaml": grpc_routes, "bulk.yaml": bulk}
    factory, app = start_app(tmp_path_factory.mktemp("grpc"), "grpc", "bulk_grpc_app.py", resources)
    try:
        yield app
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


def publish(app: App, topic: str, *items: dict[str, Any]) -> list[str]:
    """Publish each item as JSON with a `DaprClient` that finds the sidecar as apps do (DAPR_*_PORT)."""
    ports = {"DAPR_GRPC_PORT": str(app.sidecar.grpc_port), "DAPR_HTTP_PORT": str(app.sidecar.http_port)}
    with mock.patch.dict(os.environ, ports), DaprClient() as dapr:
        for item in items:
            dapr.publish_event("pubsub", topic, json.dumps(item), data_content_type="application/json")
    return [str(item["marker"]) for item in items]


def at_least(count: int, lines: Callable[[], list[dict[str, Any]]], what: str) -> list[dict[str, Any]]:
    """`lines()` once it holds `count` lines or more (polled, with a deadline)."""
    return wait_for(lambda: found if len(found := lines()) >= count else None, what)


def marked(prefix: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"marker": f"{prefix}-{uuid.uuid4().hex[:8]}", **extra} for _ in range(count)]


def test_routing_rules_of_a_declarative_subscription_reach_the_http_app(http_app: App) -> None:
    items = [*marked("w", 1, kind="widget"), *marked("g", 1, kind="gadget"), *marked("o", 1, kind="other")]
    publish(http_app, "shapes", *items)
    got = at_least(3, lambda: http_app.lines(topic="shapes"), "3 shapes")
    assert {line["data"]["marker"]: line["route"] for line in got} == {
        items[0]["marker"]: "widgets",
        items[1]["marker"]: "gadgets",
        items[2]["marker"]: "fallback",
    }


def test_the_info_endpoint_shows_declarative_subscriptions_and_leaves_out_others_scopes(http_app: App) -> None:
    subscriptions = {s["topic"]: s for s in http_app.info()["subscriptions"]}
    shapes = subscriptions["shapes"]
    assert shapes["declarative"] is True
    assert shapes["type"] == "DECLARATIVE"
    assert shapes["source"] == "Subscription shapes"
    assert shapes["rules"][-1] == {"match": "", "path": "/fallback"}
    assert subscriptions["bulk-declared"]["bulkSubscribe"] == {
        "enabled": True,
        "maxMessagesCount": 100,
        "maxAwaitDurationMs": 20,
    }
    programmatic = subscriptions["bulk-programmatic"]
    assert (programmatic["declarative"], programmatic["source"]) == (False, "GET /dapr/subscribe")
    # The Subscription scoped to another app id is not this app's: not subscribed, and the log says why.
    assert "not-mine" not in subscriptions
    assert f"Subscription not-mine is not for app {http_app.app_id}" in http_app.sidecar.log()


def test_a_bulk_subscription_delivers_full_batches(http_app: App) -> None:
    # maxMessagesCount 5 and a ten-minute maxAwaitDurationMs: only full batches can arrive in time.
    items = marked("full", 10)
    publish(http_app, "bulk-programmatic", *items)
    got = at_least(10, lambda: http_app.lines(topic="bulk-programmatic"), "10")
    assert sorted(line["data"]["marker"] for line in got) == sorted(item["marker"] for item in items)
    batches = {line["batch"]: line["size"] for line in got}
    assert sorted(batches.values()) == [5, 5]
    assert {line["type"] for line in got} == {"com.dapr.event.sent.bulk"}
    assert {line["contentType"] for line in got} == {"application/cloudevents+json"}


def test_each_entry_of_a_batch_is_settled_by_its_own_status(http_app: App) -> None:
    # maxAwaitDurationMs 20: batches smaller than maxMessagesCount go out once it passed.
    ok, retry, drop = marked("ok", 1), marked("retry", 1, verdict="RETRY"), marked("drop", 1, verdict="DROP")
    publish(http_app, "bulk-declared", *ok, *retry, *drop)

    def settled() -> list[dict[str, Any]] | None:
        lines = http_app.lines(topic="bulk-declared", route="batch")
        dead = http_app.lines(route="dead")
        return lines + dead if len(lines) >= 4 and dead else None

    got = wait_for(settled, "the batch entries settled")
    deliveries: dict[str, list[str]] = {}
    for line in got:
        deliveries.setdefault(line["data"]["marker"], []).append(line["route"])
    assert deliveries[ok[0]["marker"]] == ["batch"]
    assert deliveries[retry[0]["marker"]] == ["batch", "batch"]  # RETRY: delivered again, then SUCCESS
    assert deliveries[drop[0]["marker"]] == ["batch", "dead"]  # DROP: moved to the dead-letter topic


def test_routing_rules_of_a_declarative_subscription_reach_the_sdk_grpc_app(grpc_app: App) -> None:
    items = [*marked("w", 1, kind="widget"), *marked("g", 1, kind="gadget")]
    publish(grpc_app, "shapes", *items)
    got = at_least(2, lambda: grpc_app.lines(topic="shapes"), "2 shapes")
    assert {line["data"]["marker"]: line["route"] for line in got} == {
        items[0]["marker"]: "widgets",
        items[1]["marker"]: "gadgets",
    }
    shapes = next(s for s in grpc_app.info()["subscriptions"] if s["topic"] == "shapes")
    assert shapes["declarative"] is True


def test_a_bulk_subscription_reaches_the_sdk_grpc_app_in_one_call(grpc_app: App) -> None:
    before = len(grpc_app.lines(call="OnBulkTopicEvent"))
    single_before = len(grpc_app.lines(call="OnTopicEvent"))
    items = marked("bulk", 3)
    publish(grpc_app, "bulk-widgets", *items)
    got = at_least(3, lambda: grpc_app.lines(topic="bulk-widgets"), "3 events")
    assert sorted(line["data"]["marker"] for line in got) == sorted(item["marker"] for item in items)
    assert {line["route"] for line in got} == {"widgets"}
    assert len(grpc_app.lines(call="OnBulkTopicEvent")) == before + 1
    assert len(grpc_app.lines(call="OnTopicEvent")) == single_before
