"""The sidecar's calls to a component, through the component's `outbound` policies.

`Registry.lookup` hands the API a stand-in for the component (`wrap`) when a policy
applies to it: the stand-in passes every attribute through, and runs the calls that
reach the backend (the table below) through the policy. It still passes for the
component's class (`isinstance` works), so the API code does not change.

A failure is any error of the backend except those that are the caller's (an ETag that does
not match, an operation the store does not support): retrying those cannot help, and they
say nothing about the backend's health. A try stopped by the policy (a timeout, an open
breaker) reaches the API as the component's error, naming the policy.
"""

import functools
from collections.abc import Callable
from typing import Any

from ottava_sidecar.components.errors import ComponentError, ETagInvalidError, ETagMismatchError, NotSupportedError
from ottava_sidecar.resiliency.policy import Failure, Refused, Resilience
from ottava_sidecar.resiliency.provider import Provider

# The methods of each building block's components that reach the backend.
OUTBOUND_METHODS = {
    "state": frozenset({"get", "bulk_get", "set", "delete", "transact"}),
    "lock": frozenset({"try_lock", "unlock", "keep_alive"}),
    "configuration": frozenset({"get", "save", "delete"}),
    "secretstores": frozenset({"get", "bulk_get"}),
    "bindings": frozenset({"invoke"}),
    "pubsub": frozenset({"publish", "bulk_publish"}),
}
_CALLERS_MISTAKES = (ETagMismatchError, ETagInvalidError, NotSupportedError)


def wrapper(provider: Provider) -> Callable[[str, str, Any], Any]:
    """What `Registry.wrap` calls with a component's name, building block and instance."""

    def wrap(name: str, building_block: str, instance: Any) -> Any:
        methods = OUTBOUND_METHODS.get(building_block)
        if methods is None or provider.empty:
            return instance
        policy = provider.outbound(name, building_block)
        return instance if policy is None else Resilient(instance, policy, methods, name)

    return wrap


def _failure(err: BaseException) -> Failure | None:
    return None if isinstance(err, _CALLERS_MISTAKES) else Failure()


def _succeeded(_: object) -> Failure | None:
    return None


class Resilient:
    """A component whose backend calls go through `policy`; anything else is the component's own."""

    __slots__ = ("_instance", "_methods", "_name", "_policy")

    def __init__(self, instance: Any, policy: Resilience, methods: frozenset[str], name: str) -> None:
        self._instance = instance
        self._policy = policy
        self._methods = methods
        self._name = name

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(stand_in, StateStore) is still true
        return type(self._instance)

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._instance, attribute)
        if attribute in self._methods:
            return functools.partial(self._call, value)
        return value

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._policy.run(lambda: method(*args, **kwargs), on_result=_succeeded, on_error=_failure)
        except Refused as err:
            raise ComponentError(f"component {self._name}: {err}") from None
