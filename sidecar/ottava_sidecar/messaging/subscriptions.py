"""What an app subscribes to, however it said so (app channel, stream, or a `Subscription` resource).

A subscription names a pub/sub component and a topic, the app route(s) that get its
events (routing rules first, in order, then the default), options for the broker,
optionally a dead-letter topic for events the app cannot process, and optionally
bulk delivery (`Bulk`: several events per call to the app).
"""

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.routing import Expression, RuleError, compile_rule
from ottava_sidecar.resources import models

log = logging.getLogger(__name__)

MAX_DELIVERY_ATTEMPTS = "maxDeliveryAttempts"


class Kind(enum.StrEnum):
    PROGRAMMATIC = "PROGRAMMATIC"  # read from the app (ListTopicSubscriptions, GET /dapr/subscribe)
    STREAMING = "STREAMING"  # opened by the app over a gRPC stream
    DECLARATIVE = "DECLARATIVE"  # a Subscription resource (resources folder, or the cluster)


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


@dataclass(frozen=True)
class Bulk:
    """Bulk delivery: up to `max_messages` events per call, each batch sent at the latest
    `max_await_ms` after its first event arrived (Dapr's `bulkSubscribe` and its defaults)."""

    max_messages: int = 100
    max_await_ms: int = 1000

    def describe(self) -> dict[str, Any]:
        return {"enabled": True, "maxMessagesCount": self.max_messages, "maxAwaitDurationMs": self.max_await_ms}


def bulk_from(enabled: bool, max_messages: int, max_await_ms: int) -> Bulk | None:
    """Dapr's `bulkSubscribe` fields as a `Bulk` (None when not enabled); 0 or less means the default."""
    if not enabled:
        return None
    default = Bulk()
    return Bulk(
        max_messages if max_messages > 0 else default.max_messages,
        max_await_ms if max_await_ms >= 0 else default.max_await_ms,
    )


@dataclass
class SubscriptionSpec:
    pubsub_name: str
    topic: str
    kind: Kind = Kind.PROGRAMMATIC
    default_path: str = ""
    rules: list[RoutingRule] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    dead_letter_topic: str = ""
    bulk: Bulk | None = None
    name: str = ""  # a declarative subscription's resource name

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
        bulk: Bulk | None = None,
        name: str = "",
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
            bulk,
            name,
        )

    @classmethod
    def declared(cls, resource: models.DeclarativeSubscription) -> "SubscriptionSpec":
        """A `Subscription` resource as a subscription; `routing.RuleError` naming a bad rule.

        A rule without a match is a default route, as in Dapr (and as the app channel reads
        an app's routes); `route` (Dapr's v1alpha1 spelling) is the default route too.
        """
        spec = resource.spec
        routes = spec.routes or models.SubscriptionRoutes()
        rules = [(r.match, r.path) for r in routes.rules if r.match]
        default = spec.route or routes.default or next((r.path for r in routes.rules if not r.match), "")
        bulk = spec.bulk_subscribe
        try:
            return cls.create(
                spec.pubsubname,
                spec.topic,
                kind=Kind.DECLARATIVE,
                default_path=default,
                rules=rules,
                metadata=spec.metadata,
                dead_letter_topic=spec.dead_letter_topic,
                bulk=bulk_from(bulk.enabled, bulk.max_messages_count, bulk.max_await_duration_ms) if bulk else None,
                name=resource.name,
            )
        except RuleError as err:
            raise RuleError(f"Subscription {resource.name!r}: spec.routes.rules: {err}") from None

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
        if self.kind is Kind.DECLARATIVE:
            return f"Subscription {self.name}"
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
        if self.bulk is not None:
            described["bulkSubscribe"] = self.bulk.describe()
        return described

    def same_as(self, other: "SubscriptionSpec") -> bool:
        """Whether `other` subscribes the same way (compiled rules compare by their text)."""
        return self.kind is other.kind and self.name == other.name and self.describe() == other.describe()


def declared_for(app_id: str, resources: Iterable[models.DeclarativeSubscription]) -> list[SubscriptionSpec]:
    """The subscriptions that `resources` declare for app `app_id` (its scopes name it, or are empty).

    A resource whose routing rule is outside the CEL subset is left out, with an error in the
    log naming it (`ottava run` refuses such a folder before it starts; the operator's
    webhook refuses such a resource, unless it was down).
    """
    specs: list[SubscriptionSpec] = []
    for resource in resources:
        if not resource.in_scope(app_id):
            log.info(
                "Subscription %s is not for app %s (scopes: %s)",
                resource.name,
                app_id,
                ", ".join(resource.scopes),
                extra={"subscription": resource.name},
            )
            continue
        try:
            specs.append(SubscriptionSpec.declared(resource))
        except RuleError as err:
            log.error("ignoring %s", err, extra={"subscription": resource.name})
    return specs
