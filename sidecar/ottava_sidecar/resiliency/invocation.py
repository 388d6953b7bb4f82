"""Service invocation through the policies of its target app (`targets.apps`).

As in Dapr, a try fails when the call did not get an answer (the invoker's error) or when
the app answered with an error: a gRPC status other than OK, or an HTTP status outside
200-399. A retry policy's `matching` looks at that status. When the tries run out, the
caller gets the app's last answer (or the last error), as it would have without the policy.
"""

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import grpc

from ottava_sidecar.resiliency.policy import Failure, Resilience


class Answer(Protocol):
    """What is read of the app's answer (`invocation.messages.InvocationResponse`, a layer above)."""

    status: int
    grpc_code: grpc.StatusCode


A = TypeVar("A", bound=Answer)


def _answer(response: Answer) -> Failure | None:
    if response.grpc_code is not grpc.StatusCode.OK:
        return Failure("grpc", response.grpc_code.value[0])
    if not 200 <= response.status <= 399:
        return Failure("http", response.status)
    return None


def _error(err: BaseException) -> Failure | None:
    code = getattr(err, "code", None)
    if not isinstance(code, grpc.StatusCode):
        return None  # not the invoker's: a bug to raise as is
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return None  # the caller's request, not the target, is wrong
    return Failure("grpc", code.value[0])


async def run(policy: Resilience, invoke: Callable[[], Awaitable[A]]) -> A:
    """The answer of `invoke` under `policy`; `policy.Refused` when a timeout or the breaker stopped it."""
    return await policy.run(invoke, on_result=_answer, on_error=_error)
