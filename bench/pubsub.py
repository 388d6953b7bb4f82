"""Pub/sub end to end: events per second from a Dapr SDK publisher, through the sidecar, to a gRPC subscriber.

The subscriber is an SDK app (`dapr.ext.grpc.App`) under `ottava run`; the publisher is
the SDK's async `DaprClient` with several publishes in flight. The clock runs from the
first publish to the subscriber's receipt of the last event.

    make bench                                  # all benchmarks
    python bench/pubsub.py --events 20000 --in-flight 32
    python bench/pubsub.py --keys 16             # each publisher with a partitionKey of its own
"""

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from dapr.aio.clients import DaprClient as AsyncDaprClient

from bench.getstate import started

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


def ready(http_port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{http_port}/actuator/health/readiness").status_code == 200
    except httpx.HTTPError:
        return False


async def publish(events: int, in_flight: int, keys: int) -> float:
    """Publish `events`; the monotonic time of the first publish.

    With `keys`, publisher n sends with the partitionKey `key-<n % keys>` (in order per key,
    keys delivered concurrently); without, no key (one at a time, in publish order).
    """
    async with AsyncDaprClient() as client:
        remaining = events
        first = time.monotonic()

        async def worker(n: int) -> None:
            nonlocal remaining
            metadata = {"partitionKey": f"key-{n % keys}"} if keys else {}
            while remaining > 0:
                remaining -= 1
                await client.publish_event(
                    "pubsub",
                    "bench",
                    b'{"sku": "ottava-8"}',
                    data_content_type="application/json",
                    publish_metadata=metadata,
                )

        await asyncio.gather(*(worker(n) for n in range(in_flight)))
        return first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=16, help="publishes in flight at once")
    parser.add_argument("--keys", type=int, default=0, help="distinct partition keys (0: publish without a key)")
    args = parser.parse_args()

    done_file = Path(tempfile.mkdtemp(prefix="ottava-bench-")) / "done"
    os.environ.update({"BENCH_EVENTS": str(args.events), "BENCH_DONE_FILE": str(done_file)})
    ottava = str(Path(sys.executable).with_name("ottava"))
    command = [
        ottava, "run", "--app-id", "bench-subscriber", "--app-port", str(free_port()), "--app-protocol", "grpc",
        "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--internal-grpc-port", "0",
        "--", sys.executable, str(HERE / "pubsub_subscriber.py"),
    ]  # fmt: skip
    print(
        f"bench: pub/sub, {args.events} events to a gRPC subscriber, {args.in_flight} publishes in flight, "
        f"{args.keys or 'no'} partition keys",
        flush=True,
    )
    with started(command, r"grpc=\S+:(\d+) http=\S+:(\d+)") as ports:
        os.environ["DAPR_GRPC_PORT"], os.environ["DAPR_HTTP_PORT"] = ports[1], ports[2]
        wait(lambda: ready(int(ports[2])), "the subscriber to be subscribed", 60)
        first = asyncio.run(publish(args.events, args.in_flight, args.keys))
        published = time.monotonic()
        wait(done_file.exists, f"{args.events} events at the subscriber", 600)
        count, last = done_file.read_text().split()
    elapsed = float(last) - first
    print()
    print(f"{'pub/sub':<28}{'events':>10}{'seconds':>10}{'events/s':>12}")
    print(
        f"{'published (SDK, gRPC)':<28}{args.events:>10}{published - first:>10.2f}{args.events / (published - first):>12.0f}"
    )
    print(f"{'delivered end to end':<28}{int(count):>10}{elapsed:>10.2f}{int(count) / elapsed:>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
