"""Interface of the app channel, and the errors that say why the app could not be reached.

Each error names the app and its address, so a log line or an API error tells the user
which process to look at.
"""

import abc
import asyncio
import contextlib
import time

from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse
from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict


class AppChannelError(Exception):
    """The app did not answer as it should; the message says why."""


class AppUnavailableError(AppChannelError):
    """Nothing accepts connections on the app port (the app is down or still starting)."""


class AppTimeoutError(AppChannelError):
    """The app took longer than the app timeout to answer."""


class AppUnimplementedError(AppChannelError):
    """The app does not serve this callback."""


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

    async def wait_until_listening(self, *, interval: float = 0.05, max_interval: float = 0.5) -> float:
        """Return once the app port accepts a connection; the seconds waited."""
        started = time.monotonic()
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(interval)
                interval = min(interval * 2, max_interval)
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
