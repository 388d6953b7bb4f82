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

from ottava_sidecar import backoff
from ottava_sidecar.apperrors import (
    AppChannelError,
    AppTimeoutError,
    AppUnavailableError,
    AppUnimplementedError,
)
from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse
from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict

__all__ = ["AppChannel", "AppChannelError", "AppTimeoutError", "AppUnavailableError", "AppUnimplementedError"]


class AppChannel(abc.ABC):
    protocol: str = ""

    def __init__(self, app_id: str, host: str, port: int, *, timeout: float) -> None:
        self.app_id = app_id
        self.host = host
        self.port = port
        self.timeout = timeout

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
    async def list_subscriptions(self) -> list[SubscriptionSpec]:
        """The app's programmatic subscriptions (empty when it declares none)."""

    @abc.abstractmethod
    async def deliver(self, subscription: SubscriptionSpec, event: TopicEvent, path: str) -> Verdict:
        """Hand `event` to the app; its verdict, or an `AppChannelError`."""

    @abc.abstractmethod
    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        """Call a method of the app; its answer whatever its status, or an `AppChannelError`."""

    async def close(self) -> None:  # noqa: B027 - most channels hold connections; some do not
        """Release connections."""
