"""The state calls, written once for Dapr's and Layotto's services.

Layotto copied Dapr's state messages field for field, so one mixin serves both: the
protocols below name the request fields it reads, and each service names the proto
module its responses come from.
"""

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Literal, Protocol, TypeVar

from google.protobuf import empty_pb2, message

from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.calls import Context, unary
from ottava_sidecar.api.state import CHUNK, operations, parse_ttl
from ottava_sidecar.components.state.base import Concurrency, DeleteRequest, SetRequest


class BulkItems(Protocol):
    def add(self, **fields: Any) -> message.Message: ...


class BulkStateResponse(Protocol):
    @property
    def items(self) -> BulkItems: ...


GetResponse = TypeVar("GetResponse", covariant=True)
BulkResponse = TypeVar("BulkResponse", bound=BulkStateResponse, covariant=True)

_EMPTY = empty_pb2.Empty()  # every write's answer: one message, serialised afresh for each call

# StateOptions.StateConcurrency values, the same in both protos.
_CONCURRENCY = {0: Concurrency.LAST_WRITE, 1: Concurrency.FIRST_WRITE, 2: Concurrency.LAST_WRITE}


class StateMessages(Protocol[GetResponse, BulkResponse]):
    """The response classes of one proto module (`state_pb2`, `runtime_pb2`)."""

    @property
    def GetStateResponse(self) -> Callable[..., GetResponse]: ...
    @property
    def GetBulkStateResponse(self) -> Callable[..., BulkResponse]: ...


class EtagMessage(Protocol):
    value: str


class OptionsMessage(Protocol):
    @property
    def concurrency(self) -> int: ...


class DeleteItem(Protocol):
    """What a delete reads, from a StateItem or a DeleteStateRequest."""

    key: str

    @property
    def etag(self) -> EtagMessage: ...
    @property
    def options(self) -> OptionsMessage: ...
    def HasField(self, field_name: Literal["etag"]) -> bool: ...


class StateItemMessage(DeleteItem, Protocol):
    value: bytes

    @property
    def metadata(self) -> Mapping[str, str]: ...


class OperationMessage(Protocol):
    operationType: str

    @property
    def request(self) -> StateItemMessage: ...


class GetStateRequest(Protocol):
    store_name: str
    key: str


class GetBulkStateRequest(Protocol):
    store_name: str

    @property
    def keys(self) -> Iterable[str]: ...


class StatesRequest(Protocol):
    """SaveState's and DeleteBulkState's."""

    store_name: str

    @property
    def states(self) -> Iterable[StateItemMessage]: ...


class DeleteStateRequest(DeleteItem, Protocol):
    store_name: str


class TransactionRequest(Protocol):
    storeName: str  # camelCase in both protos, unlike every other store name

    @property
    def operations(self) -> Iterable[OperationMessage]: ...


def etag_of(item: DeleteItem) -> str | None:
    return item.etag.value if item.HasField("etag") else None


def set_request(item: StateItemMessage) -> SetRequest:
    return SetRequest(
        key=item.key,
        value=item.value,
        etag=etag_of(item),
        concurrency=_CONCURRENCY.get(item.options.concurrency, Concurrency.LAST_WRITE),
        ttl_seconds=parse_ttl(item.metadata, item.key),
        content_type=item.metadata.get("contentType", ""),
    )


def delete_request(item: DeleteItem) -> DeleteRequest:
    return DeleteRequest(item.key, etag_of(item), _CONCURRENCY.get(item.options.concurrency, Concurrency.LAST_WRITE))


class StateCalls(Generic[GetResponse, BulkResponse]):
    apis: Apis
    state_messages: StateMessages[GetResponse, BulkResponse]

    @unary("state")
    async def GetState(self, request: GetStateRequest, context: Context) -> GetResponse:
        item = await self.apis.state.get(request.store_name, request.key)
        if item is None:
            return self.state_messages.GetStateResponse()
        if not item.metadata:  # filling a message's map costs more than the rest of the answer
            return self.state_messages.GetStateResponse(data=item.value, etag=item.etag or "")
        return self.state_messages.GetStateResponse(data=item.value, etag=item.etag or "", metadata=item.metadata)

    @unary("state")
    async def GetBulkState(self, request: GetBulkStateRequest, context: Context) -> BulkResponse:
        results = await self.apis.state.bulk_get(request.store_name, list(request.keys))
        response = self.state_messages.GetBulkStateResponse()
        items = response.items
        for index, r in enumerate(results):
            if index and index % CHUNK == 0:
                await asyncio.sleep(0)  # a long answer is built without holding up other calls
            if r.item:
                items.add(key=r.key, data=r.item.value, etag=r.item.etag or "", metadata=r.item.metadata, error=r.error)
            else:
                items.add(key=r.key, error=r.error)
        return response

    @unary("state")
    async def SaveState(self, request: StatesRequest, context: Context) -> empty_pb2.Empty:
        await self.apis.state.save(request.store_name, [set_request(item) for item in request.states])
        return _EMPTY

    @unary("state")
    async def DeleteState(self, request: DeleteStateRequest, context: Context) -> empty_pb2.Empty:
        await self.apis.state.delete(request.store_name, [delete_request(request)])
        return _EMPTY

    @unary("state")
    async def DeleteBulkState(self, request: StatesRequest, context: Context) -> empty_pb2.Empty:
        await self.apis.state.delete(request.store_name, [delete_request(item) for item in request.states])
        return _EMPTY

    @unary("state")
    async def ExecuteStateTransaction(self, request: TransactionRequest, context: Context) -> empty_pb2.Empty:
        items = ((op.operationType, op.request) for op in request.operations)
        await self.apis.state.transact(request.storeName, operations(items, set_request, delete_request))
        return _EMPTY
