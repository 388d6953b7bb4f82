"""TrafficRoute's rules without sidecars: what the model refuses (and says), and what the router decides.

The same rules with real sidecars and apps are in `tests/test_traffic_routing.py`.
"""

import asyncio
import random
import time
from typing import Any

import grpc
import pytest
from ottava_sidecar.invocation import traffic
from ottava_sidecar.invocation.messages import InvocationRequest
from ottava_sidecar.resources.manifests import describe_errors
from ottava_sidecar.resources.models import TrafficRoute
from pydantic import ValidationError


def route(*rules: dict[str, Any], name: str = "billing") -> TrafficRoute:
    return TrafficRoute.model_validate(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "TrafficRoute",
            "metadata": {"name": name},
            "spec": {"rules": rules},
        }
    )


def problems(*rules: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as raised:
        route(*rules)
    return describe_errors(raised.value)


def request(caller: str = "checkout", **headers: str) -> InvocationRequest:
    return InvocationRequest("hello", headers=list(headers.items()), caller_app_id=caller)


def test_rules_that_cannot_route_are_refused_naming_the_field() -> None:
    assert "spec.rules.0: Value error, the rule names no destination" in problems({"match": {"callerAppId": "a"}})
    assert "weights add up to 110 (v1=90 + v2=20), not 100" in problems(
        {"destinations": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 20}]}
    )
    assert "name version(s) v1 more than once" in problems(
        {"destinations": [{"version": "v1", "weight": 50}, {"version": "v1", "weight": 50}]}
    )
    assert problems({"destinations": [{"version": "v1", "weight": 120}]}).startswith(
        "spec.rules.0.destinations.0.weight"
    )
    assert problems({"fault": {"abort": {"percent": 0}}}).startswith("spec.rules.0.fault.abort.percent")
    assert problems({"fault": {"abort": {"httpStatus": 200}}}).startswith("spec.rules.0.fault.abort.httpStatus")
    assert "a fault sets delay, abort or both" in problems({"fault": {}})
    assert "'soon' is not a duration" in problems({"fault": {"delay": {"fixedDelay": "soon"}}})
    assert "set exactly one of exact, prefix and regex" in problems(
        {"match": {"headers": {"x": {"exact": "a", "prefix": "b"}}}, "destinations": [{"version": "v1"}]}
    )
    assert "is not a regular expression" in problems(
        {"match": {"headers": {"x": {"regex": "("}}}, "destinations": [{"version": "v1"}]}
    )
    assert "String should match pattern" in problems({"destinations": [{"version": "v 2"}]})
    assert "spec.rules.0.match.color: unknown field" in problems(
        {"match": {"color": "red"}, "destinations": [{"version": "v1"}]}
    )


def test_the_first_matching_rule_decides_and_unmatched_calls_go_anywhere() -> None:
    router = traffic.TrafficRouter(random.Random(1))
    router.set_routes(
        [
            route(
                {"match": {"headers": {"X-Canary": {"exact": "on"}}}, "destinations": [{"version": "v2"}]},
                {"match": {"callerAppId": "reports"}, "destinations": [{"version": "v3"}]},
                {"match": {"headers": {"x-user": {"regex": "admin-[0-9]+"}}}, "destinations": [{"version": "v4"}]},
            )
        ],
        "test",
    )

    def version(call: InvocationRequest, target: str = "billing") -> str | None:
        decision = router.decide(target, call)
        return decision.version if decision is not None else "no rule"

    assert version(request(**{"x-canary": "on"})) == "v2"
    assert version(request("reports", **{"x-canary": "on"})) == "v2", "the first rule that matches decides"
    assert version(request("reports")) == "v3"
    assert version(request(**{"x-user": "admin-42"})) == "v4"
    assert version(request(**{"x-user": "admin-42x"})) == "no rule", "a regex matches the whole value"
    assert version(request(**{"x-canary": "On"})) == "no rule"
    assert version(request(**{"x-canary": "on"}), target="orders") == "no rule", "another app has no route"


def test_weights_spread_calls_in_their_proportions() -> None:
    router = traffic.TrafficRouter(random.Random(7))
    router.set_routes(
        [route({"destinations": [{"version": "v1", "weight": 70}, {"version": "v2", "weight": 30}]})], "t"
    )
    picked = [d.version for d in (router.decide("billing", request()) for _ in range(10_000)) if d is not None]
    assert abs(picked.count("v2") / len(picked) - 0.30) < 0.02
    router.set_routes(
        [route({"destinations": [{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}]})], "t"
    )
    assert {d.version for d in (router.decide("billing", request()) for _ in range(1000)) if d is not None} == {"v1"}


def test_a_rule_with_a_fault_and_no_destination_keeps_every_version() -> None:
    router = traffic.TrafficRouter(random.Random(3))
    router.set_routes([route({"fault": {"abort": {"httpStatus": 429, "percent": 25}}})], "t")
    decisions = [router.decide("billing", request()) for _ in range(4000)]
    assert all(d is not None and d.version is None for d in decisions)
    aborted = sum(1 for d in decisions if d is not None and d.abort_status == 429)
    assert 0.2 < aborted / 4000 < 0.3


