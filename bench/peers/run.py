"""Ottava, daprd and the bare Python floor side by side, in one run, with the same Python grpc.aio client.

    make bench-peers                                   # builds daprd (cached), then this
    python -m bench.peers.run --quick --targets ottava,bare
    python -m bench.peers.run --daprd ~/.cache/ottava/daprd-1.18.2/daprd --json peers.json

Targets: `ottava` (`ottava run`, in-memory defaults, mTLS between sidecars with a local CA),
`daprd` (1.18.2 with only the in-memory state and pub/sub components, `build-daprd.sh`), and
`bare` (`bench/bare_server.py`: GetState and SaveState on grpc.aio and nothing else; for
invocation, the app called directly). Every server listens on loopback on free ports; each
measurement rotates the order of the targets from round to round so that drift of the
machine hits them all alike. Every number is printed with the ratios ottava/daprd and
ottava/bare, then the issue's "close the gap" targets are judged against them.

What each group measures:

* latency: GetState, SaveState, PublishEvent, one call at a time on one channel (p50/p90/p99);
* throughput: GetState calls/s with 16 and 64 calls in flight over --connections channels
  (each its own connection, so that a server spreading connections over processes can);
* CPU: the server's process-tree utime + stime per 1000 GetState sent at a fixed rate;
* memory: VmRSS (and PSS) summed over the server's process tree, idle after start and
  loaded after the throughput runs;
* start → ready: spawn to the ready line (Ottava, bare) or to healthz answering (daprd);
  the median of --starts, after one unmeasured start that warms the file cache; then, in
  as many more starts, spawn to the first GetState answered over gRPC and to the first
  `/v1.0/healthz` answered 204 over HTTP;
* pub/sub: events/s from first publish to the last event counted at a grpc.aio subscriber
  app (`subscriber.py`, the same app behind each sidecar), 16 publishes in flight;
* invocation: HTTP POST A → A's sidecar → B's sidecar → B (`bench/echo_app.py`), and B directly.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import grpc
import httpx

from bench.peers import measure, proc, report
from bench.peers.targets import Processes, Server, free_port, wait_until


@dataclass(frozen=True)
class Plan:
    calls: int = 6000  # sequential calls per operation and target
    rounds: int = 6
    warmup: int = 500
    throughput_seconds: float = 4.0  # per round, target and in-flight level
    throughput_rounds: int = 3
    connections: int = 4
    cpu_rate: float = 500.0
    cpu_seconds: float = 8.0
    cpu_rounds: int = 3
    starts: int = 5
    events: int = 10_000
    events_in_flight: int = 16
    pubsub_rounds: int = 3
    invoke_calls: int = 3000
    invoke_rounds: int = 6
    invoke_warmup: int = 300


QUICK = Plan(
    calls=1000, rounds=2, warmup=200, throughput_seconds=1.5, throughput_rounds=1, cpu_seconds=3.0, cpu_rounds=1,
    starts=3, events=2000, pubsub_rounds=1, invoke_calls=600, invoke_rounds=2, invoke_warmup=100,
)  # fmt: skip
MB = 1024 * 1024


@dataclass
class Run:
    plan: Plan
    targets: tuple[str, ...]
    daprd: Path | None
    procs: Processes
    results: report.Results

    def start(
        self,
        target: str,
        app_id: str,
        *,
        app_port: int | None = None,
        app_protocol: str = "http",
        ports: tuple[int, int] = (0, 0),
    ) -> Server:
        """`ports`: the target's gRPC and HTTP ports (0: free ones it picks)."""
        if target == "ottava":
            return self.procs.ottava(app_id, app_port=app_port, app_protocol=app_protocol, ports=ports)
        if target == "daprd":
            assert self.daprd is not None
            given = ports if all(ports) else None
            return self.procs.daprd(self.daprd, app_id, app_port=app_port, app_protocol=app_protocol, ports=given)
        return self.procs.bare(ports)


def progress(message: str) -> None:
    print(f"peers: {message}", flush=True)


