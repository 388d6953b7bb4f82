"""Check that a daprd built by `build-daprd.sh` serves what the peer benchmarks use, on loopback.

    python -m bench.peers.daprd_check "$(bench/peers/build-daprd.sh | tail -n1)"

Starts two daprds with `bench.peers.daprd`: A, whose app is the benchmark's gRPC
subscriber, and B, whose app is the benchmark's HTTP echo app. Then, with the Dapr
Python SDK: SaveState and GetState on A; PublishEvent on A, received by A's app; and
service invocation of B's app from A's API, through both daprds. Prints each step's
time and every daprd's start → ready, and stops all it started.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from dapr.clients import DaprClient

from bench.peers.daprd import PUBSUB, STATESTORE, Daprd, free_port, start_daprd

BENCH = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    binary = Path(argv[0])
    with tempfile.TemporaryDirectory(prefix="ottava-daprd-check-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        done = workdir / "received"
        subscriber_port, echo_port = free_port(), free_port()
        stack.enter_context(
            app("pubsub_subscriber.py", subscriber_port, {"BENCH_EVENTS": "1", "BENCH_DONE_FILE": str(done)})
        )
        stack.enter_context(app("echo_app.py", echo_port, {}))
        a = start_daprd(binary, "check-a", app_port=subscriber_port, app_protocol="grpc", workdir=workdir / "a")
        stack.callback(a.stop)
        b = start_daprd(binary, "check-b", app_port=echo_port, app_protocol="http", workdir=workdir / "b")
        stack.callback(b.stop)
        for daprd in (a, b):
            print(f"{daprd.app_id}: ready in {daprd.ready_seconds * 1000:.0f} ms, pid {daprd.process.pid}")

        with client(a) as dapr:
            step("SaveState + GetState", lambda: state(dapr))
            step("PublishEvent → A's app", lambda: publish(dapr, done))
            step("invoke check-b, A → B → B's app", lambda: invoke(dapr))
    print("daprd check: all passed")
    return 0


@contextmanager
def app(script: str, port: int, env: dict[str, str]) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, str(BENCH / script)],
        env={**os.environ, **env, "APP_PORT": str(port)},
        stdin=subprocess.DEVNULL,
    )
    try:
        # Daprd is ready only once its app's port is open: wait for the app first, so that
        # each daprd's start → ready is its own.
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.01)
        else:
            raise SystemExit(f"{script} did not listen on {port}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def client(daprd: Daprd) -> Iterator[DaprClient]:
    # The SDK waits for the sidecar on DAPR_HTTP_PORT, read from the environment on use.
    os.environ["DAPR_HTTP_PORT"] = str(daprd.http_port)
    with DaprClient(address=f"127.0.0.1:{daprd.grpc_port}") as dapr:
        yield dapr


def step(name: str, run: Callable[[], None]) -> None:
    began = time.perf_counter()
    run()
    print(f"{name}: ok in {(time.perf_counter() - began) * 1000:.1f} ms")


def state(dapr: DaprClient) -> None:
    dapr.save_state(STATESTORE, "check-key", b'{"n": 1}')
    got = dapr.get_state(STATESTORE, "check-key").data
    if got != b'{"n": 1}':
        raise SystemExit(f"GetState returned {got!r}")


def publish(dapr: DaprClient, done: Path, timeout: float = 10.0) -> None:
    dapr.publish_event(PUBSUB, "bench", b'{"n": 1}', data_content_type="application/json")
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the subscriber got no event within {timeout} s")
        time.sleep(0.005)


def invoke(dapr: DaprClient) -> None:
    body = b'{"sku": "ottava-8", "qty": 1}'
    answer = dapr.invoke_method("check-b", "echo", data=body, content_type="application/json", http_verb="POST")
    if answer.data != body:
        raise SystemExit(f"invocation returned {answer.data!r}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
