"""Deliveries from a component to the app, through the component's `inbound` resiliency policies.

The app channel is wrapped once, when the sidecar connects to the app: each delivery looks
up the policy of its component (the subscription's pub/sub, or the input binding). A
failure is an app error or, for an event, an answer of RETRY; a DROP, or a route the app
does not have, is the app's final word. When the policy gives up, or stops a try (a
timeout, an open breaker), the delivery fails as it would without a policy: an event goes
back to the broker, a binding's event is refused to its backend.
"""

from typing import Any

from ottava_sidecar.apperrors import AppChannelError, AppUnimplementedError
from ottava_sidecar.components.bindings.base import BindingEvent
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.delivery import BatchEntry, Subscriber
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict
from ottava_sidecar.resiliency.policy import Failure, Refused
from ottava_sidecar.resiliency.provider import Provider


def _verdict(verdict: Verdict) -> Failure | None:
    return Failure() if verdict is Verdict.RETRY else None


def _batch(verdicts: dict[str, Verdict]) -> Failure | None:
    return Failure() if any(v is Verdict.RETRY for v in verdicts.values()) else None


def _accepted(_: object) -> Failure | None:
    return None


def _error(err: BaseException) -> Failure | None:
    return None if isinstance(err, AppUnimplementedError) or not isinstance(err, AppChannelError) else Failure()


class ResilientApp:
    """The app channel, delivering through the inbound policy of each event's component."""

    def __init__(self, channel: Any, provider: Provider) -> None:
        self._channel = channel
        self._provider = provider

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._channel, attribute)

    async def deliver(self, subscription: SubscriptionSpec, event: cloudevents.TopicEvent, path: str) -> Verdict:
        policy = self._provider.inbound(subscription.pubsub_name, "pubsub")
        if policy is None:
            verdict: Verdict = await self._channel.deliver(subscription, event, path)
            return verdict
        try:
            return await policy.run(
                lambda: self._channel.deliver(subscription, event, path), on_result=_verdict, on_error=_error
            )
        except Refused as err:
            raise AppChannelError(f"delivery to the app from pub/sub {subscription.pubsub_name}: {err}") from None

    async def deliver_bulk(
        self, subscription: SubscriptionSpec, entries: list[BatchEntry], path: str
    ) -> dict[str, Verdict]:
        policy = self._provider.inbound(subscription.pubsub_name, "pubsub")
        if policy is None:
            verdicts: dict[str, Verdict] = await self._channel.deliver_bulk(subscription, entries, path)
            return verdicts
        try:
            return await policy.run(
                lambda: self._channel.deliver_bulk(subscription, entries, path), on_result=_batch, on_error=_error
            )
        except Refused as err:
            raise AppChannelError(f"delivery to the app from pub/sub {subscription.pubsub_name}: {err}") from None

    def describe(self) -> str:
        return str(self._channel.describe())

    async def input_bindings(self, routes: dict[str, str]) -> set[str]:
        listened: set[str] = await self._channel.input_bindings(routes)
        return listened

    async def deliver_binding(self, name: str, route: str, event: BindingEvent) -> None:
        policy = self._provider.inbound(name, "bindings")
        if policy is None:
            await self._channel.deliver_binding(name, route, event)
            return
        try:
            await policy.run(
                lambda: self._channel.deliver_binding(name, route, event), on_result=_accepted, on_error=_error
            )
        except Refused as err:
            raise AppChannelError(f"delivery to the app from input binding {name}: {err}") from None


def wrap(channel: Subscriber, provider: Provider) -> ResilientApp:
    """`channel` (the app channel) delivering under the inbound policies of `provider`."""
    return ResilientApp(channel, provider)
