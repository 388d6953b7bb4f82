"""Dapr's `QueryStateAlpha1` (Layotto has no query call)."""

from dapr.proto.runtime.v1 import state_pb2

from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.calls import Context, unary


class StateQueryCalls:
    apis: Apis

    @unary("state")
    async def QueryStateAlpha1(
        self, request: state_pb2.QueryStateRequest, context: Context
    ) -> state_pb2.QueryStateResponse:
        page = await self.apis.state.query(request.store_name, request.query)
        return state_pb2.QueryStateResponse(
            results=[state_pb2.QueryStateItem(key=i.key, data=i.value, etag=i.etag or "") for i in page.items],
            token=page.token,
        )
