"""Soak: abusive clients against one sidecar, watching its memory (docs/robustness.md).

Starts `ottava run` on the in-memory defaults (loopback, free ports), measures its
resident memory (RSS) at rest, then for `--duration` seconds runs, all at once and each
bounded in count:

* slow bodies: HTTP requests that announce a large body and dribble a few bytes a second;
* idle connections: TCP connections to the HTTP port that never send a byte;
* abandoned streams: configuration subscriptions and pub/sub stream subscriptions that
  never read, while a writer keeps changing the configuration and publishing;
* slow subscribers: pub/sub streams that read and acknowledge one event every 2 s;
* large bulk reads: GetBulkState of one big key repeated, over and over.

Every few seconds it prints a line: elapsed time, RSS, its growth over the baseline, and
what each kind of client has seen so far. Then it stops the clients, waits for the
sidecar to settle and checks the acceptance: RSS never above the baseline + 150 MB while
the clients run, and back within 20 MB of the baseline after they leave. It exits 1
when either fails (or the sidecar died), 0 otherwise.

    make soak                               # 240 s of abuse, 5 minutes in all
    python -m bench.soak --duration 60      # a shorter run
"""

import argparse
import asyncio
import contextlib
import itertools
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2, configuration_pb2, dapr_pb2_grpc, pubsub_pb2, state_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc

MB = 1024 * 1024
PEAK_ALLOWANCE_MB = 150.0  # while the clients run
SETTLED_ALLOWANCE_MB = 20.0  # after they leave
# Past this the run stops early: the verdict is already FAIL, and the machine has other work.
ABORT_MB = 800.0
SETTLE_SECONDS = 30.0
READY = re.compile(r"^ottava sidecar UP: .* grpc=\S+:(?P<grpc>\d+) http=\S+:(?P<http>\d+)")
OTTAVA = str(Path(sys.executable).with_name("ottava"))
TOPIC = "soak"
CONFIG_KEY = "soak-key"
BIG_KEY = "soak-big"


@dataclass
class Tally:
    """What each kind of client has seen: `kind → outcome → count`."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, kind: str, outcome: str, n: int = 1) -> None:
        self.counts.setdefault(kind, Counter())[outcome] += n

    def line(self) -> str:
        return "  ".join(
            f"{kind}[{' '.join(f'{k}={v}' for k, v in sorted(c.items()))}]" for kind, c in sorted(self.counts.items())
        )


@dataclass
class Sidecar:
    process: subprocess.Popen[str]
    grpc_port: int
    http_port: int

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kb = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # Linux always has it
        return kb / 1024

    def alive(self) -> bool:
        return self.process.poll() is None


def start_sidecar() -> Sidecar:
    command = [OTTAVA, "run", "--app-id", "soak", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    command += ["--internal-grpc-port", "0", "--log-level", "error"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    for line in process.stdout:
        match = READY.match(line)
        if match:
            return Sidecar(process, int(match["grpc"]), int(match["http"]))
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit("soak: the sidecar did not become ready")


# --- the abusive clients ----------------------------------------------------------------
#
# Each runs until cancelled, records outcomes in the tally, and closes what it opened.


async def slow_body(sidecar: Sidecar, tally: Tally) -> None:
    """Announce a 1 MB body, then send 3 bytes a second."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)
    tally.add("slow-body", "opened")
    try:
        writer.write(
            b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n["
        )
        while True:
            await writer.drain()
            answer = await _read_for(reader, 1.0)
            if answer is not None:
                tally.add("slow-body", "answered" if answer else "closed-by-sidecar")
                return
            writer.write(b'{"k')
    except ConnectionError:
        tally.add("slow-body", "closed-by-sidecar")
    finally:
        writer.close()


async def _read_for(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """Bytes the server sent (b"" when it closed), or None when it stayed quiet."""
    try:
        return await asyncio.wait_for(reader.read(1024), seconds)
    except TimeoutError:
        return None


async def idle_connection(sidecar: Sidecar, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)
    tally.add("idle", "opened")
    try:
        data = await reader.read(1024)  # returns when the sidecar closes (or answers)
        tally.add("idle", "closed-by-sidecar" if not data else "answered")
    except ConnectionError:
        tally.add("idle", "closed-by-sidecar")
    finally:
        writer.close()


async def abandoned_configuration(channel: grpc.aio.Channel, tally: Tally) -> None:
    """Subscribe to the key the writer changes, read the first message, then never read again."""
    call = dapr_pb2_grpc.DaprStub(channel).SubscribeConfiguration(
        configuration_pb2.SubscribeConfigurationRequest(store_name="configstore", keys=[CONFIG_KEY])
    )
    tally.add("abandoned-config", "opened")
    await _never_read(call, tally, "abandoned-config")


async def abandoned_topic(channel: grpc.aio.Channel, tally: Tally, topic: str) -> None:
    """A pub/sub stream (one per topic, as Dapr allows) that never reads."""
    call = dapr_pb2_grpc.DaprStub(channel).SubscribeTopicEventsAlpha1(_initial_subscription(topic))
    tally.add("abandoned-topic", "opened")
    await _never_read(call, tally, "abandoned-topic")


async def _initial_subscription(topic: str) -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1]:
    yield _subscribe(topic)
    await asyncio.Event().wait()  # keep the request side open, sending nothing more


async def _never_read(call: grpc.aio.Call, tally: Tally, kind: str) -> None:
    try:
        code = await call.code()  # waits for the end of the call without reading its messages
        tally.add(kind, f"ended-{code.name}")
    finally:
        call.cancel()


def _subscribe(topic: str) -> pubsub_pb2.SubscribeTopicEventsRequestAlpha1:
    return pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
        initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(pubsub_name="pubsub", topic=topic)
    )


