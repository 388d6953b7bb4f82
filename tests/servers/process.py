"""A server run as a child process, with its output in a log file and a readiness probe."""

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Probe = Callable[[], bool]


class ServerError(AssertionError):
    pass


def free_port() -> int:
    """A port that nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(port: int, host: str = "127.0.0.1") -> Probe:
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return probe


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"ottava-{prefix}-"))


@dataclass
class ServerProcess:
    """One running server; `restart` reuses its port and data folder (for fault tests)."""

    name: str
    command: Sequence[str]
    ready: Probe
    data_dir: Path
    port: int
    start_timeout: float = 60.0
    preexec: Callable[[], None] | None = None
    user: str | None = None  # run as this user (via setpriv) instead of root
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "ServerProcess":
        started = time.monotonic()
        command = list(self.command)
        if self.user is not None:
            command = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", "--", *command]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                env={**os.environ, **self.env},
                start_new_session=True,  # a Ctrl-C of pytest must not reach it before the fixture stops it
            )
        deadline = started + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.process.returncode} while starting:\n{self.output()}")
            if self.ready():
                print(f"[servers] {self.name} ready on {self.address} in {time.monotonic() - started:.1f}s", flush=True)
                return self
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"{self.name} was not ready within {self.start_timeout:.0f}s:\n{self.output()}")

    def output(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-tail:]
        except OSError:
            return "(no output)"

    def kill(self) -> None:
        """Stop it hard (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()
