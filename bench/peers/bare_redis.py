"""A bare `grpc.aio` server answering Dapr's GetState from Redis: the Python floor for a Redis-backed read.

Each GetState is one `HMGET key data version` with redis.asyncio on one connection
pool, answered as the item; no ETag options, TTL or metadata. Against it, the price of
Ottava's Redis state store inside the sidecar shows apart from what any Python gRPC
server pays to reach Redis.

    python bench/peers/bare_redis.py REDIS_PORT REDIS_PASSWORD KEY_PREFIX
"""

import asyncio
import sys
from typing import Any, cast

import grpc
import redis.asyncio as aredis
from dapr.proto.runtime.v1 import state_pb2

SERVICE = "dapr.proto.runtime.v1.Dapr"


async def main(redis_port: int, password: str, prefix: str) -> None:
    client = aredis.Redis(host="127.0.0.1", port=redis_port, password=password)

    async def get_state(request: state_pb2.GetStateRequest, context: Any) -> state_pb2.GetStateResponse:
        data, version = await client.hmget(prefix + request.key, "data", "version")  # bytes, or None if unset
        return state_pb2.GetStateResponse(data=cast(bytes, data or b""), etag=cast(bytes, version or b"").decode())

    handler = grpc.unary_unary_rpc_method_handler(
        get_state,
        request_deserializer=state_pb2.GetStateRequest.FromString,
        response_serializer=state_pb2.GetStateResponse.SerializeToString,
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"GetState": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"bare-redis grpc=127.0.0.1:{port} http=127.0.0.1:0", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
