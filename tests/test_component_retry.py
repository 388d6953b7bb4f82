"""A component whose backend is down at start is retried, and the sidecar gets ready once it answers."""

import shutil
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import SidecarFactory
from tests.servers import redis_server
from tests.servers.process import ServerProcess, free_port

DEADLINE_SECONDS = 60.0

REDIS_STORE = """
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: {name}}}
spec:
  type: state.redis
  ignoreErrors: {ignore}
  metadata:
  - {{name: redisHost, value: "127.0.0.1:{port}"}}
  - {{name: redisPassword, value: {password}}}
  - {{name: connectAttempts, value: "1"}}
"""


@pytest.fixture
def late_redis() -> Iterator[Callable[[int], ServerProcess]]:
    """Starts Redis on a given port when the test says so; stopped at the end."""
    started: list[ServerProcess] = []

    def start(port: int) -> ServerProcess:
        server = redis_server.start(port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def readiness(url: str) -> httpx.Response:
    return httpx.get(f"{url}/actuator/health/readiness")


def test_a_backend_that_comes_up_later_makes_the_sidecar_ready(
    sidecars: SidecarFactory, late_redis: Callable[[int], ServerProcess]
) -> None:
    port = free_port()  # nothing listens here yet
    stores = {
        name: REDIS_STORE.format(name=name, ignore=ignore, port=port, password=redis_server.PASSWORD)
        for name, ignore in (("orders", "false"), ("cache", "true"))
    }
    sidecar = sidecars.start(resources={f"{name}.yaml": text for name, text in stores.items()})
    assert sidecar.status == "DOWN", sidecar.ready_line

    answer = readiness(sidecar.http_url)
    assert answer.status_code == 503
    body = answer.json()
    assert body["components"]["orders"]["status"] == "DOWN"
    assert f"127.0.0.1:{port}" in body["components"]["orders"]["details"]["reason"]
    assert body["components"]["cache"]["status"] == "DOWN"  # ignored for readiness, retried all the same

    late_redis(port)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        body = readiness(sidecar.http_url).json()
        if body["status"] == "UP" and body["components"]["cache"]["status"] == "UP":
            break
        assert time.monotonic() < deadline, (
            f"not ready {DEADLINE_SECONDS}s after Redis started: {body}\n{sidecar.log()}"
        )
        time.sleep(0.2)
    assert readiness(sidecar.http_url).status_code == 200
    assert body["components"]["orders"] == {"status": "UP", "details": {"type": "state.redis", "version": "v1"}}

    for store in stores:
        saved = httpx.post(f"{sidecar.http_url}/v1.0/state/{store}", json=[{"key": "greeting", "value": store}])
        assert saved.status_code == 204, saved.text
        got = httpx.get(f"{sidecar.http_url}/v1.0/state/{store}/greeting")
        assert got.status_code == 200 and got.json() == store
    assert "component orders UP" in sidecar.log()
