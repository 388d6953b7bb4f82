"""What Resiliency policies cost a caller: how soon a timeout answers, how fast an open breaker refuses.

App B (`tests/apps/resilience_app.py`: `/slow` answers after 2 s, `/breaker` fails while
switched to failing) runs behind its sidecar; app A is this process, calling B through
two sidecars of its own, each with one Resiliency for calls to B: a 200 ms timeout, and a
circuit breaker that trips after three failures and stays open for a minute. The
acceptance (issue 19) asks for the timeout's error within 300 ms and the open breaker's
refusal in under 10 ms.

    make bench
    python -m bench.resiliency --calls 200
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

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "apps" / "resilience_app.py"
POLICIES = """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: bench
spec:
  policies:
    timeouts:
      fast: 200ms
    circuitBreakers:
      cb:
        timeout: 60s
        trip: consecutiveFailures >= 3
  targets:
    apps:
      bench-fragile:
        {policy}
"""


def resources(policy: str) -> str:
    folder = tempfile.mkdtemp(prefix="ottava-bench-resiliency-")
    Path(folder, "resiliency.yaml").write_text(POLICIES.format(policy=policy), encoding="utf-8")
    return folder


def timed(client: httpx.Client, url: str, calls: int, expect: str) -> list[float]:
    latencies = []
    for _ in range(calls):
        begin = time.perf_counter()
        response = client.post(url)
        latencies.append(time.perf_counter() - begin)
        if expect not in response.text:
            raise SystemExit(f"bench: {url} answered {response.status_code}: {response.text[:200]}")
    return latencies


def line(name: str, latencies: list[float]) -> str:
    ms = [value * 1000 for value in latencies]
    return (
        f"  {name:<34} p50 {percentile(ms, 0.5):8.2f} ms   p99 {percentile(ms, 0.99):8.2f} ms"
        f"   max {max(ms):8.2f} ms   ({len(ms)} calls)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500, help="calls refused by the open breaker")
    parser.add_argument("--timeouts", type=int, default=20, help="calls cut by the timeout (each costs 200 ms)")
    args = parser.parse_args()

    os.environ["OTTAVA_REGISTRY_DIR"] = tempfile.mkdtemp(prefix="ottava-bench-registry-")
    os.environ["OTTAVA_CA_DIR"] = tempfile.mkdtemp(prefix="ottava-bench-ca-")
    ottava = str(Path(sys.executable).with_name("ottava"))
    ports = ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--internal-grpc-port", "0"]
    app_port = free_port()
    fragile = [ottava, "run", "--app-id", "bench-fragile", *ports, "--app-port", str(app_port)]
    fragile += ["--", sys.executable, str(APP)]
    timing_out = [ottava, "run", "--app-id", "bench-a-timeout", *ports, "--resources-path", resources("timeout: fast")]
    breaking = [
        ottava,
        "run",
        "--app-id",
        "bench-a-breaker",
        *ports,
        "--resources-path",
        resources("circuitBreaker: cb"),
    ]
    print("bench: resiliency, a 200 ms timeout and an open circuit breaker, seen by the caller", flush=True)
    pattern = r"grpc=\S+:(\d+) http=\S+:(\d+)"
    with (
        started(fragile, pattern) as b_ports,
        started(timing_out, pattern) as timeout_ports,
        started(breaking, pattern) as breaker_ports,
        httpx.Client(timeout=10) as client,
    ):
        wait(lambda: ready(int(b_ports[2])), "app B behind its sidecar", 60)
        slow = f"http://127.0.0.1:{timeout_ports[2]}/v1.0/invoke/bench-fragile/method/slow"
        cut = timed(client, slow, args.timeouts, "timed out after 0.2s")
        client.post(f"http://127.0.0.1:{app_port}/failing/on")
        broken = f"http://127.0.0.1:{breaker_ports[2]}/v1.0/invoke/bench-fragile/method/breaker"
        timed(client, broken, 3, "down")  # the three failures that trip it
        refused = timed(client, broken, args.calls, "is open")
        hits = client.get(f"http://127.0.0.1:{app_port}/hits/breaker").json()["hits"]
    print(line("timeout 200 ms, error after", cut))
    print(line("open breaker, refusal after", refused))
    print(f"  requests that reached app B while the breaker was open: {hits - 3}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
