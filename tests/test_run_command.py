"""`ottava run -- COMMAND`: the app gets the sidecar's ports, signals, and its own exit status."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import OTTAVA, SidecarFactory

ROOT = Path(__file__).resolve().parents[1]
PORTS = ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]


def test_quickstart_example_runs_under_the_sidecar() -> None:
    result = subprocess.run(
        [
            OTTAVA,
            "run",
            "--app-id",
            "quickstart",
            *PORTS,
            "--",
            sys.executable,
            str(ROOT / "examples" / "quickstart.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration changed: greeting = 'hello'" in result.stdout
    assert "lock taken: True" in result.stdout
    assert "component: statestore (state.in-memory)" in result.stdout
    assert "async state: 3 items" in result.stdout
    assert "quickstart done" in result.stdout


def test_app_sees_the_ports_and_its_exit_status_is_returned() -> None:
    names = ["DAPR_GRPC_PORT", "DAPR_HTTP_PORT", "OTTAVA_GRPC_PORT", "DAPR_GRPC_ENDPOINT", "DAPR_HTTP_ENDPOINT"]
    script = f"import os, sys; print('env', *(os.environ[n] for n in {names!r})); sys.exit(3)"
    # Endpoints left in the user's shell must not point the app at another sidecar: the
    # SDKs prefer them over the ports.
    stale = {"DAPR_GRPC_ENDPOINT": "127.0.0.1:1", "DAPR_HTTP_ENDPOINT": "http://127.0.0.1:1"}
    result = subprocess.run(
        [OTTAVA, "run", *PORTS, "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **stale},
    )
    assert result.returncode == 3, result.stderr
    ready, app_line = result.stdout.splitlines()[:2]
    assert ready.startswith("ottava sidecar UP")
    _, grpc_port, http_port, ottava_port, grpc_endpoint, http_endpoint = app_line.split()
    assert f":{grpc_port} " in ready and f"http=127.0.0.1:{http_port}" in ready and ottava_port == grpc_port
    assert grpc_endpoint == f"127.0.0.1:{grpc_port}"
    assert http_endpoint == f"http://127.0.0.1:{http_port}"


def test_two_sidecars_side_by_side_need_no_internal_port(sidecars: SidecarFactory) -> None:
    """Standalone, the internal port is a free one, as `dapr run` picks; 50002 is for pods."""
    started = [
        subprocess.Popen(
            [OTTAVA, "run", "--app-id", f"side-{n}", *PORTS, "--", sys.executable, "-c", "input()"],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OTTAVA_REGISTRY_DIR": str(sidecars.log_dir / "registry")},
        )
        for n in (1, 2)
    ]
    try:
        ready = [process.stdout.readline() if process.stdout else "" for process in started]
        assert all(line.startswith("ottava sidecar UP") for line in ready), ready
        internal = [line.split("internal=")[1].split()[0] for line in ready]
        assert internal[0] != internal[1]
    finally:
        for process in started:
            process.communicate(input="\n", timeout=60)
    assert [process.returncode for process in started] == [0, 0]


def test_a_bad_limit_stops_start_up_naming_the_flag() -> None:
    result = subprocess.run(
        [OTTAVA, "run", *PORTS, "--max-body-size", "4Xi"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "--max-body-size: '4Xi' is not a size" in result.stderr


def test_sigterm_is_forwarded_to_the_app(sidecars: SidecarFactory, tmp_path: Path) -> None:
    marker = tmp_path / "got-sigterm"
    script = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
        "print('app up', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    sidecar = sidecars.start("--", sys.executable, "-c", script)
    assert sidecar.process.stdout is not None
    assert sidecar.process.stdout.readline().strip() == "app up"
    assert sidecar.stop(signal.SIGTERM) == 0
    assert marker.exists()


def test_unknown_command_fails_clearly() -> None:
    result = subprocess.run(
        [OTTAVA, "run", *PORTS, "--", "/nonexistent/app"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 127
    assert "/nonexistent/app" in result.stderr


def test_shutdown_api_stops_the_sidecar(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start()
    assert httpx.post(f"{sidecar.http_url}/v1.0/shutdown").status_code == 204
    assert sidecar.process.wait(timeout=30) == 0


def test_port_in_use_is_reported(sidecars: SidecarFactory) -> None:
    first = sidecars.start()
    result = subprocess.run(
        [OTTAVA, "run", "--grpc-port", str(first.grpc_port), "--http-port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert str(first.grpc_port) in result.stderr


def test_an_app_that_ignores_sigterm_is_killed_after_the_grace(sidecars: SidecarFactory) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('app up', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    sidecar = sidecars.start("--shutdown-grace", "1", "--", sys.executable, "-c", script)
    assert sidecar.process.stdout is not None
    assert sidecar.process.stdout.readline().strip() == "app up"
    started = time.monotonic()
    # The app's status: killed by SIGKILL, as a shell would report it.
    assert sidecar.stop(signal.SIGTERM) == 128 + signal.SIGKILL
    # The app's grace, then the sidecar's own bounded stop.
    assert time.monotonic() - started < 1 + 1 + 2 + 2


def test_max_body_size_flag_bounds_what_the_apis_accept(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start("--max-body-size", "64Ki")
    item = [{"key": "big", "value": "x" * 100_000}]
    response = httpx.post(f"{sidecar.http_url}/v1.0/state/statestore", json=item)
    assert response.status_code == 413, response.text
    assert response.json()["errorCode"] and "65536" in response.json()["message"]
    assert (
        httpx.post(f"{sidecar.http_url}/v1.0/state/statestore", json=[{"key": "small", "value": 1}]).status_code == 204
    )
    default = sidecars.start()
    assert httpx.post(f"{default.http_url}/v1.0/state/statestore", json=item).status_code == 204
