"""Resiliency in standalone mode: real sidecars, a real app that fails on purpose, a real Redis.

App A is this test, calling through its sidecar with the Dapr SDK; each caller sidecar has
its own resources folder with one Resiliency (the `dapr.io/v1alpha1` form, as Dapr users
have it). App B (`tests/apps/resilience_app.py`) counts the requests that reach it.
"""

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprHttpError, DaprInternalError

from tests.conftest import SidecarFactory, SidecarProcess, run_ottava
from tests.messaging import ROOT, events, start_with_app, stop_all_gracefully, wait_for, wait_ready
from tests.servers import redis_server

POLICIES = """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: {name}
spec:
  policies:
    timeouts:
      fast: 200ms
    retries:
      threeTimes:
        policy: constant
        duration: 50ms
        maxRetries: 3
    circuitBreakers:
      appBreaker:
        maxRequests: 1
        timeout: 2s
        trip: consecutiveFailures >= 3
  targets:
    apps:
      {target}:
        {policy}
"""


@dataclass
class Apps:
    target: str  # B's app id
    plain: SidecarProcess  # a caller without policies
    retrying: SidecarProcess  # callers with one policy each for calls to B
    timing_out: SidecarProcess
    breaking: SidecarProcess


def _caller(factory: SidecarFactory, registry: Path, target: str, policy: str) -> SidecarProcess:
    resources = {"resiliency.yaml": POLICIES.format(name="calls", target=target, policy=policy)} if policy else {}
    return factory.start(
        "--app-id",
        f"caller-{uuid.uuid4().hex[:6]}",
        resources=resources,
        env={"OTTAVA_REGISTRY_DIR": str(registry), "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    folder = tmp_path_factory.mktemp("resiliency")
    registry = folder / "registry"
    factory = SidecarFactory(folder)
    target = f"fragile-{uuid.uuid4().hex[:6]}"
    try:
        b = start_with_app(
            factory, target, "http", "resilience_app.py", events_file=folder / "events", registry_dir=registry
        )
        wait_ready(b)
        yield Apps(
            target,
            plain=_caller(factory, registry, target, ""),
            retrying=_caller(factory, registry, target, "retry: threeTimes"),
            timing_out=_caller(factory, registry, target, "timeout: fast"),
            breaking=_caller(factory, registry, target, "circuitBreaker: appBreaker"),
        )
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


@contextlib.contextmanager
def dapr_client(sidecar: SidecarProcess) -> Iterator[DaprClient]:
    """The Dapr SDK's client of `sidecar`, configured as an app's: by DAPR_GRPC_PORT and DAPR_HTTP_PORT."""
    saved = {name: os.environ.get(name) for name in ("DAPR_GRPC_PORT", "DAPR_HTTP_PORT")}
    os.environ["DAPR_GRPC_PORT"], os.environ["DAPR_HTTP_PORT"] = str(sidecar.grpc_port), str(sidecar.http_port)
    try:
        with DaprClient() as dapr:
            yield dapr
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _close_sdk_loop()


def _close_sdk_loop() -> None:
    # The SDK's sync HTTP invocation sets a new event loop of its own on each call and never
    # closes it; close it so it is not reported as leaked later.
    policy = asyncio.get_event_loop_policy()
    try:
        leaked = policy.get_event_loop()
    except RuntimeError:
        return
    leaked.close()
    policy.set_event_loop(None)


def invoke(caller: SidecarProcess, app_id: str, method: str, verb: str = "POST") -> Any:
    """The Dapr SDK's invocation through `caller`'s HTTP API, as app A writes it."""
    with dapr_client(caller) as dapr:
        return dapr.invoke_method(app_id, method, data=b"", http_verb=verb)


def failure(caller: SidecarProcess, app_id: str, method: str) -> DaprInternalError:
    with pytest.raises(DaprInternalError) as err:
        invoke(caller, app_id, method)
    return err.value


def hits(apps: Apps, route: str) -> int:
    count: int = invoke(apps.plain, apps.target, f"hits/{route}", "GET").json()["hits"]
    return count


def test_retry_policy_turns_two_failures_into_one_successful_call(apps: Apps) -> None:
    response = invoke(apps.retrying, apps.target, "flaky/with-policy")
    assert response.status_code == 200 and response.text() == "answered on request 3"


def test_without_a_retry_policy_the_same_call_fails(apps: Apps) -> None:
    err = failure(apps.plain, apps.target, "flaky/without-policy")
    assert isinstance(err, DaprHttpError) and err.status_code == 503


def test_timeout_policy_stops_a_slow_call_with_an_error_naming_it(apps: Apps) -> None:
    started = time.perf_counter()
    err = failure(apps.timing_out, apps.target, "slow")
    elapsed = time.perf_counter() - started  # reported by the bench, not asserted here
    assert "timed out after 0.2s (timeout policy 'fast')" in str(err), str(err)
    assert f"app {apps.target!r}" in str(err)
    print(f"timeout error after {elapsed * 1000:.0f} ms")


def test_circuit_breaker_fails_fast_without_reaching_the_app_then_lets_one_probe_through(apps: Apps) -> None:
    invoke(apps.plain, apps.target, "failing/on")
    try:
        before = hits(apps, "breaker")
        for _ in range(3):  # the trip condition: three failures in a row, each reaching the app
            assert isinstance(err := failure(apps.breaking, apps.target, "breaker"), DaprHttpError)
            assert err.status_code == 500
        assert hits(apps, "breaker") == before + 3
        for _ in range(5):  # open: refused by the caller's sidecar
            assert "circuit breaker 'appBreaker' is open" in str(failure(apps.breaking, apps.target, "breaker"))
        assert hits(apps, "breaker") == before + 3
        # After `timeout` (2s) one probe goes through; it fails, so the breaker opens again.
        wait_for(
            lambda: "circuit breaker" not in str(failure(apps.breaking, apps.target, "breaker")),
            "the half-open breaker to let a probe through",
            timeout=10,
        )
        assert hits(apps, "breaker") == before + 4
        assert "circuit breaker 'appBreaker' is open" in str(failure(apps.breaking, apps.target, "breaker"))
        assert hits(apps, "breaker") == before + 4
    finally:
        invoke(apps.plain, apps.target, "failing/off")
    # B recovers: the next probe succeeds and closes the breaker.
    wait_for(lambda: _succeeds(apps.breaking, apps.target, "breaker"), "the breaker to close again", timeout=10)
    assert invoke(apps.breaking, apps.target, "breaker").text() == "up"


def _succeeds(caller: SidecarProcess, app_id: str, method: str) -> bool:
    try:
        invoke(caller, app_id, method)
    except DaprInternalError:
        return False
    return True


def test_metrics_count_retries_timeouts_and_breaker_changes(apps: Apps) -> None:
    invoke(apps.retrying, apps.target, "flaky/metrics")
    failure(apps.timing_out, apps.target, "slow")
    retrying = httpx.get(f"{apps.retrying.metrics_url}/metrics").text
    assert f'ottava_resiliency_retries_total{{policy="threeTimes",target="app:{apps.target}"}}' in retrying
    timing_out = httpx.get(f"{apps.timing_out.metrics_url}/metrics").text
    assert f'ottava_resiliency_timeouts_total{{policy="fast",target="app:{apps.target}"}}' in timing_out
    breaking = httpx.get(f"{apps.breaking.metrics_url}/metrics").text  # the breaker test ran before
    for state in ("open", "half-open", "closed"):
        series = f'ottava_resiliency_circuit_breaker_changes_total{{policy="appBreaker",state="{state}",target="app:{apps.target}"}}'
        assert series in breaking, state


# --- Bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("trip: consecutiveFailures >= 3", "trip: consecutiveFailures >="),
            "spec.policies.circuitBreakers.appBreaker.trip: Value error, 'consecutiveFailures >=' is not a CEL "
            "expression (syntax error at column 21)",
        ),
        (
            ("trip: consecutiveFailures >= 3", "trip: failures >= 3"),
            "undeclared reference to 'failures'",
        ),
        (
            ("circuitBreaker: appBreaker", "circuitBreaker: appBraker"),
            "spec.targets.apps.b.circuitBreaker: no circuitBreakers policy is named 'appBraker' "
            "(policies.circuitBreakers defines: appBreaker)",
        ),
    ],
)
def test_bad_resiliency_stops_startup_naming_the_file(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    folder = tmp_path / "resources"
    folder.mkdir()
    manifest = POLICIES.format(name="broken", target="b", policy="circuitBreaker: appBreaker")
    (folder / "resiliency.yaml").write_text(manifest.replace(*change), encoding="utf-8")
    sidecar = run_ottava(["--app-id", "a", "--resources-path", str(folder)], log_dir=tmp_path, wait=False)
    try:
        assert sidecar.process.wait(timeout=60) == 2
    finally:
        sidecar.close()
    stderr = Path(sidecar.log_path).read_text(encoding="utf-8")
    assert f"{folder / 'resiliency.yaml'}, document 1 (Resiliency 'broken')" in stderr, stderr
    assert expected in stderr, stderr


# --- Components: outbound ---------------------------------------------------------------------

REDIS_WITH_RETRIES = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: orders
spec:
  type: state.redis
  version: v1
  metadata:
  - {{name: redisHost, value: "127.0.0.1:{port}"}}
  - {{name: redisPassword, value: {password}}}
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: redis-restarts
spec:
  policies:
    retries:
      untilBack:
        policy: exponential
        maxInterval: 500ms
        maxRetries: -1
    timeouts:
      perTry: 2s
  targets:
    components:
      orders:
        outbound:
          retry: untilBack
          timeout: perTry
"""


def test_outbound_retry_policy_rides_out_a_redis_restart(sidecars: SidecarFactory) -> None:
    redis = redis_server.start()
    try:
        sidecar = sidecars.start(
            "--app-id",
            "ledger",
            resources={"resources.yaml": REDIS_WITH_RETRIES.format(port=redis.port, password=redis_server.PASSWORD)},
        )
        assert httpx.get(f"{sidecar.http_url}/actuator/info").json()["resiliencies"] == ["redis-restarts"]
        failed: list[str] = []
        saved = 0
        with dapr_client(sidecar) as dapr:

            def save() -> None:
                nonlocal saved
                try:
                    dapr.save_state("orders", f"order-{saved}", str(saved))
                except DaprInternalError as err:  # counted: the acceptance is 0 failed calls
                    failed.append(str(err))
                saved += 1

            for _ in range(20):
                save()
            redis.stop()
            # Redis comes back once a call is being retried against it: that call, and every
            # one after it, succeeds.
            restarter = threading.Thread(target=_restart_when_retrying, args=(redis, sidecar))
            restarter.start()
            try:
                for _ in range(40):
                    save()
            finally:
                restarter.join()
            assert dapr.get_state("orders", f"order-{saved - 1}").data == str(saved - 1).encode()
        assert failed == []
        assert saved == 60
        assert _retries(sidecar) > 0
    finally:
        redis.stop()


def _retries(sidecar: SidecarProcess) -> float:
    series = 'ottava_resiliency_retries_total{policy="untilBack",target="component:orders:outbound"} '
    for line in httpx.get(f"{sidecar.metrics_url}/metrics").text.splitlines():
        if line.startswith(series):
            return float(line.removeprefix(series))
    return 0.0


def _restart_when_retrying(redis: Any, sidecar: SidecarProcess) -> None:
    wait_for(lambda: _retries(sidecar) >= 2, "a state call to be retried while Redis is down")
    redis.start()


# --- Components: inbound ----------------------------------------------------------------------

PUBSUB_WITH_INBOUND_RETRIES = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: deliveries
spec:
  policies:
    retries:
      quick:
        policy: constant
        duration: 10ms
        maxRetries: 5
  targets:
    components:
      pubsub:
        inbound:
          retry: quick
        outbound:
          retry: quick
"""


def test_inbound_retry_policy_delivers_again_before_the_broker_would(sidecars: SidecarFactory, tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "pubsub.yaml").write_text(PUBSUB_WITH_INBOUND_RETRIES, encoding="utf-8")
    events_file = tmp_path / "events"
    subscriber = start_with_app(
        sidecars,
        f"shipping-{uuid.uuid4().hex[:6]}",
        "http",
        "http_app.py",  # its topic `flaky` answers RETRY twice per event, then SUCCESS
        events_file=events_file,
        registry_dir=tmp_path / "registry",
        args=("--resources-path", str(resources)),
    )
    try:
        _deliveries_retried_by_the_policy(subscriber, events_file)
    finally:
        stop_all_gracefully(sidecars)  # SIGTERM: the sidecar stops its app too


def _deliveries_retried_by_the_policy(subscriber: SidecarProcess, events_file: Path) -> None:
    wait_ready(subscriber)
    with dapr_client(subscriber) as dapr:
        dapr.publish_event("pubsub", "flaky", json.dumps({"n": 1}), data_content_type="application/json")
    wait_for(lambda: len([e for e in events(events_file) if e["topic"] == "flaky"]) == 3, "three deliveries")

    def settled() -> str:
        return httpx.get(f"{subscriber.metrics_url}/metrics").text

    wait_for(
        lambda: 'ottava_pubsub_settled_total{pubsub="pubsub",result="delivered",topic="flaky"} 1.0' in settled(),
        "the event to be settled as delivered",
    )
    text = settled()
    assert 'ottava_resiliency_retries_total{policy="quick",target="component:pubsub:inbound"} 2.0' in text
    assert 'result="retried",topic="flaky"' not in text  # never handed back to the broker


BINDING_WITH_INBOUND_RETRIES = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: flaky
spec:
  type: bindings.cron
  version: v1
  metadata:
  - {name: schedule, value: "@every 1s"}
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: binding-deliveries
spec:
  policies:
    retries:
      quick:
        policy: constant
        duration: 10ms
        maxRetries: 5
  targets:
    components:
      flaky:
        inbound:
          retry: quick
"""


def test_inbound_retry_policy_delivers_an_input_bindings_event_again(sidecars: SidecarFactory, tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "flaky.yaml").write_text(BINDING_WITH_INBOUND_RETRIES, encoding="utf-8")
    events_file = tmp_path / "events"
    app = start_with_app(
        sidecars,
        f"binder-{uuid.uuid4().hex[:6]}",
        "http",
        "binding_http_app.py",  # `/flaky` answers 500 to the first two deliveries of each event
        events_file=events_file,
        registry_dir=tmp_path / "registry",
        args=("--resources-path", str(resources)),
    )
    try:
        _binding_event_retried_by_the_policy(app, events_file)
    finally:
        stop_all_gracefully(sidecars)  # SIGTERM: the sidecar stops its app too


def _binding_event_retried_by_the_policy(app: SidecarProcess, events_file: Path) -> None:
    wait_ready(app)

    def first_three() -> list[dict[str, Any]] | None:
        found = [e for e in events(events_file) if e["binding"] == "flaky"]
        return found[:3] if len(found) >= 3 else None

    deliveries = wait_for(first_three, "three deliveries of the first event")
    times = {d["metadata"].get("readtimeutc") for d in deliveries}
    assert len(times) == 1, f"one event, delivered three times: {deliveries}"
    series = 'ottava_resiliency_retries_total{policy="quick",target="component:flaky:inbound"}'
    assert series in httpx.get(f"{app.metrics_url}/metrics").text
