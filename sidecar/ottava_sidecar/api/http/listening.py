"""How the sidecar's HTTP servers listen: what one connection may cost, and a bounded stop.

aiohttp's own protocol gives most of it (line and field sizes, the keep-alive timeout,
a bounded drain); `GuardedProtocol` adds what it lacks, and answers its parse errors
as Dapr's JSON error bodies instead of plain text:

* a request's head (request line and headers) must arrive within `header_timeout_seconds`
  of its first byte (of the connection, for the first request), or the connection is
  closed: a client that dribbles its headers holds nothing for long;
* connections above `max_connections` are still accepted, but each request on them
  except the probes is answered 429 with `Retry-After` and the connection closed, so
  the client hears why instead of hanging in the listen backlog;
* an over-long request line is 414, over-long or too many headers 431, any other
  unparsable request 400, each with `{"errorCode", "message"}`;
* a repeated `Content-Type` header is dropped, keeping the first, as Dapr (Go's net/http)
  does, where aiohttp refuses the request: the Dapr Java SDK sends `Content-Type` twice
  on every service invocation.

Bodies (their size and `read_timeout_seconds`) and calls in flight are checked per
request, where the route is known: `routing.RequestGuard`.
"""

import asyncio
import logging
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_request import BaseRequest

from ottava_sidecar.limits import Limits

log = logging.getLogger(__name__)

# What a client that sent a request it did not finish may still send after the answer
# (read and dropped, so that it reads the answer rather than a reset): aiohttp's default.
_LINGER_SECONDS = 10.0
# After the grace period, requests still running are cancelled; a handler that ignores
# its cancellation must not hold the process up longer than this.
_CANCEL_SECONDS = 1.0
RETRY_AFTER_SECONDS = 1


@dataclass
class _Connections:
    limit: int
    open: int = 0


def _json_error(status: int, error_code: str, message: str) -> web.Response:
    response = web.json_response({"errorCode": error_code, "message": message}, status=status)
    response.force_close()
    return response


