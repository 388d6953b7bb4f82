"""Bring the e2e cluster (control plane and node) up, or reuse a running one, from pytest.

The cluster itself is managed by ``e2e/cluster.sh``, the same script behind
``make -C e2e up``, so a developer's ``make cluster-up`` and a test run always
get the very same control plane. This module only drives that script, shows its
progress (a cold build takes many minutes and must not look like a hang), and
turns a failure into an error that carries the script's own explanation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from kubernetes import client, config

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = REPO / "e2e"
CLUSTER_SCRIPT = E2E_DIR / "cluster.sh"
BUILD_SCRIPT = E2E_DIR / "build.sh"
STATE_DIR = E2E_DIR / ".cluster"
ADMIN_KUBECONFIG = STATE_DIR / "kubeconfig"

# The one node of the cluster (see e2e/README.md); the name and bridge follow
# the same environment overrides as e2e/cluster.sh.
NODE_NAME = os.environ.get("OTTAVA_E2E_NODE_NAME", "ottava-node")
NODE_BRIDGE = os.environ.get("OTTAVA_E2E_NODE_BRIDGE", "ottava-node0")
NODE_IP = "198.18.254.1"
KUBERNETES_SERVICE_IP = "198.19.0.1"
# Images that `cluster.sh up` builds from the project's own static binaries and
# imports into the node's containerd. Nothing is ever pulled: pods that use them
# say imagePullPolicy: Never. More images come in with Cluster.load_images().
PAUSE_IMAGE = "localhost/ottava-e2e/pause:v1"
PODCHECK_IMAGE = "localhost/ottava-e2e/podcheck:v1"

T = TypeVar("T")


class ClusterStartError(RuntimeError):
    """The control plane could not be built or started; the message says why."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A running control plane, as the tests see it.

    ``started_here`` records whether this test session started it, so that the
    session stops only what it started and leaves a developer's cluster alone.
    """

    kubeconfig: Path
    bin_dir: Path
    started_here: bool

    def kubectl(self, *args: str, kubeconfig: Path | None = None, stdin: str | None = None) -> str:
        """Run the pinned kubectl like a user would; fail with its stderr if it fails."""
        return run_tool(
            self.bin_dir / "kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig), *args, stdin=stdin
        )

    def new_api_client(self, kubeconfig: Path | None = None) -> client.ApiClient:
        """A Python client for the admin kubeconfig, or for another one (e.g. a ServiceAccount's)."""
        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def load_images(self, *archives: Path) -> str:
        """Import image archives (docker-archive tars) into the node's containerd: ``e2e/cluster.sh load``.

        Pods then run them with ``imagePullPolicy: Never``; the node cannot pull.
        """
        return run_tool(CLUSTER_SCRIPT, "load", *(str(a) for a in archives), timeout=600)


# The ports of a sidecar run on the host as the kubelet runs it (kubelet.py): gRPC, HTTP,
# metrics, internal. They lie in the kernel's ephemeral range (32768-60999), so any
# outgoing connection of the tests may hold one as its local port, and the sidecar's bind
# then fails with "address already in use" (seen once in CI for 50002).
SIDECAR_HOST_PORTS = "3500,9090,50001-50002"
_RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


@contextlib.contextmanager
def reserved_ports(ports: str = SIDECAR_HOST_PORTS) -> Iterator[None]:
    """Keep `ports` out of the ephemeral range while the tests run; the setting as it was afterwards."""
    try:
        before = _RESERVED_PORTS.read_text().strip()
        _RESERVED_PORTS.write_text(",".join(p for p in (before, ports) if p) + "\n")
    except OSError:  # not root, or no such setting: the tests run as they did before
        yield
        return
    try:
        yield
    finally:
        _RESERVED_PORTS.write_text(before + "\n")


class ToolError(subprocess.CalledProcessError):
    """A CLI that failed; its message ends with what the CLI said on stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or ''}".rstrip()


def run_tool(binary: Path, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
    """Run a CLI and return its stdout; raise with the command's stderr on failure."""
    proc = subprocess.run(
        [str(binary), *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise ToolError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def _stream(argv: Sequence[str], echo: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run a command, echoing each output line as it comes; keep the tail for errors."""
    tail: deque[str] = deque(maxlen=80)
    with subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            echo(line.rstrip("\n"))
        return proc.wait(), list(tail)


def _is_ready() -> bool:
    status = subprocess.run(
        [str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    return status.returncode == 0


def _bin_dir() -> Path:
    out = subprocess.run([str(BUILD_SCRIPT), "--bin-dir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def ensure_up(echo: Callable[[str], None] = print) -> Cluster:
    """Reuse a ready cluster, or build and start one through ``e2e/cluster.sh up``.

    Raises ClusterStartError with the tail of the script's output, which names
    the failing process and quotes its log, so a broken start is diagnosable
    from the test report alone.
    """
    if _is_ready():
        echo(f"[e2e] reusing the running cluster ({ADMIN_KUBECONFIG})")
        return Cluster(ADMIN_KUBECONFIG, _bin_dir(), started_here=False)
    echo("[e2e] starting the cluster with e2e/cluster.sh up (the first build on a machine is slow)")
    rc, tail = _stream([str(CLUSTER_SCRIPT), "up"], echo)
    if rc != 0:
        raise ClusterStartError(f"e2e/cluster.sh up failed with exit code {rc}:\n" + "\n".join(tail))
    return Cluster(ADMIN_KUBECONFIG, _bin_dir(), started_here=True)


def ensure_down(echo: Callable[[str], None] = print) -> None:
    """Stop the cluster and remove its state, unless OTTAVA_E2E_KEEP asks to keep it for the next run."""
    if os.environ.get("OTTAVA_E2E_KEEP"):
        echo("[e2e] OTTAVA_E2E_KEEP is set: leaving the cluster running")
        return
    down(echo)


def down(echo: Callable[[str], None] = print) -> None:
    """``e2e/cluster.sh down``: stop everything and remove every trace; a no-op when nothing runs."""
    rc, tail = _stream([str(CLUSTER_SCRIPT), "down"], echo)
    if rc != 0:
        raise ClusterStartError(f"e2e/cluster.sh down failed with exit code {rc}:\n" + "\n".join(tail))


def poll(condition: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Return the first truthy result of ``condition`` or fail after ``timeout`` seconds.

    Tests wait for the cluster's controllers this way instead of sleeping a
    fixed time: fast when things are fast, and an honest failure naming what
    never happened (with the last exception seen) when they are not.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
        except Exception as exc:  # remembered, and reported on timeout
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def terminate(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, as the kubelet stops a container; SIGKILL if it has not exited within `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def stderr_echo(line: str) -> None:
    """Write progress straight to the terminal's stderr (callers disable pytest capture around it)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
