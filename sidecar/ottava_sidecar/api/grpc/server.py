"""The one gRPC server that hosts Dapr's and Layotto's services.

Made and bound first, served later (`serve`): the services and their proto stubs load
after the sidecar's ready line, while a client that connects waits in the backlog.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from ottava_sidecar import contract, grpcserver, metrics
from ottava_sidecar.limits import Limits

if TYPE_CHECKING:  # generic in the type stubs only
    from ottava_sidecar.api.apis import Apis
    from ottava_sidecar.api.grpc.dapr import DaprService

    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor

Context = grpc.aio.ServicerContext[Any, Any]

# The surface label (metrics.API_REFUSED) of a call, by the service in its method path.
_SURFACES = {"dapr.proto.runtime.v1.Dapr": "dapr", "spec.proto.runtime.v1.Runtime": "layotto"}


def surface_of_method(method: str | None) -> str:
    """ "dapr", "layotto", or "unknown" for `/package.Service/Method`."""
    service = (method or "").lstrip("/").partition("/")[0]
    return _SURFACES.get(service, "unknown")


def _count_unknown_method(method: str) -> None:
    metrics.count_refused("grpc", surface_of_method(method), metrics.REFUSED_UNIMPLEMENTED)


class ApiTokenInterceptor(_Interceptor):
    """Rejects calls without the configured `dapr-api-token` metadata, as Dapr does, counting them."""

    def __init__(self, token: str) -> None:
        self._token = token

        async def deny(request: Any, context: Context) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid dapr-api-token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == contract.API_TOKEN_HEADER and value == self._token:
                return await continuation(handler_call_details)
        metrics.count_refused("grpc", surface_of_method(handler_call_details.method), metrics.REFUSED_TOKEN)
        return self._deny


class GrpcApiServer:
    def __init__(self, *, api_token: str | None, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        interceptors = [ApiTokenInterceptor(api_token)] if api_token else []
        self.server = grpcserver.create_server(
            max_message_bytes=limits.max_body_bytes,
            max_concurrent_calls=limits.max_concurrent_calls,
            interceptors=interceptors,
        )
        self.dapr: DaprService | None = None

    async def serve(self, apis: Apis) -> None:
        """Add the Dapr and Layotto services and start serving on the bound port."""
        # Late: the stubs and the services load here, once the port is bound.
        from dapr.proto.runtime.v1 import dapr_pb2_grpc

        from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc
        from ottava_sidecar.api.grpc.dapr import DaprService
        from ottava_sidecar.api.grpc.layotto import LayottoService

        self.dapr = DaprService(apis)
        layotto = LayottoService(apis)  # serves every method of Layotto's Runtime service
        dapr_pb2_grpc.add_DaprServicer_to_server(self.dapr, self.server)  # type: ignore[no-untyped-call]
        runtime_pb2_grpc.add_RuntimeServicer_to_server(layotto, self.server)
        # Last: methods of neither service are answered UNIMPLEMENTED, as grpc would, and counted.
        self.server.add_generic_rpc_handlers((grpcserver.UnknownMethods(_count_unknown_method),))
        await self.server.start()

    def bind(self, address: str, port: int) -> int:
        """Bind and return the port (the chosen one when `port` is 0)."""
        host = f"[{address}]" if ":" in address else address
        try:
            bound = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as err:
            raise OSError(f"cannot listen on {address}:{port} for the gRPC API: {err}") from None
        if bound == 0:
            raise OSError(f"cannot listen on {address}:{port} for the gRPC API (port in use?)")
        return bound

    async def stop(self, grace: float) -> None:
        """Refuse new calls, end configuration subscriptions, give the rest `grace` seconds, then cancel them."""
        if self.dapr is not None:
            self.dapr.close()
        await grpcserver.stop(self.server, grace)
