"""Interface of the app channel.

It is what `messaging` calls a `Subscriber` and `invocation` a `LocalApp`: those layers
sit below this one and say only what they need of the app, so the channel may use their
vocabulary (events, subscriptions, invocation requests) without an import cycle. The
errors it raises live in `ottava_sidecar.apperrors`, below both.
"""

import abc
import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ottava_sidecar import backoff, tracing
from ottava_sidecar.apperrors import (
    AppChannelError,
    AppTimeoutError,
    AppUnavailableError,
    AppUnimplementedError,
)
from ottava_sidecar.components.bindings.base import BindingEvent
from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse
from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.delivery import BatchEntry
from ottava_sidecar.messaging.routing import RuleError
from ottava_sidecar.messaging.subscriptions import Bulk, Kind, SubscriptionSpec, Verdict

__all__ = [
    "AppChannel",
    "AppChannelError",
    "AppSubscriptions",
    "AppTimeoutError",
    "AppUnavailableError",
    "AppUnimplementedError",
]


@dataclass
class AppSubscriptions:
    """What the app answered when asked for its subscriptions.

    `specs` are those the sidecar can use; `problems` say, one per line, what it could
    not use and why (an answer that is not a list, a field of the wrong type, a routing
    rule outside the CEL subset). The sidecar delivers to the first and shows the
    second in the readiness body and the log; it does not ask again, since an app
    answers the same until it is changed.
    """

    specs: list[SubscriptionSpec] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(
        self,
        pubsub_name: str,
        topic: str,
        *,
        default_path: str = "",
        rules: Sequence[tuple[str, str]] = (),
        metadata: Mapping[str, str] | None = None,
        dead_letter_topic: str = "",
        bulk: Bulk | None = None,
    ) -> None:
        """One subscription the app declared, or the problem that keeps it out."""
        what = f"subscription to {pubsub_name or '?'}/{topic or '?'}"
        missing = [name for name, value in (("pubsubname", pubsub_name), ("topic", topic)) if not value]
        if missing:
            self.problems.append(f"{what} ignored: it has no {' and no '.join(missing)}")
            return
        try:
            spec = SubscriptionSpec.create(
                pubsub_name,
                topic,
                kind=Kind.PROGRAMMATIC,
                default_path=default_path,
                rules=list(rules),
                metadata=metadata,
                dead_letter_topic=dead_letter_topic,
                bulk=bulk,
            )
        except RuleError as err:
            self.problems.append(f"{what} ignored: {err}")
            return
        self.specs.append(spec)


class AppChannel(abc.ABC):
    protocol: str = ""

    def __init__(self, app_id: str, host: str, port: int, *, timeout: float, app_token: str | None = None) -> None:
        self.app_id = app_id
        self.host = host
        self.port = port
        self.timeout = timeout
        self.app_token = app_token  # sent as `dapr-api-token` on every call to the app

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"app {self.app_id!r} ({self.protocol} on {self.address})"

    async def wait_until_listening(self, *, poll: backoff.Backoff = backoff.APP_PORT_POLL) -> float:
        """Return once the app port accepts a connection; the seconds waited."""
        started = time.monotonic()
        delays = poll.delays()
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(next(delays))
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return time.monotonic() - started

    @abc.abstractmethod
    async def list_subscriptions(self) -> AppSubscriptions:
        """The app's programmatic subscriptions (none when it declares none), and what was wrong with its answer.

        Raises an `AppChannelError` only when asking again may get a better answer: the
        app is not reachable, did not answer in time, or said it is not ready yet.
        """

    async def deliver(self, subscription: SubscriptionSpec, event: TopicEvent, path: str) -> Verdict:
        """Hand `event` to the app; its verdict, or an `AppChannelError`."""
        if tracing.ACTIVE is None:
            return await self._deliver(subscription, event, path)
        attributes = self._span_attributes(
            {"messaging.destination.name": event.topic, "messaging.message.id": event.id, "url.path": path}
        )
        with tracing.span(f"deliver {event.topic}", attributes) as span:
            try:
                verdict = await self._deliver(subscription, event, path)
            except AppChannelError as err:
                tracing.outcome(span, str(err))
                raise
            tracing.outcome(span, None, {"ottava.verdict": verdict.value})
            return verdict

    async def deliver_bulk(
        self, subscription: SubscriptionSpec, entries: list[BatchEntry], path: str
    ) -> dict[str, Verdict]:
        """Hand a batch of events to the app: its verdict per entry id, or an `AppChannelError` for all."""
        if tracing.ACTIVE is None:
            return await self._deliver_bulk(subscription, entries, path)
        attributes = self._span_attributes({"messaging.destination.name": subscription.topic, "url.path": path})
        attributes["messaging.batch.message_count"] = len(entries)
        with tracing.span(f"deliver {subscription.topic}", attributes) as span:
            try:
                verdicts = await self._deliver_bulk(subscription, entries, path)
            except AppChannelError as err:
                tracing.outcome(span, str(err))
                raise
            tracing.outcome(span, None)
            return verdicts

    async def _deliver_bulk(
        self, subscription: SubscriptionSpec, entries: list[BatchEntry], path: str
    ) -> dict[str, Verdict]:
        """`deliver_bulk` for an app that takes no batches: one event at a time, each with its own verdict."""
        verdicts: dict[str, Verdict] = {}
        for entry in entries:
            try:
                verdicts[entry.entry_id] = await self._deliver(subscription, entry.event, path)
            except AppUnimplementedError:
                verdicts[entry.entry_id] = Verdict.DROP
            except AppChannelError:
                if not verdicts:
                    raise  # the first failed: the batch as a whole, with the reason
                verdicts[entry.entry_id] = Verdict.RETRY
        return verdicts

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        """Call a method of the app; its answer whatever its status, or an `AppChannelError`."""
        if tracing.ACTIVE is None:
            return await self._invoke(request)
        attributes = self._span_attributes({"ottava.invoke.method": request.method})
        with tracing.span(f"invoke {self.app_id}/{request.method}", attributes) as span:
            try:
                answer = await self._invoke(request)
            except AppChannelError as err:
                tracing.outcome(span, str(err))
                raise
            tracing.outcome(
                span,
                None if answer.ok else f"the app answered {answer.status}",
                {"http.response.status_code": answer.status},
            )
            return answer

    def _span_attributes(self, extra: dict[str, str]) -> dict[str, Any]:
        return {"ottava.app_id": self.app_id, "server.address": self.host, "server.port": self.port, **extra}

    @abc.abstractmethod
    async def _deliver(self, subscription: SubscriptionSpec, event: TopicEvent, path: str) -> Verdict:
        """`deliver` over this channel's protocol, with the current trace context."""

    @abc.abstractmethod
    async def _invoke(self, request: InvocationRequest) -> InvocationResponse:
        """`invoke` over this channel's protocol, with the current trace context."""

    # --- input bindings (Dapr's: `OPTIONS`/`POST /<route>`, or `ListInputBindings`/`OnBindingEvent`)

    async def input_bindings(self, routes: dict[str, str]) -> set[str]:
        """Which of the input bindings `routes` (name → HTTP route) the app listens to."""
        raise AppUnimplementedError(f"{self.describe()}: the {self.protocol} channel delivers no binding events")

    async def deliver_binding(self, name: str, route: str, event: BindingEvent) -> None:
        """Hand an input binding's event to the app; returns once it accepted it, else an `AppChannelError`."""
        raise AppUnimplementedError(f"{self.describe()}: the {self.protocol} channel delivers no binding events")

    async def close(self) -> None:  # noqa: B027 - most channels hold connections; some do not
        """Release connections."""