def starts(run: Run) -> None:
    progress(f"start → ready, {run.plan.starts} starts each (after one unmeasured)")
    seconds: dict[str, list[float]] = {t: [] for t in run.targets}
    for index in range(run.plan.starts + 1):
        for target in measure.rotated(run.targets, index):
            server = run.start(target, f"peers-start-{index}")
            if index > 0:
                seconds[target].append(server.ready_seconds)
            run.procs.stop(server)
    group = run.results.group("start", "start → ready", "milliseconds, spawn to ready")
    for row, pick in (("median", statistics.median), ("min", min), ("max", max)):
        group.rows[row] = {t: pick(values) * 1000 for t, values in seconds.items()}
    first_answers(run, group)


def first_answers(run: Run, group: report.Group) -> None:
    """Spawn → the first GetState answered over gRPC, and → the first `/v1.0/healthz` 204 over HTTP.

    Separate starts on ports chosen beforehand, probed from the spawn on (`measure.StartProbe`),
    so that the probing does not weigh on the ready times above.
    """
    progress(f"start → first answers, {run.plan.starts} starts each")
    found: dict[str, list[measure.FirstAnswers]] = {t: [] for t in run.targets}
    for index in range(run.plan.starts):
        for target in measure.rotated(run.targets, index):
            ports = (free_port(), free_port())
            probe = measure.StartProbe(*ports)
            server = run.start(target, f"peers-first-{index}", ports=ports)
            found[target].append(probe.result())
            run.procs.stop(server)
    for row, field_name in (("first GetState, median", "get_state"), ("first healthz, median", "healthz")):
        times = {t: [getattr(a, field_name) for a in answers] for t, answers in found.items()}
        group.rows[row] = {t: statistics.median(v) * 1000 for t, v in times.items() if None not in v}
    group.notes.append(
        "first GetState / healthz: spawn to the first GetState answered OK over gRPC, and to the first "
        "/v1.0/healthz answered 204 over HTTP, whatever the ready line said"
    )


def state(run: Run) -> None:
    """Latency, throughput, CPU and memory, on one instance of each target."""
    servers = {target: run.start(target, "peers-state") for target in run.targets}
    time.sleep(1.0)  # let start-up work settle before "idle"
    memory = run.results.group("memory", "memory", "MB, summed over the server's process tree", 1)
    memory.rows["idle RSS"] = {t: proc.rss_bytes(s.pid) / MB for t, s in servers.items()}
    memory.rows["idle PSS"] = {t: proc.pss_bytes(s.pid) / MB for t, s in servers.items()}
    plan = run.plan
    for server in servers.values():
        asyncio.run(measure.prepare(server))

    progress(f"latency, {plan.calls} sequential calls per operation and target in {plan.rounds} rounds")
    ops = {op: [t for t in run.targets if t != "bare" or op != "PublishEvent"] for op in measure.OPERATIONS}
    found = asyncio.run(measure.latencies(servers, ops, plan.calls, plan.rounds, plan.warmup))
    latency = run.results.group("latency", "latency, one client", "µs, one call at a time")
    for op, per_target in found.items():
        for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            latency.rows[f"{op} {label}"] = {t: measure.percentile(v, q) * 1e6 for t, v in per_target.items()}
    if "bare" in run.targets:
        latency.notes.append("bare has no pub/sub: PublishEvent is ottava and daprd only")

    group = run.results.group("throughput", "throughput, GetState", f"calls/s over {plan.connections} connections")
    for in_flight in (16, 64):
        progress(f"throughput, {in_flight} in flight, {plan.throughput_rounds} x {plan.throughput_seconds} s each")
        group.rows[f"{in_flight} in flight"] = asyncio.run(
            measure.throughput(servers, in_flight, plan.throughput_seconds, plan.throughput_rounds, plan.connections)
        )
    if "bare" in run.targets and "daprd" in run.targets:
        ceiling(run, group, servers["daprd"])
    memory.rows["loaded RSS"] = {t: proc.rss_bytes(s.pid) / MB for t, s in servers.items()}
    memory.rows["loaded PSS"] = {t: proc.pss_bytes(s.pid) / MB for t, s in servers.items()}

    progress(f"CPU, GetState at {plan.cpu_rate:.0f}/s, {plan.cpu_rounds} x {plan.cpu_seconds} s each")
    cpu = asyncio.run(measure.cpu_per_call(servers, plan.cpu_rate, plan.cpu_seconds, plan.cpu_rounds))
    group = run.results.group("cpu", f"server CPU at {plan.cpu_rate:.0f} GetState/s", "CPU s; calls/s", 3)
    group.rows["CPU s per 1000 GetState"] = cpu.per_thousand
    group.rows["achieved rate"] = cpu.achieved_rate
    for server in servers.values():
        run.procs.stop(server)


