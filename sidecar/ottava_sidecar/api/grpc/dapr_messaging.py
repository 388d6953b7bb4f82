"""Dapr's pub/sub and service invocation methods, mixed into `dapr.DaprService`."""

from collections.abc import AsyncIterator
from typing import Any

from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import invoke_pb2, metadata_pb2, pubsub_pb2
from google.protobuf import any_pb2, empty_pb2

from ottava_sidecar.api import errors
from ottava_sidecar.api.grpc.calls import streaming, unary
from ottava_sidecar.api.grpc.streams import VERDICTS, serve_stream
from ottava_sidecar.api.invocation import InvocationApi, forwarded_headers, response_error
from ottava_sidecar.api.pubsub import MESSAGE_ID, BulkEntry, PubSubApi
from ottava_sidecar.appchannel.grpc import dapr_event, grpc_metadata
from ottava_sidecar.invocation.messages import InvocationRequest
from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict

Context = Any  # grpc.aio.ServicerContext, whose stubs are generic over request and response


def _verb(message: Any) -> str:
    if not message.HasField("http_extension") or message.http_extension.verb == 0:
        return ""
    return str(common_pb2.HTTPExtension.Verb.Name(message.http_extension.verb))


async def invoke(invocation: InvocationApi, app_id: str, message: Any, context: Context) -> tuple[any_pb2.Any, str]:
    """Shared by Dapr's and Layotto's InvokeService: the answer's data and content type."""
    request = InvocationRequest(
        method=message.method,
        data=message.data.value,
        type_url=message.data.type_url,
        content_type=message.content_type,
        verb=_verb(message),
        query=message.http_extension.querystring if message.HasField("http_extension") else "",
        headers=forwarded_headers([(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]),
        timeout_seconds=context.time_remaining(),
    )
    response = await invocation.invoke(app_id, request)
    if not response.ok:
        raise response_error(app_id, request.method, response)
    metadata = grpc_metadata(response.headers)
    if metadata:
        await context.send_initial_metadata(metadata)
    return any_pb2.Any(type_url=response.type_url, value=response.data), response.content_type


class DaprMessaging:
    pubsub: PubSubApi
    invocation: InvocationApi

    @unary("pubsub")
    async def PublishEvent(self, request: pubsub_pb2.PublishEventRequest, context: Context) -> empty_pb2.Empty:
        message_id = await self.pubsub.publish(
            request.pubsub_name, request.topic, request.data, request.data_content_type, dict(request.metadata)
        )
        # The SDK returns the initial metadata to the caller (`DaprResponse.headers`).
        await context.send_initial_metadata(((MESSAGE_ID, message_id),))
        return empty_pb2.Empty()

    @unary("pubsub")
    async def BulkPublishEvent(
        self, request: pubsub_pb2.BulkPublishRequest, context: Context
    ) -> pubsub_pb2.BulkPublishResponse:
        entries = [BulkEntry(e.entry_id, e.event, e.content_type, dict(e.metadata)) for e in request.entries]
        result = await self.pubsub.bulk_publish(request.pubsub_name, request.topic, entries, dict(request.metadata))
        # One `message-id` per published entry, "<entry id>=<message id>", in entry order.
        await context.send_initial_metadata(
            tuple((MESSAGE_ID, f"{entry}={message}") for entry, message in result.message_ids.items())
        )
        return pubsub_pb2.BulkPublishResponse(
            failedEntries=[
                pubsub_pb2.BulkPublishResponseFailedEntry(entry_id=entry, error=error)
                for entry, error in result.failed.items()
            ]
        )

    BulkPublishEventAlpha1 = BulkPublishEvent

    @streaming("pubsub")
    async def SubscribeTopicEventsAlpha1(
        self, request_iterator: AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1], context: Context
    ) -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsResponseAlpha1]:
        first = await anext(request_iterator, None)
        if first is None or not first.HasField("initial_request"):
            raise errors.invalid_argument(
                "the first message of SubscribeTopicEventsAlpha1 must be initial_request", "ERR_PUBSUB_SUBSCRIBE"
            )
        initial = first.initial_request
        stream = await self.pubsub.open_stream(
            initial.pubsub_name, initial.topic, dict(initial.metadata), initial.dead_letter_topic
        )
        try:
            yield pubsub_pb2.SubscribeTopicEventsResponseAlpha1(
                initial_response=pubsub_pb2.SubscribeTopicEventsResponseInitialAlpha1()
            )
            async for message in serve_stream(stream, request_iterator, _dapr_verdict, _dapr_stream_event):
                yield message
        finally:
            await self.pubsub.close_stream(stream)

    @unary("invocation")
    async def InvokeService(self, request: invoke_pb2.InvokeServiceRequest, context: Context) -> Any:
        data, content_type = await invoke(self.invocation, request.id, request.message, context)
        return common_pb2.InvokeResponse(data=data, content_type=content_type)


def metadata_subscriptions(specs: list[SubscriptionSpec]) -> list[metadata_pb2.PubsubSubscription]:
    """The app's subscriptions as GetMetadata lists them."""
    return [
        metadata_pb2.PubsubSubscription(
            pubsub_name=s.pubsub_name,
            topic=s.topic,
            metadata=s.metadata,
            rules=metadata_pb2.PubsubSubscriptionRules(
                rules=[
                    metadata_pb2.PubsubSubscriptionRule(match=r["match"], path=r["path"]) for r in s.describe()["rules"]
                ]
            ),
            dead_letter_topic=s.dead_letter_topic,
            type=metadata_pb2.PubsubSubscriptionType.Value(s.kind.value),
        )
        for s in specs
    ]


def _dapr_verdict(request: Any) -> tuple[str, Verdict] | None:
    if not request.HasField("event_processed"):
        return None
    processed = request.event_processed
    return processed.id, VERDICTS.get(processed.status.status, Verdict.RETRY)


def _dapr_stream_event(event: TopicEvent) -> pubsub_pb2.SubscribeTopicEventsResponseAlpha1:
    return pubsub_pb2.SubscribeTopicEventsResponseAlpha1(event_message=dapr_event(event, ""))
