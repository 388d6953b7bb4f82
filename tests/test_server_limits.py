"""What one careless or hostile client may cost the sidecar's servers, and what it hears back.

Each test runs a real `Sidecar` in-process with small `Limits` (the flags that set them
belong to `ottava run`; here the limits are what is under test), and talks to it the way
such a client would: raw sockets that dribble or stall, bursts of calls, garbage bytes.
"""

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from aiohttp import web
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import configuration_pb2, dapr_pb2_grpc, invoke_pb2, pubsub_pb2
from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2 as internal_pb
from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2_grpc as internal_grpc
from ottava_sidecar.limits import Limits
from ottava_sidecar.runtime.defaults import default_components
from ottava_sidecar.runtime.sidecar import Options, Sidecar

from tests import peers
from tests.conftest import SidecarFactory

APP_ID = "limits"


@asynccontextmanager
async def sidecar_with(tmp_path: Path, limits: Limits, *, app_port: int | None = None) -> AsyncIterator[Sidecar]:
    options = Options(
        app_id=APP_ID,
        app_port=app_port,
        grpc_port=0,
        http_port=0,
        internal_grpc_port=0,
        enable_metrics=False,
        registry_dir=tmp_path / "registry",
        shutdown_grace_seconds=1.0,
        limits=limits,
    )
    sidecar = Sidecar(options, default_components())
    await sidecar.start()
    try:
        yield sidecar
    finally:
        await sidecar.stop()


@dataclass
class SlowApp:
    """An app whose `/slow` method answers only once the test releases it."""

    port: int
    release: asyncio.Event
    waiting: list[None]


@asynccontextmanager
async def slow_app() -> AsyncIterator[SlowApp]:
    release = asyncio.Event()
    waiting: list[None] = []

    async def slow(request: web.Request) -> web.Response:
        waiting.append(None)
        await release.wait()
        return web.Response(text="done")

    async def subscribe(request: web.Request) -> web.Response:
        return web.json_response([])

    app = web.Application()
    app.router.add_route("*", "/slow", slow)
    app.router.add_get("/dapr/subscribe", subscribe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield SlowApp(runner.addresses[0][1], release, waiting)
    finally:
        release.set()
        await runner.cleanup()


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        await asyncio.sleep(0.02)


# --- raw HTTP ------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, str]:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        body: dict[str, str] = json.loads(self.body)
        return body


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader: asyncio.StreamReader, seconds: float = 5.0) -> RawResponse:
    async with asyncio.timeout(seconds):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(int(lines[0].split()[1]), headers, body)


