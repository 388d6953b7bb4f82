"""A bare `grpc.aio` server answering Dapr's GetState and SaveState: the baseline.

It does the least any server must do for the same requests, so the ratio against it is
the cost of the sidecar itself: SaveState keeps each item's answer in a dict, GetState
looks it up (a key never saved reads as the item given on the command line). No etags,
options or metadata are honoured. It also answers the SDK's start-up health probe.

Its two methods are served through one generic handler, not registered with grpc one
by one as the generated `add_DaprServicer_to_server` does: grpc.aio keeps a pending
request per registered method and waits on all of them after every call, so each of
Dapr's 94 methods would cost every call something. The floor is the cheapest way
grpc.aio can serve these calls.

With a fourth argument `shared`, its gRPC port is opened with SO_REUSEPORT, so that several
bare servers started on one port share its connections (the kernel spreads them): the
ceiling of worker processes for a Python server, measured by `make bench-peers`.
"""

import asyncio
import sys
from typing import Any

import grpc
from aiohttp import web
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from google.protobuf import empty_pb2

EMPTY = empty_pb2.Empty()
SERVICE = "dapr.proto.runtime.v1.Dapr"


class BareDapr(dapr_pb2_grpc.DaprServicer):
    def __init__(self, value: bytes) -> None:
        self.default = state_pb2.GetStateResponse(data=value, etag="1")
        self.responses: dict[str, state_pb2.GetStateResponse] = {}

    async def GetState(
        self, request: state_pb2.GetStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> state_pb2.GetStateResponse:
        return self.responses.get(request.key, self.default)

    async def SaveState(
        self, request: state_pb2.SaveStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> empty_pb2.Empty:
        for item in request.states:
            self.responses[item.key] = state_pb2.GetStateResponse(data=item.value, etag="1")
        return EMPTY


async def main(value: bytes, grpc_port: int = 0, http_port: int = 0, shared: bool = False) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if shared else 0)])
    bare = BareDapr(value)
    handlers = {
        "GetState": grpc.unary_unary_rpc_method_handler(
            bare.GetState,
            request_deserializer=state_pb2.GetStateRequest.FromString,
            response_serializer=state_pb2.GetStateResponse.SerializeToString,
        ),
        "SaveState": grpc.unary_unary_rpc_method_handler(
            bare.SaveState,
            request_deserializer=state_pb2.SaveStateRequest.FromString,
            response_serializer=empty_pb2.Empty.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    grpc_port = server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/v1.0/healthz/outbound", healthz)
    app.router.add_get("/v1.0/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", http_port)
    await site.start()
    http_port = runner.addresses[0][1]
    print(f"bare grpc=127.0.0.1:{grpc_port} http=127.0.0.1:{http_port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    # bare_server.py [VALUE [GRPC_PORT HTTP_PORT [shared]]]: the ports default to free ones.
    grpc_port, http_port = (int(port) for port in sys.argv[2:4]) if len(sys.argv) > 3 else (0, 0)
    shared = sys.argv[4:5] == ["shared"]
    asyncio.run(main(sys.argv[1].encode() if len(sys.argv) > 1 else b"value", grpc_port, http_port, shared=shared))