def ceiling(run: Run, group: report.Group, daprd: Server) -> None:
    """What worker processes could give a Python server here: two bare servers sharing one port, against daprd."""
    plan = run.plan
    shared = run.procs.bare_processes(2)
    try:
        progress(
            f"throughput ceiling, two bare processes on one port, 64 in flight over {2 * plan.connections} connections"
        )
        found = asyncio.run(
            measure.throughput(
                {"bare x2": shared, "daprd": daprd}, 64, plan.throughput_seconds, plan.throughput_rounds,
                2 * plan.connections,
            )
        )  # fmt: skip
    finally:
        run.procs.stop(shared)
    group.notes.append(
        f"ceiling: bare in two processes sharing the port (SO_REUSEPORT), 64 in flight over {2 * plan.connections} "
        f"connections: {found['bare x2']:,.0f} calls/s, {found['bare x2'] / found['daprd']:.2f}x daprd's "
        f"{found['daprd']:,.0f} in the same rounds"
    )


def pubsub(run: Run) -> None:
    """Each sidecar in front of its own subscriber app; bare: the publisher calls a subscriber app directly."""
    plan = run.plan
    progress(f"pub/sub, {plan.events} events to a gRPC subscriber, {plan.events_in_flight} in flight")
    subscribers = {}
    for target in run.targets:
        port = free_port()
        app = run.procs.app(
            f"subscriber-{target}",
            "peers/subscriber.py",
            port,
            ready="listening",
            env={"BENCH_EVERY": str(plan.events)},
        )
        assert app.lines is not None
        app.grpc_port = port
        front = app if target == "bare" else run.start(target, "peers-subscriber", app_port=port, app_protocol="grpc")
        subscribers[target] = (front, app.lines)
    found = asyncio.run(measure.pubsub(subscribers, plan.events, plan.events_in_flight, plan.pubsub_rounds))
    keyed = asyncio.run(
        measure.pubsub(subscribers, plan.events, plan.events_in_flight, plan.pubsub_rounds, keyed=True, warm=False)
    )
    group = run.results.group("pubsub", "pub/sub to one gRPC subscriber", "events/s, median of the rounds")
    group.rows["delivered end to end"] = found.delivered
    group.rows["publishes acknowledged"] = found.published
    group.rows["publishes refused, retried"] = found.refused
    group.rows[f"delivered, {plan.events_in_flight} partition keys"] = keyed.delivered
    group.rows[f"acknowledged, {plan.events_in_flight} partition keys"] = keyed.published
    group.rows[f"refused, {plan.events_in_flight} partition keys"] = keyed.refused
    group.notes.append(
        f"partition keys: each of the {plan.events_in_flight} publishers sends with a partitionKey of its own"
    )
    if "bare" in run.targets:
        group.notes.append("bare: the same publisher calls the subscriber app's OnTopicEvent directly, no sidecar")
    run.procs.stop_all()


