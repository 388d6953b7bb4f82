"""`InvokeBinding`, written once for Dapr's and Layotto's services.

Both protos carry the same fields (name, data, metadata, operation → data, metadata);
each service hands the mixin the response class of its own proto.
"""

from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.calls import Context, unary

Response = TypeVar("Response", covariant=True)


class BindingMessages(Protocol[Response]):
    @property
    def InvokeBindingResponse(self) -> Callable[..., Response]: ...


class InvokeBindingRequest(Protocol):
    name: str
    data: bytes
    operation: str

    @property
    def metadata(self) -> Mapping[str, str]: ...


class BindingCalls(Generic[Response]):
    apis: Apis
    binding_messages: BindingMessages[Response]

    @unary("bindings")
    async def InvokeBinding(self, request: InvokeBindingRequest, context: Context) -> Response:
        answer = await self.apis.bindings.invoke(request.name, request.operation, request.data, dict(request.metadata))
        return self.binding_messages.InvokeBindingResponse(data=answer.data, metadata=answer.metadata)
