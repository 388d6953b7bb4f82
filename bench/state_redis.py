"""GetState/SaveState through the sidecar on `state.redis`, beside the same reads and writes sent
straight to Redis with redis-py, in the same run and against the same Redis server.

The sidecar path is app → Dapr SDK (gRPC) → sidecar → Redis; the direct path is app →
redis-py → Redis, reading and writing the same hash layout the store uses (`HMGET` for a
read; `HSET` for a write, without the store's ETag script). The ratio is the price of
the sidecar hop. Rounds alternate between the two paths, so drift of the machine hits
both alike.

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


@contextmanager
def sidecar(redis_address: str) -> Iterator[tuple[int, int]]:
    folder = Path(tempfile.mkdtemp(prefix="ottava-bench-"))
    (folder / "statestore.yaml").write_text(
        "apiVersion: ottava.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\n"
        "spec:\n  type: state.redis\n  version: v1\n  metadata:\n"
        f"  - {{name: redisHost, value: '{redis_address}'}}\n"
        f"  - {{name: redisPassword, value: '{redis_setup.PASSWORD}'}}\n",
        encoding="utf-8",
    )
    ottava = str(Path(sys.executable).with_name("ottava"))
    command = [ottava, "run", "--app-id", "bench", "--resources-path", str(folder)]
    command += ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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

    print(f"bench: starting Redis and a sidecar on state.redis; {args.calls} calls per operation and path", flush=True)
    server = redis_setup.start()
    try:
        with sidecar(server.address) as (grpc_port, http_port):
            os.environ["DAPR_GRPC_PORT"], os.environ["DAPR_HTTP_PORT"] = str(grpc_port), str(http_port)
            direct = redis.Redis(host="127.0.0.1", port=server.port, password=redis_setup.PASSWORD)
            with DaprClient() as client:
                paths: dict[str, dict[str, Callable[[], object]]] = {
                    "sidecar": {
                        "SaveState": lambda: client.save_state("statestore", KEY, VALUE),
                        "GetState": lambda: client.get_state("statestore", KEY),
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
                for index in range(args.rounds):
                    order = list(paths) if index % 2 == 0 else list(reversed(paths))
                    for path in order:
                        for operation, call in paths[path].items():
                            timed(call, per_round, latencies[(path, operation)])
                    print(f"bench: round {index + 1}/{args.rounds} done", flush=True)
                assert client.get_state("statestore", KEY).data == VALUE
            direct.close()
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)

    print()
    print(f"{'operation':<12}{'path':<10}{'p50 µs':>10}{'p99 µs':>10}{'calls/s':>10}")
    for operation in ("GetState", "SaveState"):
        for path in paths:
            lat = latencies[(path, operation)]
            print(
                f"{operation:<12}{path:<10}{percentile(lat, 0.5) * 1e6:>10.0f}"
                f"{percentile(lat, 0.99) * 1e6:>10.0f}{len(lat) / sum(lat):>10.0f}"
            )
        side, bare = latencies[("sidecar", operation)], latencies[("redis-py", operation)]
        print(
            f"{operation:<12}{'ratio':<10}{percentile(side, 0.5) / percentile(bare, 0.5):>10.2f}"
            f"{percentile(side, 0.99) / percentile(bare, 0.99):>10.2f}"
            f"{(len(bare) / sum(bare)) / (len(side) / sum(side)):>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
