"""Start a daprd (the one `bench/peers/build-daprd.sh` builds) on loopback, and stop it.

    binary = Path(subprocess.check_output(["bench/peers/build-daprd.sh"], text=True).splitlines()[-1])
    b = start_daprd(binary, "bench-b", app_port=6001, workdir=tmp / "daprd-b")
    a = start_daprd(binary, "bench-a", app_port=None, workdir=tmp / "daprd-a")
    ...  # a.grpc_port / a.http_port answer the Dapr API; a invokes "bench-b" through b
    a.stop(), b.stop()

Every daprd is standalone: no placement, no scheduler, no sentry (so no mTLS between
daprds), and every port it opens is bound to 127.0.0.1. Its resources are
`state.in-memory` named "statestore" and `pubsub.in-memory` named "pubsub", which
`start_daprd` writes into `workdir`. Daprds find each other through the SQLite name
resolver (a file, no multicast): by default the file lies beside `workdir`, so daprds
given sibling workdirs (or the same one) resolve each other, and those in other folders
do not. Daprd registers the address DAPR_HOST_IP names, here 127.0.0.1.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

STATESTORE = "statestore"
PUBSUB = "pubsub"

_RESOURCES = f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {STATESTORE}
spec:
  type: state.in-memory
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {PUBSUB}
spec:
  type: pubsub.in-memory
  version: v1
"""

# `names` goes in as a JSON string, which YAML reads as a double-quoted scalar.
_CONFIGURATION = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: bench
spec:
  nameResolution:
    component: sqlite
    version: v1
    configuration:
      connectionString: {names}
"""


@dataclass
class Daprd:
    """A running daprd: its ports (all on 127.0.0.1), its process and how long it took to be ready."""

    app_id: str
    grpc_port: int
    http_port: int
    internal_port: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    ready_seconds: float
    """From spawning the process to its first 204 from `/v1.0/healthz`."""
    log: Path
    """daprd's stdout and stderr."""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `grace` seconds. Safe to call twice."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_resources(workdir: Path, names: Path) -> tuple[Path, Path]:
    """The resources folder and the Configuration file a daprd reads, written under `workdir`."""
    resources = workdir / "resources"
    resources.mkdir(parents=True, exist_ok=True)
    (resources / "components.yaml").write_text(_RESOURCES)
    configuration = workdir / "configuration.yaml"
    configuration.write_text(_CONFIGURATION.format(names=json.dumps(str(names))))
    return resources, configuration


def start_daprd(
    binary: Path,
    app_id: str,
    *,
    app_port: int | None = None,
    app_protocol: str = "http",
    workdir: Path,
    names: Path | None = None,
    timeout: float = 30.0,
    ports: tuple[int, int] | None = None,
) -> Daprd:
    """Start daprd for `app_id` (its app, if any, listens on 127.0.0.1:`app_port`) and wait until it is ready.

    `app_protocol` is daprd's `--app-protocol` (http, grpc, ...). `names` is the SQLite file
    of the name resolver, shared by the daprds that invoke each other (default: beside
    `workdir`). Daprd waits for its app's port to open before it is ready, so start the
    app first or alongside. Raises RuntimeError, with the end of daprd's log, if it exits
    or is not ready within `timeout` seconds; it is stopped then. `ports`: its gRPC and HTTP
    ports (default: free ones, as its other ports).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    names = names or workdir.resolve().parent / "daprd-names.db"
    resources, configuration = write_resources(workdir, names)
    grpc_port, http_port = ports or (free_port(), free_port())
    internal_port, metrics_port = free_port(), free_port()
    command = [
        str(binary),
        "--mode", "standalone",
        "--app-id", app_id,
        "--dapr-listen-addresses", "127.0.0.1",
        "--dapr-grpc-port", str(grpc_port),
        "--dapr-http-port", str(http_port),
        "--dapr-internal-grpc-listen-address", "127.0.0.1",
        "--dapr-internal-grpc-port", str(internal_port),
        "--metrics-listen-address", "127.0.0.1",
        "--metrics-port", str(metrics_port),
        "--resources-path", str(resources),
        "--config", str(configuration),
        "--placement-host-address", "",
        "--scheduler-host-address", "",
        "--app-channel-address", "127.0.0.1",
        "--app-protocol", app_protocol,
    ]  # fmt: skip
    if app_port is not None:
        command += ["--app-port", str(app_port)]
    # Without it daprd asks the routing table for an outbound address and registers that.
    env = {**os.environ, "DAPR_HOST_IP": "127.0.0.1"}
    log = workdir / f"daprd-{app_id}.log"
    with log.open("wb") as out:
        began = time.perf_counter()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir
        )
    daprd = Daprd(app_id, grpc_port, http_port, internal_port, metrics_port, process, 0.0, log)
    try:
        daprd.ready_seconds = _wait_ready(daprd, began, timeout)
    except BaseException:
        daprd.stop()
        raise
    return daprd


def _wait_ready(daprd: Daprd, began: float, timeout: float) -> float:
    while True:
        if daprd.process.poll() is not None:
            raise RuntimeError(f"daprd {daprd.app_id} exited with {daprd.process.returncode}:\n{_tail(daprd.log)}")
        if _healthy(daprd.http_port):
            return time.perf_counter() - began
        if time.perf_counter() - began > timeout:
            raise RuntimeError(f"daprd {daprd.app_id} not ready within {timeout} s:\n{_tail(daprd.log)}")
        time.sleep(0.002)


def _healthy(http_port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=1)
    try:
        connection.request("GET", "/v1.0/healthz")
        return connection.getresponse().status == 204
    except OSError:
        return False
    finally:
        connection.close()


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