def invocation(run: Run) -> None:
    plan = run.plan
    progress(f"invocation, {plan.invoke_calls} calls per path in {plan.invoke_rounds} rounds")
    port = free_port()
    run.procs.app("echo", "echo_app.py", port, ready=None)
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}/echo"), "the echo app")
    paths = {}
    for target in run.targets:
        if target == "bare":
            paths[target] = f"http://127.0.0.1:{port}/echo"
            continue
        callee = f"peers-b-{target}"
        run.start(target, callee, app_port=port)
        caller = run.start(target, f"peers-a-{target}")
        url = paths[target] = f"http://127.0.0.1:{caller.http_port}/v1.0/invoke/{callee}/method/echo"
        wait_until(lambda: _answers(url), f"{target}: A → B through the sidecars")  # noqa: B023 (called at once)
    found = measure.invocation(paths, plan.invoke_calls, plan.invoke_rounds, plan.invoke_warmup)
    group = run.results.group(
        "invocation", "invocation A → B", "µs; ottava and daprd: through two sidecars; bare: direct"
    )
    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        group.rows[label] = {t: measure.percentile(v, q) * 1e6 for t, v in found.items()}
    if "daprd" in run.targets and "ottava" in run.targets:
        group.notes.append("ottava's sidecars talk mTLS (its default); daprd's, without sentry, plaintext")
    run.procs.stop_all()


def _answers(url: str) -> bool:
    try:
        return httpx.post(url, content=measure.BODY, headers={"Content-Type": "application/json"}).status_code == 200
    except httpx.HTTPError:
        return False


def find_daprd(given: str | None) -> Path:
    if given:
        return Path(given)
    found = sorted(Path.home().glob(".cache/ottava/daprd-*/daprd"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise SystemExit(
            "peers: no daprd: run bench/peers/build-daprd.sh, pass --daprd, or leave daprd out of --targets"
        )
    return found[-1]


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.machine(),
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {model}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute) to check that it works")
    parser.add_argument("--targets", default=",".join(report.TARGETS), help="comma-separated, of ottava,daprd,bare")
    parser.add_argument("--daprd", help="the daprd binary (default: the latest built ~/.cache/ottava/daprd-*/daprd)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--connections", type=int, help="channels the throughput runs spread over (default 4)")
    args = parser.parse_args(argv)
    names = {name.strip() for name in args.targets.split(",") if name.strip()}
    if not names or names - set(report.TARGETS):
        parser.error(f"--targets: choose among {','.join(report.TARGETS)}")
    args.targets = tuple(t for t in report.TARGETS if t in names)
    return args


def redis_state(run: Run) -> None:
    """GetState/SaveState through Ottava on `state.redis`, and the same reads and writes sent with redis-py.

    daprd is not in this group (the daprd built for the benchmarks has only in-memory
    components); bare is redis-py calling Redis directly, with the hash layout the store uses.
    A second Ottava on its in-memory store splits the sidecar's price into the gRPC hop,
    which any sidecar pays, and the Redis store inside it; `bare_redis.py`, a grpc.aio
    GetState that reads Redis with redis.asyncio, is the Python floor for a Redis read.
    """
    if "ottava" not in run.targets:
        return
    from bench.state_redis import redis_statestore
    from tests.servers import redis_server  # the tests' own Redis set-up: apt-installs it when missing

    server = redis_server.start()
    try:
        folder = run.procs.workdir / "redis-resources"
        folder.mkdir(exist_ok=True)
        (folder / "statestore.yaml").write_text(redis_statestore(server.address), encoding="utf-8")
        floor = [sys.executable, str(Path(__file__).with_name("bare_redis.py")), str(server.port)]
        servers = {
            "redis": run.procs.ottava("peers-redis", resources=folder),
            "memory": run.procs.ottava("peers-memory"),
            "floor": run.procs.spawn("bare-redis", [*floor, redis_server.PASSWORD, "peers-redis||"]),
        }
        plan = run.plan
        progress(f"Redis state, {plan.calls} sequential calls per operation and path in {plan.rounds} rounds")
        sidecars, direct = asyncio.run(measure.redis_state(servers, server.port, plan.calls, plan.rounds, plan.warmup))
    finally:
        run.procs.stop_all()
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
    group = run.results.group("redis", "Redis state, one client", "µs, one call at a time")
    for op in ("GetState", "SaveState"):
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            group.rows[f"{op} {label}"] = {
                "ottava": measure.percentile(sidecars[op]["redis"], q) * 1e6,
                "bare": measure.percentile(direct[op], q) * 1e6,
            }
        over_memory = measure.percentile(sidecars[op]["redis"], 0.5) - measure.percentile(sidecars[op]["memory"], 0.5)
        hop = measure.percentile(sidecars[op]["memory"], 0.5)
        group.notes.append(
            f"{op} p50: Ottava on Redis is {over_memory * 1e6:,.0f} µs over Ottava on its in-memory store "
            f"({hop * 1e6:,.0f} µs, the gRPC hop and the API)"
        )
    floor_p50 = measure.percentile(sidecars["GetState"]["floor"], 0.5)
    ours_p50 = measure.percentile(sidecars["GetState"]["redis"], 0.5)
    group.notes.append(
        f"GetState p50 of a bare grpc.aio server reading Redis with redis.asyncio (bare_redis.py): "
        f"{floor_p50 * 1e6:,.0f} µs, {(floor_p50 - measure.percentile(direct['GetState'], 0.5)) * 1e6:,.0f} µs "
        f"over redis-py direct; Ottava on Redis is {ours_p50 / floor_p50:.2f}x it"
    )
    group.notes.append("bare: redis-py (synchronous) straight to the same Redis; daprd: not built with state.redis")


PHASES: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("start", starts),
    ("state", state),
    ("redis", redis_state),
    ("pubsub", pubsub),
    ("invocation", invocation),
)


