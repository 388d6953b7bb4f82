"""Invocation filters that tests load with `ottava run --invocation-filter tests.apps.filters:…`."""

from ottava_sidecar.invocation.filters import InvocationFilter, Rejected
from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse


class AddTenantHeader(InvocationFilter):
    """Adds a header to every outbound call, and marks every answer it sees."""

    async def before(self, target_app_id: str, request: InvocationRequest) -> None:
        request.headers.append(("x-tenant", "acme"))

    async def after(self, target_app_id: str, request: InvocationRequest, response: InvocationResponse) -> None:
        response.headers.append(("x-filtered", "after"))


class RefuseForbidden(InvocationFilter):
    async def before(self, target_app_id: str, request: InvocationRequest) -> None:
        if request.method.startswith("forbidden"):
            raise Rejected(f"method {request.method} may not be called")
