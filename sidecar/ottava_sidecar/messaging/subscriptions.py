"""What an app subscribes to, however it said so (app channel or stream).

A subscription names a pub/sub component and a topic, the app route(s) that get its
events (routing rules first, in order, then the default), options for the broker, and
optionally a dead-letter topic for events the app cannot process.
"""

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.routing import Expression, compile_rule

MAX_DELIVERY_ATTEMPTS = "maxDeliveryAttempts"


class Kind(enum.StrEnum):
    PROGRAMMATIC = "PROGRAMMATIC"  # read from the app (ListTopicSubscriptions, GET /dapr/subscribe)
    STREAMING = "STREAMING"  # opened by the app over a gRPC stream


class Verdict(enum.StrEnum):
    """The app's answer to a delivered event."""

    SUCCESS = "SUCCESS"  # processed: acknowledge
    RETRY = "RETRY"  # not processed: redeliver later
    DROP = "DROP"  # cannot be processed: acknowledge, dead-letter if configured, log


@dataclass(frozen=True)
class RoutingRule:
    match: str
    path: str
    expression: Expression


@dataclass
class SubscriptionSpec:
    pubsub_name: str
    topic: str
    kind: Kind = Kind.PROGRAMMATIC
    default_path: str = ""
    rules: list[RoutingRule] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    dead_letter_topic: str = ""

    @classmethod
    def create(
        cls,
        pubsub_name: str,
        topic: str,
        *,
        kind: Kind = Kind.PROGRAMMATIC,
        default_path: str = "",
        rules: list[tuple[str, str]] | None = None,
        metadata: Mapping[str, str] | None = None,
        dead_letter_topic: str = "",
    ) -> "SubscriptionSpec":
        """Validates the rules (raises `routing.RuleError` naming a bad one)."""
        return cls(
            pubsub_name,
            topic,
            kind,
            default_path,
            [RoutingRule(match, path, compile_rule(match)) for match, path in rules or []],
            dict(metadata or {}),
            dead_letter_topic,
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.pubsub_name, self.topic)

    @property
    def raw_payload(self) -> bool:
        return cloudevents.is_raw(self.metadata)

    @property
    def max_attempts(self) -> int:
        """Deliveries of an event before it is given up on (0: never give up)."""
        try:
            return max(0, int(self.metadata.get(MAX_DELIVERY_ATTEMPTS, "0")))
        except ValueError:
            return 0

    def route(self, event: cloudevents.TopicEvent) -> str | None:
        """The app route for `event`: the first matching rule's path, else the default; None if neither."""
        if self.rules:
            attributes = event.as_cloudevent()
            for rule in self.rules:
                if rule.expression.matches(attributes):
                    return rule.path
        return self.default_path if self.default_path or not self.rules else None

    def source(self, app_protocol: str) -> str:
        """Where the subscription came from, for the info endpoint (an app of `app_protocol` declared it)."""
        if self.kind is Kind.STREAMING:
            return "streaming"  # a SubscribeTopicEvents stream the app opened
        return "ListTopicSubscriptions" if app_protocol == "grpc" else "GET /dapr/subscribe"

    def describe(self) -> dict[str, Any]:
        """As the info endpoint and Dapr's HTTP metadata API show it."""
        described: dict[str, Any] = {
            "pubsubname": self.pubsub_name,
            "topic": self.topic,
            "type": self.kind.value,
            "metadata": self.metadata,
            "rules": [{"match": r.match, "path": r.path} for r in self.rules]
            + ([{"match": "", "path": self.default_path}] if self.default_path else []),
        }
        if self.dead_letter_topic:
            described["deadLetterTopic"] = self.dead_letter_topic
        return described
