"""A bare `grpc.aio` server answering Dapr's GetState with a fixed item: the baseline.

It does the least any server must do for the same request, so the ratio against it is
the cost of the sidecar itself. It also answers the SDK's start-up health probe.
"""

import asyncio
import sys
from typing import Any

import grpc
from aiohttp import web
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2


class BareDapr(dapr_pb2_grpc.DaprServicer):
    def __init__(self, value: bytes) -> None:
        self.response = state_pb2.GetStateResponse(data=value, etag="1")

    async def GetState(
        self, request: state_pb2.GetStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> state_pb2.GetStateResponse:
        return self.response


async def main(value: bytes) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    dapr_pb2_grpc.add_DaprServicer_to_server(BareDapr(value), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/v1.0/healthz/outbound", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]
    print(f"bare grpc=127.0.0.1:{grpc_port} http=127.0.0.1:{http_port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].encode() if len(sys.argv) > 1 else b"value"))
