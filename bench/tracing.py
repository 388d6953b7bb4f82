"""What tracing costs GetState: four sidecars, without tracing, sampling nothing, everything, and a tenth.

    make bench                                          # this after the other four
    .venv/bin/python -m bench.tracing                   # alone: about a minute with the defaults
    .venv/bin/python -m bench.tracing --calls 9600 --in-flight 32 --keep

Starts the tests' OpenTelemetry Collector (tools/otelcol/build.sh builds it once and caches
it) with an OTLP/gRPC receiver per traced sidecar on free loopback ports, each in a pipeline of its own
(batch processor, file exporter), so the spans of each sidecar land in a file of their own.
Then four `ottava run` sidecars on their in-memory defaults, each with a Configuration
(`--config`):

  (a) off     no `tracing` section;
  (b) rate 0  `tracing: {samplingRate: "0", otel: {endpointAddress: <receiver b>, protocol: grpc}}`;
  (c) rate 1  the same with `samplingRate: "1"`, to receiver c;
  (d) rate 0.1  the same with `samplingRate: "0.1"` (a production setting), to receiver d.

GetState is measured with one client on one channel (p50/p90/p99 latency) and with
--in-flight calls outstanding (calls/s, and the sidecar's CPU per call), in rounds that
rotate the order of the four so that drift of the machine hits all alike. The ratios
are each traced sidecar's over (a). Afterwards the sidecars are stopped (SIGTERM: a sidecar is to
export the spans it still holds as it stops), then the collector (it flushes its batch and files),
and the spans in each file are counted: (c) should have exported at least one span per
call, (b) none; no span from (c) prints the warning "tracing not exported". The collector
shares the machine's cores with the sidecars and the client, so in (c) its work slows the
others a little too, as a node-local collector would. Every process it starts runs in a
process group of its own and is stopped however the run ends (Ctrl-C and SIGTERM too).
"""

import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from dapr.proto.runtime.v1 import dapr_pb2_grpc

from bench.peers import proc
from bench.peers.measure import GET, channel, flood, percentile, prepare, rotated
from bench.peers.targets import OTTAVA, Processes, Server, free_port, wait_until
from tests.servers.otelcol import parse_spans

ROOT = Path(__file__).resolve().parent.parent
BUILD_OTELCOL = ROOT / "tools" / "otelcol" / "build.sh"
HOST = "127.0.0.1"


@dataclass
class Variant:
    """One sidecar's tracing set-up, and what was measured on it."""

    key: str  # a, b, c
    label: str
    sampling_rate: str | None  # None: no tracing section
    receiver_port: int = 0  # the collector's OTLP/gRPC port for its spans (0: none)
    spans_file: Path | None = None
    server: Server | None = None
    latencies: list[float] = field(default_factory=list)
    calls: int = 0  # every GetState sent to it, warm-up and throughput included
    flood_calls: int = 0
    flood_seconds: float = 0.0
    flood_cpu: float = 0.0  # the sidecar's CPU seconds during its throughput rounds

    @property
    def name(self) -> str:
        return f"({self.key}) {self.label}"

    def configuration(self) -> str:
        """The Configuration manifest given to `ottava run --config`."""
        head = f"apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {{name: bench-tracing-{self.key}}}\n"
        if self.sampling_rate is None:
            return head + "spec: {}\n"
        return head + (
            "spec:\n"
            "  tracing:\n"
            f'    samplingRate: "{self.sampling_rate}"\n'
            f'    otel: {{endpointAddress: "{HOST}:{self.receiver_port}", protocol: grpc, isSecure: false}}\n'
        )


def collector_config(variants: Sequence[Variant]) -> str:
    """One OTLP/gRPC receiver and one file per traced sidecar, so each one's spans are told apart."""
    traced = [v for v in variants if v.spans_file is not None]
    lines = ["receivers:"]
    for v in traced:
        lines += [f"  otlp/{v.key}:", "    protocols:", "      grpc:", f"        endpoint: {HOST}:{v.receiver_port}"]
    lines += ["processors:", "  batch: {}", "exporters:"]
    for v in traced:
        lines += [f"  file/{v.key}:", f"    path: {json.dumps(str(v.spans_file))}", "    format: json"]
    lines += ["service:", "  telemetry:", "    metrics:", "      level: none", "  pipelines:"]
    for v in traced:
        lines += [
            f"    traces/{v.key}:",
            f"      receivers: [otlp/{v.key}]",
            "      processors: [batch]",
            f"      exporters: [file/{v.key}]",
        ]
    return "\n".join(lines) + "\n"


