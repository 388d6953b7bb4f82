"""Before/after filters around each outbound service invocation: a small extension point.

A filter sees every call this sidecar sends to another app: `before` may add or change
headers (or refuse the call by raising `Rejected`); `after` sees the answer (for
auditing, metrics, or rewriting headers). Filters run in order for `before` and in
reverse order for `after`, like middleware.

Write one as a class with a no-argument constructor and pass it to the sidecar:

    ottava run --app-id a --invocation-filter mypackage.filters:AddTenantHeader

The built-in `CallerIdentity` (always first) tells the callee who called, as Dapr
does, with the `dapr-caller-app-id` and `dapr-callee-app-id` headers.
"""

import importlib

from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse

__all__ = ["CallerIdentity", "InvocationFilter", "Rejected", "load"]


class Rejected(Exception):
    """Raised by `before` to refuse a call; the caller gets PERMISSION_DENIED with this message."""


class InvocationFilter:
    async def before(self, target_app_id: str, request: InvocationRequest) -> None:
        """Called before the target is resolved; may change `request`."""

    async def after(self, target_app_id: str, request: InvocationRequest, response: InvocationResponse) -> None:
        """Called with the target's answer (not when the call failed before reaching the app)."""


class CallerIdentity(InvocationFilter):
    def __init__(self, app_id: str) -> None:
        self.app_id = app_id

    async def before(self, target_app_id: str, request: InvocationRequest) -> None:
        request.headers = [(k, v) for k, v in request.headers if k not in ("dapr-caller-app-id", "dapr-callee-app-id")]
        request.headers += [("dapr-caller-app-id", self.app_id), ("dapr-callee-app-id", target_app_id)]
        request.caller_app_id = self.app_id


def load(reference: str) -> InvocationFilter:
    """Instantiate `module:ClassName`; errors name the reference."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"invocation filter {reference!r} is not of the form module:ClassName")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"invocation filter {reference!r} cannot be loaded: {err}") from None
    instance = factory()
    if not isinstance(instance, InvocationFilter):
        raise ValueError(
            f"invocation filter {reference!r} is not an ottava_sidecar.invocation.filters.InvocationFilter"
        )
    return instance
