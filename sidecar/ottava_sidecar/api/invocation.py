"""What the service invocation calls mean, for every wire API.

The caller's sidecar runs the call through `invocation.invoker.Invoker`; here its
failures become `ApiError`s (Dapr's `ERR_DIRECT_INVOKE`), each naming the target app.
The target app's own answer, whatever its status, is not an error at this level: the
HTTP surface passes it through, the gRPC surfaces turn a failed one into a status.
"""

from collections.abc import Callable

import grpc

from ottava_sidecar.api import errors
from ottava_sidecar.invocation.internal import LocalApp
from ottava_sidecar.invocation.invoker import InvocationError, Invoker
from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse, http_status_for_grpc

ERROR_CODE = "ERR_DIRECT_INVOKE"

# Request headers that concern the caller's hop only and are never forwarded.
NOT_FORWARDED = frozenset(
    {
        "dapr-api-token",
        "host",
        "content-length",
        "content-type",  # travels as the request's content type
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "user-agent",
        "accept-encoding",
        "grpc-timeout",
        "grpc-accept-encoding",
        "grpc-encoding",
    }
)


def forwarded_headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (name.lower(), value)
        for name, value in pairs
        if name.lower() not in NOT_FORWARDED and not name.startswith(":") and not name.lower().endswith("-bin")
    ]


class InvocationApi:
    def __init__(self, invoker: Invoker | None) -> None:
        self.invoker = invoker
        # The sidecar's own functions by app id (`api.functions`): called here, never resolved elsewhere.
        self.local: Callable[[str], LocalApp | None] = lambda app_id: None

    async def invoke(self, app_id: str, request: InvocationRequest) -> InvocationResponse:
        local = self.local(app_id)
        if local is not None:
            if not request.method:
                raise errors.invalid_argument(f"the method to invoke on function {app_id!r} is empty", ERROR_CODE)
            if self.invoker is not None and not request.caller_app_id:
                request.caller_app_id = self.invoker.app_id
            return await local.invoke(request)
        if self.invoker is None:
            raise errors.failed_precondition("service invocation is not available in this sidecar", ERROR_CODE)
        if not app_id:
            raise errors.invalid_argument("the app id to invoke is empty", ERROR_CODE)
        if not request.method:
            raise errors.invalid_argument(f"the method to invoke on app {app_id!r} is empty", ERROR_CODE)
        try:
            return await self.invoker.invoke(app_id, request)
        except InvocationError as err:
            raise errors.ApiError(
                err.code,
                err.message,
                http_status=err.http_status or http_status_for_grpc(err.code),
                error_code=ERROR_CODE,
            ) from None


def response_error(app_id: str, method: str, response: InvocationResponse) -> errors.ApiError:
    """A failed answer of the target app, as an error of a gRPC surface (which has no HTTP status to pass)."""
    detail = response.message or response.data[:300].decode(errors="replace")
    code = response.grpc_code if response.grpc_code is not grpc.StatusCode.OK else grpc.StatusCode.UNKNOWN
    return errors.ApiError(
        code,
        f"app {app_id!r} answered {method} with {code.name} (HTTP {response.status}): {detail}",
        http_status=response.status,
        error_code=ERROR_CODE,
    )
