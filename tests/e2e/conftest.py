"""Fixtures for the end-to-end tests against the real cluster of ``e2e/`` (control plane and one node).

The ``cluster`` fixture is session-scoped: one cluster per test run,
started through ``e2e/cluster.sh up`` (building the binaries on first use) or
reused when one is already running. A cluster this session started is stopped
again at the end (set OTTAVA_E2E_KEEP=1 to keep it for the next run). If the
cluster cannot start, every e2e test errors with the script's explanation:
nothing is skipped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.servers import redis_server
from tests.servers.process import ServerProcess

from . import cluster as cluster_mod
from . import incluster, pods

REDIS_PASSWORD = "journey-redis"  # of `redis_on_the_node`

# The first e2e test also pays for building the control plane when the binary
# cache is cold (5 to 13 minutes measured on 2 cores); pytest-timeout counts
# fixture set-up against that test, so it gets this much more time.
COLD_START_TIMEOUT = 3600


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: runs against the real Kubernetes control plane of e2e/ (started on demand)"
    )
    config.addinivalue_line(
        "markers", "takes_cluster_down: runs `e2e/cluster.sh down` and checks what is left; runs last in a session"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that take the cluster down last; give the first e2e test room for a cold build and start."""
    # A stable sort: everything keeps its order, the teardown tests move to the end.
    items.sort(key=lambda item: item.get_closest_marker("takes_cluster_down") is not None)
    first = next((item for item in items if item.get_closest_marker("e2e")), None)
    if first is not None:
        first.add_marker(pytest.mark.timeout(COLD_START_TIMEOUT))


@pytest.fixture
def ready_node(kube: client.ApiClient) -> str:
    """The name of the cluster's node, once it is Ready.

    It may not be at a test's start even on a healthy cluster: after an
    apiserver outage longer than the node monitor's grace period (a test
    restarts the apiserver), the controller manager marks the node Unknown
    until the kubelet's next status update, as in any cluster.
    """
    core = client.CoreV1Api(kube)

    def ready() -> bool:
        conditions = core.read_node(cluster_mod.NODE_NAME).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    cluster_mod.poll(ready, timeout=90, what=f"node {cluster_mod.NODE_NAME} to be Ready")
    return cluster_mod.NODE_NAME


@pytest.fixture(scope="session")
def kube(cluster: cluster_mod.Cluster) -> Iterator[client.ApiClient]:
    """An admin Python client for the cluster."""
    api = cluster.new_api_client()
    yield api
    api.close()


@pytest.fixture
def namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, ready for pods, deleted afterwards."""
    yield from _namespace(kube, request.node.name, {})


@pytest.fixture
def restricted_namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that enforces the Pod Security "restricted" standard."""
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    yield from _namespace(kube, request.node.name, labels)


def _namespace(kube: client.ApiClient, test_name: str, labels: dict[str, str]) -> Iterator[str]:
    core = client.CoreV1Api(kube)
    name = f"e2e-{re.sub(r'[^a-z0-9]+', '-', test_name.lower())[:40].strip('-')}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    # Pods are rejected until the ServiceAccount controller has created the
    # namespace's `default` account, so a namespace is only "ready" then.
    cluster_mod.poll(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=60,
        what=f"ServiceAccount {name}/default",
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def ottava_in_cluster(
    cluster: cluster_mod.Cluster, kube: client.ApiClient, request: pytest.FixtureRequest
) -> incluster.InstalledOttava:
    """Ottava as users install it: image loaded into the node, `helm install`, the operator in pods."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return incluster.ensure_installed(cluster, kube, cluster_mod.stderr_echo)


@pytest.fixture
def ottava_operator(ottava_in_cluster: incluster.InstalledOttava) -> Iterator[incluster.InstalledOttava]:
    """The installed operator, its two replicas serving; a test that stopped it gets it back afterwards."""
    yield ottava_in_cluster
    if len([p for p in ottava_in_cluster.operator_pods() if pods.is_ready(p)]) < 2:
        ottava_in_cluster.start()


@pytest.fixture(scope="module")
def redis_on_the_node(cluster: cluster_mod.Cluster) -> Iterator[ServerProcess]:
    """A real Redis the pods reach: on the node's bridge address, outside the cluster, with the
    password `REDIS_PASSWORD` (which the tests put in a Secret `redis-auth`)."""
    server = redis_server.start(password=REDIS_PASSWORD, bind=cluster_mod.NODE_IP)
    yield server
    server.stop()
