"""Delivery lanes: a subscription's messages, concurrently across partition keys, in order within one.

A message published with the metadata `partitionKey` (as Dapr's Kafka, Event Hubs and
Pulsar components name it) goes to the lane of that key; a message without one goes
to the one lane of keyless messages. A lane delivers its messages one at a time, in
the order they were put in, each until its handler is done with it (retries
included), so a failing message holds back the later messages of its own lane only.
Different lanes deliver at the same time, at most `limit` of them at once per
subscription (`maxConcurrentHandlers`); when more lanes have work, they take turns,
one message each, in the order they became ready.

Keyless messages share one lane, so a topic published without keys is delivered in
publish order, one message at a time, as before lanes existed; `maxConcurrentHandlers: 1`
makes a subscription deliver every message in publish order, keys or not. A subscription
whose metadata says `inOrder: "false"` gives each keyless message a lane of its own, so
they are delivered concurrently, in no particular order (a bulk subscription does, so that
its batches fill up: `messaging.delivery.BulkDelivery`).
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

from pydantic import Field

from ottava_sidecar.components.base import ComponentMetadata

__all__ = ["IN_ORDER", "MAX_CONCURRENT_HANDLERS", "PARTITION_KEY", "Lanes", "LanesMetadata", "partition_key"]

log = logging.getLogger(__name__)

#: Publish metadata naming the partition key of a message.
PARTITION_KEY = "partitionKey"
#: Subscription metadata (and component metadata field): lanes delivering at once.
MAX_CONCURRENT_HANDLERS = "maxConcurrentHandlers"
DEFAULT_CONCURRENT_HANDLERS = 16
#: Subscription metadata: "false" delivers keyless messages concurrently, in no order.
IN_ORDER = "inOrder"

T = TypeVar("T")


class LanesMetadata(ComponentMetadata):
    max_concurrent_handlers: int = Field(
        default=DEFAULT_CONCURRENT_HANDLERS,
        ge=1,
        alias=MAX_CONCURRENT_HANDLERS,
        description="Messages of different partition keys a subscription delivers at once (each key in order; "
        "messages without a partitionKey one at a time, in publish order); a subscription's own metadata "
        "may set it too. 1: every message in publish order.",
    )

    def concurrent_handlers(self, subscription_metadata: Mapping[str, str] | None) -> int:
        """The subscription's own `maxConcurrentHandlers` when it is a number ≥ 1, else the component's."""
        try:
            own = int((subscription_metadata or {}).get(MAX_CONCURRENT_HANDLERS, ""))
        except ValueError:
            return self.max_concurrent_handlers
        return own if own >= 1 else self.max_concurrent_handlers

    def keyless_in_order(self, subscription_metadata: Mapping[str, str] | None) -> bool:
        """Whether keyless messages share one lane (the default), or each has its own (`inOrder: "false"`)."""
        return (subscription_metadata or {}).get(IN_ORDER, "").strip().lower() != "false"


def partition_key(metadata: Mapping[str, str]) -> str | None:
    """The lane of a message with this publish metadata: its `partitionKey`, None when it has none."""
    return metadata.get(PARTITION_KEY) or None


class Lanes(Generic[T]):
    """Delivers items with `deliver`, lane by lane; see the module docstring.

    `deliver` is expected to finish an item (retrying as long as it takes); an exception
    it raises is logged and the item counts as done (a broker-backed subscription left it
    unacknowledged, so the broker delivers it again later).
    """

    def __init__(
        self, deliver: Callable[[T], Awaitable[None]], limit: int, *, name: str, keyless_in_order: bool = True
    ) -> None:
        self._deliver = deliver
        self.limit = limit
        self._keyless_in_order = keyless_in_order
        self._unkeyed = 0  # numbers the lanes of keyless messages when each has its own
        self._name = name
        self._lanes: dict[str | None, deque[T]] = {}  # a lane's head is the item in delivery, if any
        self._ready: deque[str | None] = deque()  # lanes with work and none in delivery, in turn order
        self._workers: set[asyncio.Task[None]] = set()
        self._working = 0  # workers that have not left their loop (a done task may still be in the set)
        self._changed = asyncio.Event()
        self.held = 0  # items put and not yet done

    def put(self, item: T, key: str | None) -> None:
        """Queue `item` in the lane of `key`; it is delivered after the lane's earlier items."""
        self.held += 1
        if key is None and not self._keyless_in_order:
            self._unkeyed += 1
            key = f"\0{self._unkeyed}"  # no partition key starts with NUL: a lane of its own
        lane = self._lanes.get(key)
        if lane is not None:  # busy or already waiting for its turn
            lane.append(item)
            return
        self._lanes[key] = deque((item,))
        self._ready.append(key)
        if self._working < self.limit:
            self._working += 1
            worker = asyncio.get_running_loop().create_task(self._work(), name=f"{self._name} delivery")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        try:
            await self._work_lanes()
        finally:
            self._working -= 1

    async def _work_lanes(self) -> None:
        ready, lanes = self._ready, self._lanes
        while ready:
            key = ready.popleft()
            lane = lanes[key]
            item = lane[0]
            try:
                await self._deliver(item)
            except Exception:
                log.exception("delivering a message of %s failed", self._name)
            finally:
                lane.popleft()
                self.held -= 1
                self._changed.set()
            if lane:
                ready.append(key)  # the lane's next item, after the lanes already waiting
            else:
                del lanes[key]

    async def until_below(self, count: int) -> None:
        """Return once fewer than `count` items are held."""
        while self.held >= count:
            self._changed.clear()
            await self._changed.wait()

    async def drained(self) -> None:
        """Return once every item put so far is done."""
        await self.until_below(1)

    async def close(self) -> None:
        """Stop delivering: items in delivery are cancelled, waiting ones forgotten."""
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        if workers:
            await asyncio.wait(workers)
        self._lanes.clear()
        self._ready.clear()
        self._working = 0  # a worker cancelled before it ran never counted itself out
        self.held = 0
        self._changed.set()
