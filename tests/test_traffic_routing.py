"""Traffic routing between app versions, with standalone sidecars and real apps.

App `billing` runs twice, at v1 and at v2, each behind its own sidecar (`ottava run
--app-version`); two callers, `checkout` and `reports`, share a resources folder whose
TrafficRoute each test rewrites while everything runs, as a user edits it. What each
version received is counted by the apps themselves (`GET /received`), not by the callers.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from dapr.clients import DaprClient
from dapr.clients.grpc.client import DaprGrpcClient
from ottava_sidecar.resources.models import TrafficRoute
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import APPS, ROOT, free_port, stop_all_gracefully, wait_for, wait_ready


@dataclass
class Version:
    name: str
    sidecar: SidecarProcess
    app_port: int

    def received(self) -> int:
        count: int = httpx.get(f"http://127.0.0.1:{self.app_port}/received").json()["count"]
        return count


@dataclass
class Stack:
    target: str  # billing's app id
    v1: Version
    v2: Version
    checkout: SidecarProcess
    reports: SidecarProcess  # --app-timeout 1
    folder: Path  # the callers' resources folder
    registry: Path

    def received(self) -> dict[str, int]:
        return {"v1": self.v1.received(), "v2": self.v2.received()}


def start_version(factory: SidecarFactory, app_id: str, version: str, registry: Path) -> Version:
    port = free_port()
    sidecar = factory.start(
        "--app-id",
        app_id,
        "--app-version",
        version,
        "--app-port",
        str(port),
        "--",
        sys.executable,
        str(APPS / "versioned_app.py"),
        env={"OTTAVA_REGISTRY_DIR": str(registry), "PYTHONPATH": str(ROOT), "APP_VERSION": version},
    )
    return Version(version, sidecar, port)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("routing")
    registry, folder = base / "registry", base / "resources"
    folder.mkdir()
    factory = SidecarFactory(base)
    suffix = uuid.uuid4().hex[:6]
    target = f"billing-{suffix}"
    try:
        v1 = start_version(factory, target, "v1", registry)
        v2 = start_version(factory, target, "v2", registry)
        env = {"OTTAVA_REGISTRY_DIR": str(registry)}
        checkout = factory.start("--app-id", "checkout", "--resources-path", str(folder), env=env)
        reports = factory.start("--app-id", "reports", "--resources-path", str(folder), "--app-timeout", "1", env=env)
        for sidecar in (v1.sidecar, v2.sidecar, checkout, reports):
            wait_ready(sidecar)
        yield Stack(target, v1, v2, checkout, reports, folder, registry)
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


def info(sidecar: SidecarProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{sidecar.http_url}/actuator/info").json()
    return body


def apply_rules(stack: Stack, rules: list[dict[str, Any]]) -> None:
    """Write billing's TrafficRoute into the callers' folder, and wait until both callers follow it."""
    document = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "TrafficRoute",
        "metadata": {"name": stack.target},
        "spec": {"rules": rules},
    }
    (stack.folder / "routes.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    expected = json.loads(
        json.dumps(TrafficRoute.model_validate(document).spec.model_dump(by_alias=True, exclude_none=True))
    )
    for caller in (stack.checkout, stack.reports):
        wait_for(functools.partial(follows, caller, expected), f"{caller.ready_line} to follow the edited TrafficRoute")


def follows(caller: SidecarProcess, spec: dict[str, Any]) -> bool:
    return [r["spec"] for r in info(caller)["trafficRoutes"]] == [spec]


def call(caller: SidecarProcess, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{caller.http_url}/v1.0/invoke/{target}/method/hello", headers=headers or {}, timeout=10)


def calls(
    stack: Stack, count: int, *, caller: SidecarProcess | None = None, headers: dict[str, str] | None = None
) -> dict[str, int]:
    """Make `count` calls to billing through `caller` (checkout); what each version received meanwhile."""
    before = stack.received()
    with httpx.Client(base_url=(caller or stack.checkout).http_url, timeout=10) as client:
        for _ in range(count):
            response = client.post(f"/v1.0/invoke/{stack.target}/method/hello", headers=headers or {})
            assert response.status_code == 200, response.text
    after = stack.received()
    return {version: after[version] - before[version] for version in after}


def version_calls(caller: SidecarProcess, target: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{caller.metrics_url}/metrics").text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ottava_invocation_version_calls_total" and sample.labels["target"] == target:
                found[(sample.labels["version"], sample.labels["outcome"])] = sample.value
    return found


def test_calls_no_rule_matches_go_to_every_version_in_turn(stack: Stack) -> None:
    apply_rules(stack, [{"match": {"headers": {"x-canary": {"exact": "on"}}}, "destinations": [{"version": "v2"}]}])
    received = calls(stack, 100)
    # Two sidecars of one app id are both resolvable, and used in turn.
    assert received["v1"] + received["v2"] == 100
    assert 40 <= received["v1"] <= 60, received


def test_a_90_10_rule_splits_1000_calls_within_4_points(stack: Stack) -> None:
    apply_rules(stack, [{"destinations": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}])
    before = version_calls(stack.checkout, stack.target)
    received = calls(stack, 1000)
    assert received["v1"] + received["v2"] == 1000
    assert abs(received["v2"] / 1000 - 0.10) <= 0.04, received
    # The caller's metrics count the same calls per version.
    after = version_calls(stack.checkout, stack.target)
    for version in ("v1", "v2"):
        counted = after.get((version, "OK"), 0) - before.get((version, "OK"), 0)
        assert counted == received[version], (version, counted, received)


def test_a_header_rule_sends_every_marked_call_to_v2(stack: Stack) -> None:
    apply_rules(
        stack,
        [
            {"match": {"headers": {"X-Canary": {"exact": "on"}}}, "destinations": [{"version": "v2"}]},
            {"destinations": [{"version": "v1"}]},
        ],
    )
    assert calls(stack, 50, headers={"x-canary": "on"}) == {"v1": 0, "v2": 50}
    assert calls(stack, 50) == {"v1": 50, "v2": 0}
    assert calls(stack, 20, headers={"x-canary": "off"}) == {"v1": 20, "v2": 0}
    answer = call(stack.checkout, stack.target, {"x-canary": "on"}).json()
    assert answer["version"] == "v2" and answer["headers"]["x-canary"] == "on"  # the header still reaches the app


def test_a_caller_app_id_rule_routes_only_that_callers_calls(stack: Stack) -> None:
    apply_rules(
        stack,
        [
            {"match": {"callerAppId": "reports"}, "destinations": [{"version": "v2"}]},
            {"destinations": [{"version": "v1"}]},
        ],
    )
    assert calls(stack, 30, caller=stack.reports) == {"v1": 0, "v2": 30}
    assert calls(stack, 30, caller=stack.checkout) == {"v1": 30, "v2": 0}


def test_an_abort_fails_calls_in_the_callers_sidecar_with_its_status(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_rules(
        stack,
        [{"match": {"headers": {"x-chaos": {"prefix": "abort"}}}, "fault": {"abort": {"httpStatus": 503}}}],
    )
    before = stack.received()
    response = call(stack.checkout, stack.target, {"x-chaos": "abort-all"})
    assert response.status_code == 503
    error = response.json()
    assert error["errorCode"] == "ERR_DIRECT_INVOKE"
    assert f"aborted with HTTP 503 by fault injection (TrafficRoute {stack.target}, rule 0)" in error["message"]
    # A gRPC caller (the Dapr SDK) gets 503's code, UNAVAILABLE, with the same message.
    monkeypatch.setenv("DAPR_GRPC_PORT", str(stack.checkout.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(stack.checkout.http_port))
    with (
        DaprClient() as dapr,
        pytest.raises(grpc.RpcError) as raised,
        pytest.warns(DeprecationWarning, match="deprecated"),
    ):
        DaprGrpcClient.invoke_method(dapr, stack.target, "hello", data=b"x", metadata=(("x-chaos", "abort"),))
    failure = raised.value
    assert isinstance(failure, grpc.Call)
    assert failure.code() is grpc.StatusCode.UNAVAILABLE
    assert "by fault injection" in (failure.details() or "")
    assert stack.received() == before, "an aborted call never reaches the app"
    assert call(stack.checkout, stack.target).status_code == 200, "calls the rule does not match go through"


def test_an_abort_of_a_percentage_fails_about_that_share(stack: Stack) -> None:
    apply_rules(stack, [{"fault": {"abort": {"httpStatus": 500, "percent": 50}}}])
    with httpx.Client(base_url=stack.checkout.http_url, timeout=10) as client:
        statuses = [client.post(f"/v1.0/invoke/{stack.target}/method/hello").status_code for _ in range(400)]
    assert set(statuses) == {200, 500}
    assert 0.35 <= statuses.count(500) / 400 <= 0.65, statuses.count(500)


def test_a_delay_holds_calls_and_one_past_the_timeout_fails_naming_it(stack: Stack) -> None:
    apply_rules(
        stack,
        [
            {"match": {"callerAppId": "reports"}, "fault": {"delay": {"fixedDelay": "2s"}}},
            {"fault": {"delay": {"fixedDelay": "300ms"}}, "destinations": [{"version": "v2"}]},
        ],
    )
    started = time.monotonic()
    response = call(stack.checkout, stack.target)
    assert response.status_code == 200 and response.json()["version"] == "v2"
    assert time.monotonic() - started >= 0.3, "the call was held for the injected delay"
    # reports waits 1s for an answer (--app-timeout 1): the 2s delay makes its call fail, saying why.
    before = stack.received()
    response = call(stack.reports, stack.target)
    assert response.status_code == 504
    message = response.json()["message"]
    assert "did not answer hello within 1s" in message and "injects a delay of 2s" in message, message
    assert stack.received() == before
    metrics = httpx.get(f"{stack.reports.metrics_url}/metrics").text
    assert f'ottava_invocation_faults_total{{fault="delay",target="{stack.target}"}}' in metrics or (
        f'ottava_invocation_faults_total{{target="{stack.target}",fault="delay"}}' in metrics
    )


def test_a_live_edit_moves_the_calls_and_a_broken_edit_keeps_the_rules_in_force(stack: Stack) -> None:
    apply_rules(stack, [{"destinations": [{"version": "v1"}]}])
    assert calls(stack, 20) == {"v1": 20, "v2": 0}
    apply_rules(stack, [{"destinations": [{"version": "v2"}]}])
    assert calls(stack, 20) == {"v1": 0, "v2": 20}
    # Weights that do not add up: logged, naming the file; the routes in force stay.
    broken = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "TrafficRoute",
        "metadata": {"name": stack.target},
        "spec": {"rules": [{"destinations": [{"version": "v1", "weight": 60}, {"version": "v2", "weight": 60}]}]},
    }
    (stack.folder / "routes.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    wait_for(lambda: "weights add up to 120" in stack.checkout.log(), "the caller to report the broken TrafficRoute")
    assert "routes.yaml" in stack.checkout.log()
    assert calls(stack, 20) == {"v1": 0, "v2": 20}


def test_a_version_nobody_serves_is_named(stack: Stack) -> None:
    apply_rules(stack, [{"destinations": [{"version": "v3"}]}])
    response = call(stack.checkout, stack.target)
    assert response.status_code == 404
    message = response.json()["message"]
    assert "serves version 'v3'" in message and "versions found: v1, v2" in message, message


def test_the_info_endpoint_shows_versions_and_routes(stack: Stack) -> None:
    apply_rules(stack, [{"destinations": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]}])
    calls(stack, 10)
    shown = info(stack.checkout)
    assert {p["version"] for p in shown["peers"] if p["appId"] == stack.target} == {"v1", "v2"}
    [route] = shown["trafficRoutes"]
    assert route["appId"] == stack.target and route["source"] == "the resources folder"


def test_an_invalid_traffic_route_stops_start_up_naming_the_file(sidecars: SidecarFactory, tmp_path: Path) -> None:
    folder = tmp_path / "resources"
    folder.mkdir()
    (folder / "route.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "ottava.io/v1alpha1",
                "kind": "TrafficRoute",
                "metadata": {"name": "billing"},
                "spec": {"rules": [{"match": {"callerAppId": "checkout"}}]},
            }
        ),
        encoding="utf-8",
    )
    sidecar = sidecars.start("--app-id", "checkout", "--resources-path", str(folder), wait=False)
    assert sidecar.process.wait(timeout=30) == 2
    log = sidecar.log()
    assert f"{folder / 'route.yaml'}, document 1 (TrafficRoute 'billing')" in log
    assert "spec.rules.0: Value error, the rule names no destination" in log


def test_an_app_version_that_is_no_label_value_is_refused(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start("--app-id", "billing", "--app-version", "v 2", wait=False)
    assert sidecar.process.wait(timeout=30) == 2
    assert "'v 2' is not a version" in sidecar.log()
