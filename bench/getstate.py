"""GetState through the sidecar vs a bare grpc.aio server, with the Dapr SDK's gRPC client.

Both servers run as their own processes and answer the same request with the same
item; the client is the official `DaprClient`. Rounds alternate between the two targets
so that drift of the machine (other load, CPU frequency) hits both alike.

    make bench                    # defaults
    make bench ARGS="--calls 20000 --rounds 10"
"""

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dapr.aio.clients import DaprClient as AsyncDaprClient
from dapr.clients import DaprClient

HERE = Path(__file__).resolve().parent
VALUE = b'{"sku": "ottava-8", "qty": 1, "price": 42.5}'
TARGET_P50_RATIO = 1.25


@dataclass
class Target:
    name: str
    grpc_port: int
    http_port: int
    latencies: list[float]
    throughput: float = 0.0


@contextmanager
def started(command: list[str], pattern: str) -> Iterator[re.Match[str]]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(pattern, line)
            if match:
                yield match
                return
        raise RuntimeError(f"{command[0]} exited before it was ready")
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def environment(target: Target) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("DAPR_GRPC_PORT", "DAPR_HTTP_PORT")}
    os.environ["DAPR_GRPC_PORT"] = str(target.grpc_port)
    os.environ["DAPR_HTTP_PORT"] = str(target.http_port)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sequential(target: Target, calls: int) -> None:
    with environment(target), DaprClient() as client:
        for _ in range(calls):
            started_at = time.perf_counter()
            response = client.get_state("statestore", "bench-key")
            target.latencies.append(time.perf_counter() - started_at)
            assert response.data == VALUE


async def concurrent(target: Target, calls: int, in_flight: int) -> float:
    with environment(target):
        async with AsyncDaprClient() as client:
            remaining = calls

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await client.get_state("statestore", "bench-key")

            started_at = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return calls / (time.perf_counter() - started_at)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=6000, help="sequential calls per target (default 6000)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds the calls are split into")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrent-calls", type=int, default=4000)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()

    ottava = str(Path(sys.executable).with_name("ottava"))
    sidecar_cmd = [ottava, "run", "--app-id", "bench", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    sidecar_cmd += ["--internal-grpc-port", "0"]  # never collide with another sidecar on this machine
    print(
        f"bench: starting the sidecar and the bare server; {args.calls} GetState calls each, "
        f"in {args.rounds} alternating rounds",
        flush=True,
    )
    with (
        started(sidecar_cmd, r"grpc=\S+:(\d+) http=\S+:(\d+)") as sidecar_ports,
        started(
            [sys.executable, str(HERE / "bare_server.py"), VALUE.decode()], r"grpc=\S+:(\d+) http=\S+:(\d+)"
        ) as bare_ports,
    ):
        sidecar = Target("ottava sidecar", int(sidecar_ports[1]), int(sidecar_ports[2]), [])
        bare = Target("bare grpc.aio", int(bare_ports[1]), int(bare_ports[2]), [])
        with environment(sidecar), DaprClient() as client:
            client.save_state("statestore", "bench-key", VALUE)
        for target in (sidecar, bare):
            sequential(target, args.warmup)
            target.latencies.clear()
        per_round = max(1, args.calls // args.rounds)
        for index in range(args.rounds):
            for target in (sidecar, bare) if index % 2 == 0 else (bare, sidecar):
                sequential(target, per_round)
            print(f"bench: round {index + 1}/{args.rounds} done", flush=True)
        for target in (sidecar, bare):
            target.throughput = asyncio.run(concurrent(target, args.concurrent_calls, args.in_flight))

    print()
    print(f"{'GetState':<16}{'p50 µs':>10}{'p99 µs':>10}{'seq calls/s':>14}{f'calls/s @{args.in_flight}':>16}")
    for target in (sidecar, bare):
        lat = target.latencies
        print(
            f"{target.name:<16}{percentile(lat, 0.5) * 1e6:>10.0f}{percentile(lat, 0.99) * 1e6:>10.0f}"
            f"{len(lat) / sum(lat):>14.0f}{target.throughput:>16.0f}"
        )
    p50_ratio = percentile(sidecar.latencies, 0.5) / percentile(bare.latencies, 0.5)
    p99_ratio = percentile(sidecar.latencies, 0.99) / percentile(bare.latencies, 0.99)
    print(
        f"{'ratio':<16}{p50_ratio:>10.2f}{p99_ratio:>10.2f}"
        f"{(len(bare.latencies) / sum(bare.latencies)) / (len(sidecar.latencies) / sum(sidecar.latencies)):>14.2f}"
        f"{bare.throughput / sidecar.throughput:>16.2f}"
    )
    verdict = "within" if p50_ratio <= TARGET_P50_RATIO else "OVER"
    print(
        f"\np50 ratio {p50_ratio:.2f}: {verdict} the target of {TARGET_P50_RATIO} "
        f"(median of {statistics.median([len(sidecar.latencies), len(bare.latencies)]):.0f} calls per target)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
