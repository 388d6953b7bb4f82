"""Interface of pub/sub brokers.

Delivery is at-least-once per subscription: a handler that returns acknowledges the
message; a handler that raises gets it again later (with a backoff). A broker keeps the
order of a topic's messages for each subscription, per partition key (`lanes`): a
redelivery holds back the messages of its key published after it rather than letting
them overtake it, and messages without a key keep the topic's order. Messages of
different keys may be in handlers at the same time.

Publishing never grows a broker without bound: when a subscriber cannot keep up, the
broker refuses new messages with `BrokerFullError`, which publishers see as
RESOURCE_EXHAUSTED (back-pressure), instead of buffering them all.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata
from ottava_sidecar.components.errors import ComponentError

__all__ = ["BrokerFullError", "Handler", "Message", "PubSub", "Subscription"]


@dataclass(slots=True)
class Message:
    topic: str
    data: bytes
    id: str  # the broker's id of the message, the same on every redelivery
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    attempt: int = 1  # 1 on the first delivery to a subscription, n on the nth


Handler = Callable[[Message], Awaitable[None]]

PubSubSettingsT = TypeVar("PubSubSettingsT", bound=ComponentMetadata)


class BrokerFullError(ComponentError):
    """The broker holds as many undelivered messages as it may; publish again later."""


class Subscription:
    """Handle of a subscription; `close` stops delivery to it."""

    async def close(self) -> None:
        raise NotImplementedError


class PubSub(ComponentInstance[PubSubSettingsT]):
    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Publish and return the broker's message id; `BrokerFullError` when it is full."""
        raise NotImplementedError

    async def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> Subscription:
        """Deliver every message published to `topic` from now on to `handler`."""
        raise NotImplementedError
