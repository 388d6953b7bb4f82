"""InvokeService, written once for Dapr's and Layotto's services.

Layotto copied Dapr's invocation messages (`InvokeServiceRequest`, `InvokeRequest` as
`CommonInvokeRequest`, `HTTPExtension`), so one mixin reads both; each service names
the proto module its `InvokeResponse` comes from.
"""

from collections.abc import Callable
from typing import Generic, Literal, Protocol, TypeVar

from dapr.proto.common.v1 import common_pb2
from google.protobuf import any_pb2

from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.calls import Context, unary
from ottava_sidecar.api.invocation import forwarded_headers, response_error
from ottava_sidecar.appchannel.grpc import grpc_metadata
from ottava_sidecar.invocation.messages import InvocationRequest

Response = TypeVar("Response", covariant=True)


class InvokeMessages(Protocol[Response]):
    """The response class of one proto module (`common_pb2`, `runtime_pb2`)."""

    @property
    def InvokeResponse(self) -> Callable[..., Response]: ...


class HttpExtension(Protocol):
    querystring: str

    @property
    def verb(self) -> int: ...


class InvokeRequest(Protocol):
    method: str
    content_type: str

    @property
    def data(self) -> any_pb2.Any: ...
    @property
    def http_extension(self) -> HttpExtension: ...
    def HasField(self, field_name: Literal["http_extension"]) -> bool: ...


class InvokeServiceRequest(Protocol):
    id: str

    @property
    def message(self) -> InvokeRequest: ...


class InvocationCalls(Generic[Response]):
    apis: Apis
    invoke_messages: InvokeMessages[Response]

    @unary("invocation")
    async def InvokeService(self, request: InvokeServiceRequest, context: Context) -> Response:
        app_id, message = request.id, request.message
        extension = message.http_extension if message.HasField("http_extension") else None
        verb = common_pb2.HTTPExtension.Verb  # the same values in both protos; NONE (0) is no verb
        call = InvocationRequest(
            method=message.method,
            data=message.data.value,
            type_url=message.data.type_url,
            content_type=message.content_type,
            verb=verb.Name(verb.ValueType(extension.verb)) if extension is not None and extension.verb else "",
            query=extension.querystring if extension is not None else "",
            headers=forwarded_headers([(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]),
            timeout_seconds=context.time_remaining(),
        )
        response = await self.apis.invocation.invoke(app_id, call)
        if not response.ok:
            raise response_error(app_id, call.method, response)
        metadata = grpc_metadata(response.headers)
        if metadata:
            await context.send_initial_metadata(metadata)
        return self.invoke_messages.InvokeResponse(
            data=any_pb2.Any(type_url=response.type_url, value=response.data), content_type=response.content_type
        )
