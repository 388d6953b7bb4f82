"""`state.in-memory`: a process-local store with the full contract (ETag, TTL, transactions).

Everything runs on the event loop without awaiting in the middle of an update, so each
call (and each transaction) is atomic without locks. A write builds every new entry
before it changes any, so an operation that cannot be carried out leaves nothing
behind. Bulk reads hand the event loop back every `CHUNK` keys, so one large read
does not stall every other call of the sidecar.
"""

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import Field

from ottava_sidecar.components.errors import ETagInvalidError, ETagMismatchError
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.state.base import (
    Concurrency,
    DeleteRequest,
    Feature,
    Operation,
    SetRequest,
    StateItem,
    StateMetadata,
    StateStore,
    check_operations,
)

# Keys read between two returns to the event loop: about a millisecond of work.
CHUNK = 1000


class InMemoryStateMetadata(StateMetadata):
    cleanup_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        alias="cleanupIntervalInSeconds",
        description="How often expired items are purged.",
    )


# value, etag, content type, time.monotonic() deadline, the same instant as wall-clock
# text (for the ttlExpireTime metadata). A plain tuple of plain values, which the garbage
# collector stops tracking: a store of many items does not lengthen every collection.
_Entry = tuple[bytes, int, str, float | None, str | None]


@register("state.in-memory", InMemoryStateMetadata)
class InMemoryStateStore(StateStore[InMemoryStateMetadata]):
    """Process-local state: ETags, TTL and transactions; lost when the sidecar stops."""

    features: ClassVar[tuple[str, ...]] = (Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL)

    def __init__(self, name: str, settings: InMemoryStateMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._items: dict[str, _Entry] = {}
        self._etags = itertools.count(1)
        self._cleaner: asyncio.Task[None] | None = None

    async def init(self) -> None:
        self._cleaner = asyncio.create_task(self._purge_expired(), name=f"{self.name}-ttl")

    async def close(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleaner
        self._items.clear()

    async def get(self, key: str) -> StateItem | None:
        return self._item(key)

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        items: list[StateItem | None] = []
        for start in range(0, len(keys), CHUNK):
            if start:
                await asyncio.sleep(0)
            items += [self._item(key) for key in keys[start : start + CHUNK]]
        return items

    async def set(self, request: SetRequest) -> None:
        # `transact` of one operation, without its lists: the most common write.
        check_operations((request,))
        self._check(request.key, request.etag, request.concurrency)
        value, _, content_type, expires_at, expires_wall = self._entry(request)
        self._items[request.key] = (value, next(self._etags), content_type, expires_at, expires_wall)

    async def delete(self, request: DeleteRequest) -> None:
        await self.transact([request])

    async def transact(self, operations: Sequence[Operation]) -> None:
        # Check every precondition and build every new entry before changing anything,
        # with no await in between: all or nothing, and no other call sees half of it.
        check_operations(operations)
        for op in operations:
            self._check(op.key, op.etag, op.concurrency)
        new = [self._entry(op) if isinstance(op, SetRequest) else None for op in operations]
        for op, entry in zip(operations, new, strict=True):
            if entry is None:
                self._items.pop(op.key, None)
            else:
                value, _, content_type, expires_at, expires_wall = entry
                self._items[op.key] = (value, next(self._etags), content_type, expires_at, expires_wall)

    async def scan(self, prefix: str) -> AsyncGenerator[Sequence[StateItem], None]:
        keys = [key for key in self._items if key.startswith(prefix)]
        for start in range(0, len(keys), CHUNK):
            if start:
                await asyncio.sleep(0)
            batch = (self._item(key) for key in keys[start : start + CHUNK])
            yield [item for item in batch if item is not None]

    def _item(self, key: str) -> StateItem | None:
        entry = self._live(key)
        if entry is None:
            return None
        value, etag, content_type, _, expires_wall = entry
        metadata = {"ttlExpireTime": expires_wall} if expires_wall else {}
        return StateItem(key, value, str(etag), content_type, metadata)

    def _live(self, key: str) -> _Entry | None:
        entry = self._items.get(key)
        if entry is not None and entry[3] is not None and entry[3] <= time.monotonic():
            del self._items[key]
            return None
        return entry

    def _check(self, key: str, etag: str | None, concurrency: Concurrency) -> None:
        entry = self._live(key)
        if etag:
            if not etag.isdigit():
                raise ETagInvalidError(f"etag {etag!r} is not one this store issued")
            if entry is None:
                raise ETagMismatchError("the item does not exist and an etag was passed")
            if str(entry[1]) != etag:
                raise ETagMismatchError(f"etag {etag!r} does not match the stored one")
        elif concurrency is Concurrency.FIRST_WRITE and entry is not None:
            raise ETagMismatchError("the item already exists and no etag was passed")

    @staticmethod
    def _entry(request: SetRequest) -> _Entry:
        """The entry a set would store, its ETag still to be drawn."""
        expires_at = expires_wall = None
        if request.ttl_seconds is not None and request.ttl_seconds >= 0:
            expires_at = time.monotonic() + request.ttl_seconds
            wall = datetime.fromtimestamp(time.time() + request.ttl_seconds, UTC)
            expires_wall = wall.isoformat(timespec="seconds").replace("+00:00", "Z")
        return (request.value, 0, request.content_type, expires_at, expires_wall)

    async def _purge_expired(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup_interval_seconds)
            now = time.monotonic()
            expired = [k for k, e in self._items.items() if e[3] is not None and e[3] <= now]
            for key in expired:
                del self._items[key]
