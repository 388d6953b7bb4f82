"""The sidecar-to-sidecar API (`ottava.internal.v1.ServiceInvocation`, internal port 50002).

`InternalServer` is the target's end: it checks that the call is for its app, that the
caller may make it (`access_control`), and hands it to the app channel. `InternalClient`
is the caller's end, with one channel per target sidecar.

With a workload identity (the default) the port is mTLS-only: a peer without a
certificate from the trust bundle cannot connect, the caller's app id is the one its
certificate carries (any `dapr-caller-app-id` it sends is overwritten), and a caller
checks that the sidecar it reached holds the certificate of the app it meant to call. Failures to reach the app come back as gRPC statuses whose message names the app
(UNAVAILABLE: not listening; DEADLINE_EXCEEDED: no answer in time); the app's own
answer, whatever its status, comes back as a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc

from ottava_sidecar import grpcserver, tracing
from ottava_sidecar.apperrors import (
    AppChannelError,
    AppTimeoutError,
    AppUnavailableError,
)
from ottava_sidecar.identity.spiffe import SpiffeId, SpiffeIdError, server_name
from ottava_sidecar.identity.workload import WorkloadIdentity
from ottava_sidecar.invocation.access_control import AccessPolicy
from ottava_sidecar.invocation.messages import (
    InvocationRequest,
    InvocationResponse,
    grpc_code_from_number,
)
from ottava_sidecar.invocation.resolution import Address
from ottava_sidecar.limits import Limits

# The stubs (and protobuf's runtime with them) load once the port serves or a call is made
# (`_load_stubs`), not to bind it: binding comes before the ready line, serving after.
if TYPE_CHECKING:
    from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2 as pb
    from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# Room for what travels with a body between sidecars: method, query string, ids, type URL.
_ENVELOPE_OVERHEAD = 64 * 1024


def envelope_bytes(limits: Limits) -> int:
    """The largest internal message: a body the API accepts, with its headers and the rest."""
    return limits.max_body_bytes + limits.read_buffer_bytes + _ENVELOPE_OVERHEAD


# RFC 9110 field names are tokens; field values never hold CR, LF or other controls but tab.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def invocation_problem(call: InvocationRequest) -> str | None:
    """Why this call cannot be passed on to an app (None when it can), naming the part at fault.

    An HTTP request could not carry these, but a client's gRPC message or a peer
    sidecar's can; passing them on would split the app's request or fail in its client.
    """
    if call.verb and not _TOKEN.match(call.verb):
        return f"HTTP verb {call.verb[:100]!r} is not a valid method name"
    for part, text in (("method", call.method), ("query string", call.query), ("content type", call.content_type)):
        if _CONTROL.search(text):
            return f"the {part} has a control character (CR, LF, NUL…)"
    for name, value in call.headers:
        if not _TOKEN.match(name):
            return f"header name {name[:100]!r} is not a valid HTTP field name"
        if _CONTROL.search(value):
            return f"header {name!r} has a control character (CR, LF, NUL…) in its value"
    return None


def _headers(pairs: list[tuple[str, str]]) -> list[pb.Header]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    return [pb.Header(name=name, values=values) for name, values in grouped.items()]


def _pairs(headers: Any) -> list[tuple[str, str]]:
    return [(h.name, value) for h in headers for value in h.values]


def to_message(target_app_id: str, request: InvocationRequest, timeout: float) -> pb.CallLocalRequest:
    return pb.CallLocalRequest(
        target_app_id=target_app_id,
        caller_app_id=request.caller_app_id,
        method=request.method,
        http_verb=request.verb,
        querystring=request.query,
        headers=_headers(request.headers),
        data=request.data,
        content_type=request.content_type,
        data_type_url=request.type_url,
        timeout_seconds=timeout,
    )


class LocalApp(Protocol):
    """What the internal server needs of its app: the app channel (`appchannel.AppChannel`) is one."""

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        """Call a method of the app; its answer whatever its status, or an `apperrors.AppChannelError`."""
        ...


_TRACE_HEADERS = (tracing.TRACEPARENT, tracing.TRACESTATE)
# Headers that only this sidecar may set for its app: who called, and whom.
_IDENTITY_HEADERS = frozenset({"dapr-caller-app-id", "dapr-callee-app-id", "dapr-api-token"})


def _peer_identity(context: Context) -> SpiffeId | None:
    """The caller's SPIFFE ID, from the certificate it presented (mTLS); None without one."""
    values = context.auth_context().get("peer_spiffe_id")
    if not values:
        return None
    try:
        return SpiffeId.parse(next(iter(values)).decode())
    except (SpiffeIdError, UnicodeDecodeError):
        return None


def _load_stubs() -> None:
    global pb, pb_grpc
    from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2 as pb
    from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2_grpc as pb_grpc


class _Servicer:  # a `pb_grpc.ServiceInvocationServicer`, whose module loads with the stubs
    def __init__(
        self,
        app_id: str,
        channel: Callable[[], LocalApp | None],
        policy: Callable[[], AccessPolicy],
        secure: bool,
        functions: Callable[[str], LocalApp | None],
    ) -> None:
        self.app_id = app_id
        self._channel = channel
        self._functions = functions
        self._policy = policy
        self._secure = secure

    async def _caller(self, request: pb.CallLocalRequest, context: Context) -> tuple[str, SpiffeId | None]:
        """Who called: the certified app id over mTLS (whatever the message claims), else the claim."""
        if not self._secure:
            return request.caller_app_id, None
        caller = _peer_identity(context)
        if caller is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"app {self.app_id!r} is invoked only by sidecars with a workload certificate "
                "(its SPIFFE ID as a URI SAN)",
            )
        assert caller is not None
        return caller.app_id, caller

    async def CallLocal(self, request: pb.CallLocalRequest, context: Context) -> pb.CallLocalResponse:
        if tracing.ACTIVE is None:
            return await self._call_local(request, context)
        # The caller's sidecar put its span's context among the headers (see `Invoker`).
        carrier = [(h.name, h.values[0]) for h in request.headers if h.name in _TRACE_HEADERS and h.values]
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": "ottava.internal.v1.ServiceInvocation",
            "rpc.method": "CallLocal",
            "ottava.invoke.method": request.method,
            "ottava.caller_app_id": request.caller_app_id,
        }
        with tracing.server_span("ottava.internal.v1.ServiceInvocation/CallLocal", carrier, attributes) as span:
            try:
                return await self._call_local(request, context)
            finally:
                grpcserver.span_status(span, context)

    async def _call_local(self, request: pb.CallLocalRequest, context: Context) -> pb.CallLocalResponse:
        function = self._functions(request.target_app_id) if request.target_app_id != self.app_id else None
        if request.target_app_id != self.app_id and function is None:
            # A stale registry entry: the address now belongs to another app's sidecar.
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"this sidecar serves app {self.app_id!r}, not {request.target_app_id!r}",
            )
        channel = function or self._channel()
        if channel is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"app {self.app_id!r} cannot be invoked: its sidecar has no --app-port",
            )
        assert channel is not None
        caller_app_id, caller = await self._caller(request, context)
        policy = self._policy()
        if policy.active:
            denial = policy.check(caller, request.method, request.http_verb)
            if denial is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, denial.message)
        headers = [(k, v) for k, v in _pairs(request.headers) if k.lower() not in _IDENTITY_HEADERS]
        if caller_app_id:
            headers.append(("dapr-caller-app-id", caller_app_id))
        headers.append(("dapr-callee-app-id", request.target_app_id))
        call = InvocationRequest(
            method=request.method,
            data=request.data,
            content_type=request.content_type,
            verb=request.http_verb,
            query=request.querystring,
            headers=headers,
            type_url=request.data_type_url,
            caller_app_id=caller_app_id,
            timeout_seconds=request.timeout_seconds or None,
        )
        problem = invocation_problem(call)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot invoke app {self.app_id!r}: {problem}")
        try:
            answer = await channel.invoke(call)
        except AppTimeoutError as err:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(err))
        except AppUnavailableError as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        except AppChannelError as err:
            await context.abort(grpc.StatusCode.INTERNAL, str(err))
        except Exception:  # a bug, not the caller's fault: say so rather than grpc's UNKNOWN
            log.exception("invoking app %s failed", self.app_id)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"invoking app {self.app_id!r} failed unexpectedly; see its sidecar's log"
            )
        return pb.CallLocalResponse(
            http_status=answer.status,
            headers=_headers(answer.headers),
            data=answer.data,
            content_type=answer.content_type,
            data_type_url=answer.type_url,
            grpc_status=answer.grpc_code.value[0],
            message=answer.message,
        )


