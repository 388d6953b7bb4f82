"""How every HTTP route is served: Dapr's JSON errors, the API token, and metrics.

Each route is wrapped once, when the app is built, so the per-request path holds no
lookups: its `CallMetrics` and whether it needs the token are fixed in the closure.
"""

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import grpc
from aiohttp import web

from ottava_sidecar import contract
from ottava_sidecar.api import access, errors
from ottava_sidecar.metrics import CallMetrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    api: str  # metrics label, the same as the gRPC surface's ("state", "lock", …)
    name: str  # metrics method label: Dapr's gRPC method name, so one dashboard shows both protocols
    public: bool = False  # served without the API token: probes must work without it


def error_body(status: int, error_code: str, message: str) -> web.Response:
    return web.json_response({"errorCode": error_code, "message": message}, status=status)


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


def serve(route: Route, api_token: bytes | None) -> Handler:
    """`route.handler`, answering errors as Dapr does and recording each call's status and latency."""
    metrics = CallMetrics("http", route.api, route.name)
    handler = route.handler
    token = None if route.public else api_token

    async def call(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            if not route.public and access.LOOPBACK_ONLY and not access.is_loopback(request.remote):
                response: web.StreamResponse = error_response(_NOT_LOCAL)
            elif token is not None and not _token_matches(request, token):
                response = error_response(_INVALID_TOKEN)
            else:
                if not route.public:
                    access.POLICY.check(route.api, "http")
                response = await handler(request)
        except errors.ApiError as err:
            response = error_response(err)
        except web.HTTPException as err:  # from aiohttp itself, e.g. a body over the size limit
            response = error_body(err.status, "ERR_MALFORMED_REQUEST", err.text or err.reason)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            response = error_body(500, "ERR_INTERNAL", f"{route.name} failed unexpectedly; see the sidecar log")
        metrics.observe(str(response.status), started)
        return response

    return call


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
