"""A service invocation as it travels: caller's API → caller's sidecar → target's sidecar → app.

Wire-independent, so each API surface (Dapr gRPC/HTTP, Layotto) and each app protocol
(HTTP, gRPC) translates from and to the same two dataclasses.
"""

from dataclasses import dataclass, field

import grpc

__all__ = ["InvocationRequest", "InvocationResponse", "grpc_code_for_http", "http_status_for_grpc"]


@dataclass
class InvocationRequest:
    method: str
    data: bytes = b""
    content_type: str = ""
    verb: str = ""  # HTTP verb; empty when the caller gave none (gRPC-style call)
    query: str = ""  # without the leading '?'
    headers: list[tuple[str, str]] = field(default_factory=list)  # names lower case
    type_url: str = ""  # set when `data` is a protobuf Any's value
    caller_app_id: str = ""
    timeout_seconds: float | None = None  # what the caller still waits; None: the sidecar's default

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass
class InvocationResponse:
    status: int = 200  # HTTP status
    data: bytes = b""
    content_type: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    type_url: str = ""
    grpc_code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""  # error message of a failed gRPC answer

    @property
    def ok(self) -> bool:
        return self.grpc_code is grpc.StatusCode.OK and 200 <= self.status < 300


_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_GRPC_TO_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def grpc_code_for_http(status: int) -> grpc.StatusCode:
    """gRPC's mapping of HTTP statuses (as grpc-gateway and Dapr use it)."""
    if 200 <= status < 300:
        return grpc.StatusCode.OK
    if status in _HTTP_TO_GRPC:
        return _HTTP_TO_GRPC[status]
    return grpc.StatusCode.FAILED_PRECONDITION if 400 <= status < 500 else grpc.StatusCode.UNKNOWN


def http_status_for_grpc(code: grpc.StatusCode) -> int:
    return _GRPC_TO_HTTP.get(code, 500)


def grpc_code_from_number(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN
