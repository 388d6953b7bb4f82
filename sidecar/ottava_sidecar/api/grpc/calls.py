"""What every gRPC handler shares: its context type, errors, metrics, and unimplemented methods.

A handler raises `ApiError`; the decorator turns it into the call's status, and records
the call's outcome and latency under the surface of the service that served it (its
`surface` attribute: "dapr" or "layotto"; the call mixins are shared by both). Every
method a service does not implement answers UNIMPLEMENTED naming the method, instead of
grpc's anonymous default, and is counted as refused.
"""

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ottava_sidecar import grpcserver, tracing
from ottava_sidecar import metrics as _metrics
from ottava_sidecar.api import access
from ottava_sidecar.api.errors import ApiError
from ottava_sidecar.metrics import CallMetrics

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")

# The stubs make the context generic over request and response; no handler reads them from it.
Context = grpc.aio.ServicerContext[Any, Any]
SURFACES = ("dapr", "layotto")
# The gRPC service each surface serves, for span names (`/service/method`).
SERVICES = {"dapr": "dapr.proto.runtime.v1.Dapr", "layotto": "spec.proto.runtime.v1.Runtime"}


def _by_surface(protocol: str, api: str, method: str) -> dict[str, CallMetrics]:
    return {surface: CallMetrics(protocol, api, method, surface) for surface in SURFACES}


def surface_of(servicer: object) -> str:
    """The surface a servicer serves ("dapr" unless it says otherwise)."""
    surface: str = getattr(servicer, "surface", "dapr")
    return surface


UnaryHandler = Callable[[Self, Req, Context], Awaitable[Resp]]
StreamHandler = Callable[[Self, Req, Context], AsyncIterator[Resp]]


def unary(
    api: str, *, protocol: str = "grpc"
) -> Callable[[UnaryHandler[Self, Req, Resp]], UnaryHandler[Self, Req, Resp]]:
    def decorate(handler: UnaryHandler[Self, Req, Resp]) -> UnaryHandler[Self, Req, Resp]:
        by_surface = _by_surface(protocol, api, handler.__name__)

        async def run(self: Self, request: Req, context: Context) -> Resp:
            started = time.perf_counter()
            surface = surface_of(self)
            metrics = by_surface[surface]
            try:
                access.POLICY.check(api, protocol, surface)
                response = await handler(self, request, context)
            except ApiError as err:
                metrics.observe(err.code.name, started)
                await context.abort(err.code, err.message)
            except Exception:
                metrics.observe("INTERNAL", started)
                log.exception("%s failed", handler.__name__)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"{handler.__name__} failed unexpectedly; see the sidecar log"
                )
            metrics.observe("OK", started)
            return response

        @functools.wraps(handler)
        async def call(self: Self, request: Req, context: Context) -> Resp:
            if tracing.ACTIVE is None:
                return await run(self, request, context)
            with tracing.server_span(*_span_of(surface_of(self), handler.__name__, context)) as span:
                try:
                    return await run(self, request, context)
                finally:
                    grpcserver.span_status(span, context)

        return call

    return decorate


def streaming(
    api: str, *, protocol: str = "grpc"
) -> Callable[[StreamHandler[Self, Req, Resp]], StreamHandler[Self, Req, Resp]]:
    def decorate(handler: StreamHandler[Self, Req, Resp]) -> StreamHandler[Self, Req, Resp]:
        by_surface = _by_surface(protocol, api, handler.__name__)

        async def run(self: Self, request: Req, context: Context) -> AsyncIterator[Resp]:
            started = time.perf_counter()
            status = "OK"
            surface = surface_of(self)
            metrics = by_surface[surface]
            try:
                access.POLICY.check(api, protocol, surface)
                async for response in handler(self, request, context):
                    yield response
            except ApiError as err:
                status = err.code.name
                await context.abort(err.code, err.message)
            finally:
                metrics.observe(status, started)

        @functools.wraps(handler)
        async def call(self: Self, request: Req, context: Context) -> AsyncIterator[Resp]:
            if tracing.ACTIVE is None:
                async for response in run(self, request, context):
                    yield response
                return
            with tracing.server_span(*_span_of(surface_of(self), handler.__name__, context)) as span:
                try:
                    async for response in run(self, request, context):
                        yield response
                finally:
                    grpcserver.span_status(span, context)

        return call

    return decorate


def _span_of(surface: str, method: str, context: Context) -> tuple[str, Any, dict[str, Any]]:
    """Name, parent carrier and attributes of a call's server span (OpenTelemetry's RPC conventions)."""
    service = SERVICES.get(surface, surface)
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method, "ottava.surface": surface}
    return f"{service}/{method}", context.invocation_metadata() or (), attributes


def answer_unimplemented(servicer: type[Any], base: type[Any], service: str) -> None:
    """Replace every method `servicer` inherits from the generated `base` with one that names itself.

    Methods defined by `servicer` or by a mixin before `base` in its MRO are kept.
    """
    overriding = servicer.__mro__[: servicer.__mro__.index(base)]
    for name, member in vars(base).items():
        if name.startswith("_") or not callable(member) or any(name in vars(cls) for cls in overriding):
            continue
        setattr(servicer, name, _unimplemented(f"{service}/{name}"))


def _unimplemented(method: str) -> Callable[..., Awaitable[None]]:
    async def handler(self: Any, request: Any, context: Context) -> None:
        _metrics.count_refused("grpc", surface_of(self), _metrics.REFUSED_UNIMPLEMENTED)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"method {method} is not implemented by Ottava")

    return handler
