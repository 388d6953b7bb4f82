"""API errors, each carrying its gRPC status and its Dapr HTTP status and error code."""

import grpc

from ottava_sidecar.components.registry import LookupFailure

# A gRPC status message travels in a trailer that clients cap at 16 KiB, percent-encoded
# (up to 12 bytes per character): a message naming a 20 KB key would make the client see
# RESOURCE_EXHAUSTED "Stream removed" instead of the error. Longer messages are cut here.
MAX_MESSAGE_CHARACTERS = 1024


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARACTERS:
        return message
    cut = len(message) - MAX_MESSAGE_CHARACTERS
    return f"{message[:MAX_MESSAGE_CHARACTERS]}… ({cut} more characters)"


class ApiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, *, http_status: int, error_code: str) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.error_code = error_code


def invalid_argument(message: str, error_code: str = "ERR_MALFORMED_REQUEST") -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, http_status=400, error_code=error_code)


def not_found(message: str, error_code: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, message, http_status=404, error_code=error_code)


def failed_precondition(message: str, error_code: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message, http_status=500, error_code=error_code)


def internal(message: str, error_code: str) -> ApiError:
    return ApiError(grpc.StatusCode.INTERNAL, message, http_status=500, error_code=error_code)


def aborted(message: str, error_code: str) -> ApiError:
    return ApiError(grpc.StatusCode.ABORTED, message, http_status=409, error_code=error_code)


def too_large(message: str, error_code: str) -> ApiError:
    """An answer that would exceed a limit of the sidecar (a bulk read): ask for less."""
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=413, error_code=error_code)


def unimplemented(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNIMPLEMENTED, message, http_status=501, error_code="ERR_NOT_IMPLEMENTED")


def permission_denied(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, http_status=403, error_code="ERR_PERMISSION_DENIED")


# Dapr's error codes per building block: (none configured, not found).
_LOOKUP_CODES = {
    "state": ("ERR_STATE_STORES_NOT_CONFIGURED", "ERR_STATE_STORE_NOT_FOUND"),
    "configuration": ("ERR_CONFIGURATION_STORE_NOT_CONFIGURED", "ERR_CONFIGURATION_STORE_NOT_FOUND"),
    "lock": ("ERR_LOCK_STORE_NOT_CONFIGURED", "ERR_LOCK_STORE_NOT_FOUND"),
    "secretstores": ("ERR_SECRET_STORES_NOT_CONFIGURED", "ERR_SECRET_STORE_NOT_FOUND"),
    "sequencer": ("ERR_SEQUENCER_STORE_NOT_CONFIGURED", "ERR_SEQUENCER_STORE_NOT_FOUND"),
    "pubsub": ("ERR_PUBSUB_NOT_CONFIGURED", "ERR_PUBSUB_NOT_FOUND"),
    "file": ("ERR_FILE_STORE_NOT_CONFIGURED", "ERR_FILE_STORE_NOT_FOUND"),
}


def from_lookup(failure: LookupFailure) -> ApiError:
    """Dapr's answers: none configured → FAILED_PRECONDITION, unknown name → INVALID_ARGUMENT."""
    none_configured, not_found_code = _LOOKUP_CODES.get(failure.building_block, ("ERR_NOT_CONFIGURED", "ERR_NOT_FOUND"))
    if failure.kind == "none-configured":
        return failed_precondition(str(failure), none_configured)
    if failure.kind == "not-found":
        return invalid_argument(str(failure), not_found_code)
    return ApiError(grpc.StatusCode.UNAVAILABLE, str(failure), http_status=503, error_code="ERR_COMPONENT_NOT_READY")
