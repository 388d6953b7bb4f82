"""The whole user journey in real pods on the real node, as a platform team and an app team live it.

`helm install` (the operator runs in the cluster, 2 replicas, from the image built here),
`kubectl apply` Components backed by a real Redis that pods reach over the node's bridge,
and two annotated Deployments of an app written with the Dapr Python SDK
(`examples/kubernetes/app`). The kubelet runs every container, probes the sidecar, and
restarts it when its liveness fails. The test talks to the apps over their pod IPs, as
another pod would, and looks at pods the way `kubectl get` and `describe` show them.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.servers.process import ServerProcess

from . import cluster as cluster_mod
from . import incluster, pods
from .conftest import REDIS_PASSWORD
from .test_operator import apply

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def redis_component(name: str, type_: str, server: ServerProcess, node_ip: str, **extra: str) -> dict[str, Any]:
    metadata = [
        {"name": "redisHost", "value": f"{node_ip}:{server.port}"},
        {"name": "redisPassword", "secretKeyRef": {"name": "redis-auth", "key": "password"}},
        *({"name": k, "value": v} for k, v in extra.items()),
    ]
    return {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": type_, "version": "v1", "metadata": metadata},
    }


def app_deployment(name: str, replicas: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The example app, opted in; a short grace period so a restarted container does not wait 30 s."""
    document = incluster.example_deployment(name, replicas)
    spec = document["spec"]["template"]["spec"]
    spec["terminationGracePeriodSeconds"] = 3
    spec["containers"][0]["env"].extend({"name": k, "value": v} for k, v in (env or {}).items())
    return document


def dump(*documents: dict[str, Any]) -> str:
    return yaml.safe_dump_all(documents)


def reload_while_calling(
    cluster: cluster_mod.Cluster, ns: str, checkout: client.V1Pod, redis: ServerProcess, node_ip: str
) -> None:
    """Edit the state store and the pub/sub component while checkout keeps calling; no call may fail."""
    failures: list[str] = []
    calls = 0
    stop = threading.Event()

    def keep_calling() -> None:
        nonlocal calls
        while not stop.is_set():
            try:
                pods.call_app(checkout, "PUT", "/state/busy", body=b'"x"')
                pods.call_app(checkout, "GET", "/state/busy")
            except Exception as err:
                failures.append(str(err))
            calls += 1

    worker = threading.Thread(target=keep_calling)
    worker.start()
    try:
        edited = redis_component("statestore", "state.redis", redis, node_ip, keyPrefix="none")
        # The pub/sub component is reloaded too: deliveries must follow it to the new instance.
        edited_pubsub = redis_component("pubsub", "pubsub.redis", redis, node_ip, processingTimeout="30s")
        assert apply(cluster, ns, dump(edited, edited_pubsub)).returncode == 0

        def reloaded() -> bool:
            # Keys were prefixed with the app id before; with keyPrefix none, order-1 is another key.
            return pods.call_app(checkout, "GET", "/state/order-1")["value"] == ""

        cluster_mod.poll(reloaded, timeout=30, what="the edited statestore to take effect")
    finally:
        stop.set()
        worker.join(timeout=30)
    # The worker's last write may have gone to the store before the edit: write once to the new one.
    pods.call_app(checkout, "PUT", "/state/busy", body=b'"x"')
    assert calls > 0
    assert failures == [], f"{len(failures)} of {calls} calls failed during the reload: {failures[:3]}"


