"""The caller's side of service invocation: filters, traffic routing, resolution, timeout, retries.

A call is retried (with a short backoff, re-resolving the app id) only when it surely
did not reach the app: the target sidecar or its app was not accepting connections, or
the address turned out to belong to another app. Every error names the target app.

`peers` remembers, for the info endpoint, the addresses resolution gave for each app id
and when each was last switched to. It costs a call one dict lookup and an identity
check; only a resolution that returns another address records anything.
"""

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from ottava_sidecar import backoff, contract, metrics, tracing
from ottava_sidecar.identity.workload import WorkloadIdentity
from ottava_sidecar.invocation import filters, traffic
from ottava_sidecar.invocation.internal import InternalClient
from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse
from ottava_sidecar.invocation.resolution import Address, AppNotFoundError, NameResolver

if TYPE_CHECKING:
    from ottava_sidecar.resiliency.policy import Resilience
    from ottava_sidecar.resiliency.provider import Provider

log = logging.getLogger(__name__)

ATTEMPTS = 3
# Addresses remembered per app id (the most recently switched to), so pod churn cannot grow `peers`.
PEER_ADDRESSES = 16


class InvocationError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status  # what an HTTP caller gets, when not the one of `code`


class Invoker:
    def __init__(
        self,
        app_id: str,
        resolver: NameResolver,
        *,
        default_timeout: float,
        extra_filters: list[filters.InvocationFilter] | None = None,
        namespace: str = contract.STANDALONE_NAMESPACE,
        identity: WorkloadIdentity | None = None,
    ) -> None:
        self.app_id = app_id
        self.resolver = resolver
        self.default_timeout = default_timeout
        self.namespace = namespace
        self.filters: list[filters.InvocationFilter] = [filters.CallerIdentity(app_id), *(extra_filters or [])]
        self._client = InternalClient(identity)
        # app id -> {address: when (wall clock) calls last switched to it}, for the info endpoint.
        self.peers: dict[str, dict[Address, float]] = {}
        self._last: dict[str, Address] = {}  # the address each app id resolved to last
        # Traffic routing between app versions (TrafficRoute): its routes are set live by the runtime.
        self.traffic = traffic.TrafficRouter()
        # Resiliency (docs/resiliency.md): the policies of calls to each app, set by the runtime.
        self.resiliency: Provider | None = None

    def _resolved(self, target: str, address: Address) -> None:
        """Record that `target` resolved to `address`, which is not the address it resolved to last."""
        self._last[target] = address
        addresses = self.peers.setdefault(target, {})
        addresses.pop(address, None)  # re-inserted last: the dict runs oldest to newest
        addresses[address] = time.time()
        if len(addresses) > PEER_ADDRESSES:
            del addresses[next(iter(addresses))]

    async def invoke(self, target: str, request: InvocationRequest) -> InvocationResponse:
        """The target app's answer (any status); `InvocationError` naming `target` when there is none."""
        policy = self.resiliency.app(target) if self.resiliency is not None else None
        try:
            if policy is None:
                response = await self._invoke(target, request)
            else:
                response = await self._resilient(policy, target, request)
        except InvocationError as err:
            metrics.INVOCATIONS.labels(target, err.code.name).inc()
            raise
        metrics.INVOCATIONS.labels(target, response.grpc_code.name).inc()
        return response

    async def _resilient(self, policy: "Resilience", target: str, request: InvocationRequest) -> InvocationResponse:
        """The call under the timeout, retry and circuit breaker of its target app (Resiliency)."""
        from ottava_sidecar.resiliency import invocation
        from ottava_sidecar.resiliency import policy as policies

        try:
            return await invocation.run(policy, lambda: self._invoke(target, request))
        except policies.Refused as err:
            code = grpc.StatusCode.DEADLINE_EXCEEDED if err.kind == "timeout" else grpc.StatusCode.UNAVAILABLE
            raise InvocationError(code, f"invoking {request.method} on app {target!r}: {err}") from None

    async def _invoke(self, target: str, request: InvocationRequest) -> InvocationResponse:
        if not target:
            raise InvocationError(grpc.StatusCode.INVALID_ARGUMENT, "the app id to invoke is empty")
        await self._before(target, request)
        timeout = min(request.timeout_seconds or self.default_timeout, self.default_timeout)
        deadline = time.monotonic() + timeout
        version = await self._route(target, request, deadline, timeout)
        delays = backoff.INVOCATION_RETRY.delays()
        last = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                address = await self.resolver.resolve(target, version)
            except AppNotFoundError as err:
                raise InvocationError(grpc.StatusCode.NOT_FOUND, str(err)) from None
            if self._last.get(target) is not address:
                self._resolved(target, address)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                served = (self.resolver.served_app_id(target), self.resolver.served_namespace(target) or self.namespace)
                response = await self._client.call(address, served, request, remaining, address.certified_as)
            except grpc.aio.AioRpcError as err:
                code, details = err.code(), err.details() or ""
                traffic.count(target, address, code)
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise InvocationError(
                        code, f"app {target!r} did not answer {request.method} within {timeout:g}s"
                    ) from None
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise InvocationError(
                        code, f"invoking {request.method} on app {target!r} failed: {details}"
                    ) from None
                last = details
                self.resolver.forget(target, address)
                self._forget(target, address)
                await self._client.drop(address)
                log.info("invoking app %s at %s failed (attempt %d): %s", target, address, attempt, details)
                if attempt < ATTEMPTS:
                    await asyncio.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))
                continue
            traffic.count(target, address, response.grpc_code)
            for each in reversed(self.filters):
                await each.after(target, request, response)
            return response
        if not last:
            raise InvocationError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"app {target!r} did not answer {request.method} within {timeout:g}s"
            )
        raise InvocationError(
            grpc.StatusCode.UNAVAILABLE, f"app {target!r} is not reachable after {ATTEMPTS} attempts: {last}"
        )

    async def _route(self, target: str, request: InvocationRequest, deadline: float, seconds: float) -> str | None:
        """Traffic routing (`traffic`): the version this call goes to (None: any), after the faults its rule injects."""
        try:
            return await self.traffic.route(target, request, deadline, seconds)
        except traffic.Injected as fault:
            raise InvocationError(fault.code, fault.message, http_status=fault.http_status) from None

    def _forget(self, target: str, address: Address) -> None:
        """`address` failed for `target`: it is no longer listed as a peer."""
        self.peers.get(target, {}).pop(address, None)
        if not self.peers.get(target, True):
            del self.peers[target]
        if self._last.get(target) is address:
            del self._last[target]

    async def _before(self, target: str, request: InvocationRequest) -> None:
        """Let every filter see the call first (a filter that rejects it refuses the call); then
        put the current span's context among its headers."""
        for each in self.filters:
            try:
                await each.before(target, request)
            except filters.Rejected as err:
                raise InvocationError(
                    grpc.StatusCode.PERMISSION_DENIED, f"call to app {target!r} refused by {type(each).__name__}: {err}"
                ) from None
        if tracing.ACTIVE is not None:  # the target's sidecar continues this call's trace
            tracing.inject(request.headers)

    async def close(self) -> None:
        await self._client.close()
