"""The same Dapr SDK app, unchanged, on `state.in-memory`, `state.redis` and `state.postgresql`.

Only the Component in the resources folder changes; the app's transcript must not.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import SidecarFactory
from tests.servers import postgresql_server as postgresql_setup
from tests.servers import redis_server as redis_setup
from tests.servers.process import ServerProcess

APP = Path(__file__).with_name("state_app.py")


def component(type_name: str, metadata: dict[str, str]) -> str:
    items = "".join(f"\n  - name: {name}\n    value: {json.dumps(value)}" for name, value in metadata.items())
    return (
        "apiVersion: ottava.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\n"
        f"spec:\n  type: {type_name}\n  version: v1\n  metadata:{items or ' []'}\n"
    )


def run_app(sidecars: SidecarFactory, manifest: str) -> dict[str, object]:
    sidecar = sidecars.start("--app-id", "swap", resources={"statestore.yaml": manifest})
    assert sidecar.status == "UP", sidecar.log()
    result = subprocess.run(
        [sys.executable, str(APP), uuid.uuid4().hex[:8]],
        env={**os.environ, "DAPR_GRPC_PORT": str(sidecar.grpc_port), "DAPR_HTTP_PORT": str(sidecar.http_port)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, f"{result.stderr}\n--- sidecar log ---\n{sidecar.log()}"
    sidecar.stop()
    transcript: dict[str, object] = json.loads(result.stdout)
    return transcript


@pytest.fixture(scope="module")
def in_memory_transcript(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    factory = SidecarFactory(tmp_path_factory.mktemp("in-memory"))
    try:
        return run_app(factory, component("state.in-memory", {}))
    finally:
        factory.stop_all()


def test_the_app_sees_the_contract_on_in_memory(in_memory_transcript: dict[str, object]) -> None:
    assert in_memory_transcript == {
        "read": ['{"qty": 1}', True],
        "write with etag": "ok",
        "write with stale etag": "ABORTED",
        "write with invalid etag": "INVALID_ARGUMENT",
        "first-write on existing": "ABORTED",
        "first-write on new": "ok",
        "after writes": '{"qty": 2}',
        "bulk": [["order", '{"qty": 2}'], ["a", "1"], ["b", "2"], ["missing", ""]],
        "stale transaction": "ABORTED",
        "after transactions": [["a", ""], ["b", "2-bis"], ["c", "3"]],
        "delete with stale etag": "ABORTED",
        "delete with etag": "ok",
        "deleted": "",
        "ttl read": "brief",
        "ttl expired": True,
    }


def test_swapping_to_redis_changes_nothing(
    sidecars: SidecarFactory, redis_server: ServerProcess, in_memory_transcript: dict[str, object]
) -> None:
    manifest = component("state.redis", {"redisHost": redis_server.address, "redisPassword": redis_setup.PASSWORD})
    assert run_app(sidecars, manifest) == in_memory_transcript


def test_swapping_to_postgresql_changes_nothing(
    sidecars: SidecarFactory, postgresql_server: ServerProcess, in_memory_transcript: dict[str, object]
) -> None:
    manifest = component("state.postgresql", {"connectionString": postgresql_setup.dsn(postgresql_server)})
    assert run_app(sidecars, manifest) == in_memory_transcript


def test_swapping_to_sqlite_changes_nothing(
    sidecars: SidecarFactory, tmp_path: Path, in_memory_transcript: dict[str, object]
) -> None:
    manifest = component("state.sqlite", {"databasePath": str(tmp_path / "state.db")})
    assert run_app(sidecars, manifest) == in_memory_transcript
