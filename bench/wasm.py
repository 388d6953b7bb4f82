"""Function call latency through the sidecar, beside an app call: A → A's sidecar → function, vs → B.

App A (this process, one keep-alive HTTP client) calls, through its sidecar:
the WAT echo of examples/wasm/echo (a fresh instance per call, no host call); the Go
counter of examples/wasm/counter (a fresh instance, its Go runtime started on each call,
a state read, a state write and a publish); and app B, a minimal aiohttp server behind
its own sidecar (`echo_app.py`), the path an app call takes. Rounds rotate the order so
that machine drift hits every path. The Go example is built first (`make wasm-examples`).

    make bench
    python -m bench.wasm --calls 3000
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.getstate import started
from bench.invoke import BODY, Check, run_rounds, table
from bench.pubsub import free_port, ready, wait

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

COMPONENT = """\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: {name}}}
spec:
  type: {type}
  version: v1
  metadata: [{metadata}]
"""


def resources() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ottava-bench-wasm-"))
    wasm = ROOT / "examples" / "wasm"
    for name, kind, metadata in (
        ("echo", "function.wasm", f'{{name: path, value: "{wasm}/echo/echo.wat"}}'),
        ("counter", "function.wasm", f'{{name: path, value: "{wasm}/counter/counter.wasm"}}'),
        ("statestore", "state.in-memory", ""),
        ("pubsub", "pubsub.in-memory", ""),
    ):
        (folder / f"{name}.yaml").write_text(COMPONENT.format(name=name, type=kind, metadata=metadata))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per path")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()

    subprocess.run(["make", "-s", "wasm-examples"], cwd=ROOT, check=True)
    os.environ["OTTAVA_REGISTRY_DIR"] = tempfile.mkdtemp(prefix="ottava-bench-registry-")
    os.environ["OTTAVA_CA_DIR"] = tempfile.mkdtemp(prefix="ottava-bench-ca-")
    ottava = str(Path(sys.executable).with_name("ottava"))
    ports = ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--internal-grpc-port", "0"]
    app_port = free_port()
    app = ["--app-port", str(app_port), "--", sys.executable, str(HERE / "echo_app.py")]
    a = [ottava, "run", "--app-id", "bench-wasm-a", "--resources-path", str(resources()), *ports]
    print(f"bench: function calls, {args.calls} calls per path in {args.rounds} rotating rounds", flush=True)
    pattern = r"grpc=\S+:(\d+) http=\S+:(\d+)"
    with (
        started([ottava, "run", "--app-id", "bench-wasm-b", *ports, *app], pattern) as b_ports,
        started(a, pattern) as a_ports,
    ):
        wait(lambda: ready(int(b_ports[2])), "app B behind its sidecar", 60)
        wait(lambda: ready(int(a_ports[2])), "A's sidecar with its functions", 60)
        base = f"http://127.0.0.1:{a_ports[2]}/v1.0/invoke"
        paths: dict[str, tuple[str, Check]] = {
            "A → sidecars → app B": (f"{base}/bench-wasm-b/method/echo", lambda body: body == BODY),
            "A → sidecar → WAT echo": (f"{base}/echo/method/echo", lambda body: body == b"hello, " + BODY),
            "A → sidecar → Go counter": (f"{base}/counter/method/visit", lambda body: body.isdigit()),
        }
        latencies = run_rounds(paths, args.calls, args.rounds, args.warmup)
    table(latencies, "function call", "A → sidecars → app B", "p50 vs app")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