def test_an_abort_ends_the_call_with_its_status_and_a_message_naming_the_rule() -> None:
    router = traffic.TrafficRouter()
    router.set_routes([route({"destinations": [{"version": "v2"}], "fault": {"abort": {"httpStatus": 404}}})], "t")
    with pytest.raises(traffic.Injected) as raised:
        asyncio.run(router.route("billing", request(), time.monotonic() + 5, 5))
    assert raised.value.code is grpc.StatusCode.NOT_FOUND and raised.value.http_status == 404
    assert raised.value.message == (
        "call of hello on app 'billing' aborted with HTTP 404 by fault injection (TrafficRoute billing, rule 0)"
    )


def test_a_delay_past_the_deadline_fails_at_the_deadline_naming_both() -> None:
    router = traffic.TrafficRouter()
    router.set_routes([route({"fault": {"delay": {"fixedDelay": "1m"}}})], "t")
    with pytest.raises(traffic.Injected) as raised:
        asyncio.run(router.route("billing", request(), time.monotonic() + 0.05, 0.05))
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED and raised.value.http_status == 504
    assert (
        "did not answer hello within 0.05s: TrafficRoute billing, rule 0 injects a delay of 60s" in raised.value.message
    )


def test_routes_are_replaced_whole_and_described() -> None:
    router = traffic.TrafficRouter()
    router.set_routes(
        [route({"destinations": [{"version": "v1"}]}), route({"destinations": [{"version": "v9"}]}, name="a")], "x"
    )
    assert router.routed_apps == ["a", "billing"]
    [first, second] = router.describe()
    assert first["appId"] == "a" and first["source"] == "x"
    assert second["spec"] == {"rules": [{"destinations": [{"version": "v1", "weight": 100}]}]}
    router.set_routes([], "x")
    assert router.routed_apps == [] and router.decide("billing", request()) is None


async def test_the_clusters_traffic_routes_reach_the_router_as_they_change(caplog: pytest.LogCaptureFixture) -> None:
    """What the watch of `trafficroutes.ottava.io` hands over: every valid TrafficRoute, after each event.

    The watch itself (list, watch, resume) is the Reflector of Components and Configurations
    (tests/test_kube_watch.py, and the e2e suite on a real apiserver).
    """
    from ottava_sidecar.components.registry import Registry
    from ottava_sidecar.kube.client import Credentials, KubeClient
    from ottava_sidecar.runtime.kubernetes import KubernetesWiring

    router = traffic.TrafficRouter()
    client = KubeClient(Credentials(server="http://127.0.0.1:1", ssl_context=False))
    wiring = KubernetesWiring(
        Registry("checkout"),
        client,
        "shop",
        None,
        lambda _: None,
        lambda: True,
        on_traffic_routes=lambda routes: router.set_routes(routes, "the cluster"),
    )
    assert wiring.traffic_routes.path == "/apis/ottava.io/v1alpha1/namespaces/shop/trafficroutes"
    good = {**route({"destinations": [{"version": "v2"}]}).model_dump(by_alias=True), "status": {"conditions": []}}
    bad = {**route(name="orders").model_dump(by_alias=True), "spec": {"rules": [{"destinations": []}]}}
    for name, obj in (("billing", good), ("orders", bad)):
        wiring.traffic_routes.objects[name] = obj
        await wiring._traffic_route_event("ADDED", obj)
    assert router.routed_apps == ["billing"]
    decision = router.decide("billing", request())
    assert decision is not None and decision.version == "v2"
    assert (
        "ignoring invalid TrafficRoute orders: spec.rules.0: Value error, the rule names no destination" in caplog.text
    )
    del wiring.traffic_routes.objects["billing"]
    await wiring._traffic_route_event("DELETED", good)
    assert router.routed_apps == [] and router.decide("billing", request()) is None
    await client.close()


def test_the_wiring_client_has_room_for_reads_beside_every_watch() -> None:
    """Every watch holds one of the client's connections while it runs; with as many watches as
    connections, reading a Component's Secret waited for a free one until it timed out (seen on
    real pods once TrafficRoutes and Resiliencies were both followed)."""
    from ottava_sidecar.components.registry import Registry
    from ottava_sidecar.kube.client import Credentials, KubeClient
    from ottava_sidecar.kube.watch import Reflector
    from ottava_sidecar.runtime.kubernetes import CONNECTIONS, WATCHES, KubernetesWiring

    client = KubeClient(Credentials(server="http://127.0.0.1:1", ssl_context=False))
    wiring = KubernetesWiring(Registry("checkout"), client, "shop", "appconfig", lambda _: None, lambda: True)
    watches = [value for value in vars(wiring).values() if isinstance(value, Reflector)]
    assert len(watches) == WATCHES, [w.what for w in watches]
    assert CONNECTIONS > WATCHES
