"""The measurements, each driving a target with the same Python grpc.aio client (the `dapr` package's stubs).

Every function takes the targets it compares and rotates their order from round to round,
so that drift of the machine (other load, CPU frequency) hits every target alike.
"""

import asyncio
import contextlib
import http.client
import socket
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import httpx
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc, dapr_pb2_grpc, pubsub_pb2, state_pb2

from bench.peers import proc
from bench.peers.targets import VALUE, Lines, Server

STORE, PUBSUB, KEY = "statestore", "pubsub", "bench-key"
GET = state_pb2.GetStateRequest(store_name=STORE, key=KEY)
SAVE = state_pb2.SaveStateRequest(store_name=STORE, states=[common_pb2.StateItem(key="bench-save", value=VALUE)])
PUBLISH = pubsub_pb2.PublishEventRequest(
    pubsub_name=PUBSUB, topic="bench-latency", data=VALUE, data_content_type="application/json"
)
OPERATIONS = ("GetState", "SaveState", "PublishEvent")


T = TypeVar("T")


def rotated(items: Sequence[T], index: int) -> list[T]:
    shift = index % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def channel(server: Server) -> grpc.aio.Channel:
    # A pool of its own per channel: several channels to one server are several connections,
    # which lets a server that spreads connections over worker processes use them.
    return grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)])


def call(stub: Any, operation: str) -> Callable[[], Awaitable[Any]]:
    if operation == "GetState":
        return lambda: stub.GetState(GET)
    if operation == "SaveState":
        return lambda: stub.SaveState(SAVE)
    return lambda: stub.PublishEvent(PUBLISH)


async def prepare(server: Server) -> None:
    """Saves the item GetState reads, and checks that the target answers it."""
    async with channel(server) as chan:
        stub = dapr_pb2_grpc.DaprStub(chan)
        await chan.channel_ready()
        await stub.SaveState(
            state_pb2.SaveStateRequest(store_name=STORE, states=[common_pb2.StateItem(key=KEY, value=VALUE)])
        )
        got = await stub.GetState(GET)
        if got.data != VALUE:
            raise RuntimeError(f"{server.name}: GetState answered {got.data!r}")


