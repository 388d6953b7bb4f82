"""Resiliency on real pods: retries, a timeout, a circuit breaker in front of a failing
app, and retries that ride out a Redis restart.

The example app `caller` calls apps `billing` and `slow`, and saves state in a Redis that
runs on the node (outside the cluster, as a managed Redis would). A `Resiliency` applied
with kubectl, scoped to `caller`, gives its sidecar a retry policy and a circuit breaker
for calls to `billing`, a 200 ms timeout for calls to `slow`, and a retry policy for the
state store. The example apps are made to fail, recover and answer late through their
`PUT /failing` and `PUT /delay`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from kubernetes import client

from tests.servers.process import ServerProcess

from . import cluster as cluster_mod
from . import incluster, pods
from .conftest import REDIS_PASSWORD
from .test_operator import apply
from .test_pods_journey import app_deployment, dump, redis_component

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BREAKER_TIMEOUT_SECONDS = 10

RESILIENCY = {
    "apiVersion": "ottava.io/v1alpha1",
    "kind": "Resiliency",
    "metadata": {"name": "shop"},
    "scopes": ["caller"],
    "spec": {
        "policies": {
            "timeouts": {"fast": "200ms", "perTry": "2s"},
            "retries": {
                "twice": {"policy": "constant", "duration": "50ms", "maxRetries": 2},
                "untilBack": {"policy": "exponential", "maxInterval": "500ms", "maxRetries": -1},
            },
            "circuitBreakers": {
                "billingBreaker": {
                    "maxRequests": 1,
                    "timeout": f"{BREAKER_TIMEOUT_SECONDS}s",
                    # two calls whose three tries all failed
                    "trip": "consecutiveFailures >= 6",
                }
            },
        },
        "targets": {
            "apps": {
                "billing": {"retry": "twice", "circuitBreaker": "billingBreaker"},
                "slow": {"timeout": "fast"},
            },
            "components": {"statestore": {"outbound": {"retry": "untilBack", "timeout": "perTry"}}},
        },
    },
}


def hello(session: httpx.Client, caller: client.V1Pod, app_id: str = "billing") -> httpx.Response:
    """An app's /hello through the caller's sidecar (its Dapr HTTP API, which answers only its
    own pod: through the example app's `/sidecar/` route)."""
    return session.get(pods.app_url(caller, f"/sidecar/v1.0/invoke/{app_id}/method/hello"))


def tell(pod: client.V1Pod, path: str, value: str) -> None:
    """Make the example app in `pod` fail (`/failing`) or answer late (`/delay`)."""
    response = httpx.put(pods.app_url(pod, path), content=value.encode(), timeout=10)
    assert response.status_code == 200, response.text


def test_a_breaker_opens_on_a_failing_app_and_retries_ride_out_a_redis_restart(
    ottava_in_cluster: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    restricted_namespace: str,
    redis_on_the_node: ServerProcess,  # the journey's fixture: a Redis on the node's bridge address
) -> None:
    ns = restricted_namespace
    cluster.kubectl("create", "secret", "generic", "redis-auth", "-n", ns, f"--from-literal=password={REDIS_PASSWORD}")
    store = redis_component("statestore", "state.redis", redis_on_the_node, cluster_mod.NODE_IP)

    # Refused at kubectl apply, naming the field: a trip that is not CEL, a policy nobody defined.
    for path, value, field in (
        (("policies", "circuitBreakers", "billingBreaker", "trip"), "consecutiveFailures >=", "trip"),
        (("targets", "apps", "billing", "retry"), "nosuch", "retry"),
    ):
        bad: dict[str, Any] = json.loads(json.dumps(RESILIENCY))
        parent = bad["spec"]
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        refused = apply(cluster, ns, dump(bad))
        assert refused.returncode != 0, f"a Resiliency with {field} {value!r} was accepted"
        assert "spec." + ".".join(path) in refused.stderr, refused.stderr

    deployments = [app_deployment(name, 1) for name in ("caller", "billing", "slow")]
    result = apply(cluster, ns, dump(store, RESILIENCY, *deployments))
    assert result.returncode == 0, result.stderr
    [caller] = pods.wait_ready(kube, ns, "caller", 1, timeout=180)
    [billing] = pods.wait_ready(kube, ns, "billing", 1, timeout=180)
    [slow] = pods.wait_ready(kube, ns, "slow", 1, timeout=180)
    cluster_mod.poll(
        lambda: httpx.get(pods.app_url(caller, "/sidecar/actuator/info"), timeout=5).json()["resiliencies"] == ["shop"],
        timeout=60,
        what="the caller's sidecar to apply Resiliency shop",
    )

    with httpx.Client(timeout=10) as session:
        assert hello(session, caller).status_code == 200

        # Retries: billing fails its next two answers; the caller's first call succeeds.
        tell(billing, "/failing", "500 2")
        answer = hello(session, caller)
        assert answer.status_code == 200, answer.text

        # Timeouts: slow takes 2 s; under its 200 ms timeout the caller gets an error naming it.
        tell(slow, "/delay", "2")
        late = hello(session, caller, "slow")
        assert late.status_code != 200 and "timeout policy 'fast'" in late.text, late.text
        tell(slow, "/delay", "0")

        # Circuit breaker: billing fails for good; two calls' tries reach it, then the breaker opens.
        tell(billing, "/failing", "500")
        answers = [hello(session, caller) for _ in range(3)]
        assert [a.status_code for a in answers[:2]] == [500, 500], [a.text for a in answers]
        assert all("failing, as asked" in a.text for a in answers[:2])
        assert "circuit breaker 'billingBreaker' is open" in answers[2].text, answers[2].text

        # billing recovers, but the breaker holds calls back until its timeout: a call
        # that reached the healthy app now would succeed, so these never reached it.
        tell(billing, "/failing", "0")
        held = hello(session, caller)
        assert held.status_code != 200 and "circuit breaker 'billingBreaker' is open" in held.text, held.text

        # After the timeout a probe goes through, succeeds, and the breaker closes.
        cluster_mod.poll(
            lambda: hello(session, caller).status_code == 200,
            timeout=BREAKER_TIMEOUT_SECONDS + 30,
            what="the breaker to let a probe through and close",
        )
        assert [hello(session, caller).status_code for _ in range(10)] == [200] * 10

    # Redis restarts under a stream of state calls: the retry policy holds each call until
    # Redis is back, so none fails.
    failures: list[str] = []
    saved = 0
    stop = threading.Event()

    def keep_saving() -> None:
        nonlocal saved
        with httpx.Client(timeout=60) as session:
            while not stop.is_set() and saved < 400:
                response = session.put(pods.app_url(caller, f"/state/order-{saved}"), content=b'"x"')
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                saved += 1

    worker = threading.Thread(target=keep_saving)
    worker.start()
    try:
        cluster_mod.poll(lambda: saved >= 20, timeout=60, what="state calls to flow")
        redis_on_the_node.stop()
        before = saved
        redis_on_the_node.start()
        cluster_mod.poll(lambda: saved >= before + 20, timeout=90, what="state calls to flow after the restart")
    finally:
        stop.set()
        worker.join(timeout=90)
    assert failures == [], failures[:5]
    assert pods.call_app(caller, "GET", f"/state/order-{saved - 1}")["value"] == '"x"'
