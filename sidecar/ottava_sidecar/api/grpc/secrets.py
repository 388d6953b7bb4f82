"""The secret calls, written once for Dapr's and Layotto's services.

Layotto copied Dapr's secret messages, so one mixin reads both; each service hands it
the proto module its responses come from.
"""

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from google.protobuf import message

from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.calls import Context, unary

GetResponse = TypeVar("GetResponse", covariant=True)
BulkResponse = TypeVar("BulkResponse", covariant=True)


class SecretMessages(Protocol[GetResponse, BulkResponse]):
    """The response classes of one proto module (`secret_pb2`, `runtime_pb2`)."""

    @property
    def GetSecretResponse(self) -> Callable[..., GetResponse]: ...
    @property
    def SecretResponse(self) -> Callable[..., message.Message]: ...
    @property
    def GetBulkSecretResponse(self) -> Callable[..., BulkResponse]: ...


class GetBulkSecretRequest(Protocol):
    store_name: str


class GetSecretRequest(GetBulkSecretRequest, Protocol):
    key: str


class SecretCalls(Generic[GetResponse, BulkResponse]):
    apis: Apis
    secret_messages: SecretMessages[GetResponse, BulkResponse]

    @unary("secrets")
    async def GetSecret(self, request: GetSecretRequest, context: Context) -> GetResponse:
        return self.secret_messages.GetSecretResponse(data=await self.apis.secrets.get(request.store_name, request.key))

    @unary("secrets")
    async def GetBulkSecret(self, request: GetBulkSecretRequest, context: Context) -> BulkResponse:
        secrets = await self.apis.secrets.bulk_get(request.store_name)
        response = self.secret_messages.SecretResponse
        return self.secret_messages.GetBulkSecretResponse(
            data={name: response(secrets=values) for name, values in secrets.items()}
        )