async def latencies(
    servers: dict[str, Server], plan: dict[str, list[str]], calls: int, rounds: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Sequential calls, one at a time on one channel per target.

    `plan` names the targets each operation runs on; the answer is {operation: {target: [seconds, …]}}.
    """
    channels = {name: channel(server) for name, server in servers.items()}
    try:
        stubs = {name: dapr_pb2_grpc.DaprStub(chan) for name, chan in channels.items()}
        found: dict[str, dict[str, list[float]]] = {op: {name: [] for name in names} for op, names in plan.items()}
        for operation, names in plan.items():
            for name in names:
                await _sequential(call(stubs[name], operation), warmup, [])
        per_round = max(1, calls // rounds)
        for index in range(rounds):
            for operation, names in plan.items():
                for name in rotated(names, index):
                    await _sequential(call(stubs[name], operation), per_round, found[operation][name])
        return found
    finally:
        for chan in channels.values():
            await chan.close(None)


async def redis_state(
    servers: dict[str, Server], redis_port: int, calls: int, rounds: int, warmup: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[float]]]:
    """GetState/SaveState through `servers` ("redis": a sidecar on `state.redis`, "memory": one on
    its in-memory store, "floor": `bare_redis.py`, GetState only), and the same read and write
    with redis-py straight to Redis (`HMGET`, `HSET`: the store's hash layout, without its ETag
    script), in rotating rounds. Answers ({op: {server: […]}}, {op: […]})."""
    import redis  # only this group needs it

    from tests.servers import redis_server

    await prepare(servers["redis"])
    await prepare(servers["memory"])
    direct = redis.Redis(host="127.0.0.1", port=redis_port, password=redis_server.PASSWORD)
    key = "direct||" + KEY
    direct_calls: dict[str, Callable[[], object]] = {
        "GetState": lambda: direct.hmget(key, "data", "version"),
        "SaveState": lambda: direct.hset(key, mapping={"data": VALUE, "version": 1}),
    }
    direct_calls["SaveState"]()
    found_direct: dict[str, list[float]] = {op: [] for op in direct_calls}
    plan = {"GetState": list(servers), "SaveState": [name for name in servers if name != "floor"]}
    sidecars: dict[str, dict[str, list[float]]] = {op: {name: [] for name in names} for op, names in plan.items()}
    per_round = max(1, calls // rounds)
    try:
        for send in direct_calls.values():
            _timed(send, warmup, [])
        for index in range(rounds):
            for path in rotated(["sidecars", "direct"], index):
                if path == "direct":
                    for op, send in direct_calls.items():
                        _timed(send, per_round, found_direct[op])
                    continue
                found = await latencies(servers, plan, per_round, 1, warmup if index == 0 else 0)
                for op, per_target in found.items():
                    for name, values in per_target.items():
                        sidecars[op][name].extend(values)
    finally:
        direct.close()
    return sidecars, found_direct


def _timed(send: Callable[[], object], calls: int, into: list[float]) -> None:
    clock = time.perf_counter
    for _ in range(calls):
        began = clock()
        send()
        into.append(clock() - began)


async def _sequential(send: Callable[[], Awaitable[Any]], calls: int, into: list[float]) -> None:
    clock = time.perf_counter
    for _ in range(calls):
        began = clock()
        await send()
        into.append(clock() - began)


async def throughput(
    servers: dict[str, Server], in_flight: int, seconds: float, rounds: int, connections: int
) -> dict[str, float]:
    """GetState calls per second with `in_flight` calls outstanding, spread over `connections` channels."""
    channels = {name: [channel(server) for _ in range(connections)] for name, server in servers.items()}
    try:
        stubs = {name: [dapr_pb2_grpc.DaprStub(c) for c in chans] for name, chans in channels.items()}
        for name in stubs:
            await asyncio.gather(*(stub.GetState(GET) for stub in stubs[name]))
        done = dict.fromkeys(stubs, 0)
        spent = dict.fromkeys(stubs, 0.0)
        for index in range(rounds):
            for name in rotated(list(servers), index):
                count, elapsed = await flood(stubs[name], in_flight, seconds)
                done[name] += count
                spent[name] += elapsed
        return {name: done[name] / spent[name] for name in stubs}
    finally:
        for chans in channels.values():
            for chan in chans:
                await chan.close(None)


async def flood(stubs: list[Any], in_flight: int, seconds: float) -> tuple[int, float]:
    """GetState with `in_flight` calls outstanding over `stubs` for `seconds`: (calls answered, seconds taken)."""
    count = 0
    began = time.perf_counter()
    deadline = began + seconds

    async def worker(stub: Any) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await stub.GetState(GET)
            count += 1

    await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(in_flight)))
    return count, time.perf_counter() - began


@dataclass
class CpuResult:
    per_thousand: dict[str, float] = field(default_factory=dict)  # server CPU seconds per 1000 calls
    achieved_rate: dict[str, float] = field(default_factory=dict)


async def cpu_per_call(servers: dict[str, Server], rate: float, seconds: float, rounds: int) -> CpuResult:
    """Server CPU (its process tree's utime + stime) per 1000 GetState sent at a fixed rate."""
    channels = {name: channel(server) for name, server in servers.items()}
    try:
        stubs = {name: dapr_pb2_grpc.DaprStub(chan) for name, chan in channels.items()}
        cpu = dict.fromkeys(stubs, 0.0)
        calls = dict.fromkeys(stubs, 0)
        spent = dict.fromkeys(stubs, 0.0)
        for index in range(rounds):
            for name in rotated(list(servers), index):
                pid = servers[name].pid
                before = proc.cpu_seconds(pid)
                count, elapsed = await _paced(stubs[name], rate, seconds)
                cpu[name] += proc.cpu_seconds(pid) - before
                calls[name] += count
                spent[name] += elapsed
        return CpuResult(
            per_thousand={name: cpu[name] / calls[name] * 1000 for name in stubs},
            achieved_rate={name: calls[name] / spent[name] for name in stubs},
        )
    finally:
        for chan in channels.values():
            await chan.close(None)


async def _paced(stub: Any, rate: float, seconds: float) -> tuple[int, float]:
    """Sends a call every 1/rate s (open loop: a slow answer does not delay the next call)."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    pending: set[asyncio.Future[Any]] = set()
    began = loop.time()
    for index in range(total):
        delay = began + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        future = asyncio.ensure_future(stub.GetState(GET))
        pending.add(future)
        future.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    return total, loop.time() - began


@dataclass
class PubsubResult:
    delivered: dict[str, float] = field(default_factory=dict)  # events/s, first publish to last receipt
    published: dict[str, float] = field(default_factory=dict)  # events/s the publisher got acknowledged
    refused: dict[str, float] = field(default_factory=dict)  # publishes refused (RESOURCE_EXHAUSTED), all rounds


EVENT_DATA = b'{"sku": "ottava-8"}'


def _publisher(chan: grpc.aio.Channel, direct: bool, key: str = "") -> Callable[[str], Awaitable[Any]]:
    """Sends one event to `topic`: PublishEvent to a sidecar, or (`direct`) OnTopicEvent straight to the app.

    With `key`, the event is published with that `partitionKey` metadata (order is kept per key).
    """
    if direct:
        app = appcallback_pb2_grpc.AppCallbackStub(chan)
        events = {
            topic: appcallback_pb2.TopicEventRequest(
                id="bench",
                source="bench",
                type="com.dapr.event.sent",
                spec_version="1.0",
                data_content_type="application/json",
                data=EVENT_DATA,
                topic=topic,
                pubsub_name=PUBSUB,
            )
            for topic in ("bench", "warmup")
        }
        return lambda topic: app.OnTopicEvent(events[topic])
    dapr = dapr_pb2_grpc.DaprStub(chan)
    requests = {
        topic: pubsub_pb2.PublishEventRequest(
            pubsub_name=PUBSUB,
            topic=topic,
            data=EVENT_DATA,
            data_content_type="application/json",
            metadata={"partitionKey": key} if key else None,
        )
        for topic in ("bench", "warmup")
    }
    return lambda topic: dapr.PublishEvent(requests[topic])


async def pubsub(
    subscribers: dict[str, tuple[Server, Lines]],
    events: int,
    in_flight: int,
    rounds: int,
    *,
    keyed: bool = False,
    warm: bool = True,
) -> PubsubResult:
    """Events/s from the publisher, through each sidecar, counted at its subscriber app (`subscriber.py`).

    `subscribers` maps a target to what the publisher calls and the subscriber's stdout;
    for `bare` what it calls is the subscriber app itself (OnTopicEvent, no sidecar): the
    most this publisher and this subscriber can do. With `keyed`, each of the `in_flight`
    publishers sends with a partition key of its own. `warm`: first wait until each
    subscriber gets events (once per subscriber app). The medians of the rounds.
    """
    result = PubsubResult()
    channels = {name: channel(server) for name, (server, _) in subscribers.items()}
    try:
        send = {
            name: [_publisher(chan, direct=name == "bare", key=f"key-{n}" if keyed else "") for n in range(in_flight)]
            for name, chan in channels.items()
        }
        for name, (_, lines) in subscribers.items():
            if warm:
                await _warm(send[name][0], lines, name)
        delivered: dict[str, list[float]] = {name: [] for name in subscribers}
        published: dict[str, list[float]] = {name: [] for name in subscribers}
        for index in range(rounds):
            for name in rotated(list(subscribers), index):
                first, acknowledged, refused = await _publish(send[name], events)
                result.refused[name] = result.refused.get(name, 0) + refused
                lines = subscribers[name][1]
                match = await asyncio.to_thread(lines.expect, r"delivered \d+ ([\d.]+)", 300, f"{name}: the last event")
                delivered[name].append(events / (float(match[1]) - first))
                published[name].append(events / (acknowledged - first))
        result.delivered = {name: statistics.median(values) for name, values in delivered.items()}
        result.published = {name: statistics.median(values) for name, values in published.items()}
        return result
    finally:
        for chan in channels.values():
            await chan.close(None)


async def _warm(send: Callable[[str], Awaitable[Any]], lines: Lines, name: str) -> None:
    """Publishes to `warmup` until the subscriber has one: the sidecar has subscribed and delivers."""
    warm = asyncio.ensure_future(asyncio.to_thread(lines.expect, "warm", 60, f"{name} to deliver to the subscriber"))
    while not warm.done():
        with contextlib.suppress(grpc.aio.AioRpcError):  # some sidecars refuse until subscribed
            await send("warmup")
        await asyncio.wait({warm}, timeout=0.05)
    warm.result()


async def _publish(senders: list[Callable[[str], Awaitable[Any]]], events: int) -> tuple[float, float, int]:
    """The time of the first publish, of the last acknowledgement, and how many publishes were refused.

    A sidecar whose subscriber falls behind may refuse with RESOURCE_EXHAUSTED ("publish
    again later"): the publisher backs off a millisecond and publishes that event again, as
    an app would.
    """
    remaining = events
    refused = 0

    async def worker(send: Callable[[str], Awaitable[Any]]) -> None:
        nonlocal remaining, refused
        while remaining > 0:
            remaining -= 1
            while True:
                try:
                    await send("bench")
                    break
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    refused += 1
                    await asyncio.sleep(0.001)

    first = time.monotonic()
    await asyncio.gather(*(worker(send) for send in senders))
    return first, time.monotonic(), refused


BODY = b'{"sku": "ottava-8", "qty": 1}'


def invocation(paths: dict[str, str], calls: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """POST latency of each path ({name: url}) with one keep-alive HTTP client, one call at a time."""
    found: dict[str, list[float]] = {name: [] for name in paths}
    with httpx.Client() as client:
        for url in paths.values():
            _post(client, url, warmup, [])
        per_round = max(1, calls // rounds)
        for index in range(rounds):
            for name in rotated(list(paths), index):
                _post(client, paths[name], per_round, found[name])
    return found


def _post(client: httpx.Client, url: str, calls: int, into: list[float]) -> None:
    headers = {"Content-Type": "application/json"}
    for _ in range(calls):
        began = time.perf_counter()
        response = client.post(url, content=BODY, headers=headers)
        into.append(time.perf_counter() - began)
        if response.status_code != 200 or response.content != BODY:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")


@dataclass
class FirstAnswers:
    """Seconds from (just before) a server's spawn to the first answer of each of its APIs; None: none came."""

    get_state: float | None = None  # a GetState answered OK over gRPC
    healthz: float | None = None  # `GET /v1.0/healthz` answered 204 over HTTP


class StartProbe:
    """Watches a server that is being spawned on known ports: when does each API first answer?

    Whatever a target's ready line or healthz claims, a client cares about the first answer.
    Two threads each wait for their port to accept a connection (a connect every
    millisecond, which costs the machine little), then make one call and wait for its
    answer however long it takes; a call refused or failed is made again.
    """

    def __init__(self, grpc_port: int, http_port: int, timeout: float = 60.0) -> None:
        self.began = time.perf_counter()
        self.found = FirstAnswers()
        self._deadline = self.began + timeout
        self._threads = [
            threading.Thread(target=self._get_state, args=(grpc_port,), daemon=True),
            threading.Thread(target=self._healthz, args=(http_port,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def result(self) -> FirstAnswers:
        for thread in self._threads:
            thread.join(max(0.0, self._deadline - time.perf_counter()))
        return self.found

    def _accepting(self, port: int) -> bool:
        """Waits until `port` accepts connections; False at the deadline."""
        while time.perf_counter() < self._deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return True
            time.sleep(0.001)
        return False

    def _get_state(self, port: int) -> None:
        while self._accepting(port):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
                try:
                    dapr_pb2_grpc.DaprStub(chan).GetState(GET, timeout=self._deadline - time.perf_counter())
                except grpc.RpcError:
                    time.sleep(0.001)
                    continue
            self.found.get_state = time.perf_counter() - self.began
            return

    def _healthz(self, port: int) -> None:
        while self._accepting(port):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=self._deadline - time.perf_counter())
            try:
                connection.request("GET", "/v1.0/healthz")
                if connection.getresponse().status == 204:
                    self.found.healthz = time.perf_counter() - self.began
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.001)
