"""Interface of bindings, Dapr's two directions.

An output binding does one of its `operations` when the app invokes it (`InvokeBinding`).
An input binding reads events from its backend and hands each to a handler until it is
closed: the handler returning acknowledges the event, raising leaves it unacknowledged,
and the binding hands it over again after a backoff (Dapr's semantics: success
acknowledges, an error retries). One component may be both (`bindings.mqtt`).
"""

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import ClassVar, TypeVar

from pydantic import Field

from ottava_sidecar import backoff
from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata
from ottava_sidecar.components.errors import ComponentError

log = logging.getLogger(__name__)


class BindingMetadata(ComponentMetadata):
    """What every binding accepts besides its own fields (Dapr's common binding metadata)."""

    direction: str = Field(
        default="",
        alias="direction",
        description='"input", "output" or "input, output": the directions the app uses; '
        "empty means every direction the type supports.",
    )
    route: str = Field(
        default="",
        alias="route",
        description="Input: the app's HTTP path that receives the events; default `/<component name>`.",
    )

    def allows(self, direction: str) -> bool:
        if not self.direction.strip():
            return True
        return direction in {part.strip() for part in self.direction.split(",")}


SettingsT = TypeVar("SettingsT", bound=BindingMetadata)


@dataclasses.dataclass(frozen=True)
class BindingRequest:
    operation: str
    data: bytes = b""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class BindingResponse:
    data: bytes = b""
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class BindingEvent:
    data: bytes
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


#: Hands one event to the app; returns when the app accepted it, raises when it did not.
Handler = Callable[[BindingEvent], Awaitable[None]]


class BindingRequestError(ComponentError):
    """The request cannot be done as asked (a missing `fileName`, a path outside the root)."""


class BindingNotFoundError(BindingRequestError):
    """What the request names does not exist (a file, a key)."""


class OutputBinding(ComponentInstance[SettingsT]):
    #: The operations `invoke` accepts, as Dapr names them ("create", "get", …).
    operations: ClassVar[tuple[str, ...]] = ()

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        """Do `request.operation` (one of `operations`; the API checks it first)."""
        raise NotImplementedError


class InputBinding(ComponentInstance[SettingsT]):
    async def read(self, handler: Handler) -> None:
        """Hand every event to `handler` until cancelled; a failing handler gets the event again."""
        raise NotImplementedError


# How long a failing handler waits before it gets the same event again.
REDELIVERY = backoff.Backoff(first=0.2, cap=5.0)


async def handle_until_done(handler: Handler, event: BindingEvent, *, where: str) -> None:
    """Call `handler` until it returns, with `REDELIVERY` between calls (for bindings that
    keep the event themselves until it is acknowledged: a cron tick, an MQTT message)."""
    delays: Iterator[float] | None = None
    while True:
        try:
            await handler(event)
            return
        except Exception as err:
            if delays is None:
                delays = REDELIVERY.delays()
            delay = next(delays)
            log.warning("%s: the app did not accept the event (%s); again in %.1fs", where, err, delay)
            await asyncio.sleep(delay)