async def closed(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (whatever it sends first)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def assert_json_error(response: RawResponse, status: int) -> dict[str, str]:
    assert response.status == status, response
    body = response.json()
    assert body["errorCode"] and body["message"], body
    return body


# --- timeouts --------------------------------------------------------------------------------


async def test_clients_that_dribble_their_headers_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    limits = Limits(header_timeout_seconds=0.5, idle_timeout_seconds=60, read_timeout_seconds=60)
    async with sidecar_with(tmp_path, limits) as sidecar:
        port = sidecar.ports.http
        dribblers = [await connect(port) for _ in range(100)]
        silent_reader, silent_writer = await connect(port)  # connects and sends nothing at all
        for _, writer in dribblers:
            writer.write(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # one more header byte every 100 ms, never the end
            for _, writer in dribblers:
                if not writer.is_closing():
                    with contextlib.suppress(ConnectionError):
                        writer.write(b"X")
            await asyncio.sleep(0.1)
        results = await asyncio.gather(*(closed(reader, 3.0) for reader, _ in dribblers))
        assert all(results), f"{results.count(False)} of {len(results)} slow clients still connected"
        assert await closed(silent_reader, 3.0)
        # A client that sends its request in time is served as usual.
        reader, writer = await connect(port)
        writer.write(b"GET /actuator/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader)).status == 200
        for _, each in [*dribblers, (reader, writer), (silent_reader, silent_writer)]:
            each.close()


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    limits = Limits(header_timeout_seconds=30, idle_timeout_seconds=0.5)
    async with sidecar_with(tmp_path, limits) as sidecar:
        reader, writer = await connect(sidecar.ports.http)
        writer.write(b"GET /actuator/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader)).status == 200
        assert await closed(reader, 3.0)
        writer.close()


async def test_stalled_uploads_are_answered_408_and_let_go(tmp_path: Path) -> None:
    limits = Limits(read_timeout_seconds=0.5)
    async with sidecar_with(tmp_path, limits) as sidecar:
        port = sidecar.ports.http
        uploads = [await connect(port) for _ in range(20)]
        for _, writer in uploads:  # 3 MiB of a 4 MiB body, then nothing
            writer.write(b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: 4194304\r\n\r\n" + b"[" + b" " * (3 * 1024 * 1024))
        responses = await asyncio.gather(*(read_response(reader, 5.0) for reader, _ in uploads))
        for response in responses:
            assert assert_json_error(response, 408)["errorCode"] == "ERR_REQUEST_TIMEOUT"
            assert response.headers.get("connection") == "close"
        assert all(await asyncio.gather(*(closed(reader, 3.0) for reader, _ in uploads)))
        # Nothing of them is left in the server: every connection is gone.
        server = sidecar._runners[0].server
        assert server is not None
        await until(lambda: not server.connections, 3.0, "the stalled connections to be dropped")
        for _, writer in uploads:
            writer.close()


# --- sizes -------------------------------------------------------------------------------------


async def test_a_content_length_over_the_limit_is_refused_before_the_body_is_sent(tmp_path: Path) -> None:
    limits = Limits(max_body_bytes=1024 * 1024)
    async with sidecar_with(tmp_path, limits) as sidecar:
        reader, writer = await connect(sidecar.ports.http)
        writer.write(b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
        body = assert_json_error(await read_response(reader, 2.0), 413)  # no byte of the body was sent
        assert "1048576" in body["message"] and "104857600" in body["message"], body
        writer.close()
        # Chunked: no length up front, refused once it passes the limit.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sidecar.ports.http}") as http:

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(3):
                    yield b" " * (512 * 1024)

            answer = await http.post("/v1.0/state/statestore", content=chunks())
            assert answer.status_code == 413 and answer.json()["errorCode"] == "ERR_MALFORMED_REQUEST", answer.text


async def test_heads_over_the_read_buffer_get_json_errors(tmp_path: Path) -> None:
    limits = Limits(read_buffer_bytes=1024)
    async with sidecar_with(tmp_path, limits) as sidecar:
        cases = {
            b"GET /v1.0/state/statestore/" + b"k" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n": 414,
            b"GET /v1.0/state/statestore/k HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 2000 + b"\r\n\r\n": 431,
            b"GET /v1.0/state/statestore/k HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 300) for i in range(5))
            + b"\r\n": 431,
        }
        for request, status in cases.items():
            reader, writer = await connect(sidecar.ports.http)
            writer.write(request)
            body = assert_json_error(await read_response(reader), status)
            assert "1024" in body["message"], body
            writer.close()


# --- overload -----------------------------------------------------------------------------------


async def test_connections_over_the_limit_hear_429_but_probes_are_served(tmp_path: Path) -> None:
    limits = Limits(max_connections=3)
    async with sidecar_with(tmp_path, limits) as sidecar:
        port = sidecar.ports.http
        kept = [await connect(port) for _ in range(3)]
        for reader, writer in kept:
            writer.write(b"GET /v1.0/state/statestore/a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).status == 204
        reader, writer = await connect(port)
        writer.write(b"GET /actuator/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader)).status == 200
        writer.write(b"GET /v1.0/state/statestore/a HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = await read_response(reader)
        body = assert_json_error(refused, 429)
        assert refused.headers["retry-after"] == "1" and body["errorCode"] == "ERR_TOO_MANY_REQUESTS"
        assert "3 open HTTP connections" in body["message"], body
        assert await closed(reader, 3.0)
        writer.close()
        kept[0][1].close()
        # With one of the three gone, a new connection is served again.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 5
            while (await http.get("/v1.0/state/statestore/a")).status_code != 204:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        for _, each in kept[1:]:
            each.close()


async def test_a_burst_over_the_concurrency_limit_gets_only_retriable_answers(tmp_path: Path) -> None:
    limits = Limits(max_concurrent_calls=20)
    async with slow_app() as app, sidecar_with(tmp_path, limits, app_port=app.port) as sidecar:
        invoke = invoke_pb2.InvokeServiceRequest(
            id=APP_ID,
            message=common_pb2.InvokeRequest(
                method="slow", http_extension=common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.POST)
            ),
        )
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports.grpc}") as channel,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{sidecar.ports.http}", limits=httpx.Limits(max_connections=None)
            ) as http,
        ):
            dapr = dapr_pb2_grpc.DaprStub(channel)

            async def over_grpc() -> str:
                try:
                    await dapr.InvokeService(invoke, timeout=30)
                except grpc.aio.AioRpcError as err:
                    return err.code().name
                return "OK"

            async def over_http() -> httpx.Response:
                return await http.post(f"/v1.0/invoke/{APP_ID}/method/slow", timeout=30)

            grpc_calls = [asyncio.create_task(over_grpc()) for _ in range(100)]
            http_calls = [asyncio.create_task(over_http()) for _ in range(100)]
            # The refused are answered at once; the 20 admitted wait for the app until it is released.
            await until(
                lambda: sum(t.done() for t in [*grpc_calls, *http_calls]) >= 180 and len(app.waiting) == 20,
                20,
                "180 refusals and 20 calls at the app",
            )
            app.release.set()
            codes = await asyncio.gather(*grpc_calls)
            answers = await asyncio.gather(*http_calls)
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429}, statuses
    # Every call reaches the app through the internal port, itself held to 20 calls.
    assert codes.count("OK") + statuses.count(200) == 20, (codes, statuses)
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers.get("Retry-After") == "1", answer.text
            # Refused by this port, or passed on from the internal port's refusal.
            assert answer.json()["errorCode"] in ("ERR_TOO_MANY_REQUESTS", "ERR_DIRECT_INVOKE"), answer.text


async def test_a_burst_of_thousands_of_grpc_calls_is_never_cancelled(tmp_path: Path) -> None:
    """grpc's core cancels calls queued past its default of 1000 before the limit can answer."""
    async with (
        slow_app() as app,
        sidecar_with(tmp_path, Limits(max_concurrent_calls=100), app_port=app.port) as sidecar,
    ):
        invoke = invoke_pb2.InvokeServiceRequest(
            id=APP_ID,
            message=common_pb2.InvokeRequest(
                method="slow", http_extension=common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.POST)
            ),
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports.grpc}") as channel:
            dapr = dapr_pb2_grpc.DaprStub(channel)
            calls = [asyncio.create_task(status_of(dapr.InvokeService(invoke, timeout=60))) for _ in range(2500)]
            await until(lambda: sum(c.done() for c in calls) >= 2400, 60, "2400 refusals")
            app.release.set()
            codes = collections.Counter(await asyncio.gather(*calls))
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes[grpc.StatusCode.OK] == 100, codes


# --- malformed requests, every surface ------------------------------------------------------------

HTTP_GARBAGE = {
    "TLS on the HTTP port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "binary noise": b"\x00\xff\xfe\r\n\r\n",
    "unknown method": b"BREW /v1.0/state/statestore/a HTTP/1.1\r\nHost: x\r\n\r\n",
    "method with a bad character": b"GE(T /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "over-long URL": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "over-long header": b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n",
    "too many headers": b"GET /v1.0/healthz HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
    "bare LF in a header": b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n",
    "bare CR in a header": b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "folded header": b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "NUL in a header": b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "bad Content-Length": b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
    "two Content-Lengths": b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\n[]",
    "bad chunk size": b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "body that is not JSON": b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{{{",
    "unknown route": b"GET /v1.0/nothing-here HTTP/1.1\r\nHost: x\r\n\r\n",
    "wrong method on a route": b"PATCH /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "CR/LF encoded in an invoked method": b"GET /v1.0/invoke/nobody/method/a%0D%0AX-Evil:%201 HTTP/1.1\r\nHost: x\r\n\r\n",
}

# Methods of every service on the API port, unary and streaming, and the internal port's one.
GRPC_METHODS = [
    "/dapr.proto.runtime.v1.Dapr/GetState",
    "/dapr.proto.runtime.v1.Dapr/SaveState",
    "/dapr.proto.runtime.v1.Dapr/InvokeService",
    "/dapr.proto.runtime.v1.Dapr/PublishEvent",
    "/dapr.proto.runtime.v1.Dapr/TryLockAlpha1",
    "/dapr.proto.runtime.v1.Dapr/GetConfiguration",
    "/spec.proto.runtime.v1.Runtime/GetState",
    "/spec.proto.runtime.v1.Runtime/GetNextId",
]
GRPC_STREAMS = [
    "/dapr.proto.runtime.v1.Dapr/SubscribeConfiguration",
    "/spec.proto.runtime.v1.Runtime/SubscribeConfiguration",
]
GARBAGE = [b"\xff\xff\xff\xff\x0f", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x08" * 7]
BAD_GRPC_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED}


def _raw(data: bytes) -> bytes:
    return data


RAW = {"request_serializer": _raw, "response_deserializer": _raw}  # bytes on the wire as they are


async def status_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def stream_status_of(call: grpc.aio.UnaryStreamCall[object, object]) -> grpc.StatusCode:
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_malformed_http_requests_get_json_client_errors(tmp_path: Path) -> None:
    async with slow_app() as app, sidecar_with(tmp_path, Limits(), app_port=app.port) as sidecar:
        for name, request in HTTP_GARBAGE.items():
            reader, writer = await connect(sidecar.ports.http)
            try:
                writer.write(request)
                response = await read_response(reader)
            finally:
                writer.close()
            assert 400 <= response.status < 500, (name, response)
            assert_json_error(response, response.status)
        assert not app.waiting, "a malformed request reached the app"


async def test_a_repeated_content_type_is_read_as_the_first_as_dapr_does(tmp_path: Path) -> None:
    # The Dapr Java SDK sends both `Content-Type` and `content-type` on every invocation.
    body = b'[{"key": "twice", "value": {"n": 1}}]'
    async with sidecar_with(tmp_path, Limits()) as sidecar:
        reader, writer = await connect(sidecar.ports.http)
        try:
            writer.write(
                b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"content-type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            saved = await read_response(reader)
            writer.write(b"GET /v1.0/state/statestore/twice HTTP/1.1\r\nHost: x\r\n\r\n")
            read = await read_response(reader)
        finally:
            writer.close()
    assert saved.status == 204, saved
    assert read.status == 200, read
    assert json.loads(read.body) == {"n": 1}


async def test_malformed_grpc_requests_get_invalid_argument(tmp_path: Path) -> None:
    async with (
        slow_app() as app,
        sidecar_with(tmp_path, Limits(), app_port=app.port) as sidecar,
        grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports.grpc}") as channel,
    ):
        for method in GRPC_METHODS:
            for garbage in GARBAGE:  # some garbage happens to decode: then the call's own checks answer
                code = await status_of(channel.unary_unary(method, **RAW)(garbage, timeout=5))
                assert code not in BAD_GRPC_CODES, (method, garbage, code)
            code = await status_of(channel.unary_unary(method, **RAW)(GARBAGE[0], timeout=5))
            assert code is grpc.StatusCode.INVALID_ARGUMENT, (method, code)
        for method in GRPC_STREAMS:
            code = await stream_status_of(channel.unary_stream(method, **RAW)(GARBAGE[0], timeout=5))
            assert code is grpc.StatusCode.INVALID_ARGUMENT, (method, code)
        # Invocations whose method or content type would split the app's HTTP request.
        dapr = dapr_pb2_grpc.DaprStub(channel)
        for message in (
            common_pb2.InvokeRequest(method="slow\r\nX-Evil: 1"),
            common_pb2.InvokeRequest(method="slow", content_type="text/plain\r\nX-Evil: 1"),
        ):
            request = invoke_pb2.InvokeServiceRequest(id=APP_ID, message=message)
            assert await status_of(dapr.InvokeService(request, timeout=5)) is grpc.StatusCode.INVALID_ARGUMENT
        assert not app.waiting, "a malformed invocation reached the app"


async def test_malformed_calls_on_the_internal_port_get_invalid_argument(tmp_path: Path) -> None:
    async with (
        slow_app() as app,
        sidecar_with(tmp_path, Limits(), app_port=app.port) as sidecar,
        # A peer with a certificate of its own: only sidecars get past the TLS handshake.
        await peers.channel(f"127.0.0.1:{sidecar.ports.internal}", APP_ID, "peer") as channel,
    ):
        call_local = channel.unary_unary("/ottava.internal.v1.ServiceInvocation/CallLocal", **RAW)
        for garbage in GARBAGE:
            code = await status_of(call_local(garbage, timeout=5))
            assert code not in BAD_GRPC_CODES, (garbage, code)
        assert await status_of(call_local(GARBAGE[0], timeout=5)) is grpc.StatusCode.INVALID_ARGUMENT
        internal = internal_grpc.ServiceInvocationStub(channel)
        header = internal_pb.Header
        for headers, verb in (
            ([header(name="x-evil", values=["a\r\nX-Injected: 1"])], "POST"),
            ([header(name="bad name", values=["a"])], "POST"),
            ([], "GET /x HTTP/1.1\r\n"),
        ):
            call = internal_pb.CallLocalRequest(target_app_id=APP_ID, method="slow", http_verb=verb, headers=headers)
            assert await status_of(internal.CallLocal(call, timeout=5)) is grpc.StatusCode.INVALID_ARGUMENT, call
        assert not app.waiting, "a malformed call reached the app"


# --- stopping ---------------------------------------------------------------------------------


async def test_sigterm_ends_the_process_within_the_grace_period_whatever_clients_are_doing(
    sidecars: SidecarFactory,
) -> None:
    grace = 2.0
    async with slow_app() as app:
        sidecar = await asyncio.to_thread(
            sidecars.start, "--app-id", APP_ID, "--app-port", str(app.port), "--shutdown-grace", str(grace)
        )
        # A body half sent, a client still sending its headers, an idle keep-alive connection.
        upload_reader, upload = await connect(sidecar.http_port)
        upload.write(b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n[{")
        _, headers = await connect(sidecar.http_port)
        headers.write(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n")
        idle_reader, idle = await connect(sidecar.http_port)
        idle.write(b"GET /actuator/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(idle_reader)).status == 200
        async with (
            grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
            httpx.AsyncClient(base_url=sidecar.http_url) as http,
        ):
            dapr = dapr_pb2_grpc.DaprStub(channel)
            # Streams that never end by themselves: a configuration subscription, a topic subscription.
            configuration = dapr.SubscribeConfiguration(
                configuration_pb2.SubscribeConfigurationRequest(store_name="configstore", keys=["greeting"])
            )
            assert (await configuration.read()).id
            never = asyncio.Event()

            async def subscribe() -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1]:
                yield pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                        pubsub_name="pubsub", topic="orders"
                    )
                )
                await never.wait()

            topic = dapr.SubscribeTopicEventsAlpha1(subscribe())
            assert (await topic.read()).HasField("initial_response")
            # A call to the app, which never answers.
            hung = asyncio.create_task(http.post(f"/v1.0/invoke/{APP_ID}/method/slow", timeout=60))
            await until(lambda: len(app.waiting) == 1, 10, "the invocation to reach the app")

            stopping = time.monotonic()
            sidecar.process.terminate()
            await until(lambda: sidecar.process.poll() is not None, grace + 2, "the sidecar to exit")
            took = time.monotonic() - stopping
            assert sidecar.process.returncode == 0, sidecar.log()
            assert took <= grace + 2, f"stopped in {took:.1f}s"
            assert "stopped" in sidecar.log()
            with contextlib.suppress(httpx.HTTPError):
                await hung
            never.set()
            configuration.cancel()
            topic.cancel()
        for writer in (upload, headers, idle):
            writer.close()
        assert await closed(upload_reader, 1.0)