class GuardedProtocol(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol with a head timeout, a connection count and JSON parse errors."""

    def __init__(self, manager: web.Server, *, limits: Limits, connections: _Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._connections = connections
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_at_arm = 0
        self._head_bytes = 0  # of the head being received
        self._request_line_bytes: int | None = None  # up to its line break, once seen
        self.over_limit = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connections.open += 1
        self.over_limit = self._connections.open > self._connections.limit
        super().connection_made(transport)
        self._arm_head_timer()  # the first request's head is due from the connection on

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connections.open -= 1
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self._awaiting_head():
            self._arm_head_timer()  # the first byte of a keep-alive connection's next request
        if self._head_timer is not None:
            if self._head_bytes == 0:  # a head starts here (it comes whole in one read from a client on the host)
                data = first_content_type_only(data)
            if self._request_line_bytes is None and (end := data.find(b"\n")) >= 0:
                self._request_line_bytes = self._head_bytes + end
            self._head_bytes += len(data)
        super().data_received(data)
        if self._heads_completed():
            self._disarm_head_timer()  # what follows is the body: the request guard's to time

    def _awaiting_head(self) -> bool:
        # aiohttp's protocol waits on `_waiter` exactly while no request is queued or being
        # handled (its own keep-alive check reads it the same way): body bytes never arrive then.
        waiter: asyncio.Future[None] | None = self._waiter
        return waiter is not None and not waiter.done()

    def _heads_completed(self) -> bool:
        # aiohttp counts every request its parser completes (or fails to parse).
        count: int = self._request_count
        return count != self._heads_at_arm

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._heads_at_arm = self._request_count
        self._head_bytes = 0
        self._request_line_bytes = None
        self._head_timer = self._loop.call_later(self._limits.header_timeout_seconds, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._heads_completed():
            log.debug("closing a connection whose request head took over %ss", self._limits.header_timeout_seconds)
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or serve, as Dapr's JSON error."""
        if request.writer.output_size > 0:  # the answer has begun: all that is left is to drop the connection
            raise ConnectionError("the response was already started when the request failed")
        if status >= 500:
            log.error("HTTP request from %s failed", request.remote, exc_info=exc)
            return _json_error(status, "ERR_INTERNAL", "the request failed unexpectedly; see the sidecar log")
        # One line, no traceback: a client that sends garbage must not flood the log.
        log.debug("unparsable HTTP request from %s: %s", request.remote, message or exc)
        return self._parse_error(exc, message)

    def _parse_error(self, exc: BaseException | None, message: str | None) -> web.Response:
        limit = self._limits.read_buffer_bytes
        if isinstance(exc, http_exceptions.LineTooLong):
            if self._request_line_bytes is None or self._request_line_bytes > limit:
                return _json_error(
                    414, "ERR_MALFORMED_REQUEST", f"the request line is longer than the limit of {limit} bytes"
                )
            return _json_error(
                431, "ERR_MALFORMED_REQUEST", f"a request header is longer than the limit of {limit} bytes"
            )
        # aiohttp's messages point at the fault on a line of carets below the bad bytes.
        lines = (message or str(exc or "")).splitlines()
        text = " ".join(line.strip() for line in lines if line.strip().strip("^"))[:300] or "malformed request"
        if "Too many headers" in text:
            return _json_error(431, "ERR_MALFORMED_REQUEST", f"the request has more than {_MAX_HEADERS} headers")
        if isinstance(exc, http_exceptions.BadHttpMethod):
            return _json_error(400, "ERR_MALFORMED_REQUEST", f"not an HTTP request, or its method is unknown: {text}")
        return _json_error(400, "ERR_MALFORMED_REQUEST", f"malformed HTTP request: {text}")


_CONTENT_TYPE_LINE = re.compile(rb"\r\ncontent-type:[^\r\n]*", re.IGNORECASE)


def first_content_type_only(data: bytes) -> bytes:
    """DATA with the `Content-Type` headers after the first one removed from the head it starts with.

    Go's net/http, which serves Dapr's HTTP API, reads the first of repeated headers;
    aiohttp answers 400 "Duplicate 'Content-Type' header found". A head that does not end
    within DATA is left as it is (and a repeat there still gets that 400).
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or data[:end].lower().count(b"\r\ncontent-type:") < 2:
        return data
    _first, *repeats = _CONTENT_TYPE_LINE.finditer(data, 0, end)
    kept, start = [], 0
    for repeat in repeats:
        kept.append(data[start : repeat.start()])
        start = repeat.end()
    kept.append(data[start:])
    return b"".join(kept)


# aiohttp's default; Dapr's fasthttp has no count of its own, only the read buffer size.
_MAX_HEADERS = 128


class GuardedSite(web.BaseSite):
    """A TCP site whose connections speak `GuardedProtocol` (aiohttp's TCPSite, with the protocol given)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        limits: Limits,
        sock: socket.socket | None = None,
        connections: _Connections | None = None,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limits = limits
        self._sock = sock
        # Shared by the sites of one port (one per address it listens on): the limit is the port's.
        self._connections = connections or _Connections(limits.max_connections)

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    def _protocol(self) -> GuardedProtocol:
        server = self._runner.server
        assert server is not None
        return GuardedProtocol(
            server,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            connections=self._connections,
            access_log=None,
            keepalive_timeout=self._limits.idle_timeout_seconds,
            max_line_size=self._limits.read_buffer_bytes,
            max_field_size=self._limits.read_buffer_bytes,
            max_headers=_MAX_HEADERS,
            lingering_time=min(_LINGER_SECONDS, self._limits.read_timeout_seconds),
        )

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        if self._sock is not None:  # bound before (`socket.listen`): what waits in its backlog is served now
            self._server = await loop.create_server(self._protocol, sock=self._sock)
        else:
            self._server = await loop.create_server(
                self._protocol, self._host, self._port, reuse_address=True, reuse_port=False
            )


async def start(
    app: web.Application,
    address: str,
    port: int,
    *,
    limits: Limits,
    grace: float,
    sockets: Sequence[socket.socket] = (),
) -> web.AppRunner:
    """Serve `app` on `address:port` (0: a free port), or on `sockets` already listening there, under `limits`.

    `stop` it with the same `grace`.
    """
    # aiohttp waits up to shutdown_timeout for requests in flight, cancels them, then waits
    # up to shutdown_timeout again for them to end; `stop` bounds the second wait.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=grace)
    await runner.setup()
    try:
        if not sockets:
            await GuardedSite(runner, address, port, limits).start()
        connections = _Connections(limits.max_connections)
        for sock in sockets:
            await GuardedSite(runner, address, port, limits, sock, connections).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


async def stop(runner: web.AppRunner, grace: float) -> None:
    """Stop listening, give requests in flight `grace` seconds, then cancel them and drop every connection."""
    server = runner.server
    connections = server.connections if server is not None else []
    try:
        await asyncio.wait_for(runner.cleanup(), grace + _CANCEL_SECONDS)
    except TimeoutError:
        log.warning("HTTP requests still running %.1fs after the grace period; dropping them", _CANCEL_SECONDS)
    for connection in connections:
        connection.force_close()
