"""The app channel to a gRPC app: Dapr's `AppCallback`, or Layotto's for apps that serve only that.

Which one the app serves is learnt from `ListTopicSubscriptions`: Dapr's first; when the
app answers UNIMPLEMENTED (it does not know Dapr's service), Layotto's; when it answers
UNIMPLEMENTED again, it subscribes to nothing. UNAVAILABLE and DEADLINE_EXCEEDED are
asked again; any other error is a problem shown in readiness (see `AppSubscriptions`). Events then go
to the same flavour's `OnTopicEvent`. Service invocation uses Dapr's `OnInvoke`
(Layotto's AppCallback has no invocation callback).
"""

from __future__ import annotations  # the async stub types exist in the .pyi only

import logging
import uuid
from typing import Any

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2 as dapr_callback
from dapr.proto.runtime.v1 import appcallback_pb2_grpc as dapr_callback_grpc
from google.protobuf import any_pb2, empty_pb2, struct_pb2

from ottava_sidecar import contract, tracing
from ottava_sidecar._gen.spec.proto.runtime.v1 import appcallback_pb2 as layotto_callback
from ottava_sidecar._gen.spec.proto.runtime.v1 import appcallback_pb2_grpc as layotto_callback_grpc
from ottava_sidecar.appchannel.base import (
    AppChannel,
    AppChannelError,
    AppSubscriptions,
    AppTimeoutError,
    AppUnavailableError,
    AppUnimplementedError,
)
from ottava_sidecar.components.bindings.base import BindingEvent
from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse, http_status_for_grpc
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.delivery import BatchEntry
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict, bulk_from

log = logging.getLogger(__name__)

_VERDICTS = {0: Verdict.SUCCESS, 1: Verdict.RETRY, 2: Verdict.DROP}
_VERBS = {name: number for number, name in enumerate(common_pb2.HTTPExtension.Verb.keys())}
# Metadata that gRPC itself owns; an HTTP caller's headers of these names are not forwarded.
_RESERVED = frozenset(
    {"content-type", "te", "user-agent", "host", "connection", "content-length", "transfer-encoding", "keep-alive"}
)


