"""The pub/sub benchmark's subscriber: a grpc.aio AppCallback server, the same app behind Ottava and daprd.

It subscribes to `bench` and `warmup` on the component `pubsub`, prints `warm` on the first
warm-up event (the sidecar is then delivering), and `delivered <count> <monotonic>` after
every BENCH_EVERY events of `bench` (CLOCK_MONOTONIC is system-wide on Linux: the publisher
compares its own readings with it).

APP_PORT=… BENCH_EVERY=10000 python bench/peers/subscriber.py
"""

import asyncio
import os
import time
from typing import Any

import grpc
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import empty_pb2

SUCCESS = appcallback_pb2.TopicEventResponse(status=appcallback_pb2.TopicEventResponse.SUCCESS)
SUBSCRIPTIONS = appcallback_pb2.ListTopicSubscriptionsResponse(
    subscriptions=[appcallback_pb2.TopicSubscription(pubsub_name="pubsub", topic=t) for t in ("bench", "warmup")]
)


class Subscriber(appcallback_pb2_grpc.AppCallbackServicer):
    def __init__(self, every: int) -> None:
        self.every = every
        self.count = 0
        self.warm = False

    async def ListTopicSubscriptions(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> appcallback_pb2.ListTopicSubscriptionsResponse:
        return SUBSCRIPTIONS

    async def ListInputBindings(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> appcallback_pb2.ListInputBindingsResponse:
        return appcallback_pb2.ListInputBindingsResponse()

    async def OnTopicEvent(
        self, request: appcallback_pb2.TopicEventRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> appcallback_pb2.TopicEventResponse:
        if request.topic == "bench":
            self.count += 1
            if self.count % self.every == 0:
                print(f"delivered {self.count} {time.monotonic()}", flush=True)
        elif not self.warm:
            self.warm = True
            print("warm", flush=True)
        return SUCCESS


async def main() -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(Subscriber(int(os.environ["BENCH_EVERY"])), server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['APP_PORT']}")
    await server.start()
    print("listening", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
