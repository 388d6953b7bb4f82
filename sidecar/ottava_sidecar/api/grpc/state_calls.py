"""The state calls, once for both services.

Layotto copied Dapr's state messages field for field, so Dapr's and Layotto's
servicers share these handlers; each names the module its response messages come from.
"""

from types import ModuleType
from typing import Any

import grpc
from google.protobuf import empty_pb2

from ottava_sidecar.api.grpc.calls import unary
from ottava_sidecar.api.grpc.state_messages import delete_request, etag_of, operations, set_request
from ottava_sidecar.api.state import StateApi

Context = grpc.aio.ServicerContext[Any, Any]


class StateCalls:
    state: StateApi
    messages: ModuleType  # has GetStateResponse, BulkStateItem, GetBulkStateResponse

    @unary("state")
    async def GetState(self, request: Any, context: Context) -> Any:
        item = await self.state.get(request.store_name, request.key)
        if item is None:
            return self.messages.GetStateResponse()
        return self.messages.GetStateResponse(data=item.value, etag=item.etag or "", metadata=item.metadata)

    @unary("state")
    async def GetBulkState(self, request: Any, context: Context) -> Any:
        results = await self.state.bulk_get(request.store_name, list(request.keys))
        item = self.messages.BulkStateItem
        return self.messages.GetBulkStateResponse(
            items=[
                item(key=r.key, data=r.item.value, etag=r.item.etag or "", metadata=r.item.metadata, error=r.error)
                if r.item
                else item(key=r.key, error=r.error)
                for r in results
            ]
        )

    @unary("state")
    async def SaveState(self, request: Any, context: Context) -> empty_pb2.Empty:
        await self.state.save(request.store_name, [set_request(item) for item in request.states])
        return empty_pb2.Empty()

    @unary("state")
    async def DeleteState(self, request: Any, context: Context) -> empty_pb2.Empty:
        etag = request.etag.value if request.HasField("etag") else None
        await self.state.delete(request.store_name, [delete_request(request.key, etag, request.options)])
        return empty_pb2.Empty()

    @unary("state")
    async def DeleteBulkState(self, request: Any, context: Context) -> empty_pb2.Empty:
        await self.state.delete(
            request.store_name, [delete_request(i.key, etag_of(i), i.options) for i in request.states]
        )
        return empty_pb2.Empty()

    @unary("state")
    async def ExecuteStateTransaction(self, request: Any, context: Context) -> empty_pb2.Empty:
        await self.state.transact(request.storeName, operations(request.operations))
        return empty_pb2.Empty()