async def slow_subscriber(channel: grpc.aio.Channel, tally: Tally, topic: str) -> None:
    """A pub/sub stream that reads and acknowledges one event every 2 s."""
    acks: asyncio.Queue[pubsub_pb2.SubscribeTopicEventsRequestAlpha1] = asyncio.Queue()

    async def requests() -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1]:
        yield _subscribe(topic)
        while True:
            yield await acks.get()

    call = dapr_pb2_grpc.DaprStub(channel).SubscribeTopicEventsAlpha1(requests())
    tally.add("slow-subscriber", "opened")
    try:
        async for response in call:
            if response.HasField("event_message"):
                tally.add("slow-subscriber", "events")
                status = appcallback_pb2.TopicEventResponse(status=appcallback_pb2.TopicEventResponse.SUCCESS)
                await acks.put(
                    pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                        event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
                            id=response.event_message.id, status=status
                        )
                    )
                )
                await asyncio.sleep(2)
        tally.add("slow-subscriber", "ended")
    except grpc.aio.AioRpcError as err:
        tally.add("slow-subscriber", f"ended-{err.code().name}")
    finally:
        call.cancel()


async def bulk_reader(channel: grpc.aio.Channel, tally: Tally, repeat: int) -> None:
    """GetBulkState of the big key, `repeat` times in one request, then 3 times (an answer
    that fits the default limit), again and again: refused reads and large answers."""
    stub = dapr_pb2_grpc.DaprStub(channel)
    requests = [
        state_pb2.GetBulkStateRequest(store_name="statestore", keys=[BIG_KEY] * n) for n in (repeat, min(repeat, 3))
    ]
    for n in itertools.count():
        try:
            await stub.GetBulkState(requests[n % 2], timeout=60)
            tally.add("bulk-read", "ok")
        except grpc.aio.AioRpcError as err:
            tally.add("bulk-read", err.code().name)
            await asyncio.sleep(0.2)


async def writer(channel: grpc.aio.Channel, tally: Tally, payload_bytes: int, topics: list[str]) -> None:
    """Change the subscribed configuration key and publish to every subscribed topic, 5 times a second."""
    layotto = runtime_pb2_grpc.RuntimeStub(channel)
    dapr = dapr_pb2_grpc.DaprStub(channel)
    content = "c" * payload_bytes
    n = 0
    while True:
        n += 1
        item = layotto_pb2.ConfigurationItem(key=CONFIG_KEY, content=f"{n}:{content}")
        save = layotto_pb2.SaveConfigurationRequest(store_name="configstore", items=[item])
        await _count(tally, "config-write", layotto.SaveConfiguration(save))
        for topic in topics:
            event = pubsub_pb2.PublishEventRequest(
                pubsub_name="pubsub", topic=topic, data=content.encode(), data_content_type="text/plain"
            )
            await _count(tally, "publish", dapr.PublishEvent(event))
        await asyncio.sleep(0.2)


async def _count(tally: Tally, kind: str, call: Awaitable[object]) -> None:
    try:
        await call
        tally.add(kind, "ok")
    except grpc.aio.AioRpcError as err:
        tally.add(kind, err.code().name)


# --- the run ----------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    interval: float
    slow_bodies: int
    idle_connections: int
    abandoned_streams: int
    slow_subscribers: int
    bulk_readers: int
    bulk_repeat: int
    big_value_bytes: int
    payload_bytes: int


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of abuse (default 240)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between report lines")
    parser.add_argument("--slow-bodies", type=int, default=32)
    parser.add_argument("--idle-connections", type=int, default=256)
    parser.add_argument("--abandoned-streams", type=int, default=16, help="of each kind: configuration, pub/sub")
    parser.add_argument("--slow-subscribers", type=int, default=4)
    parser.add_argument("--bulk-readers", type=int, default=2)
    parser.add_argument("--bulk-repeat", type=int, default=40, help="times the big key is repeated in one read")
    parser.add_argument("--big-value-bytes", type=int, default=1 * MB)
    parser.add_argument("--payload-bytes", type=int, default=16 * 1024, help="configuration and event size")
    args = parser.parse_args(argv)
    return Options(**{k.replace("-", "_"): v for k, v in vars(args).items()})


