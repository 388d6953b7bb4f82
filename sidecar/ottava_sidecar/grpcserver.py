"""A `grpc.aio` server held to the sidecar's limits: the API port and the internal port both.

* Messages in and out are capped (`Limits.max_body_bytes`; grpc answers RESOURCE_EXHAUSTED,
  `Received message larger than max`).
* Calls in flight, streams included, are capped (`Limits.max_concurrent_calls`): the next one
  gets RESOURCE_EXHAUSTED at once, which clients may retry, instead of queueing until
  something gives way.
* A request that is not a valid protobuf message of the method's type gets
  INVALID_ARGUMENT naming the method, not grpc's UNKNOWN with a Python exception name.
  Each method's handler is made tolerant once, when a servicer is added to the server,
  rather than by an interceptor on every call (about a tenth of a GetState's CPU).
* Every method is served through generic handlers, never registered one by one: grpc.aio
  waits on one pending request per registered method after every call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from ottava_sidecar import tracing

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # generic in the type stubs only
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler
    GenericHandler = grpc.GenericRpcHandler

Context = grpc.aio.ServicerContext[Any, Any]


# A burst of this many calls arriving at once is still answered RESOURCE_EXHAUSTED, not
# CANCELLED; each waiting call costs its headers and what flow control lets its client send.
_PENDING_PER_CALL = 16
_MIN_PENDING = 16384


def create_server(
    *, max_message_bytes: int, max_concurrent_calls: int, interceptors: Sequence[_Interceptor] = ()
) -> grpc.aio.Server:
    pending = max(_PENDING_PER_CALL * max_concurrent_calls, _MIN_PENDING)
    server = grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            # off: a second sidecar on the same port must fail, not share it.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Calls that arrived but that the server has not picked up yet: past grpc's
            # default of 1000 its core cancels them (CANCELLED, which apps do not retry)
            # before `maximum_concurrent_rpcs` can answer RESOURCE_EXHAUSTED.
            ("grpc.server.max_pending_requests", pending),
            ("grpc.server.max_pending_requests_hard_limit", pending),
        ],
        maximum_concurrent_rpcs=max_concurrent_calls,
    )
    _make_registrations_tolerant(server)
    return server


def _make_registrations_tolerant(server: grpc.aio.Server) -> None:
    """Every handler a servicer registers (`add_XServicer_to_server` calls these two) is
    made tolerant of undecodable requests as it is registered."""
    add_generic = server.add_generic_rpc_handlers

    def add_registered_method_handlers(service: str, handlers: dict[str, Handler]) -> None:
        # Served as a generic handler instead (grpc >= 1.62's generated code calls this one
        # besides add_generic_rpc_handlers): grpc.aio keeps a pending request per registered
        # method and waits on all of them after every call, 121 for Dapr's and Layotto's
        # services, which cost about a tenth of a GetState's CPU.
        add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))

    def add_generic_rpc_handlers(handlers: Sequence[GenericHandler]) -> None:
        add_generic(tuple(_TolerantGenericHandler(h) for h in handlers))

    setattr(server, "add_registered_method_handlers", add_registered_method_handlers)  # noqa: B010
    setattr(server, "add_generic_rpc_handlers", add_generic_rpc_handlers)  # noqa: B010


class _TolerantGenericHandler(GenericHandler):
    """`inner`'s handlers made tolerant, each once: kept for the methods `inner` serves.

    Paths it does not serve are not kept (a client may send any number of made-up ones),
    and neither is anything past `_CACHED_METHODS` (a handler answering every path, such as
    `UnknownMethods`, is then built again per call).
    """

    def __init__(self, inner: GenericHandler) -> None:
        self._inner = inner
        self._cache: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        found = self._cache.get(method)
        if found is None:
            found = tolerant(method.lstrip("/"), self._inner.service(handler_call_details))
            if found is not None and len(self._cache) < _CACHED_METHODS:
                self._cache[method] = found
        return found


# More than the methods of every service the sidecar serves (Dapr's 94, Layotto's 26, ...).
_CACHED_METHODS = 1024


class UnknownMethods(GenericHandler):
    """Added after every service: answers UNIMPLEMENTED to a method none of them serves, as
    grpc does, after telling `count` its path. The handler reads no request, so it suits
    every kind of call."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        count = self._count

        async def unimplemented(requests: Any, context: Context) -> AsyncIterator[None]:
            count(method)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {method}")
            yield  # unreachable; makes this a generator, which grpc serves as a response stream

        return grpc.stream_stream_rpc_method_handler(unimplemented)


