"""What a function component offers its caller, and what it needs of the sidecar (its host).

A function is invoked like an app whose app id is the Component's name. Its calls to the
runtime API (state, pub/sub, invocation, configuration) go through a `FunctionHost`, which
the API layer provides, so this package never imports the APIs above it.
"""

import enum
from dataclasses import dataclass
from typing import Protocol

from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata, SettingsT

__all__ = ["Function", "FunctionCall", "FunctionError", "FunctionFailure", "FunctionHost", "FunctionResult"]


@dataclass
class FunctionCall:
    method: str
    data: bytes = b""
    content_type: str = ""
    verb: str = ""
    query: str = ""
    caller_app_id: str = ""
    timeout_seconds: float | None = None  # what the caller still waits; the function's own limit may be lower


@dataclass
class FunctionResult:
    data: bytes
    content_type: str


class FunctionFailure(enum.StrEnum):
    """Why a call failed: each kind is counted apart (`ottava_function_errors_total{kind}`)."""

    FAILED = "failed"  # the function exited with a non-zero status
    TRAPPED = "trapped"  # a WebAssembly trap: unreachable, out-of-bounds access, division by zero…
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    INVALID = "invalid"  # the module cannot run as a function (no `_start`, an unknown import…)


class FunctionError(Exception):
    def __init__(self, kind: FunctionFailure, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class FunctionHost(Protocol):
    """The runtime API as a function sees it; each call may raise an exception whose text the function gets."""

    async def state_get(self, store: str, key: str) -> bytes | None: ...

    async def state_save(self, store: str, key: str, value: bytes) -> None: ...

    async def state_delete(self, store: str, key: str) -> None: ...

    async def publish(self, pubsub: str, topic: str, data: bytes, content_type: str) -> None: ...

    async def invoke(self, app_id: str, method: str, data: bytes) -> bytes: ...

    async def config_get(self, store: str, key: str) -> str | None: ...


class Function(ComponentInstance[SettingsT]):
    """A component that answers invocations itself."""

    async def call(self, call: FunctionCall, host: FunctionHost) -> FunctionResult:
        raise NotImplementedError


FunctionMetadata = ComponentMetadata