def test_the_journey_in_pods(
    ottava_in_cluster: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    restricted_namespace: str,
    redis_on_the_node: ServerProcess,
) -> None:
    ns = restricted_namespace
    core = client.CoreV1Api(kube)
    node_ip = cluster_mod.NODE_IP

    # 1. helm install: the operator runs in the cluster, two replicas, from the imported image.
    operators = ottava_in_cluster.operator_pods()
    assert len(operators) == 2 and all(pods.is_ready(p) for p in operators), pods.describe(operators)

    # 2. Components on a real Redis; its password Secret is not created yet.
    statestore = redis_component("statestore", "state.redis", redis_on_the_node, node_ip)
    pubsub = redis_component("pubsub", "pubsub.redis", redis_on_the_node, node_ip)
    result = apply(cluster, ns, dump(statestore, pubsub))
    assert result.returncode == 0, result.stderr

    # 3. Two annotated Deployments of the Dapr SDK app; the second, with two replicas, subscribes.
    result = apply(
        cluster,
        ns,
        dump(app_deployment("checkout", 1), app_deployment("shipping", 2, {"SUBSCRIBE_TOPIC": "orders"})),
    )
    assert result.returncode == 0, result.stderr

    # 4. A pod is Ready only once its sidecar is UP. The missing Secret keeps the sidecars
    # DOWN, the pods NotReady (1/2), and the readiness body names the Secret.
    def running_not_ready() -> list[client.V1Pod] | None:
        listed = pods.deployment_pods(kube, ns, "checkout")
        running = [p for p in listed if p.status.pod_ip and pods.container_status(p, "app").state.running]
        return running if running else None

    checkout = cluster_mod.poll(running_not_ready, timeout=120, what="the checkout pod to run")[0]

    def names_the_secret() -> dict[str, Any] | None:
        response = pods.sidecar_readiness(checkout)
        body: dict[str, Any] = response.json()
        return body if response.status_code == 503 and "redis-auth" in json.dumps(body) else None

    body = cluster_mod.poll(names_the_secret, timeout=60, what="readiness to name the missing Secret")
    assert body["status"] == "DOWN", body
    checkout = core.read_namespaced_pod(pods.name(checkout), ns)
    assert not pods.is_ready(checkout)
    assert pods.ready_counts(checkout) == (1, 2)

    cluster.kubectl("create", "secret", "generic", "redis-auth", "-n", ns, f"--from-literal=password={REDIS_PASSWORD}")
    [checkout] = pods.wait_ready(kube, ns, "checkout", 1, timeout=90)
    shipping = pods.wait_ready(kube, ns, "shipping", 2, timeout=90)
    for pod in [checkout, *shipping]:
        assert pods.ready_counts(pod) == (2, 2), pods.describe([pod])
        assert pods.sidecar_readiness(pod).json()["status"] == "UP"
    listing = cluster.kubectl("get", "pods", "-n", ns, "--no-headers")
    assert listing.count(" 2/2 ") == 3 and listing.count("Running") == 3, listing

    # 5. State, through the SDK and the sidecar, in the real Redis; keys are the app's own
    # (prefixed with its app id, as in Dapr), so shipping does not see checkout's order.
    pods.call_app(checkout, "PUT", "/state/order-1", body=b'{"qty": 2}')
    assert pods.call_app(checkout, "GET", "/state/order-1")["value"] == '{"qty": 2}'
    assert pods.call_app(shipping[0], "GET", "/state/order-1")["value"] == ""

    # 6. A publish from checkout is delivered to shipping (once, to one of its replicas).
    pods.call_app(checkout, "POST", "/publish/orders", body=b'{"order": 1}')

    def delivered() -> list[Any] | None:
        seen = [event for pod in shipping for event in pods.call_app(pod, "GET", "/received")]
        return seen or None

    assert cluster_mod.poll(delivered, timeout=30, what="the event to reach shipping") == [{"order": 1}]

    # 6b. A declarative Subscription (the Subscription CRD), scoped to shipping, reaches the
    # running sidecars: events published to its topic go to the route it names, and not to
    # checkout, which its scopes leave out. Each poll publishes anew: an event published
    # before the sidecars opened the subscription has no subscriber to wait for it.
    subscription = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Subscription",
        "metadata": {"name": "declared-orders"},
        "spec": {"pubsubname": "pubsub", "topic": "declared", "routes": {"default": "/events/declared"}},
        "scopes": ["shipping"],
    }
    result = apply(cluster, ns, dump(subscription))
    assert result.returncode == 0, result.stderr
    published = iter(range(1, 1000))

    def declared_delivered() -> list[Any] | None:
        pods.call_app(checkout, "POST", "/publish/declared", body=json.dumps({"declared": next(published)}).encode())
        seen = [event for pod in shipping for event in pods.call_app(pod, "GET", "/received") if "declared" in event]
        return seen or None

    assert cluster_mod.poll(declared_delivered, timeout=60, what="a declared subscription's event to reach shipping")
    assert [e for e in pods.call_app(checkout, "GET", "/received") if "declared" in e] == []

    # 7. checkout invokes shipping by app id across pods; both replicas answer.
    answered = {pods.call_app(checkout, "GET", "/invoke/shipping/hello")["pod"] for _ in range(20)}
    assert answered == {p.metadata.name for p in shipping}

    # 8. Hot reload: the state store is edited while calls run; none fails.
    reload_while_calling(cluster, ns, checkout, redis_on_the_node, node_ip)
    pods.call_app(checkout, "POST", "/publish/orders", body=b'{"order": 2}')
    assert cluster_mod.poll(
        lambda: [e for e in delivered() or [] if e == {"order": 2}], timeout=30, what="an event after the reload"
    ) == [{"order": 2}]

    # 9. A broken Component: readiness DOWN, the pod NotReady, the kubelet records it. Fixed: Ready again.
    broken = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "vault"},
        "spec": {"type": "secretstores.local.file", "version": "v1", "metadata": [
            {"name": "secretsFile", "value": "/nonexistent/secrets.json"},
        ]},
    }  # fmt: skip
    assert apply(cluster, ns, dump(broken)).returncode == 0

    def not_ready() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(pods.name(checkout), ns)
        return pod if not pods.is_ready(pod) else None

    cluster_mod.poll(not_ready, timeout=60, what="the checkout pod to go NotReady")
    body = pods.sidecar_readiness(checkout).json()
    assert body["status"] == "DOWN" and "/nonexistent/secrets.json" in json.dumps(body["components"]["vault"])

    def probe_event() -> str | None:
        found = [e.message for e in pods.events(kube, ns, pods.name(checkout)) if e.reason == "Unhealthy"]
        return next((str(m) for m in found if "Readiness probe failed" in str(m)), None)

    assert "503" in cluster_mod.poll(probe_event, timeout=30, what="the kubelet's Unhealthy event")
    described = cluster.kubectl("describe", "pod", "-n", ns, pods.name(checkout))
    assert "Readiness probe failed" in described
    cluster.kubectl("delete", "component", "vault", "-n", ns)
    [checkout] = pods.wait_ready(kube, ns, "checkout", 1, timeout=60)

    # 10. The sidecar hangs (SIGSTOP): liveness fails and the kubelet restarts the sidecar container.
    before = pods.container_status(checkout, pods.SIDECAR).restart_count
    pods.signal_container(checkout, pods.SIDECAR, signal.SIGSTOP)

    def restarted() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(pods.name(checkout), ns)
        return pod if pods.container_status(pod, pods.SIDECAR).restart_count > before else None

    cluster_mod.poll(restarted, timeout=120, what="the kubelet to restart the hung sidecar")
    [checkout] = pods.wait_ready(kube, ns, "checkout", 1, timeout=90)
    described = cluster.kubectl("describe", "pod", "-n", ns, pods.name(checkout))
    assert "Liveness probe failed" in described
    killing = [str(e.message) for e in pods.events(kube, ns, pods.name(checkout)) if e.reason == "Killing"]
    assert any("liveness probe" in m for m in killing), killing
    assert pods.call_app(checkout, "GET", "/state/busy")["value"] == '"x"'

    # 11. The operator's pods are gone: new pods are still created, without a sidecar (fail open).
    ottava_in_cluster.scale_operator(0)
    try:
        assert apply(cluster, ns, dump(app_deployment("late", 1))).returncode == 0
        [late] = pods.wait_ready(kube, ns, "late", 1, timeout=90)
        assert [c.name for c in [*(late.spec.init_containers or []), *late.spec.containers]] == ["app"]
    finally:
        # 12. The operator comes back: injection resumes.
        ottava_in_cluster.scale_operator(2)
    cluster.kubectl("rollout", "restart", "deployment/late", "-n", ns)

    def injected() -> client.V1Pod | None:
        listed = pods.deployment_pods(kube, ns, "late")
        return next((p for p in listed if (p.metadata.labels or {}).get("ottava.io/sidecar-injected") == "true"), None)

    cluster_mod.poll(injected, timeout=90, what="a new pod of `late` with the sidecar")
    [late] = pods.wait_ready(kube, ns, "late", 1, timeout=90)
    assert pods.ready_counts(late) == (2, 2)


def test_an_image_never_imported_leaves_the_pod_in_err_image_never_pull(
    ottava_in_cluster: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    document = incluster.example_deployment("ghost", 1)
    document["spec"]["template"]["spec"]["containers"][0]["image"] = "localhost/never-imported:1"
    assert apply(cluster, namespace, dump(document)).returncode == 0

    def waiting_reason() -> str | None:
        for pod in pods.deployment_pods(kube, namespace, "ghost"):
            waiting = pods.container_status(pod, "app").state.waiting if pod.status.container_statuses else None
            if waiting is not None and waiting.reason == "ErrImageNeverPull":
                return str(waiting.message)
        return None

    message = cluster_mod.poll(waiting_reason, timeout=60, what="ErrImageNeverPull")
    assert "localhost/never-imported:1" in message
