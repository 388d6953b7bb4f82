"""Redis dies mid-traffic and comes back: the sidecar reports the outage and heals by itself.

During the outage every call fails with an error naming the store and the server,
readiness stays UP (a backend blip must not pull the pod out of its Service), and once
Redis is back calls succeed again without touching the sidecar. Redis runs with
`appendfsync always`, so no acknowledged write may be lost across the crash.
"""

import shutil
import time
from collections.abc import Iterator

import httpx
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError

from tests.conftest import SidecarFactory, SidecarProcess
from tests.servers import redis_server as redis_setup
from tests.servers.process import ServerProcess

RECOVERY_SECONDS = 15.0


@pytest.fixture
def redis() -> Iterator[ServerProcess]:
    """A Redis of this test's own: it gets killed."""
    server = redis_setup.start(durable=True)
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    server.log_path.unlink(missing_ok=True)


def _manifest(redis: ServerProcess) -> str:
    return f"""
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: statestore}}
spec:
  type: state.redis
  version: v1
  metadata:
  - {{name: redisHost, value: "{redis.address}"}}
  - {{name: redisPassword, value: "{redis_setup.PASSWORD}"}}
  - {{name: readTimeout, value: "2s"}}
"""


def _readiness(sidecar: SidecarProcess) -> tuple[int, str]:
    response = httpx.get(f"{sidecar.http_url}/actuator/health/readiness", timeout=5)
    return response.status_code, response.json()["status"]


def test_redis_outage_fails_calls_clearly_keeps_readiness_and_heals(
    sidecars: SidecarFactory, redis: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar = sidecars.start("--app-id", "faults", resources={"statestore.yaml": _manifest(redis)})
    assert sidecar.status == "UP", sidecar.log()
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.http_port))
    acknowledged: dict[str, str] = {}
    with DaprClient() as client:
        for n in range(50):  # traffic before the crash
            client.save_state("statestore", f"k{n}", f"v{n}")
            acknowledged[f"k{n}"] = f"v{n}"

        redis.kill()
        errors = []
        for n in range(5):  # traffic during the outage
            started = time.monotonic()
            with pytest.raises(DaprGrpcError) as failure:
                client.save_state("statestore", f"outage{n}", "x")
            assert time.monotonic() - started < 5, "a call during the outage must fail fast, not hang"
            errors.append(str(failure.value.details()))
            with pytest.raises(DaprGrpcError):
                client.get_state("statestore", "k1")
        assert all("statestore" in e and f"redis at {redis.address}" in e for e in errors), errors
        assert _readiness(sidecar) == (200, "UP")

        redis.start()  # same port, same data folder
        deadline = time.monotonic() + RECOVERY_SECONDS
        while True:
            try:
                client.save_state("statestore", "after", "back")
                break
            except DaprGrpcError:
                assert time.monotonic() < deadline, f"no recovery within {RECOVERY_SECONDS}s:\n{sidecar.log()}"
                time.sleep(0.1)
        assert client.get_state("statestore", "after").data == b"back"
        lost = {k: v for k, v in acknowledged.items() if client.get_state("statestore", k).data.decode() != v}
        assert not lost, f"acknowledged writes lost across the crash: {sorted(lost)}"
    assert _readiness(sidecar) == (200, "UP")
