"""Every server-backed implementation fails to start with a message that says why.

An unreachable server is retried (with backoff) and then named with the reason; refused
credentials fail at once, without retries, and say so.
"""

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.errors import ComponentError

from tests.conformance.backends import BACKENDS
from tests.conformance.conftest import Components
from tests.servers import kubernetes as kubernetes_setup
from tests.servers.process import free_port

# Metadata pointing a type at a port where nothing listens, by the server it needs.
UNREACHABLE: dict[str, Callable[[int], dict[str, str]]] = {
    "redis_server": lambda port: {"redisHost": f"127.0.0.1:{port}"},
    "postgresql_server": lambda port: {"connectionString": f"postgresql://postgres:pw@127.0.0.1:{port}/postgres"},
    "etcd_server": lambda port: {"endpoints": f"127.0.0.1:{port}"},
    "zookeeper_server": lambda port: {"servers": f"127.0.0.1:{port}"},
    "nats_server": lambda port: {"natsURL": f"nats://127.0.0.1:{port}"},
    "mosquitto_server": lambda port: {"url": f"127.0.0.1:{port}"},
    "rabbitmq_server": lambda port: {"host": f"127.0.0.1:{port}"},
    "s3_server": lambda port: {"endpoint": f"http://127.0.0.1:{port}", "bucket": "b", "forcePathStyle": "true"},
    "kubernetes_namespace": lambda port: {"kubeconfigPath": kubernetes_setup.unreachable_kubeconfig(port)},
}
# Fields a type requires besides where its server is (what it reads or writes there).
REQUIRED: dict[str, dict[str, str]] = {
    "bindings.mqtt": {"topic": "init-errors"},
    "bindings.rabbitmq": {"queueName": "init-errors"},
}
WRONG_PASSWORD: dict[str, dict[str, str]] = {
    "redis_server": {"redisPassword": "wrong"},
    "postgresql_server": {"password": "wrong"},
    "nats_server": {"password": "wrong"},
    "mosquitto_server": {"password": "wrong"},
    "rabbitmq_server": {"password": "wrong"},
}


def _server_backed() -> list[str]:
    names = sorted(t.name for t in catalogue.all_types())
    return [n for n in names if n in BACKENDS and BACKENDS[n].servers and BACKENDS[n].connects_at_start]


@pytest.mark.parametrize("type_name", _server_backed())
async def test_unreachable_server_is_named_after_retries(type_name: str, request: pytest.FixtureRequest) -> None:
    (server,) = BACKENDS[type_name].servers
    port = free_port()
    metadata = {
        **REQUIRED.get(type_name, {}),
        **UNREACHABLE[server](port),
        "connectAttempts": "2",
        "connectBackoff": "50ms",
        "dialTimeout": "1s",
    }
    component = catalogue.lookup(type_name).create("store", metadata, app_id="app")
    started = time.monotonic()
    with pytest.raises(ComponentError, match=rf"cannot connect to \w+ at 127\.0\.0\.1:{port} after 2 attempts: .+"):
        await component.init()
    assert time.monotonic() - started < 5
    await component.close()


@pytest.mark.parametrize("type_name", [n for n in _server_backed() if BACKENDS[n].servers[0] in WRONG_PASSWORD])
async def test_wrong_password_fails_at_once(type_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    components = Components(request, type_name, tmp_path)
    (server,) = components.backend.servers
    metadata = components.metadata(**WRONG_PASSWORD[server], connectAttempts="5", connectBackoff="2s")
    component = catalogue.lookup(type_name).create("store", metadata, app_id="app")
    started = time.monotonic()
    with pytest.raises(ComponentError, match="refused the credentials"):
        await component.init()
    assert time.monotonic() - started < 1.5, "refused credentials must not be retried"
    await component.close()
