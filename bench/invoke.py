"""Service invocation latency: A → A's sidecar → B's sidecar → B, with and without mTLS, beside A → B directly.

App B is a minimal aiohttp server (`echo_app.py`) under two `ottava run` sidecars, one
pair talking mTLS between them (the default) and one with `--disable-mtls`; app A is
this process with one keep-alive HTTP client for every path, so the differences are what
the sidecars, and TLS between them, add. Rounds rotate the order of the paths so that
machine drift hits them all.

    make bench
    python bench/invoke.py --calls 5000
"""

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.getstate import percentile, started
from bench.pubsub import free_port, ready, wait

HERE = Path(__file__).resolve().parent
BODY = b'{"sku": "ottava-8", "qty": 1}'


Check = Callable[[bytes], bool]


def echoed(body: bytes) -> bool:
    return body == BODY


def measure(client: httpx.Client, url: str, calls: int, latencies: list[float], good: Check = echoed) -> None:
    """POST `BODY` to `url` `calls` times, adding each latency; stop the bench on an answer `good` refuses."""
    for _ in range(calls):
        begin = time.perf_counter()
        response = client.post(url, content=BODY, headers={"Content-Type": "application/json"})
        latencies.append(time.perf_counter() - begin)
        if response.status_code != 200 or not good(response.content):
            raise SystemExit(f"bench: {url} answered {response.status_code}: {response.text[:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per path")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()

    os.environ["OTTAVA_REGISTRY_DIR"] = tempfile.mkdtemp(prefix="ottava-bench-registry-")
    os.environ["OTTAVA_CA_DIR"] = tempfile.mkdtemp(prefix="ottava-bench-ca-")
    ottava = str(Path(sys.executable).with_name("ottava"))
    ports = ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--internal-grpc-port", "0"]
    app_port = free_port()
    app = ["--app-port", str(app_port), "--", sys.executable, str(HERE / "echo_app.py")]
    plain_b = [ottava, "run", "--app-id", "bench-b-plain", "--disable-mtls", *ports, "--app-port", str(app_port)]
    print(f"bench: invocation, {args.calls} calls per path in {args.rounds} rotating rounds", flush=True)
    pattern = r"grpc=\S+:(\d+) http=\S+:(\d+)"
    with (
        started([ottava, "run", "--app-id", "bench-b", *ports, *app], pattern) as b_ports,
        started([ottava, "run", "--app-id", "bench-a", *ports], pattern) as a_ports,
        started(plain_b, pattern) as plain_b_ports,
        started([ottava, "run", "--app-id", "bench-a-plain", "--disable-mtls", *ports], pattern) as plain_a_ports,
    ):
        wait(lambda: ready(int(b_ports[2])), "app B behind its sidecar", 60)
        wait(lambda: ready(int(plain_b_ports[2])), "app B behind its plaintext sidecar", 60)
        paths: dict[str, tuple[str, Check]] = {
            "A → B direct": (f"http://127.0.0.1:{app_port}/echo", echoed),
            "A → sidecars → B, mTLS": (f"http://127.0.0.1:{a_ports[2]}/v1.0/invoke/bench-b/method/echo", echoed),
            "A → sidecars → B, plaintext": (
                f"http://127.0.0.1:{plain_a_ports[2]}/v1.0/invoke/bench-b-plain/method/echo",
                echoed,
            ),
        }
        latencies = run_rounds(paths, args.calls, args.rounds, args.warmup)
    report(latencies)
    return 0


def run_rounds(paths: dict[str, tuple[str, Check]], calls: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Each path's latencies, measured in rounds that rotate the order of the paths."""
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    with httpx.Client() as client:
        for url, good in paths.values():
            measure(client, url, warmup, [], good)
        per_round = max(1, calls // rounds)
        names = list(paths)
        for index in range(rounds):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                url, good = paths[name]
                measure(client, url, per_round, latencies[name], good)
    return latencies


def table(latencies: dict[str, list[float]], title: str, baseline: str, ratio: str) -> None:
    """p50, p99 and calls/s of each path, and its p50 as a multiple of the `baseline` path's (column `ratio`)."""
    width = max(len(name) for name in latencies) + 2
    print()
    print(f"{title:<{width}}{'p50 µs':>10}{'p99 µs':>10}{'calls/s':>10}{ratio:>{len(ratio) + 2}}")
    base = percentile(latencies[baseline], 0.5)
    for name, values in latencies.items():
        print(
            f"{name:<{width}}{percentile(values, 0.5) * 1e6:>10.0f}{percentile(values, 0.99) * 1e6:>10.0f}"
            f"{len(values) / sum(values):>10.0f}{percentile(values, 0.5) / base:>{len(ratio) + 2}.2f}"
        )


def report(latencies: dict[str, list[float]]) -> None:
    table(latencies, "invocation", "A → B direct", "p50 vs direct")
    secure, plain = latencies["A → sidecars → B, mTLS"], latencies["A → sidecars → B, plaintext"]
    print(
        f"mTLS / plaintext: p50 {percentile(secure, 0.5) / percentile(plain, 0.5):.2f}, "
        f"p99 {percentile(secure, 0.99) / percentile(plain, 0.99):.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
