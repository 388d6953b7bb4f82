"""GetState/SaveState through the sidecar on `state.redis`, beside the same reads and writes sent
straight to Redis with redis-py, in the same run and against the same Redis server.

The sidecar path is app → Dapr SDK (gRPC) → sidecar → Redis; the direct path is app →
redis-py → Redis, reading and writing the same hash layout the store uses (`HMGET` for a
read; `HSET` for a write, without the store's ETag script). The ratio is the price of
the sidecar hop. A second sidecar on its in-memory defaults, called by the same client,
splits that price: sidecar on Redis minus sidecar in memory is what the Redis store
costs inside the sidecar; the rest is the gRPC hop, which any sidecar pays. Rounds
rotate the order of the paths, so drift of the machine hits all alike.

    make bench
    .venv/bin/python -m bench.state_redis --calls 4000 --rounds 4
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from dapr.clients import DaprClient

from tests.servers import redis_server as redis_setup

VALUE = b'{"sku": "ottava-8", "qty": 1, "price": 42.5}'
KEY = "bench-key"


def redis_statestore(redis_address: str) -> str:
    """The manifest of a `statestore` on `state.redis` at `redis_address` (the tests' Redis password)."""
    return (
        "apiVersion: ottava.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\n"
        "spec:\n  type: state.redis\n  version: v1\n  metadata:\n"
        f"  - {{name: redisHost, value: '{redis_address}'}}\n"
        f"  - {{name: redisPassword, value: '{redis_setup.PASSWORD}'}}\n"
    )


@contextmanager
def sidecar(redis_address: str | None) -> Iterator[tuple[int, int]]:
    """A sidecar whose `statestore` is on Redis at `redis_address`; with None, its in-memory defaults."""
    folder = Path(tempfile.mkdtemp(prefix="ottava-bench-"))
    ottava = str(Path(sys.executable).with_name("ottava"))
    command = [ottava, "run", "--app-id", "bench", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    command += ["--internal-grpc-port", "0"]
    if redis_address is not None:
        (folder / "statestore.yaml").write_text(redis_statestore(redis_address), encoding="utf-8")
        command += ["--resources-path", str(folder)]
    env = {**os.environ, "OTTAVA_CA_DIR": str(folder / "ca"), "OTTAVA_REGISTRY_DIR": str(folder / "registry")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"ottava sidecar (\w+): .* grpc=\S+:(\d+) http=\S+:(\d+)", line)
            if match:
                if match[1] != "UP":
                    raise RuntimeError(f"the sidecar is {match[1]}: {line}")
                yield int(match[2]), int(match[3])
                return
        raise RuntimeError("the sidecar exited before it was ready")
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def timed(call: Callable[[], object], count: int, into: list[float]) -> None:
    for _ in range(count):
        started = time.perf_counter()
        call()
        into.append(time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per operation and path (default 3000)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds the calls are split into")
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()

    print(f"bench: starting Redis and two sidecars; {args.calls} calls per operation and path", flush=True)
    server = redis_setup.start()
    try:
        with sidecar(server.address) as (grpc_port, http_port), sidecar(None) as (memory_port, _):
            # The SDK's start-up probe reads these; each client is then given its own address.
            os.environ["DAPR_GRPC_PORT"], os.environ["DAPR_HTTP_PORT"] = str(grpc_port), str(http_port)
            direct = redis.Redis(host="127.0.0.1", port=server.port, password=redis_setup.PASSWORD)
            with (
                DaprClient(address=f"127.0.0.1:{grpc_port}") as client,
                DaprClient(address=f"127.0.0.1:{memory_port}") as memory,
            ):
                paths: dict[str, dict[str, Callable[[], object]]] = {
                    "sidecar": {
                        "SaveState": lambda: client.save_state("statestore", KEY, VALUE),
                        "GetState": lambda: client.get_state("statestore", KEY),
                    },
                    "in-memory": {
                        "SaveState": lambda: memory.save_state("statestore", KEY, VALUE),
                        "GetState": lambda: memory.get_state("statestore", KEY),
                    },
                    "redis-py": {
                        "SaveState": lambda: direct.hset("direct||" + KEY, mapping={"data": VALUE, "version": 1}),
                        "GetState": lambda: direct.hmget("direct||" + KEY, "data", "version"),
                    },
                }
                latencies: dict[tuple[str, str], list[float]] = {(p, op): [] for p in paths for op in paths[p]}
                for operations in paths.values():
                    for call in operations.values():
                        timed(call, args.warmup, [])
                per_round = max(1, args.calls // args.rounds)
                names = list(paths)
                for index in range(args.rounds):
                    shift = index % len(names)
                    for path in names[shift:] + names[:shift]:
                        for operation, call in paths[path].items():
                            timed(call, per_round, latencies[(path, operation)])
                    print(f"bench: round {index + 1}/{args.rounds} done", flush=True)
                assert client.get_state("statestore", KEY).data == VALUE
            direct.close()
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)

    print()
    print("sidecar: on state.redis; in-memory: a sidecar on state.in-memory; redis-py: straight to Redis")
    print(f"{'operation':<12}{'path':<11}{'p50 µs':>10}{'p99 µs':>10}{'calls/s':>10}")
    for operation in ("GetState", "SaveState"):
        for path in paths:
            lat = latencies[(path, operation)]
            print(
                f"{operation:<12}{path:<11}{percentile(lat, 0.5) * 1e6:>10.0f}"
                f"{percentile(lat, 0.99) * 1e6:>10.0f}{len(lat) / sum(lat):>10.0f}"
            )
        side, memory_lat, bare = (latencies[(p, operation)] for p in ("sidecar", "in-memory", "redis-py"))
        print(
            f"{operation:<12}{'ratio':<11}{percentile(side, 0.5) / percentile(bare, 0.5):>10.2f}"
            f"{percentile(side, 0.99) / percentile(bare, 0.99):>10.2f}"
            f"{(len(bare) / sum(bare)) / (len(side) / sum(side)):>10.2f}"
        )
        over_direct = (percentile(side, 0.5) - percentile(bare, 0.5)) * 1e6
        over_memory = (percentile(side, 0.5) - percentile(memory_lat, 0.5)) * 1e6
        print(
            f"{operation:<12}p50: sidecar - redis-py {over_direct:.0f} µs;"
            f" sidecar - in-memory {over_memory:.0f} µs (the Redis store inside the sidecar)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
