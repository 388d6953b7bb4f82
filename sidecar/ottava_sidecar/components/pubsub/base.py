"""Interface of pub/sub brokers.

Delivery is at-least-once: a handler that raises gets the message again later.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ottava_sidecar.components.base import Component, ComponentMetadata


@dataclass(slots=True)
class Message:
    topic: str
    data: bytes
    id: str
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Message], Awaitable[None]]

PubSubSettingsT = TypeVar("PubSubSettingsT", bound=ComponentMetadata)


class Subscription:
    """Handle of a subscription; `close` stops delivery to it."""

    async def close(self) -> None:
        raise NotImplementedError


class PubSub(Component[PubSubSettingsT]):
    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: str = "",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Publish and return the broker's message id."""
        raise NotImplementedError

    async def subscribe(self, topic: str, handler: Handler) -> Subscription:
        raise NotImplementedError
