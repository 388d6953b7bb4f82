"""How every HTTP route is served: Dapr's JSON errors, the API token, limits, and metrics.

Each route is wrapped once, when the app is built, so the per-request path holds no
lookups: its `CallMetrics` and whether it needs the token are fixed in the closure.
"""

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc
from aiohttp import web

from ottava_sidecar import contract, tracing
from ottava_sidecar.api import access, errors
from ottava_sidecar.api.http import bodies, listening
from ottava_sidecar.limits import Limits
from ottava_sidecar.metrics import REFUSED_NOT_LOOPBACK, REFUSED_TOKEN, CallMetrics, count_refused

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The pattern of a path variable that may hold any character, a newline included (a key
# or topic saved over gRPC can have one; `.+` would answer 404 "no route" for it).
ANY_TEXT = r"[\s\S]+"
ANY_TEXT_OR_NONE = r"[\s\S]*"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    api: str  # metrics label, the same as the gRPC surface's ("state", "lock", …)
    name: str  # metrics method label: Dapr's gRPC method name, so one dashboard shows both protocols
    public: bool = False  # served without the API token: probes must work without it
    body: bodies.Body[Any] | None = None  # the JSON body the handler parses, if it parses one


def error_body(status: int, error_code: str, message: str) -> web.Response:
    response = web.json_response({"errorCode": error_code, "message": message}, status=status)
    if status == 429:  # every "too many" says when to come back
        response.headers["Retry-After"] = str(listening.RETRY_AFTER_SECONDS)
    return response


def error_response(err: errors.ApiError) -> web.Response:
    return error_body(err.http_status, err.error_code, err.message)


METADATA_PREFIX = "metadata."


def query_metadata(request: web.Request) -> dict[str, str]:
    """Dapr passes request metadata as `?metadata.<name>=<value>`."""
    prefix = len(METADATA_PREFIX)
    return {k[prefix:]: v for k, v in request.query.items() if k.startswith(METADATA_PREFIX)}


def no_content() -> web.Response:
    return web.Response(status=204)


_INVALID_TOKEN: Final = errors.ApiError(
    grpc.StatusCode.UNAUTHENTICATED, "invalid api token", http_status=401, error_code="ERR_API_TOKEN"
)


_NOT_LOCAL: Final = errors.ApiError(
    grpc.StatusCode.PERMISSION_DENIED,
    "the sidecar's API answers only its own pod; probes and metrics are the exception",
    http_status=403,
    error_code="ERR_NOT_LOCAL",
)


def too_many(message: str) -> web.Response:
    return error_body(429, "ERR_TOO_MANY_REQUESTS", message)


class RequestGuard:
    """What one request may cost, checked before its handler runs: one per app, counting calls in flight.

    Probes (public routes) skip the counts, so that a busy sidecar is not restarted for
    it; the sizes apply to every request.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.in_flight = 0

    def refusal(self, request: web.Request, public: bool) -> web.Response | None:
        limits = self.limits
        if not public:
            if isinstance(request.protocol, listening.GuardedProtocol) and request.protocol.over_limit:
                response = too_many(f"the sidecar has more than {limits.max_connections} open HTTP connections")
                response.force_close()  # this one is over the limit: the client should come back on another
                return response
            if self.in_flight >= limits.max_concurrent_calls:
                return too_many(f"the sidecar has {limits.max_concurrent_calls} HTTP requests in flight already")
        head = len(request.method) + len(request.raw_path) + sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
        if head > limits.read_buffer_bytes:
            return error_body(
                431,
                "ERR_MALFORMED_REQUEST",
                f"the request line and headers ({head} bytes) are over the limit of {limits.read_buffer_bytes} bytes",
            )
        if request.content_length is not None and request.content_length > limits.max_body_bytes:
            return self.too_large(request.content_length)
        return None

    def too_large(self, size: int | None) -> web.Response:
        # Answered before the body is read; the connection closes rather than read it all.
        what = f"request body of {size} bytes" if size is not None else "request body"
        response = error_body(
            413, "ERR_MALFORMED_REQUEST", f"the {what} is over the limit of {self.limits.max_body_bytes} bytes"
        )
        response.force_close()
        return response

    async def read_body(self, request: web.Request) -> web.Response | None:
        """Read the whole body within the read timeout (handlers then get it from memory), or say why not."""
        if not request.body_exists:
            return None
        timeout = self.limits.read_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await request.read()
        except TimeoutError:
            response = error_body(408, "ERR_REQUEST_TIMEOUT", f"the request body did not arrive within {timeout:g}s")
            response.force_close()  # the rest of it is not waited for: its memory goes now
            return response
        except web.HTTPRequestEntityTooLarge:
            return self.too_large(None)
        except (ConnectionError, web.RequestPayloadError) as err:
            response = error_body(400, "ERR_MALFORMED_REQUEST", f"the request body could not be read: {err}")
            response.force_close()
            return response
        return None


def serve(route: Route, api_token: bytes | None, guard: RequestGuard | None = None) -> Handler:
    """`route.handler`, answering errors as Dapr does and recording each call's status and latency;
    each call to the API (not to probes) is a span when tracing is on."""
    run = _serve(route, api_token, guard)
    if route.public:
        return run
    template = _PATTERN.sub(r"{\1}", route.path)  # `{method:[\s\S]*}` as `{method}`, for span names

    async def call(request: web.Request) -> web.StreamResponse:
        if tracing.ACTIVE is None:
            return await run(request)
        return await _traced(template, run, request)

    return call


def _serve(route: Route, api_token: bytes | None, guard: RequestGuard | None) -> Handler:
    metrics = CallMetrics("http", route.api, route.name)
    handler = route.handler
    token = None if route.public else api_token
    guard = guard or RequestGuard(Limits())
    counted = not route.public

    async def call(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        refused = guard.refusal(request, route.public)
        if refused is not None:
            metrics.observe(str(refused.status), started)
            return refused
        if counted:
            guard.in_flight += 1
        try:
            response = await guarded(request)
        finally:
            if counted:
                guard.in_flight -= 1
        metrics.observe(str(response.status), started)
        return response

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            if not route.public and access.LOOPBACK_ONLY and not access.is_loopback(request.remote):
                count_refused("http", "dapr", REFUSED_NOT_LOOPBACK)
                response: web.StreamResponse = error_response(_NOT_LOCAL)
            elif token is not None and not _token_matches(request, token):
                count_refused("http", "dapr", REFUSED_TOKEN)
                response = error_response(_INVALID_TOKEN)
            else:
                if not route.public:
                    access.POLICY.check(route.api, "http")
                response = await guard.read_body(request) or await handler(request)
        except errors.ApiError as err:
            response = error_response(err)
        except web.HTTPException as err:  # from aiohttp itself, e.g. a body over the size limit
            response = error_body(err.status, "ERR_MALFORMED_REQUEST", err.text or err.reason)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            response = error_body(500, "ERR_INTERNAL", f"{route.name} failed unexpectedly; see the sidecar log")
        return response

    return call


# A route's variable with its pattern: `{name:regex}`.
_PATTERN = re.compile(r"\{(\w+):[^}]*\}")


async def _traced(template: str, run: Handler, request: web.Request) -> web.StreamResponse:
    """`run(request)` in a server span, the child of the context the app's headers carry."""
    attributes = {"http.request.method": request.method, "http.route": template, "url.path": request.path}
    headers = ((k.lower(), v) for k, v in request.headers.items())
    with tracing.server_span(f"{request.method} {template}", headers, attributes) as span:
        response = await run(request)
        # OpenTelemetry's HTTP conventions: a server span fails on a 5xx status only.
        error = f"HTTP {response.status}" if response.status >= 500 else None
        tracing.outcome(span, error, {"http.response.status_code": response.status})
        return response


def _token_matches(request: web.Request, token: bytes) -> bool:
    sent = request.headers.get(contract.API_TOKEN_HEADER)
    return sent is not None and hmac.compare_digest(sent.encode(), token)


_UNMATCHED: Final = CallMetrics("http", "unmatched", "unmatched")


@web.middleware
async def unmatched_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer unknown routes and methods with Dapr-style JSON rather than aiohttp's plain text.

    Routed handlers never raise `HTTPException` (`serve` turns everything into a
    response), so what arrives here comes from the router.
    """
    started = time.perf_counter()
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as err:
        allowed = ", ".join(sorted(err.allowed_methods))
        response = error_body(
            405,
            "ERR_METHOD_NOT_ALLOWED",
            f"method {request.method} is not allowed on {request.path} (allowed: {allowed})",
        )
    except web.HTTPNotFound:
        response = error_body(404, "ERR_NOT_FOUND", f"no route {request.method} {request.path}")
    _UNMATCHED.observe(str(response.status), started)
    return response
