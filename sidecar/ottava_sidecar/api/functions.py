"""Functions of the sidecar (`function.wasm`), invoked like apps whose app id is the Component's name.

`FunctionsApi.find` is the seam of service invocation: before an app id is resolved to
another sidecar, `InvocationApi` asks it whether a function of this sidecar has that
name. The call then runs here, and the function reaches the runtime API through
`Host`: the same StateApi, PubSubApi, InvocationApi and ConfigurationApi calls an app
makes, as the sidecar's own app (its keys carry the app's prefix; its events come from
the app's id).
"""

import json

import grpc

from ottava_sidecar.api import errors
from ottava_sidecar.api.configuration import ConfigurationApi
from ottava_sidecar.api.invocation import ERROR_CODE, InvocationApi
from ottava_sidecar.api.pubsub import PubSubApi
from ottava_sidecar.api.state import StateApi
from ottava_sidecar.components.configuration.base import ConfigurationQuery
from ottava_sidecar.components.functions.base import Function, FunctionCall, FunctionError, FunctionFailure
from ottava_sidecar.components.registry import Registry, Status
from ottava_sidecar.components.state.base import DeleteRequest, SetRequest
from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse

# How each failure of a function reaches its caller.
_CODES = {
    FunctionFailure.FAILED: grpc.StatusCode.INTERNAL,
    FunctionFailure.TRAPPED: grpc.StatusCode.INTERNAL,
    FunctionFailure.TIME_LIMIT: grpc.StatusCode.DEADLINE_EXCEEDED,
    FunctionFailure.MEMORY_LIMIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FunctionFailure.INVALID: grpc.StatusCode.FAILED_PRECONDITION,
}
_HTTP = {
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 507,
    grpc.StatusCode.FAILED_PRECONDITION: 500,
}


class Host:
    """The runtime API as the functions of one sidecar call it (`functions.base.FunctionHost`)."""

    def __init__(
        self,
        app_id: str,
        state: StateApi,
        pubsub: PubSubApi,
        invocation: InvocationApi,
        configuration: ConfigurationApi,
    ) -> None:
        self.app_id = app_id
        self._state = state
        self._pubsub = pubsub
        self._invocation = invocation
        self._configuration = configuration

    async def state_get(self, store: str, key: str) -> bytes | None:
        item = await self._state.get(store, key)
        return None if item is None else item.value

    async def state_save(self, store: str, key: str, value: bytes) -> None:
        await self._state.save(store, [SetRequest(key, value)])

    async def state_delete(self, store: str, key: str) -> None:
        await self._state.delete(store, [DeleteRequest(key)])

    async def publish(self, pubsub: str, topic: str, data: bytes, content_type: str) -> None:
        await self._pubsub.publish(pubsub, topic, data, content_type, {})

    async def invoke(self, app_id: str, method: str, data: bytes) -> bytes:
        answer = await self._invocation.invoke(app_id, InvocationRequest(method, data, verb="POST"))
        if not answer.ok:
            detail = answer.message or answer.data[:300].decode(errors="replace")
            raise RuntimeError(f"app {app_id!r} answered {method} with HTTP {answer.status}: {detail}")
        return answer.data

    async def config_get(self, store: str, key: str) -> str | None:
        items = await self._configuration.get(store, ConfigurationQuery(self.app_id, keys=(key,)))
        return items[0].content if items else None


class FunctionsApi:
    def __init__(self, registry: Registry, host: Host) -> None:
        self._registry = registry
        self._host = host

    def find(self, app_id: str) -> "LocalFunction | None":
        """The function named `app_id`, when this sidecar has one (ready or not)."""
        entry = self._registry.get(app_id)
        if entry is None or entry.building_block != "function" or entry.status is Status.SKIPPED:
            return None
        return LocalFunction(self, app_id)

    def for_peers(self, app_id: str) -> "PeerFunction | None":
        """The function named `app_id` as other sidecars call it: its failures are answers, not errors."""
        return PeerFunction(self, app_id) if self.find(app_id) is not None else None

    async def invoke(self, name: str, request: InvocationRequest) -> InvocationResponse:
        entry = self._registry.get(name)
        function = entry.instance if entry is not None and entry.status is Status.UP else None
        if not isinstance(function, Function):
            reason = entry.reason if entry is not None and entry.reason else "initialising"
            raise errors.ApiError(
                grpc.StatusCode.UNAVAILABLE,
                f"function {name!r} is not ready: {reason}",
                http_status=503,
                error_code=ERROR_CODE,
            )
        call = FunctionCall(
            method=request.method,
            data=request.data,
            content_type=request.content_type,
            verb=request.verb,
            query=request.query,
            caller_app_id=request.caller_app_id,
            timeout_seconds=request.timeout_seconds,
        )
        try:
            result = await function.call(call, self._host)
        except FunctionError as err:
            code = _CODES[err.kind]
            raise errors.ApiError(code, err.message, http_status=_HTTP[code], error_code=ERROR_CODE) from None
        return InvocationResponse(data=result.data, content_type=result.content_type)


class LocalFunction:
    """A function as the invocation seam sees it: something to invoke."""

    def __init__(self, api: FunctionsApi, name: str) -> None:
        self._api = api
        self.name = name

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        return await self._api.invoke(self.name, request)


class PeerFunction(LocalFunction):
    """A function called by another sidecar: a failure travels back as a failed answer.

    The calling sidecar passes an app's answer through whatever its status, so the
    caller sees the same status, code and message as it would from a local call.
    """

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        try:
            return await super().invoke(request)
        except errors.ApiError as err:
            body = json.dumps({"errorCode": err.error_code, "message": err.message}).encode()
            return InvocationResponse(
                status=err.http_status,
                data=body,
                content_type="application/json",
                grpc_code=err.code,
                message=err.message,
            )
