"""Interface of configuration stores.

Items are addressed as Layotto does: (app_id, group, label, key), with tags and
metadata beside the content. Dapr's API, which knows keys only, reaches the same items
with the sidecar's app id and the group/label given in request metadata (defaults below).

A subscriber that does not read must not make the sidecar grow: what is queued for it
is bounded in bytes (`SubscriberQueue`). Past the bound the subscriber is dropped, its
queue emptied, and its reader gets `SubscriberOverflowError`; one that keeps up is never
dropped, whatever the size of one change.
"""

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from ottava_sidecar import limits, metrics
from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata

DEFAULT_GROUP: Final = "default"
DEFAULT_LABEL: Final = "default"


@dataclass(slots=True)
class ConfigurationItem:
    key: str
    content: str
    group: str = DEFAULT_GROUP
    label: str = DEFAULT_LABEL
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    version: str = ""
    deleted: bool = False  # set on notifications of deletion


@dataclass(frozen=True, slots=True)
class ConfigurationQuery:
    """Which items: every key of the group/label when `keys` is empty."""

    app_id: str
    group: str = DEFAULT_GROUP
    label: str = DEFAULT_LABEL
    keys: tuple[str, ...] = ()

    def matches(self, app_id: str, item: ConfigurationItem) -> bool:
        return (
            app_id == self.app_id
            and item.group == self.group
            and item.label == self.label
            and (not self.keys or item.key in self.keys)
        )


def items_size(items: Iterable[ConfigurationItem]) -> int:
    """What a batch of items costs to hold: the UTF-8 bytes of every string in it."""
    total = 0
    for item in items:
        strings = [item.key, item.content, item.group, item.label, item.version]
        strings += [*item.tags, *item.tags.values(), *item.metadata, *item.metadata.values()]
        total += sum(len(s.encode()) for s in strings)
    return total


class SubscriberOverflowError(Exception):
    """More than the subscriber buffer limit was queued for a subscriber that did not read it."""

    def __init__(self, queued_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"{queued_bytes} bytes of changes were queued unread, above the subscriber buffer limit "
            f"of {limit_bytes} bytes (subscriber_buffer_bytes)"
        )
        self.queued_bytes = queued_bytes
        self.limit_bytes = limit_bytes


class _Ended(Exception):
    """The queue was closed and every item in it read."""


T = TypeVar("T")


class SubscriberQueue(Generic[T]):
    """What is waiting for one subscriber, bounded in bytes.

    An item is always accepted into an empty queue; otherwise an item that would take the
    queue over `limit_bytes` overflows it: the queue is emptied and ended with
    `SubscriberOverflowError`. `end` lets the items already queued be read first, then
    `get` raises the reason given (or ends the iteration when there is none).
    """

    def __init__(self, limit_bytes: int, api: str) -> None:
        self.limit_bytes = limit_bytes
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._end: BaseException | None = None
        self._gauge = metrics.SUBSCRIBER_BUFFERED_BYTES.labels(api)
        self._dropped = metrics.SUBSCRIBERS_DROPPED.labels(api)

    @property
    def ended(self) -> bool:
        return self._end is not None

    def put(self, item: T, size: int) -> bool:
        """Queue `item`; False when the queue has ended, or overflows now."""
        if self._end is not None:
            return False
        if self._items and self._bytes + size > self.limit_bytes:
            self._dropped.inc()
            self.end(SubscriberOverflowError(self._bytes + size, self.limit_bytes), discard=True)
            return False
        self._items.append((item, size))
        self._bytes += size
        self._gauge.inc(size)
        self._ready.set()
        return True

    def end(self, reason: BaseException | None = None, *, discard: bool = False) -> None:
        """No more items; with `discard`, the queued ones are thrown away too (their memory freed)."""
        if self._end is None:
            self._end = reason if reason is not None else _Ended()
        if discard:
            self._items.clear()
            self._gauge.dec(self._bytes)
            self._bytes = 0
        self._ready.set()

    async def get(self) -> T:
        while not self._items:
            if self._end is not None:
                raise self._end
            self._ready.clear()
            await self._ready.wait()
        item, size = self._items.popleft()
        self._bytes -= size
        self._gauge.dec(size)
        return item

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.get()
            except _Ended:
                return
            yield item


class ConfigurationWatch:
    """A subscription: an async iterator of batches of changed items, until closed.

    At most `buffer_bytes` of changes wait unread (`SubscriberQueue`); past that the
    watch closes itself and its iterator raises `SubscriberOverflowError`.
    """

    def __init__(
        self,
        query: ConfigurationQuery,
        on_close: Callable[["ConfigurationWatch"], None],
        *,
        buffer_bytes: int = limits.Limits.subscriber_buffer_bytes,
    ) -> None:
        self.query = query
        self._changes: SubscriberQueue[list[ConfigurationItem]] = SubscriberQueue(buffer_bytes, "configuration")
        self._on_close = on_close
        self.closed = False

    def push(self, items: list[ConfigurationItem]) -> None:
        if not self.closed and items and not self._changes.put(items, items_size(items)):
            self.close()  # it overflowed: the store stops feeding it

    def close(self, *, discard: bool = False) -> None:
        """Stop the watch: the changes already queued are still read, unless `discard` drops them.

        A subscriber that goes away closes with `discard`, which frees what it held.
        """
        self._changes.end(discard=discard)
        if not self.closed:
            self.closed = True
            self._on_close(self)

    def __aiter__(self) -> AsyncIterator[list[ConfigurationItem]]:
        return aiter(self._changes)


ConfigurationSettingsT = TypeVar("ConfigurationSettingsT", bound=ComponentMetadata)


class ConfigurationStore(ComponentInstance[ConfigurationSettingsT]):
    async def get(self, query: ConfigurationQuery) -> list[ConfigurationItem]:
        raise NotImplementedError

    async def save(self, app_id: str, items: Sequence[ConfigurationItem]) -> None:
        raise NotImplementedError

    async def delete(self, query: ConfigurationQuery) -> None:
        raise NotImplementedError

    async def subscribe(
        self, query: ConfigurationQuery, *, buffer_bytes: int = limits.Limits.subscriber_buffer_bytes
    ) -> ConfigurationWatch:
        """A watch of `query` that holds at most `buffer_bytes` of unread changes."""
        raise NotImplementedError
