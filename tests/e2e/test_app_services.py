"""Service invocation in a cluster: the operator's per-app Service, and sidecars resolving
app ids from its EndpointSlices, on the real control plane.

There is no kubelet: pods are admitted but never run, so the EndpointSlice controller
never lists one as ready. The resolver test therefore writes the EndpointSlices itself,
labelled as the controller labels them (`kubernetes.io/service-name`, and the Service's
`app.kubernetes.io/managed-by: ottava`, which the first test shows the controller
copies), pointing at target sidecars run on test hosts (network namespaces, as pods
would have their own addresses). The caller's sidecar runs as `kubelet.py` runs it, with
its pod's ServiceAccount, so the operator's RBAC is what lets it watch.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import cluster as cluster_mod
from . import incluster, kubelet, netns
from .test_operator import apply, deployment, pod_of

pytestmark = pytest.mark.e2e

SERVICE_PORTS = {"grpc": 50001, "http": 3500, "internal": 50002, "metrics": 9090}
APP_PORT = 8080
# Not the EndpointSlice controller's name: it leaves slices managed by others alone.
SLICE_MANAGER = "e2e.ottava.io"


def annotated(app_id: str) -> str:
    return deployment(app_id, {"ottava.io/enabled": "true", "ottava.io/app-id": app_id})


def read_service(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Service | None:
    try:
        return core.read_namespaced_service(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def test_the_operator_keeps_a_headless_service_per_app(
    ottava_operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    assert apply(cluster, namespace, annotated("orders")).returncode == 0
    pod_of(kube, namespace, "orders")

    service: client.V1Service = cluster_mod.poll(
        lambda: read_service(core, namespace, "orders-ottava"), timeout=30, what="Service orders-ottava"
    )
    assert service.spec.cluster_ip == "None"
    assert not service.spec.publish_not_ready_addresses  # false is omitted
    assert {p.name: p.port for p in service.spec.ports} == SERVICE_PORTS
    assert service.spec.selector == {"ottava.io/app-id": "orders", "ottava.io/sidecar-injected": "true"}
    assert service.metadata.labels["app.kubernetes.io/managed-by"] == "ottava"

    # The EndpointSlice controller copies the Service's labels onto its slices: that is the
    # label selector sidecars watch with.
    discovery = client.DiscoveryV1Api(kube)
    slices = cluster_mod.poll(
        lambda: (
            discovery.list_namespaced_endpoint_slice(
                namespace, label_selector="app.kubernetes.io/managed-by=ottava"
            ).items
        ),
        timeout=30,
        what="the controller's EndpointSlice of orders-ottava",
    )
    assert slices[0].metadata.labels["kubernetes.io/service-name"] == "orders-ottava"
    assert {p.name for p in slices[0].ports or []} <= set(SERVICE_PORTS)

    # Sidecars of a namespace without Components still get their Role, with EndpointSlices.
    role = cluster_mod.poll(
        lambda: client.RbacAuthorizationV1Api(kube).read_namespaced_role("ottava-sidecar", namespace),
        timeout=30,
        what="Role ottava-sidecar",
    )
    assert [r.verbs for r in role.rules if r.resources == ["endpointslices"]] == [["list", "watch"]]

    # Edited: put back.
    cluster.kubectl(
        "patch", "service", "orders-ottava", "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/spec/ports/3"}]),
    )  # fmt: skip

    def ports_back() -> bool:
        current = read_service(core, namespace, "orders-ottava")
        return current is not None and {p.name for p in current.spec.ports} == set(SERVICE_PORTS)

    cluster_mod.poll(ports_back, timeout=30, what="the operator to put the removed port back")

    # Deleted: created again.
    uid = service.metadata.uid
    core.delete_namespaced_service("orders-ottava", namespace)

    def recreated() -> bool:
        current = read_service(core, namespace, "orders-ottava")
        return current is not None and current.metadata.uid != uid

    cluster_mod.poll(recreated, timeout=30, what="the operator to re-create the deleted Service")

    # The app's last pod gone: so is its Service.
    cluster.kubectl("delete", "deployment", "orders", "-n", namespace, "--wait=false")
    cluster_mod.poll(
        lambda: read_service(core, namespace, "orders-ottava") is None,
        timeout=60,
        what="Service orders-ottava to be deleted with the app's last pod",
    )


def test_an_app_id_that_cannot_name_a_service_gets_an_event(
    ottava_operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    assert apply(cluster, namespace, deployment("dotted", {"ottava.io/enabled": "true"})).returncode == 0
    # A Deployment name may not hold '.', but the annotation may: the id is kept, and explained.
    cluster.kubectl(
        "patch", "deployment", "dotted", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"template": {"metadata": {"annotations": {"ottava.io/app-id": "orders.v2"}}}}}),
    )  # fmt: skip

    def event() -> str | None:
        events = client.CoreV1Api(kube).list_namespaced_event(namespace).items
        return next((e.message for e in events if e.reason == "AppIdNotInvocable"), None)

    message = cluster_mod.poll(event, timeout=60, what="an AppIdNotInvocable Event")
    assert "'orders.v2'" in message and "other apps cannot invoke it" in message


# --- resolution -------------------------------------------------------------------------


class Replica:
    """A target sidecar and its app on a test host: what a pod of app `orders` would run."""

    def __init__(self, host: netns.NetnsHost, name: str, workdir: Path) -> None:
        self.host, self.name = host, name
        content = workdir / name / "content"
        content.mkdir(parents=True)
        (content / "whoami").write_text(name)  # the app answers GET /whoami with its replica's name
        self.log_path = workdir / name / "sidecar.log"
        argv = [
            kubelet.OTTAVA, "run", "--app-id", "orders",
            "--app-port", str(APP_PORT),
            "--internal-grpc-port", str(SERVICE_PORTS["internal"]),
            "--internal-listen-address", "0.0.0.0",
            "--disable-mtls",  # as the caller, which runs out of a pod (kubelet.run_sidecar)
            "--", sys.executable, "-m", "http.server", str(APP_PORT), "--bind", "127.0.0.1", "--directory", str(content),
        ]  # fmt: skip
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "OTTAVA_REGISTRY_DIR": str(workdir / name / "registry"),
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                host.command(argv), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def stop(self) -> None:
        cluster_mod.terminate(self.process)


def endpoint_slice(name: str, endpoints: list[tuple[Replica, bool]]) -> Any:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": "orders-ottava",
                "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
                "app.kubernetes.io/managed-by": "ottava",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [r.host.address], "conditions": {"ready": ready}} for r, ready in endpoints],
        "ports": [{"name": name, "port": port, "protocol": "TCP"} for name, port in SERVICE_PORTS.items()],
    }


def wait_for_service(core: client.CoreV1Api, namespace: str) -> None:
    cluster_mod.poll(
        lambda: read_service(core, namespace, "orders-ottava"), timeout=30, what=f"{namespace}/orders-ottava"
    )


def invoke(app_id: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{SERVICE_PORTS['http']}/v1.0/invoke/{app_id}/method/whoami", timeout=10)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    with ExitStack() as stack:
        started: list[Replica] = []
        for name in ("r1", "r2", "r3"):
            host = stack.enter_context(netns.netns_host())
            started.append(Replica(host, name, tmp_path))
            stack.callback(started[-1].stop)  # before its host goes
        yield started


def test_sidecars_resolve_app_ids_from_endpoint_slices(
    ottava_operator: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    namespace: str,
    restricted_namespace: str,
    replicas: list[Replica],
    tmp_path: Path,
) -> None:
    here, there = namespace, restricted_namespace
    r1, r2, r3 = replicas
    core, discovery = client.CoreV1Api(kube), client.DiscoveryV1Api(kube)
    # App `orders` in both namespaces (its pods never run, so its slices are ours to
    # write), and the caller, `checkout`, here.
    for ns in (here, there):
        assert apply(cluster, ns, annotated("orders")).returncode == 0
        wait_for_service(core, ns)
    discovery.create_namespaced_endpoint_slice(
        here, endpoint_slice("orders-e2e", [(r1, True), (r2, True), (r3, False)])
    )
    discovery.create_namespaced_endpoint_slice(there, endpoint_slice("orders-e2e", [(r3, True)]))
    assert apply(cluster, here, annotated("checkout")).returncode == 0
    caller = kubelet.run_sidecar(pod_of(kube, here, "checkout"), kube, tmp_path)
    try:
        # `id.namespace`: only r3 serves `orders` there, through the peer Role the operator
        # grants this namespace's service accounts there.
        def r3_answers() -> bool:
            return invoke(f"orders.{there}").text == "r3"

        cluster_mod.poll(r3_answers, timeout=60, what=f"orders.{there} to be answered by r3")

        # `id`: the two ready replicas, in turn; r3 serves (above) but is not ready here.
        seen: set[str] = set()

        def both_ready_replicas_answer() -> bool:
            response = invoke("orders")
            seen.add(response.text if response.status_code == 200 else f"{response.status_code} {response.text}")
            return {"r1", "r2"} <= seen

        cluster_mod.poll(both_ready_replicas_answer, timeout=60, what=f"r1 and r2 to answer (seen {seen})")
        answers = collections.Counter(invoke("orders").text for _ in range(6))
        assert answers == {"r1": 3, "r2": 3}, answers

        metrics = httpx.get(f"http://127.0.0.1:{SERVICE_PORTS['metrics']}/metrics").text
        assert f'ottava_invocation_ready_endpoints{{app_id="orders",namespace="{here}"}} 2.0' in metrics

        # An endpoint removed from the slice stops taking calls, without a restart.
        discovery.patch_namespaced_endpoint_slice(
            "orders-e2e", here, {"endpoints": [{"addresses": [r1.host.address], "conditions": {"ready": True}}]}
        )

        def only_r1() -> bool:
            return {invoke("orders").text for _ in range(4)} == {"r1"}

        cluster_mod.poll(only_r1, timeout=30, what="calls to go to r1 only once r2 left the slice")

        # No such app: NOT_FOUND, naming the app and the namespace.
        missing = invoke("nobody")
        assert missing.status_code == 404, missing.text
        assert f"no ready pod of app 'nobody' in namespace '{here}'" in missing.json()["message"]
    finally:
        caller.stop()
    for replica in replicas:
        assert replica.process.poll() is None, replica.log_path.read_text()
