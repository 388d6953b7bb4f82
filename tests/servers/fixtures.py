"""Session-scoped pytest fixtures, one server each, started on first use.

Import the fixtures into a `conftest.py` (`from tests.servers.fixtures import *`). A
server starts only when a test that needs it runs, so a run that selects a few tests
installs and starts only their servers.
"""

import shutil
from collections.abc import Iterator

import pytest

from tests.e2e import cluster as cluster_mod
from tests.servers import etcd_server as etcd_setup
from tests.servers import http_echo_server as http_echo_setup
from tests.servers import kubernetes as kubernetes_setup
from tests.servers import mosquitto_server as mosquitto_setup
from tests.servers import nats_server as nats_setup
from tests.servers import postgresql_server as postgresql_setup
from tests.servers import rabbitmq_server as rabbitmq_setup
from tests.servers import redis_server as redis_setup
from tests.servers import s3_server as s3_setup
from tests.servers import zookeeper_server as zookeeper_setup
from tests.servers.process import ServerProcess

__all__ = [
    "etcd_server",
    "http_echo_server",
    "kubernetes_namespace",
    "mosquitto_server",
    "nats_server",
    "postgresql_server",
    "rabbitmq_server",
    "redis_server",
    "s3_server",
    "zookeeper_server",
]


def _run(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
        server.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerProcess]:
    yield from _run(redis_setup.start())


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[ServerProcess]:
    yield from _run(postgresql_setup.start())


@pytest.fixture(scope="session")
def http_echo_server() -> Iterator[ServerProcess]:
    yield from _run(http_echo_setup.start())


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[ServerProcess]:
    yield from _run(etcd_setup.start())


@pytest.fixture(scope="session")
def mosquitto_server() -> Iterator[ServerProcess]:
    yield from _run(mosquitto_setup.start())


@pytest.fixture(scope="session")
def nats_server() -> Iterator[ServerProcess]:
    yield from _run(nats_setup.start())


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[ServerProcess]:
    yield from _run(rabbitmq_setup.start())


@pytest.fixture(scope="session")
def s3_server() -> Iterator[ServerProcess]:
    yield from _run(s3_setup.start())


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ServerProcess]:
    yield from _run(zookeeper_setup.start())


@pytest.fixture(scope="module")
def kubernetes_namespace(
    cluster: cluster_mod.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[kubernetes_setup.KubernetesNamespace]:
    """A namespace on the e2e cluster, its sidecars holding the operator's Role.

    Per module, not per session: it is deleted before the session's last test takes the
    cluster down (tests/e2e/test_node_teardown.py).
    """
    components = [kubernetes_setup.component(t, m) for t, m in kubernetes_setup.CONFORMANCE_COMPONENTS]
    yield from kubernetes_setup.open_namespace(cluster, tmp_path_factory.mktemp("kubernetes"), components)
