"""The pieces of pub/sub that need no process: routing rules, CloudEvents envelopes, the in-memory broker."""

import asyncio
import base64
import json
from pathlib import Path

import pytest
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.pubsub.base import BrokerFullError, Message
from ottava_sidecar.components.pubsub.in_memory import InMemoryPubSub
from ottava_sidecar.invocation.resolution import Address, AppNotFoundError
from ottava_sidecar.invocation.standalone import LocalRegistry
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.routing import RuleError, compile_rule
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec

EVENT = {"type": "widget", "source": "shop", "data": {"kind": "blue", "qty": 3, "name": "ottava-8"}}


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ('event.type == "widget"', True),
        ("event.type == 'gadget'", False),
        ('event.data.kind == "blue" && event.data.qty > 2', True),
        ('event.data.kind == "red" || event.data.qty >= 3', True),
        ('!(event.type == "widget")', False),
        ('event.data.name.startsWith("ottava")', True),
        ('event.data.name.endsWith("-9")', False),
        ('event.data.name.contains("va-")', True),
        ('event.data.missing == "x"', False),
        ("event.data.qty != 3", False),
    ],
)
def test_routing_rules(rule: str, matches: bool) -> None:
    assert compile_rule(rule).matches(EVENT) is matches


@pytest.mark.parametrize("rule", ['event.type = "x"', "event.type ==", "size(event.type) > 1", "event.type.lower()"])
def test_a_rule_outside_the_subset_is_rejected_naming_it(rule: str) -> None:
    with pytest.raises(RuleError, match="routing rule"):
        compile_rule(rule)


def test_rules_route_in_order_then_default() -> None:
    spec = SubscriptionSpec.create(
        "pubsub", "t", default_path="/other", rules=[('event.type == "widget"', "/widgets"), ("true", "/all")]
    )
    widget = cloudevents.TopicEvent(
        "1", "s", "widget", "1.0", "", b"", "t", "pubsub", "m", 1, envelope={"type": "widget"}
    )
    gadget = cloudevents.TopicEvent(
        "2", "s", "gadget", "1.0", "", b"", "t", "pubsub", "m", 1, envelope={"type": "gadget"}
    )
    assert spec.route(widget) == "/widgets" and spec.route(gadget) == "/all"
    only_rules = SubscriptionSpec.create("pubsub", "t", rules=[('event.type == "widget"', "/widgets")])
    assert only_rules.route(gadget) is None  # no match and no default: dropped


def _unwrap(envelope: cloudevents.Envelope) -> cloudevents.TopicEvent:
    return cloudevents.unwrap(Message("orders", envelope.data, "mid", envelope.content_type), "pubsub")


def test_wrapping_json_text_and_binary() -> None:
    wrap = {"pubsub_name": "pubsub", "topic": "orders", "source": "checkout", "metadata": {}}
    as_json = _unwrap(cloudevents.wrap(b'{"a": 1}', "application/json", **wrap))  # type: ignore[arg-type]
    assert json.loads(as_json.data) == {"a": 1} and as_json.source == "checkout" and as_json.spec_version == "1.0"
    assert as_json.envelope is not None and as_json.envelope["data"] == {"a": 1}
    assert as_json.extensions["topic"] == "orders" and as_json.extensions["pubsubname"] == "pubsub"
    text = _unwrap(cloudevents.wrap(b"hello", "", **wrap))  # type: ignore[arg-type]
    assert text.data == b"hello" and text.data_content_type == "text/plain"
    binary = cloudevents.wrap(b"\xff\x00", "application/octet-stream", **wrap)  # type: ignore[arg-type]
    assert json.loads(binary.data)["data_base64"] == base64.b64encode(b"\xff\x00").decode()
    assert _unwrap(binary).data == b"\xff\x00"


def test_a_json_payload_holding_nan_is_kept_as_text_so_the_event_stays_json() -> None:
    envelope = cloudevents.wrap(
        b'{"price": NaN}', "application/json", pubsub_name="p", topic="t", source="s", metadata={}
    )
    event = json.loads(envelope.data, parse_constant=lambda name: pytest.fail(f"{name} in the CloudEvent"))
    assert event["data"] == '{"price": NaN}'


def test_raw_payloads_and_existing_cloudevents_are_kept() -> None:
    raw = cloudevents.wrap(b"\x01", "", pubsub_name="p", topic="t", source="s", metadata={"rawPayload": "true"})
    assert raw.data == b"\x01" and raw.content_type == "application/octet-stream"
    event = _unwrap(raw)
    assert event.envelope is None and event.data == b"\x01"
    body, content_type = event.http_body(raw_subscription=False)
    assert content_type == cloudevents.CONTENT_TYPE and json.loads(body)["data_base64"] == "AQ=="
    own = json.dumps({"specversion": "1.0", "id": "x", "source": "me", "type": "t", "data": "d"}).encode()
    kept = _unwrap(cloudevents.wrap(own, cloudevents.CONTENT_TYPE, pubsub_name="p", topic="t", source="s", metadata={}))
    assert (kept.id, kept.source, kept.data) == ("x", "me", b"d")


async def test_broker_keeps_order_through_redeliveries_and_bounds_pending() -> None:
    broker = catalogue.lookup("pubsub.in-memory").create(
        "pubsub", {"redeliveryBackoffSeconds": "0.01", "maxPendingMessages": "3"}, app_id="app"
    )
    assert isinstance(broker, InMemoryPubSub)
    seen: list[tuple[bytes, int]] = []
    release, all_seen = asyncio.Event(), asyncio.Event()

    async def handler(message: Message) -> None:
        seen.append((message.data, message.attempt))
        if len(seen) == 5:
            all_seen.set()
        if message.data == b"a" and message.attempt < 3:
            raise RuntimeError("not yet")
        await release.wait()

    await broker.subscribe("t", handler)
    for data in (b"a", b"b", b"c"):
        await broker.publish("t", data)
    with pytest.raises(BrokerFullError, match="maxPendingMessages 3"):
        await broker.publish("t", b"d")
    release.set()
    await asyncio.wait_for(all_seen.wait(), timeout=5)
    assert seen == [(b"a", 1), (b"a", 2), (b"a", 3), (b"b", 1), (b"c", 1)]
    await broker.close()


async def test_local_registry_resolves_live_sidecars_only(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path)
    await registry.register("orders", Address("127.0.0.1", 1234))
    assert await registry.resolve("orders") == Address("127.0.0.1", 1234)
    stale = tmp_path / "orders" / "999999999.json"
    stale.write_text(json.dumps({"host": "127.0.0.1", "port": 1, "pid": 999999999}))
    registry.forget("orders", Address("127.0.0.1", 1234))
    assert await registry.resolve("orders") == Address("127.0.0.1", 1234)
    assert not stale.exists()  # a dead sidecar's entry is cleaned up
    await registry.unregister()
    registry.forget("orders", Address("127.0.0.1", 1234))
    with pytest.raises(AppNotFoundError, match="orders"):
        await registry.resolve("orders")
    with pytest.raises(AppNotFoundError, match="not valid"):
        await registry.resolve("../etc")