class _Undecodable:
    """What the request deserializer hands over instead of raising (grpc would answer UNKNOWN)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as err:  # protobuf's DecodeError, or anything a parser raises
            return _Undecodable(err)

    return parse


async def _refuse(method: str, request: _Undecodable, context: Context) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request to {method} is not a valid message of its type: {request.error}",
    )


def tolerant(method: str, handler: Handler | None) -> Handler | None:
    """`handler`, answering INVALID_ARGUMENT to bytes that do not decode as `method`'s request."""
    # None (an unknown method) or a raw-bytes handler: nothing to decode.
    if handler is None or handler.request_deserializer is None:
        return handler
    replaced: dict[str, Any] = {"request_deserializer": _tolerant(handler.request_deserializer)}
    if handler.unary_unary is not None:
        replaced["unary_unary"] = _checked_unary_unary(method, handler.unary_unary)
    elif handler.unary_stream is not None:
        replaced["unary_stream"] = _checked_unary_stream(method, handler.unary_stream)
    elif handler.stream_unary is not None:
        replaced["stream_unary"] = _checked_stream_unary(method, handler.stream_unary)
    elif handler.stream_stream is not None:
        replaced["stream_stream"] = _checked_stream_stream(method, handler.stream_stream)
    # grpc's handlers are namedtuples (grpc._utilities.RpcMethodHandler).
    replace: Callable[..., Handler] = handler._replace  # type: ignore[attr-defined]
    return replace(**replaced)


def _checked_unary_unary(method: str, behaviour: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: Context) -> Any:
        if isinstance(request, _Undecodable):
            await _refuse(method, request, context)
        return await behaviour(request, context)

    return call


async def _responses(produced: Any) -> AsyncIterator[Any]:
    """A streaming behaviour's answers: it yields them, or writes them itself and returns None."""
    if hasattr(produced, "__aiter__"):
        async for response in produced:
            yield response
    elif produced is not None:
        await produced


def _checked_unary_stream(method: str, behaviour: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await _refuse(method, request, context)
        async for response in _responses(behaviour(request, context)):
            yield response

    return call


async def _checked_requests(method: str, requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            await _refuse(method, request, context)
        yield request


def _checked_stream_unary(method: str, behaviour: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(requests: AsyncIterator[Any], context: Context) -> Any:
        return await behaviour(_checked_requests(method, requests, context), context)

    return call


def _checked_stream_stream(method: str, behaviour: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def call(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for response in _responses(behaviour(_checked_requests(method, requests, context), context)):
            yield response

    return call


# After the grace period grpc cancels the calls still running; a handler that ignores its
# cancellation must not hold the process up longer than this.
_CANCEL_SECONDS = 1.0


async def stop(server: grpc.aio.Server, grace: float) -> None:
    """Refuse new calls, let those in flight run for up to `grace` seconds, then cancel them."""
    try:
        await asyncio.wait_for(server.stop(grace), grace + _CANCEL_SECONDS)
    except TimeoutError:
        log.warning("gRPC calls still running %.1fs after the grace period; leaving them", _CANCEL_SECONDS)


def span_status(span: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """A served call's gRPC status on its span (`tracing.server_span`): an error for any but OK."""
    if span is None:
        return
    code = context.code()
    number = code.value[0] if isinstance(code, grpc.StatusCode) else int(code or 0)
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    tracing.outcome(span, None if number == 0 else (context.details() or name), {"rpc.grpc.status_code": number})