def clients(sidecar: Sidecar, channel: grpc.aio.Channel, tally: Tally, options: Options) -> list[Awaitable[None]]:
    made: list[Awaitable[None]] = []
    made += [slow_body(sidecar, tally) for _ in range(options.slow_bodies)]
    made += [idle_connection(sidecar, tally) for _ in range(options.idle_connections)]
    made += [abandoned_configuration(channel, tally) for _ in range(options.abandoned_streams)]
    abandoned = [f"{TOPIC}-abandoned-{i}" for i in range(options.abandoned_streams)]
    slow = [f"{TOPIC}-slow-{i}" for i in range(options.slow_subscribers)]
    made += [abandoned_topic(channel, tally, topic) for topic in abandoned]
    made += [slow_subscriber(channel, tally, topic) for topic in slow]
    made += [bulk_reader(channel, tally, options.bulk_repeat) for _ in range(options.bulk_readers)]
    made.append(writer(channel, tally, options.payload_bytes, abandoned + slow))
    return made


async def guarded(client: Awaitable[None], tally: Tally) -> None:
    """A client whose unexpected failure is counted, not raised: the soak goes on."""
    try:
        await client
    except asyncio.CancelledError:
        raise
    except Exception as err:  # a connection refused under load is an outcome to report
        tally.add("client-errors", type(err).__name__)


def report(started: float, sidecar: Sidecar, baseline: float, tally: Tally) -> float:
    rss = sidecar.rss_mb()
    print(
        f"t={time.monotonic() - started:6.1f}s  rss={rss:7.1f} MB  delta={rss - baseline:+7.1f} MB  {tally.line()}",
        flush=True,
    )
    return rss


async def abuse(sidecar: Sidecar, baseline: float, options: Options) -> float:
    """Run the clients for the duration; the peak RSS seen."""
    tally = Tally()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{sidecar.grpc_port}", options=[("grpc.max_receive_message_length", 256 * MB)]
    )
    tasks = [asyncio.create_task(guarded(c, tally)) for c in clients(sidecar, channel, tally, options)]
    started = time.monotonic()
    peak = baseline
    try:
        while time.monotonic() - started < options.duration and sidecar.alive():
            await asyncio.sleep(options.interval)
            peak = max(peak, report(started, sidecar, baseline, tally))
            if peak - baseline > ABORT_MB:
                print(f"soak: RSS grew by more than {ABORT_MB:.0f} MB; stopping the clients early", flush=True)
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close(None)
    print(f"clients stopped: {tally.line()}", flush=True)
    return peak


async def prepare(sidecar: Sidecar, options: Options) -> None:
    """Store the big value, and warm each path up once so the baseline includes the code it loads."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        dapr = dapr_pb2_grpc.DaprStub(channel)
        big = common_pb2.StateItem(key=BIG_KEY, value=b"x" * options.big_value_bytes)
        await dapr.SaveState(state_pb2.SaveStateRequest(store_name="statestore", states=[big]))
        await dapr.GetBulkState(state_pb2.GetBulkStateRequest(store_name="statestore", keys=[BIG_KEY]))
        await dapr.PublishEvent(pubsub_pb2.PublishEventRequest(pubsub_name="pubsub", topic=TOPIC, data=b"warm-up"))


async def settle(sidecar: Sidecar, baseline: float, interval: float) -> float:
    """Poll until RSS is back within the allowance, or SETTLE_SECONDS pass; the last RSS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    rss = sidecar.rss_mb()
    while sidecar.alive() and rss - baseline > SETTLED_ALLOWANCE_MB and time.monotonic() < deadline:
        await asyncio.sleep(min(interval, 2.0))
        rss = sidecar.rss_mb()
    return rss


def verdict(baseline: float, peak: float, final: float, alive: bool) -> bool:
    peak_ok = peak - baseline <= PEAK_ALLOWANCE_MB
    final_ok = final - baseline <= SETTLED_ALLOWANCE_MB
    print(
        f"baseline {baseline:.1f} MB, peak {peak:.1f} MB ({peak - baseline:+.1f}), final {final:.1f} MB ({final - baseline:+.1f})"
    )
    print(
        f"VERDICT: {'PASS' if peak_ok and final_ok and alive else 'FAIL'}  "
        f"peak within +{PEAK_ALLOWANCE_MB:.0f} MB: {'yes' if peak_ok else 'NO'}; "
        f"settled within +{SETTLED_ALLOWANCE_MB:.0f} MB: {'yes' if final_ok else 'NO'}; "
        f"sidecar alive: {'yes' if alive else 'NO'}",
        flush=True,
    )
    return peak_ok and final_ok and alive


async def soak(sidecar: Sidecar, options: Options) -> bool:
    await prepare(sidecar, options)
    await asyncio.sleep(2)
    baseline = min(sidecar.rss_mb() for _ in range(3))
    print(
        f"sidecar pid {sidecar.process.pid}: baseline RSS {baseline:.1f} MB; abusing it for {options.duration:.0f}s",
        flush=True,
    )
    peak = await abuse(sidecar, baseline, options)
    final = await settle(sidecar, baseline, options.interval)
    return verdict(baseline, peak, final, sidecar.alive())


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    sidecar = start_sidecar()
    try:
        passed = asyncio.run(soak(sidecar, options))
    finally:
        if sidecar.alive():
            sidecar.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                sidecar.process.wait(timeout=30)
        if sidecar.alive():
            sidecar.process.kill()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