class InternalServer:
    def __init__(
        self,
        app_id: str,
        channel: Callable[[], LocalApp | None],
        limits: Limits | None = None,
        *,
        identity: WorkloadIdentity | None = None,
        policy: Callable[[], AccessPolicy] = AccessPolicy,
        functions: Callable[[str], LocalApp | None] = lambda name: None,
    ) -> None:
        """`functions` finds the functions this sidecar runs (`api.functions`), which peers call by name."""
        limits = limits or Limits()
        self.identity = identity
        # A call carries the caller's body plus its headers and method: room for both.
        self.server = grpcserver.create_server(
            max_message_bytes=envelope_bytes(limits), max_concurrent_calls=limits.max_concurrent_calls
        )
        self._servicer = _Servicer(app_id, channel, policy, secure=identity is not None, functions=functions)

    def bind(self, address: str, port: int) -> int:
        """Listen on `address:port` (0: a free port): mTLS-only with an identity, which must have its certificate."""
        host = f"[{address}]" if ":" in address else address
        try:
            if self.identity is not None:
                bound = self.server.add_secure_port(f"{host}:{port}", self.identity.server_credentials())
            else:
                bound = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise OSError(
                f"cannot listen on {address}:{port} for the internal gRPC API (sidecar-to-sidecar invocation; "
                "port in use?): pass --internal-grpc-port 0 to let the OS pick a free port"
            )
        return bound

    async def start(self) -> None:
        _load_stubs()
        servicer = cast("pb_grpc.ServiceInvocationServicer", self._servicer)
        pb_grpc.add_ServiceInvocationServicer_to_server(servicer, self.server)
        await self.server.start()

    async def stop(self, grace: float) -> None:
        await grpcserver.stop(self.server, grace)


# After a renewal, channels made with the old certificate take no new calls; the calls
# already on them get this long to finish before the channels close.
RETIRED_CHANNEL_SECONDS = 120.0


class InternalClient:
    """Calls target sidecars; keeps one HTTP/2 channel per address (and, with mTLS, per certificate)."""

    def __init__(self, identity: WorkloadIdentity | None = None) -> None:
        self.identity = identity
        self._channels: dict[tuple[Address, str], grpc.aio.Channel] = {}
        self._generation = identity.generation if identity is not None else 0
        self._retired: set[asyncio.Task[None]] = set()
        _load_stubs()

    def _stub(self, address: Address, target_name: str) -> pb_grpc.ServiceInvocationAsyncStub:
        if self.identity is not None and self.identity.generation != self._generation:
            self._retire_channels()
        key = (address, target_name)
        channel = self._channels.get(key)
        if channel is None:
            # No cap of its own: the target sidecar's server caps what it sends, and what
            # this sidecar sends was capped by its API when the app sent it.
            options: list[tuple[str, Any]] = [
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ]
            if self.identity is None:
                channel = grpc.aio.insecure_channel(str(address), options=options)
            else:
                # The target's certificate must name the app called, as a host name would be checked.
                options.append(("grpc.ssl_target_name_override", target_name))
                channel = grpc.aio.secure_channel(str(address), self.identity.channel_credentials(), options=options)
            self._channels[key] = channel
        return pb_grpc.ServiceInvocationStub(channel)

    def _retire_channels(self) -> None:
        assert self.identity is not None
        self._generation = self.identity.generation
        channels, self._channels = list(self._channels.values()), {}
        if channels:
            task = asyncio.create_task(_close_later(channels, RETIRED_CHANNEL_SECONDS), name="retire-channels")
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def call(
        self,
        address: Address,
        target: tuple[str, str],
        request: InvocationRequest,
        deadline_seconds: float,
        certified_as: str = "",
    ) -> InvocationResponse:
        """The app's answer; raises `grpc.aio.AioRpcError` when the call did not reach it.

        `target` is the (app id, namespace) that the sidecar at `address` must serve; its
        certificate must name that app id, or `certified_as` (the app whose sidecar runs the
        function `target` names).
        """
        app_id, namespace = target
        message = to_message(app_id, request, deadline_seconds)
        stub = self._stub(address, server_name(certified_as or app_id, namespace))
        answer = await stub.CallLocal(message, timeout=deadline_seconds)
        return InvocationResponse(
            status=answer.http_status,
            data=answer.data,
            content_type=answer.content_type,
            headers=_pairs(answer.headers),
            type_url=answer.data_type_url,
            grpc_code=grpc_code_from_number(answer.grpc_status),
            message=answer.message,
        )

    async def drop(self, address: Address) -> None:
        for key in [k for k in self._channels if k[0] == address]:
            await self._channels.pop(key).close(None)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
        for task in list(self._retired):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _close_later(channels: list[grpc.aio.Channel], seconds: float) -> None:
    try:
        await asyncio.sleep(seconds)
    finally:
        for channel in channels:
            await channel.close(None)