def build_collector() -> Path:
    print("tracing: building the collector (cached after the first build)", flush=True)
    done = subprocess.run(
        [str(BUILD_OTELCOL)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, check=True, timeout=1800
    )
    return Path(done.stdout.strip().splitlines()[-1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_collector(procs: Processes, binary: Path, variants: Sequence[Variant]) -> Server:
    config = procs.workdir / "otelcol.yaml"
    config.write_text(collector_config(variants), encoding="utf-8")
    collector = procs.spawn("otelcol", [str(binary), "--config", f"file:{config}"], ready=None)
    ports = [v.receiver_port for v in variants if v.receiver_port]
    log = procs.workdir / "otelcol.log"
    wait_until(lambda: all(listening(p) for p in ports), f"the collector's receivers (log: {log})")
    return collector


def start_sidecar(procs: Processes, variant: Variant) -> Server:
    config = procs.workdir / f"config-{variant.key}.yaml"
    config.write_text(variant.configuration(), encoding="utf-8")
    command = [OTTAVA, "run", "--app-id", f"bench-tracing-{variant.key}", "--config", str(config)]
    command += ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--internal-grpc-port", "0"]
    env = {"OTTAVA_CA_DIR": str(procs.workdir / "ca"), "OTTAVA_REGISTRY_DIR": str(procs.workdir / "registry")}
    return procs.spawn(f"ottava-{variant.key}", command, env=env)


async def measure(variants: Sequence[Variant], args: argparse.Namespace) -> None:
    servers = {v.key: v.server for v in variants if v.server is not None}
    for server in servers.values():
        await prepare(server)  # a SaveState and a GetState: the item exists, the target answers
    for v in variants:
        v.calls += 1
    single = {v.key: channel(servers[v.key]) for v in variants}
    pools = {v.key: [channel(servers[v.key]) for _ in range(args.connections)] for v in variants}
    try:
        stub = {key: dapr_pb2_grpc.DaprStub(chan) for key, chan in single.items()}
        pool = {key: [dapr_pb2_grpc.DaprStub(c) for c in chans] for key, chans in pools.items()}
        for v in variants:
            for _ in range(args.warmup):
                await stub[v.key].GetState(GET)
            await asyncio.gather(*(s.GetState(GET) for s in pool[v.key]))
            v.calls += args.warmup + len(pool[v.key])
        per_round = max(1, args.calls // args.rounds)
        clock = time.perf_counter
        for index in range(args.rounds):
            for v in rotated(list(variants), index):
                get = stub[v.key].GetState
                for _ in range(per_round):
                    began = clock()
                    await get(GET)
                    v.latencies.append(clock() - began)
                v.calls += per_round
        print(f"tracing: latency done, {per_round * args.rounds} calls each", flush=True)
        for index in range(args.flood_rounds):
            for v in rotated(list(variants), index):
                server = servers[v.key]
                cpu_before = proc.cpu_seconds(server.pid)
                count, seconds = await flood(pool[v.key], args.in_flight, args.seconds)
                v.flood_cpu += proc.cpu_seconds(server.pid) - cpu_before
                v.flood_calls += count
                v.flood_seconds += seconds
                v.calls += count
        print(f"tracing: throughput done, {args.flood_rounds} x {args.seconds:g} s each", flush=True)
    finally:
        for chan in [*single.values(), *(c for chans in pools.values() for c in chans)]:
            await chan.close(None)


def exported(spans_file: Path | None) -> tuple[int, set[str]]:
    """How many spans the collector wrote to `spans_file`, and their names."""
    if spans_file is None or not spans_file.exists():
        return 0, set()
    count, names = 0, set()
    for line in spans_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            for span in parse_spans(line):
                count += 1
                names.add(span.name)
    return count, names


def report(variants: Sequence[Variant], args: argparse.Namespace) -> None:
    base = variants[0]
    print()
    print(f"GetState, {len(base.latencies)} sequential calls each; calls/s with {args.in_flight} in flight")
    header = f"{'sidecar':<14}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}{f'calls/s @{args.in_flight}':>15}"
    print(header + f"{'CPU µs/call':>13}")

    def rate(v: Variant) -> float:
        return v.flood_calls / v.flood_seconds

    def cpu(v: Variant) -> float:
        return v.flood_cpu / max(1, v.flood_calls)

    for v in variants:
        lat = v.latencies
        print(
            f"{v.name:<14}{percentile(lat, 0.5) * 1e6:>9.0f}{percentile(lat, 0.9) * 1e6:>9.0f}"
            f"{percentile(lat, 0.99) * 1e6:>9.0f}{rate(v):>15.0f}{cpu(v) * 1e6:>13.0f}"
        )
    for v in variants[1:]:
        ratios = [percentile(v.latencies, q) / percentile(base.latencies, q) for q in (0.5, 0.9, 0.99)]
        print(
            f"{f'({v.key})/({base.key})':<14}{ratios[0]:>9.2f}{ratios[1]:>9.2f}{ratios[2]:>9.2f}"
            f"{rate(v) / rate(base):>15.2f}{cpu(v) / cpu(base):>13.2f}"
        )
    print("(latency and CPU ratios above 1 are tracing's cost; a calls/s ratio below 1 is)")


def check_spans(variants: Sequence[Variant]) -> None:
    print()
    for v in variants:
        if v.spans_file is None:
            continue
        count, names = exported(v.spans_file)
        shown = ", ".join(sorted(names)[:4]) + (", …" if len(names) > 4 else "")
        print(
            f"tracing: {v.name}: the collector received {count} spans for {v.calls} GetState calls"
            + (f" ({count / v.calls:.2f} per call; names: {shown})" if count else "")
        )
        if v.sampling_rate == "0" and count:
            print(f"tracing: WARNING: {v.name} samples nothing, yet {count} spans were exported")
        if v.sampling_rate == "1" and not count:
            print(f"tracing: WARNING: tracing not exported: {v.name} samples every call, yet no span arrived")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4800, help="sequential GetState per sidecar (default 4800)")
    parser.add_argument("--rounds", type=int, default=6, help="rotating rounds the sequential calls are split into")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured sequential calls per sidecar first")
    parser.add_argument("--in-flight", type=int, default=16, help="calls outstanding in the throughput runs")
    parser.add_argument("--connections", type=int, default=2, help="channels the in-flight calls are spread over")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one throughput run")
    parser.add_argument("--flood-rounds", type=int, default=6, help="throughput runs per sidecar, rotating")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs, span files)")
    return parser.parse_args(argv)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that every process started is stopped on the way out."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stop_on_sigterm()
    binary = build_collector()
    workdir = Path(tempfile.mkdtemp(prefix="ottava-bench-tracing-"))
    variants = [
        Variant("a", "off", None),
        Variant("b", "rate 0", "0", free_port(), workdir / "spans-b.jsonl"),
        Variant("c", "rate 1", "1", free_port(), workdir / "spans-c.jsonl"),
        Variant("d", "rate 0.1", "0.1", free_port(), workdir / "spans-d.jsonl"),
    ]
    while len({v.receiver_port for v in variants[1:]}) < len(variants) - 1:
        for v in variants[2:]:
            v.receiver_port = free_port()
    began = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"tracing: {stamp}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; work folder {workdir}", flush=True)
    failed = True
    try:
        with Processes(workdir) as procs:
            collector = start_collector(procs, binary, variants)
            for v in variants:
                v.server = start_sidecar(procs, v)
            print(f"tracing: collector and {len(variants)} sidecars ready", flush=True)
            asyncio.run(measure(variants, args))
            # Sidecars first (each exports what it holds as it stops), then the collector (it flushes its files).
            for v in variants:
                if v.server is not None:
                    procs.stop(v.server)
            collector_cpu = proc.cpu_seconds(collector.pid)
            procs.stop(collector)
        failed = False
    finally:
        if failed or args.keep:
            print(f"tracing: work folder kept: {workdir}", file=sys.stderr)
    report(variants, args)
    check_spans(variants)
    print(f"tracing: the collector used {collector_cpu:.1f} s of CPU in the whole run")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntracing: done in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("tracing: stopped; every process it started was stopped too", file=sys.stderr)
        raise SystemExit(130) from None