def measure_all(run: Run) -> bool:
    """Every phase, each on processes of its own; a phase that fails is noted and the next one runs. Any failed?"""
    failed = False
    for name, phase in PHASES:
        try:
            phase(run)
        except (RuntimeError, OSError, httpx.HTTPError, grpc.RpcError) as err:
            failed = True
            progress(f"{name} failed: {err}")
            run.results.group(name, name, "").notes.append(f"failed: {err}")
        finally:
            run.procs.stop_all()
    return failed


def compile_ottava() -> None:
    """Ottava's own modules as bytecode, as the image ships them, before anything is timed.

    An editable install leaves them as sources; run with PYTHONDONTWRITEBYTECODE (or after
    an edit) every start would compile a hundred modules again: about 60 ms more to the
    ready line here, which would be measuring the checkout, not Ottava.
    """
    import compileall

    import ottava_cli
    import ottava_operator
    import ottava_sidecar

    for package in (ottava_sidecar, ottava_cli, ottava_operator):
        for folder in package.__path__:
            compileall.compile_dir(folder, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    compile_ottava()
    plan = QUICK if args.quick else Plan()
    if args.connections:
        plan = replace(plan, connections=args.connections)
    daprd = find_daprd(args.daprd) if "daprd" in args.targets else None
    about = machine()
    print(f"peers: {', '.join(args.targets)} on {about['cpu']}, Python {about['python']}, load {about['load average']}")
    if daprd is not None:
        print(f"peers: daprd is {daprd}")
    workdir = Path(tempfile.mkdtemp(prefix="ottava-peers-"))
    results = report.Results()
    began = time.monotonic()
    failed = True
    try:
        with Processes(workdir) as procs:
            failed = measure_all(Run(plan, args.targets, daprd, procs, results))
    finally:
        if failed:
            print(f"peers: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"peers: done in {time.monotonic() - began:.0f} s, load {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    for group in results.groups.values():
        report.print_group(group, args.targets)
    judged = report.print_summary(results)
    if args.json:
        document: dict[str, object] = {"machine": about, "daprd": str(daprd) if daprd else None}
        document |= {"plan": asdict(plan), "quick": args.quick, "targets": list(args.targets)}
        document |= {"groups": results.as_json(), "goals": judged}
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\npeers: wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
