"""Shared fixtures: real sidecar processes, started the way users start them (`ottava run`).

Each sidecar listens on ports the OS picks (`--grpc-port 0` …) and reports them in its
ready line, so tests never race each other for fixed ports.
"""

import atexit
import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e import cluster as cluster_mod

READY_LINE = re.compile(
    r"^ottava sidecar (?P<status>UP|DOWN|INIT): app_id=(?P<app_id>\S+) grpc=(?P<grpc>\S+):(?P<grpc_port>\d+) "
    r"http=\S+:(?P<http_port>\d+)(?: metrics=\S+:(?P<metrics_port>\d+))?"
)
START_TIMEOUT = 30.0
OTTAVA = str(Path(sys.executable).with_name("ottava"))

# Standalone sidecars make a local CA on first use in the user's config folder; the tests'
# sidecars (in-process and `ottava run`, which inherit this) share one of their own instead.
if "OTTAVA_CA_DIR" not in os.environ:
    os.environ["OTTAVA_CA_DIR"] = tempfile.mkdtemp(prefix="ottava-tests-ca-")
    atexit.register(shutil.rmtree, os.environ["OTTAVA_CA_DIR"], True)


@dataclass
class SidecarProcess:
    process: subprocess.Popen[str]
    log_path: Path
    ready_line: str = ""
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int | None = None
    status: str = ""
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                line = self.process.stdout.readline()
                if not line:
                    code = self.process.wait(timeout=10)
                    raise AssertionError(f"ottava run exited with {code} before ready:\n{self.log()}")
                self.stdout_lines.append(line)
                match = READY_LINE.match(line)
                if match:
                    self.ready_line = line.strip()
                    self.status = match["status"]
                    self.grpc_port = int(match["grpc_port"])
                    self.http_port = int(match["http_port"])
                    self.metrics_port = int(match["metrics_port"]) if match["metrics_port"] else None
                    return
        raise AssertionError(f"ottava run printed no ready line within {START_TIMEOUT}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"sidecar did not stop within {timeout}s of signal {sig}:\n{self.log()}") from None
        self.close()
        return self.process.returncode

    def close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_ottava(
    args: list[str], *, env: dict[str, str] | None = None, log_dir: Path, wait: bool = True
) -> SidecarProcess:
    log_path = Path(tempfile.mkstemp(prefix="ottava-", suffix=".log", dir=log_dir)[1])
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [
                OTTAVA,
                "run",
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--metrics-port",
                "0",
                "--internal-grpc-port",
                "0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
            # A group of its own, so that `stop_all` also ends an app run behind it (`-- COMMAND`).
            start_new_session=True,
        )
    sidecar = SidecarProcess(process, log_path)
    if wait:
        sidecar.wait_ready()
    return sidecar


class SidecarFactory:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[SidecarProcess] = []

    def start(
        self,
        *args: str,
        resources: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> SidecarProcess:
        """Start `ottava run ARGS`; `resources` (file name → YAML) becomes its --resources-path."""
        extra = list(args)
        if resources is not None:
            folder = Path(tempfile.mkdtemp(prefix="resources-", dir=self.log_dir))
            for name, text in resources.items():
                (folder / name).write_text(text, encoding="utf-8")
            extra = ["--resources-path", str(folder), *extra]
        sidecar = run_ottava(extra, env=env, log_dir=self.log_dir, wait=wait)
        self.started.append(sidecar)
        return sidecar

    def stop_all(self) -> None:
        """Kill each sidecar with what runs in its process group (an app behind `-- COMMAND`)."""
        for sidecar in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sidecar.process.pid, signal.SIGKILL)
            sidecar.process.wait()
            sidecar.close()


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[SidecarFactory]:
    factory = SidecarFactory(tmp_path)
    yield factory
    factory.stop_all()


SECRET_ENV = {"OTTAVA_TEST_DB_PASSWORD": "s3cret"}


@pytest.fixture(scope="session")
def default_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    """One sidecar on the standalone defaults (what `make run` starts), shared by read-mostly tests."""
    factory = SidecarFactory(tmp_path_factory.mktemp("default-sidecar"))
    sidecar = factory.start("--app-id", "quickstart", env=SECRET_ENV)
    yield sidecar
    sidecar.stop()
    factory.stop_all()


# The e2e cluster, shared by every suite that needs one (tests/e2e, and the conformance
# suites of the Kubernetes-backed components), so that one session has one owner of it.
@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[cluster_mod.Cluster]:
    """The running cluster; started here (and stopped at the end) unless one was already up.

    The last test of a session (test_node_teardown.py) may have taken it down
    already; stopping it again is then a no-op.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with cluster_mod.reserved_ports():
        # The build and start print progress that belongs on the terminal, live,
        # not in a captured buffer shown only after a 10-minute silence.
        with capture.global_and_fixture_disabled():
            running = cluster_mod.ensure_up(cluster_mod.stderr_echo)
        yield running
        if running.started_here:
            with capture.global_and_fixture_disabled():
                cluster_mod.ensure_down(cluster_mod.stderr_echo)
