"""What the app's verdict on a delivered event means, the same for every way of subscribing.

SUCCESS acknowledges. DROP acknowledges too, after moving the event to the dead-letter
topic when the subscription names one (and logging it when not). RETRY, an app error or
a timeout hand the event back to the broker, which redelivers it after a backoff;
when the subscription caps deliveries (`maxDeliveryAttempts`) the last failure is
treated as DROP instead. Each event's result is counted per topic
(`metrics.PUBSUB_SETTLED`: delivered, retried, dead_lettered, dropped).
"""

import functools
import logging
from typing import Any, Protocol

from ottava_sidecar import metrics, tracing
from ottava_sidecar.apperrors import AppChannelError, AppUnimplementedError
from ottava_sidecar.components.pubsub.base import Message, PubSub
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What delivery needs of the app: the app channel (`appchannel.AppChannel`) is one."""

    async def deliver(self, subscription: SubscriptionSpec, event: cloudevents.TopicEvent, path: str) -> Verdict:
        """Hand `event` to the app; its verdict, or an `apperrors.AppChannelError`."""
        ...


class Redeliver(Exception):
    """Raised to the broker: the event was not processed, deliver it again later."""


@functools.cache
def _deliveries(pubsub_name: str, topic: str, verdict: Verdict) -> Any:
    """The counter of one outcome of a topic's deliveries, looked up once rather than per event."""
    return metrics.PUBSUB_DELIVERIES.labels(pubsub_name, topic, verdict.value)


@functools.cache
def _settled(pubsub_name: str, topic: str, result: str) -> Any:
    """The counter of one result of settling a topic's events (metrics.PUBSUB_SETTLED)."""
    return metrics.PUBSUB_SETTLED.labels(pubsub_name, topic, result)


async def settle(broker: PubSub[Any], spec: SubscriptionSpec, message: Message, verdict: Verdict, reason: str) -> None:
    _deliveries(spec.pubsub_name, spec.topic, verdict).inc()
    if verdict is Verdict.SUCCESS:
        _settled(spec.pubsub_name, spec.topic, "delivered").inc()
        return
    if verdict is Verdict.RETRY:
        if not spec.max_attempts or message.attempt < spec.max_attempts:
            _settled(spec.pubsub_name, spec.topic, "retried").inc()
            raise Redeliver(reason)
        reason = f"{reason}; gave up after {message.attempt} deliveries (maxDeliveryAttempts)"
    if spec.dead_letter_topic:
        try:
            await broker.publish(
                spec.dead_letter_topic, message.data, content_type=message.content_type, metadata=message.metadata
            )
        except Exception as err:  # the dead-letter topic is full or failing: keep the event
            _settled(spec.pubsub_name, spec.topic, "retried").inc()
            raise Redeliver(f"{reason}; moving it to dead-letter topic {spec.dead_letter_topic} failed: {err}") from err
        log.warning(
            "event %s of %s/%s moved to dead-letter topic %s: %s",
            message.id,
            spec.pubsub_name,
            spec.topic,
            spec.dead_letter_topic,
            reason,
        )
        _settled(spec.pubsub_name, spec.topic, "dead_lettered").inc()
        return
    _settled(spec.pubsub_name, spec.topic, "dropped").inc()
    log.warning("event %s of %s/%s dropped: %s", message.id, spec.pubsub_name, spec.topic, reason)


def consumer_span(
    spec: SubscriptionSpec, event: cloudevents.TopicEvent
) -> tuple[str, list[tuple[str, Any]], dict[str, Any], str]:
    """The span of an event's delivery: a child of the publisher's context that the CloudEvent carries."""
    carrier = [
        (name, event.extensions[name])
        for name in (tracing.TRACEPARENT, tracing.TRACESTATE)
        if isinstance(event.extensions.get(name), str)
    ]
    attributes = {
        "messaging.operation.type": "process",
        "messaging.destination.name": spec.topic,
        "messaging.message.id": event.id,
        "messaging.message.delivery_attempt": event.attempt,
        "ottava.pubsub": spec.pubsub_name,
    }
    return f"process {spec.topic}", carrier, attributes, "consumer"


class AppDelivery:
    """The broker handler of a subscription read from the app: delivers over the app channel."""

    def __init__(self, spec: SubscriptionSpec, broker: PubSub[Any], channel: Subscriber) -> None:
        self.spec = spec
        self._broker = broker
        self._channel = channel

    async def __call__(self, message: Message) -> None:
        event = cloudevents.unwrap(message, self.spec.pubsub_name)
        if tracing.ACTIVE is None:
            await self._handle(message, event)
            return
        with tracing.server_span(*consumer_span(self.spec, event)):
            await self._handle(message, event)

    async def _handle(self, message: Message, event: cloudevents.TopicEvent) -> None:
        path = self.spec.route(event)
        if path is None:
            await settle(
                self._broker,
                self.spec,
                message,
                Verdict.DROP,
                "no routing rule matches it and there is no default route",
            )
            return
        try:
            verdict = await self._channel.deliver(self.spec, event, path)
            reason = f"the app answered {verdict.value}"
        except AppUnimplementedError as err:
            verdict, reason = Verdict.DROP, str(err)
        except AppChannelError as err:
            verdict, reason = Verdict.RETRY, str(err)
        await settle(self._broker, self.spec, message, verdict, reason)
