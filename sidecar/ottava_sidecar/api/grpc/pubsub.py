"""The pub/sub calls, written once for Dapr's and Layotto's services.

PublishEvent has the same name and fields in both protos, so the mixin serves it. The
stream subscription is Dapr's SubscribeTopicEventsAlpha1 and Layotto's
SubscribeTopicEvents: each service declares its method, which names it in metrics and
errors, and returns `topic_events` with its response classes. The app's first message
subscribes; the rest are its verdicts (`api.pubsub.stream_events`).
"""

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from google.protobuf import empty_pb2, message

from ottava_sidecar.api import errors
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.calls import Context, unary
from ottava_sidecar.api.pubsub import MESSAGE_ID, stream_events
from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.subscriptions import Verdict

Response = TypeVar("Response")

# TopicEventResponse.TopicEventResponseStatus values, the same in both protos.
VERDICTS = {0: Verdict.SUCCESS, 1: Verdict.RETRY, 2: Verdict.DROP}


class PublishEventRequest(Protocol):
    pubsub_name: str
    topic: str
    data: bytes
    data_content_type: str

    @property
    def metadata(self) -> Mapping[str, str]: ...


class InitialRequest(Protocol):
    pubsub_name: str
    topic: str
    dead_letter_topic: str

    @property
    def metadata(self) -> Mapping[str, str]: ...


class VerdictStatus(Protocol):
    @property
    def status(self) -> int: ...


class ProcessedRequest(Protocol):
    id: str

    @property
    def status(self) -> VerdictStatus: ...


class TopicEventsRequest(Protocol):
    @property
    def initial_request(self) -> InitialRequest: ...
    @property
    def event_processed(self) -> ProcessedRequest: ...
    def HasField(self, field_name: Literal["initial_request", "event_processed"]) -> bool: ...


@dataclass(frozen=True)
class TopicEventsMessages(Generic[Response]):
    """The stream's response class of one proto, and how it carries its two kinds of answer."""

    response: Callable[..., Response]
    initial_response: Callable[[], message.Message]
    event_message: Callable[[TopicEvent], message.Message]


class PubSubCalls:
    apis: Apis

    @unary("pubsub")
    async def PublishEvent(self, request: PublishEventRequest, context: Context) -> empty_pb2.Empty:
        message_id = await self.apis.pubsub.publish(
            request.pubsub_name, request.topic, request.data, request.data_content_type, dict(request.metadata)
        )
        # The SDK returns the initial metadata to the caller (`DaprResponse.headers`).
        await context.send_initial_metadata(((MESSAGE_ID, message_id),))
        return empty_pb2.Empty()

    async def topic_events(
        self, request_iterator: AsyncIterator[TopicEventsRequest], method: str, messages: TopicEventsMessages[Response]
    ) -> AsyncIterator[Response]:
        """The stream subscription of the service method named `method`, answered with `messages`."""
        first = await anext(request_iterator, None)
        if first is None or not first.HasField("initial_request"):
            raise errors.invalid_argument(
                f"the first message of {method} must be initial_request", "ERR_PUBSUB_SUBSCRIBE"
            )
        initial = first.initial_request
        stream = await self.apis.pubsub.open_stream(
            initial.pubsub_name, initial.topic, dict(initial.metadata), initial.dead_letter_topic
        )
        try:
            yield messages.response(initial_response=messages.initial_response())
            async for event in stream_events(stream, _verdicts(request_iterator)):
                yield messages.response(event_message=messages.event_message(event))
        finally:
            await self.apis.pubsub.close_stream(stream)


async def _verdicts(requests: AsyncIterator[TopicEventsRequest]) -> AsyncIterator[tuple[str, Verdict]]:
    async for request in requests:
        if request.HasField("event_processed"):
            processed = request.event_processed
            yield processed.id, VERDICTS.get(processed.status.status, Verdict.RETRY)
