"""Starting and stopping what the benchmark measures: Ottava, daprd, the bare server, and the apps behind them.

Every server listens on loopback on a free port, writes its log to the run's work folder,
and is stopped by whoever started it, on errors too (`Processes` is a context manager).
"""

import contextlib
import importlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, cast

BENCH = Path(__file__).resolve().parent.parent
OTTAVA = str(Path(sys.executable).with_name("ottava"))
READY_PATTERN = r"grpc=\S+:(\d+) http=\S+:(\d+)"  # Ottava's ready line and the bare server's
VALUE = b'{"sku": "ottava-8", "qty": 1, "price": 42.5}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Lines:
    """A child's stdout, drained by a thread so that it never blocks on a full pipe."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout

        def drain() -> None:
            for line in stdout:
                self.queue.put(line)
            self.queue.put(None)

        threading.Thread(target=drain, daemon=True).start()

    def expect(self, pattern: str, timeout: float, what: str) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}") from None
            if line is None:
                raise RuntimeError(f"{what}: the process exited first")
            match = re.search(pattern, line)
            if match:
                return match


def stop_process(process: subprocess.Popen[str], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace`, to the process group we gave it (its children too)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # any child left behind by a leader that exited


@dataclass
class Server:
    """A started target: where its APIs listen, the pid whose process tree is its cost, and how to stop it."""

    name: str
    pid: int
    grpc_port: int
    http_port: int
    ready_seconds: float
    stop: Callable[[], None]
    lines: Lines | None = None


@dataclass
class Processes:
    """Everything a run started, stopped in reverse order when the run ends, however it ends."""

    workdir: Path
    started: list[Server] = field(default_factory=list)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        while self.started:
            self.stop(self.started[-1])

    def stop(self, server: Server) -> None:
        if server in self.started:
            self.started.remove(server)
        server.stop()

    def spawn(
        self, name: str, command: list[str], *, env: Mapping[str, str] | None = None, ready: str | None = READY_PATTERN
    ) -> Server:
        """Start `command`; with `ready`, wait for that line on its stdout and read its two ports from it."""
        log = (self.workdir / f"{name}.log").open("a", encoding="utf-8")
        began = time.perf_counter()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: stopping it stops its children
        )
        log.close()
        server = Server(name, process.pid, 0, 0, 0.0, lambda: stop_process(process), Lines(process))
        self.started.append(server)
        if ready is not None:
            assert server.lines is not None
            match = server.lines.expect(ready, 120, f"{name} to be ready (log: {self.workdir / name}.log)")
            server.ready_seconds = time.perf_counter() - began
            if match.groups():
                server.grpc_port, server.http_port = int(match[1]), int(match[2])
        return server

    def ottava(
        self,
        app_id: str,
        *,
        app_port: int | None = None,
        app_protocol: str = "http",
        ports: tuple[int, int] = (0, 0),
        resources: Path | None = None,
    ) -> Server:
        """`ottava run` on its in-memory defaults, mTLS to peers with the run's local CA (the default).

        `ports`: its gRPC and HTTP ports (0: free ones, read from its ready line).
        `resources`: a resources folder instead of the in-memory defaults.
        """
        command = [OTTAVA, "run", "--app-id", app_id, "--grpc-port", str(ports[0]), "--http-port", str(ports[1])]
        command += ["--metrics-port", "0", "--internal-grpc-port", "0"]
        if resources is not None:
            command += ["--resources-path", str(resources)]
        if app_port is not None:
            command += ["--app-port", str(app_port), "--app-protocol", app_protocol]
        env = {"OTTAVA_CA_DIR": str(self.workdir / "ca"), "OTTAVA_REGISTRY_DIR": str(self.workdir / "registry")}
        return self.spawn(f"ottava-{app_id}", command, env=env)

    def bare(self, ports: tuple[int, int] = (0, 0)) -> Server:
        command = [sys.executable, str(BENCH / "bare_server.py"), VALUE.decode(), *map(str, ports)]
        return self.spawn("bare", command)

    def bare_processes(self, count: int) -> Server:
        """`count` bare servers sharing one gRPC port (SO_REUSEPORT), stopped together; the pid is the first one's."""
        grpc_port = free_port()
        servers = [
            self.spawn(
                f"bare-shared-{n}",
                [sys.executable, str(BENCH / "bare_server.py"), VALUE.decode(), str(grpc_port), "0", "shared"],
            )
            for n in range(count)
        ]
        for server in servers:
            self.started.remove(server)

        def stop() -> None:
            for server in servers:
                server.stop()

        first = servers[0]
        together = Server("bare-shared", first.pid, grpc_port, first.http_port, first.ready_seconds, stop)
        self.started.append(together)
        return together

    def daprd(
        self,
        binary: Path,
        app_id: str,
        *,
        app_port: int | None = None,
        app_protocol: str = "http",
        ports: tuple[int, int] | None = None,
    ) -> Server:
        workdir = self.workdir / f"daprd-{app_id}"
        workdir.mkdir(exist_ok=True)
        sidecar = _daprd_module().start_daprd(
            binary, app_id, app_port=app_port, app_protocol=app_protocol, workdir=workdir, ports=ports
        )
        server = Server(
            f"daprd-{app_id}", sidecar.process.pid, sidecar.grpc_port, sidecar.http_port, sidecar.ready_seconds,
            sidecar.stop,
        )  # fmt: skip
        self.started.append(server)
        return server

    def app(
        self, name: str, script: str, port: int, *, ready: str | None, env: Mapping[str, str] | None = None
    ) -> Server:
        """An app behind a sidecar (the echo app, the subscriber), listening on `port`."""
        command = [sys.executable, str(BENCH / script)]
        return self.spawn(name, command, env={"APP_PORT": str(port), **(env or {})}, ready=ready)


class _Daprd(Protocol):
    """What `bench.peers.daprd.start_daprd` answers (read-only here)."""

    @property
    def process(self) -> subprocess.Popen[bytes]: ...
    @property
    def grpc_port(self) -> int: ...
    @property
    def http_port(self) -> int: ...
    @property
    def ready_seconds(self) -> float: ...

    def stop(self) -> None: ...


class _DaprdModule(Protocol):
    def start_daprd(
        self,
        binary: Path,
        app_id: str,
        *,
        app_port: int | None,
        app_protocol: str,
        workdir: Path,
        ports: tuple[int, int] | None = None,
    ) -> _Daprd: ...


def _daprd_module() -> _DaprdModule:
    # bench/peers/daprd.py comes from its own branch; imported by name so that this harness
    # type-checks and runs for Ottava and the bare floor without it.
    return cast(_DaprdModule, importlib.import_module("bench.peers.daprd"))


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