def grpc_metadata(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers that can travel as gRPC metadata (lower-case names, printable ASCII values)."""
    metadata: list[tuple[str, str]] = []
    for name, value in headers:
        key = name.lower()
        if key in _RESERVED or key.startswith((":", "grpc-")) or key.endswith("-bin"):
            continue
        if not key.isascii() or not value.isascii() or not value.isprintable():
            continue
        metadata.append((key, value))
    return metadata


def _trace_metadata(metadata: list[tuple[str, str]]) -> list[tuple[str, str | bytes]]:
    """`metadata` with the current trace context, as `traceparent`/`tracestate` and as `grpc-trace-bin`
    (what OpenCensus-era gRPC apps read); as it is when tracing is off."""
    if tracing.ACTIVE is None:
        return list(metadata)
    tracing.inject(metadata)
    with_binary: list[tuple[str, str | bytes]] = list(metadata)
    for name, value in metadata:
        if name == tracing.TRACEPARENT:
            binary = tracing.binary_from_traceparent(value)
            if binary is not None:
                with_binary.append((tracing.GRPC_TRACE_BIN, binary))
    return with_binary


class _AppToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]  # generic in the stubs only
    """Adds `dapr-api-token: $APP_API_TOKEN` to every call to the app (all of AppCallback's are unary)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
        metadata.add(contract.API_TOKEN_HEADER, self._token)
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout,
            metadata=metadata,
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)  # the call, which the stub's caller awaits


class GrpcAppChannel(AppChannel):
    protocol = "grpc"

    def __init__(self, app_id: str, host: str, port: int, *, timeout: float, app_token: str | None = None) -> None:
        super().__init__(app_id, host, port, timeout=timeout, app_token=app_token)
        self._channel: grpc.aio.Channel | None = None
        self._flavour = "dapr"  # "dapr" | "layotto": which AppCallback the app serves
        self._dapr_stub: Any = None
        self._dapr_alpha_stub: Any = None
        self._layotto_stub: layotto_callback_grpc.AppCallbackAsyncStub | None = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            interceptors: Any = [_AppToken(self.app_token)] if self.app_token else None
            self._channel = grpc.aio.insecure_channel(self.address, interceptors=interceptors)
        return self._channel

    def _dapr(self) -> Any:
        if self._dapr_stub is None:
            self._dapr_stub = dapr_callback_grpc.AppCallbackStub(self._open())  # type: ignore[no-untyped-call]
        return self._dapr_stub

    def _layotto(self) -> layotto_callback_grpc.AppCallbackAsyncStub:
        if self._layotto_stub is None:
            self._layotto_stub = layotto_callback_grpc.AppCallbackStub(self._open())
        return self._layotto_stub

    def _error(self, err: grpc.aio.AioRpcError, what: str) -> AppChannelError:
        code, details = err.code(), err.details() or ""
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return AppUnimplementedError(f"{self.describe()} does not implement {what}: {details}")
        if code is grpc.StatusCode.UNAVAILABLE:
            return AppUnavailableError(f"{self.describe()} is not reachable: {details}")
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return AppTimeoutError(f"{self.describe()} did not answer {what} in {self.timeout}s")
        return AppChannelError(f"{self.describe()} failed {what}: {code.name}: {details}")

    async def list_subscriptions(self) -> AppSubscriptions:
        try:
            answer = await self._dapr().ListTopicSubscriptions(empty_pb2.Empty(), timeout=self.timeout)
            self._flavour = "dapr"
            return self._dapr_subscriptions(answer)
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.UNIMPLEMENTED:
                return self._subscriptions_failed(err)
        try:
            layotto_answer = await self._layotto().ListTopicSubscriptions(empty_pb2.Empty(), timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() is grpc.StatusCode.UNIMPLEMENTED:  # the app serves neither: it subscribes to nothing
                log.info(
                    "%s: ListTopicSubscriptions is UNIMPLEMENTED (Dapr's and Layotto's): the app declares no subscriptions",
                    self.describe(),
                )
                return AppSubscriptions()
            return self._subscriptions_failed(err)
        self._flavour = "layotto"
        subscriptions = AppSubscriptions()
        for s in layotto_answer.subscriptions:
            subscriptions.add(s.pubsub_name, s.topic, metadata=dict(s.metadata))
        return self._named(subscriptions)

    def _subscriptions_failed(self, err: grpc.aio.AioRpcError) -> AppSubscriptions:
        """Raise what asking again may cure (unreachable, too slow); the rest is the app's answer."""
        if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise self._error(err, "ListTopicSubscriptions") from None
        problem = f"{self._error(err, 'ListTopicSubscriptions')}; no subscription of the app is used"
        return AppSubscriptions(problems=[problem])

    def _named(self, subscriptions: AppSubscriptions) -> AppSubscriptions:
        what = f"{self.describe()}: ListTopicSubscriptions"
        subscriptions.problems = [f"{what}: {problem}" for problem in subscriptions.problems]
        return subscriptions

    def _dapr_subscriptions(self, answer: Any) -> AppSubscriptions:
        subscriptions = AppSubscriptions()
        for s in answer.subscriptions:
            rules = [(r.match, r.path) for r in s.routes.rules if r.match]
            default = s.routes.default or next((r.path for r in s.routes.rules if not r.match), "")
            subscriptions.add(
                s.pubsub_name,
                s.topic,
                default_path=default,
                rules=rules,
                metadata=dict(s.metadata),
                dead_letter_topic=s.dead_letter_topic,
                bulk=bulk_from(
                    s.bulk_subscribe.enabled,
                    s.bulk_subscribe.max_messages_count,
                    s.bulk_subscribe.max_await_duration_ms if s.bulk_subscribe.max_await_duration_ms else -1,
                ),
            )
        return self._named(subscriptions)

    async def _deliver(self, subscription: SubscriptionSpec, event: TopicEvent, path: str) -> Verdict:
        metadata = _trace_metadata([])
        try:
            if self._flavour == "layotto":
                layotto_answer = await self._layotto().OnTopicEvent(
                    layotto_event(event), timeout=self.timeout, metadata=metadata
                )
                return _VERDICTS.get(layotto_answer.status, Verdict.RETRY)
            answer = await self._dapr().OnTopicEvent(dapr_event(event, path), timeout=self.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            raise self._error(err, f"OnTopicEvent for topic {event.topic}") from None
        return _VERDICTS.get(answer.status, Verdict.RETRY)

    async def _deliver_bulk(
        self, subscription: SubscriptionSpec, entries: list[BatchEntry], path: str
    ) -> dict[str, Verdict]:
        """Dapr's `OnBulkTopicEvent`, else `OnBulkTopicEventAlpha1` (of `AppCallbackAlpha`), else one
        event at a time: an app that answers UNIMPLEMENTED to both takes no batches (Layotto's
        AppCallback has none)."""
        if self._flavour == "layotto":
            return await super()._deliver_bulk(subscription, entries, path)
        request = dapr_bulk_request(subscription, entries, path)
        metadata = _trace_metadata([])
        for method in (self._dapr().OnBulkTopicEvent, self._dapr_alpha().OnBulkTopicEventAlpha1):
            try:
                answer = await method(request, timeout=self.timeout, metadata=metadata)
            except grpc.aio.AioRpcError as err:
                if err.code() is grpc.StatusCode.UNIMPLEMENTED:
                    continue
                raise self._error(err, f"OnBulkTopicEvent for topic {subscription.topic}") from None
            return {s.entry_id: _VERDICTS.get(s.status, Verdict.RETRY) for s in answer.statuses}
        return await super()._deliver_bulk(subscription, entries, path)

    def _dapr_alpha(self) -> Any:
        if self._dapr_alpha_stub is None:
            self._dapr_alpha_stub = dapr_callback_grpc.AppCallbackAlphaStub(self._open())  # type: ignore[no-untyped-call]
        return self._dapr_alpha_stub

    async def _invoke(self, request: InvocationRequest) -> InvocationResponse:
        stub = self._dapr()
        message = common_pb2.InvokeRequest(
            method=request.method,
            data=any_pb2.Any(type_url=request.type_url, value=request.data),
            content_type=request.content_type,
        )
        if request.verb or request.query:
            message.http_extension.verb = _VERBS.get(request.verb.upper(), 0)  # type: ignore[assignment]
            message.http_extension.querystring = request.query
        timeout = min(self.timeout, request.timeout_seconds or self.timeout)
        call = stub.OnInvoke(message, metadata=_trace_metadata(grpc_metadata(request.headers)), timeout=timeout)
        try:
            answer = await call
            initial: Any = await call.initial_metadata()
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise self._error(err, f"method {request.method}") from None
            return InvocationResponse(
                status=http_status_for_grpc(code), grpc_code=code, message=err.details() or "", data=b""
            )
        return InvocationResponse(
            status=200,
            data=answer.data.value,
            type_url=answer.data.type_url,
            content_type=answer.content_type,
            headers=[(str(k), v) for k, v in initial or () if isinstance(v, str)],
        )

    async def input_bindings(self, routes: dict[str, str]) -> set[str]:
        """Dapr's `ListInputBindings`; an app that does not serve it listens to none."""
        try:
            answer = await self._dapr().ListInputBindings(empty_pb2.Empty(), timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() is grpc.StatusCode.UNIMPLEMENTED:
                return set()
            raise self._error(err, "ListInputBindings") from None
        return set(answer.bindings) & set(routes)

    async def deliver_binding(self, name: str, route: str, event: BindingEvent) -> None:
        """Dapr's `OnBindingEvent`; any error status leaves the event to be delivered again."""
        request = dapr_callback.BindingEventRequest(name=name, data=event.data, metadata=event.metadata)
        try:
            await self._dapr().OnBindingEvent(request, timeout=self.timeout, metadata=_trace_metadata([]))
        except grpc.aio.AioRpcError as err:
            raise self._error(err, f"OnBindingEvent for input binding {name}") from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = self._dapr_stub = self._dapr_alpha_stub = self._layotto_stub = None


def extensions(event: TopicEvent) -> struct_pb2.Struct:
    extensions = struct_pb2.Struct()
    try:
        extensions.update(event.extensions)
    except (ValueError, TypeError):  # a value protobuf's Struct cannot hold: pass the rest
        for key, value in event.extensions.items():
            if isinstance(value, str | int | float | bool):
                extensions[key] = value
    return extensions


def dapr_event(event: TopicEvent, path: str) -> Any:
    return dapr_callback.TopicEventRequest(
        id=event.id,
        source=event.source,
        type=event.type,
        spec_version=event.spec_version,
        data_content_type=event.data_content_type,
        data=event.data,
        topic=event.topic,
        pubsub_name=event.pubsub_name,
        path=path,
        extensions=extensions(event),
    )


BULK_EVENT_TYPE = "com.dapr.event.sent.bulk"


def dapr_bulk_request(subscription: SubscriptionSpec, entries: list[BatchEntry], path: str) -> Any:
    """A batch as Dapr's `TopicEventBulkRequest`: each entry a CloudEvent, or the raw bytes of a raw payload."""
    request = dapr_callback.TopicEventBulkRequest(
        id=str(uuid.uuid4()),
        topic=subscription.topic,
        pubsub_name=subscription.pubsub_name,
        type=BULK_EVENT_TYPE,
        path=path,
    )
    for entry in entries:
        event = entry.event
        item = request.entries.add(entry_id=entry.entry_id, metadata=dict(entry.metadata))
        if event.envelope is None and subscription.raw_payload:
            item.bytes = event.data
            item.content_type = event.data_content_type
            continue
        item.content_type = cloudevents.CONTENT_TYPE
        item.cloud_event.CopyFrom(
            dapr_callback.TopicEventCERequest(
                id=event.id,
                source=event.source,
                type=event.type,
                spec_version=event.spec_version,
                data_content_type=event.data_content_type,
                data=event.data,
                extensions=extensions(event),
            )
        )
    return request


def layotto_event(event: TopicEvent) -> layotto_callback.TopicEventRequest:
    return layotto_callback.TopicEventRequest(
        id=event.id,
        source=event.source,
        type=event.type,
        spec_version=event.spec_version,
        data_content_type=event.data_content_type,
        data=event.data,
        topic=event.topic,
        pubsub_name=event.pubsub_name,
        metadata={k: str(v) for k, v in event.extensions.items() if isinstance(v, str | int | float | bool)},
    )
