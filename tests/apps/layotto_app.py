"""A gRPC app that serves only Layotto's AppCallback (generated from proto/), as a Layotto user's app does.

APP_PORT=6003 EVENTS_FILE=/tmp/events.jsonl python layotto_app.py
"""

import json
import os
from concurrent import futures

import grpc
from google.protobuf import empty_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import appcallback_pb2 as pb
from ottava_sidecar._gen.spec.proto.runtime.v1 import appcallback_pb2_grpc as pb_grpc


class Callback(pb_grpc.AppCallbackServicer):
    def ListTopicSubscriptions(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> pb.ListTopicSubscriptionsResponse:
        return pb.ListTopicSubscriptionsResponse(
            subscriptions=[pb.TopicSubscription(pubsub_name="pubsub", topic="orders")]
        )

    def OnTopicEvent(self, request: pb.TopicEventRequest, context: grpc.ServicerContext) -> pb.TopicEventResponse:
        with open(os.environ["EVENTS_FILE"], "a", encoding="utf-8") as out:
            out.write(json.dumps({"topic": request.topic, "id": request.id, "data": request.data.decode()}) + "\n")
        return pb.TopicEventResponse(status=pb.TopicEventResponse.SUCCESS)


if __name__ == "__main__":
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_AppCallbackServicer_to_server(Callback(), server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['APP_PORT']}")
    server.start()
    server.wait_for_termination()
