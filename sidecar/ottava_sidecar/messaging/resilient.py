"""Deliveries from a pub/sub component to the app, through the component's `inbound` resiliency policies.

The app channel is wrapped once, when the sidecar subscribes the app: each delivery looks
up the policy of its subscription's pub/sub component. A failure is an app error or an
answer of RETRY; a DROP, or a route the app does not have, is the app's final word. When
the policy gives up, or stops a try (a timeout, an open breaker), the event goes back to
the broker as any failed delivery does.
"""

from typing import Any

from ottava_sidecar.apperrors import AppChannelError, AppUnimplementedError
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.delivery import BatchEntry, Subscriber
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict
from ottava_sidecar.resiliency.policy import Failure, Refused
from ottava_sidecar.resiliency.provider import Provider


def _verdict(verdict: Verdict) -> Failure | None:
    return Failure() if verdict is Verdict.RETRY else None


def _batch(verdicts: dict[str, Verdict]) -> Failure | None:
    return Failure() if any(v is Verdict.RETRY for v in verdicts.values()) else None


def _error(err: BaseException) -> Failure | None:
    return None if isinstance(err, AppUnimplementedError) or not isinstance(err, AppChannelError) else Failure()


class ResilientSubscriber:
    """The app channel, delivering through the inbound policy of each event's pub/sub component."""

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


def wrap(channel: Subscriber, provider: Provider) -> Subscriber:
    return ResilientSubscriber(channel, provider)
