"""Helpers shared by the pub/sub and invocation tests: apps under `ottava run`, polling with deadlines."""

import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.conftest import SidecarFactory, SidecarProcess

APPS = Path(__file__).resolve().parent / "apps"
ROOT = APPS.parent.parent
T = TypeVar("T")


def free_port() -> int:
    """A port nobody listens on now (for an app whose port the sidecar must know up front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def payload(event: dict[str, Any]) -> Any:
    """The event's data, whether the app recorded it as text (gRPC) or parsed JSON (HTTP)."""
    data = event["data"]
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


def readiness(sidecar: SidecarProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{sidecar.http_url}/actuator/health/readiness").json()
    return body


def wait_ready(sidecar: SidecarProcess, timeout: float = 30.0) -> None:
    wait_for(lambda: readiness(sidecar)["status"] == "UP", f"{sidecar.ready_line} to be UP", timeout)


def start_with_app(
    sidecars: SidecarFactory,
    app_id: str,
    protocol: str,
    script: str | None,
    *,
    events_file: Path,
    registry_dir: Path,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> SidecarProcess:
    """`ottava run --app-id ID --app-port P --app-protocol PROTO -- python apps/SCRIPT`, as users run an app."""
    command = ["--", sys.executable, str(APPS / script)] if script else []
    env = {
        **(env or {}),
        "EVENTS_FILE": str(events_file),
        "OTTAVA_REGISTRY_DIR": str(registry_dir),
        "PYTHONPATH": str(ROOT),
    }
    return sidecars.start(
        "--app-id", app_id, "--app-port", str(free_port()), "--app-protocol", protocol, *args, *command, env=env
    )


def stop_all_gracefully(factory: SidecarFactory) -> None:
    """SIGTERM each sidecar, which stops its app too (`ottava run` forwards the signal)."""
    for sidecar in factory.started:
        sidecar.stop()
