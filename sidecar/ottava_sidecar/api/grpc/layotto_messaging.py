"""Layotto's pub/sub and service invocation methods, mixed into `layotto.LayottoService`."""

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import empty_pb2

from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as pb
from ottava_sidecar.api import errors
from ottava_sidecar.api.grpc.calls import streaming, unary
from ottava_sidecar.api.grpc.dapr_messaging import invoke
from ottava_sidecar.api.grpc.streams import VERDICTS, serve_stream
from ottava_sidecar.api.invocation import InvocationApi
from ottava_sidecar.api.pubsub import MESSAGE_ID, PubSubApi
from ottava_sidecar.appchannel.grpc import layotto_event
from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.subscriptions import Verdict

Context = Any


class LayottoMessaging:
    pubsub: PubSubApi
    invocation: InvocationApi

    @unary("pubsub")
    async def PublishEvent(self, request: pb.PublishEventRequest, context: Context) -> empty_pb2.Empty:
        message_id = await self.pubsub.publish(
            request.pubsub_name, request.topic, request.data, request.data_content_type, dict(request.metadata)
        )
        await context.send_initial_metadata(((MESSAGE_ID, message_id),))
        return empty_pb2.Empty()

    @streaming("pubsub")
    async def SubscribeTopicEvents(
        self, request_iterator: AsyncIterator[pb.SubscribeTopicEventsRequest], context: Context
    ) -> AsyncIterator[pb.SubscribeTopicEventsResponse]:
        first = await anext(request_iterator, None)
        if first is None or not first.HasField("initial_request"):
            raise errors.invalid_argument(
                "the first message of SubscribeTopicEvents must be initial_request", "ERR_PUBSUB_SUBSCRIBE"
            )
        initial = first.initial_request
        stream = await self.pubsub.open_stream(
            initial.pubsub_name, initial.topic, dict(initial.metadata), initial.dead_letter_topic
        )
        try:
            yield pb.SubscribeTopicEventsResponse(initial_response=pb.SubscribeTopicEventsResponseInitial())
            async for message in serve_stream(stream, request_iterator, _verdict, _stream_event):
                yield message
        finally:
            await self.pubsub.close_stream(stream)

    @unary("invocation")
    async def InvokeService(self, request: pb.InvokeServiceRequest, context: Context) -> pb.InvokeResponse:
        data, content_type = await invoke(self.invocation, request.id, request.message, context)
        return pb.InvokeResponse(data=data, content_type=content_type)


def _verdict(request: pb.SubscribeTopicEventsRequest) -> tuple[str, Verdict] | None:
    if not request.HasField("event_processed"):
        return None
    processed = request.event_processed
    return processed.id, VERDICTS.get(processed.status.status, Verdict.RETRY)


def _stream_event(event: TopicEvent) -> pb.SubscribeTopicEventsResponse:
    return pb.SubscribeTopicEventsResponse(event_message=layotto_event(event))
