"""Service invocation latency: A → A's sidecar → B's sidecar → B, beside A → B directly, in the same run.

App B is a minimal aiohttp server (`echo_app.py`) under `ottava run`; app A is this
process with one keep-alive HTTP client for both paths, so the difference is what the
two sidecars add. Rounds alternate between the paths so that machine drift hits both.

    make bench
    python bench/invoke.py --calls 5000
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.getstate import percentile, started
from bench.pubsub import free_port, ready, wait

HERE = Path(__file__).resolve().parent
BODY = b'{"sku": "ottava-8", "qty": 1}'


def measure(client: httpx.Client, url: str, calls: int, latencies: list[float]) -> None:
    for _ in range(calls):
        begin = time.perf_counter()
        response = client.post(url, content=BODY, headers={"Content-Type": "application/json"})
        latencies.append(time.perf_counter() - begin)
        if response.status_code != 200 or response.content != BODY:
            raise SystemExit(f"bench: {url} answered {response.status_code}: {response.text[:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per path")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()

    os.environ["OTTAVA_REGISTRY_DIR"] = tempfile.mkdtemp(prefix="ottava-bench-registry-")
    ottava = str(Path(sys.executable).with_name("ottava"))
    ports = ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--internal-grpc-port", "0"]
    app_port = free_port()
    target = [ottava, "run", "--app-id", "bench-b", "--app-port", str(app_port), *ports]
    target += ["--", sys.executable, str(HERE / "echo_app.py")]
    caller = [ottava, "run", "--app-id", "bench-a", *ports]
    print(f"bench: invocation, {args.calls} calls per path in {args.rounds} alternating rounds", flush=True)
    pattern = r"grpc=\S+:(\d+) http=\S+:(\d+)"
    with started(target, pattern) as b_ports, started(caller, pattern) as a_ports:
        wait(lambda: ready(int(b_ports[2])), "app B behind its sidecar", 60)
        direct = f"http://127.0.0.1:{app_port}/echo"
        through = f"http://127.0.0.1:{a_ports[2]}/v1.0/invoke/bench-b/method/echo"
        paths = {"A → B direct": direct, "A → sidecars → B": through}
        latencies: dict[str, list[float]] = {name: [] for name in paths}
        with httpx.Client() as client:
            for url in paths.values():
                measure(client, url, args.warmup, [])
            per_round = max(1, args.calls // args.rounds)
            for index in range(args.rounds):
                order = list(paths) if index % 2 == 0 else list(reversed(paths))
                for name in order:
                    measure(client, paths[name], per_round, latencies[name])

    print()
    print(f"{'invocation':<20}{'p50 µs':>10}{'p99 µs':>10}{'calls/s':>10}")
    for name, values in latencies.items():
        print(
            f"{name:<20}{percentile(values, 0.5) * 1e6:>10.0f}{percentile(values, 0.99) * 1e6:>10.0f}"
            f"{len(values) / sum(values):>10.0f}"
        )
    through_lat, direct_lat = latencies["A → sidecars → B"], latencies["A → B direct"]
    print(
        f"{'ratio':<20}{percentile(through_lat, 0.5) / percentile(direct_lat, 0.5):>10.2f}"
        f"{percentile(through_lat, 0.99) / percentile(direct_lat, 0.99):>10.2f}"
        f"{(len(direct_lat) / sum(direct_lat)) / (len(through_lat) / sum(through_lat)):>10.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
