"""`state.sqlite`: state in an SQLite file, for standalone use that survives restarts.

Client: aiosqlite, which runs the standard library's `sqlite3` on one worker thread per
connection, so no SQLite call blocks the event loop. Every write runs in a
`BEGIN IMMEDIATE` transaction (the ETag check and the write cannot be split by another
writer, even one in another process sharing the file); ETags come from a counter
stored in the same file, so they are never reused. Expired rows are invisible to
reads and deleted every `cleanupInterval`.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from ottava_sidecar.components.backends.options import Seconds, identifier
from ottava_sidecar.components.errors import ComponentError, ETagInvalidError, ETagMismatchError
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

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger(__name__)

LIVE = "(expires_at IS NULL OR expires_at > ?)"
SCAN_BATCH = 500  # rows a query reads at a time


class SqliteStateMetadata(StateMetadata):
    database_path: str = Field(
        default=".ottava/state.db",
        alias="databasePath",
        min_length=1,
        description="The database file (created with its folder when missing); relative to the sidecar's working directory.",
    )
    table_name: str = Field(default="state", alias="tableName", description="Table of the items.")
    cleanup_interval: Seconds = Field(
        default=3600.0, ge=0, alias="cleanupInterval", description="How often expired rows are deleted; 0 turns it off."
    )
    busy_timeout: Seconds = Field(
        default=5.0, gt=0, alias="busyTimeout", description="How long a write waits for another process's write."
    )


@register("state.sqlite", SqliteStateMetadata)
class SqliteStateStore(StateStore[SqliteStateMetadata]):
    """State in an SQLite file: ETags, TTL and transactions, without any server (standalone use)."""

    features: ClassVar[tuple[str, ...]] = (Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL)

    def __init__(self, name: str, settings: SqliteStateMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.table = identifier(settings.table_name, "tableName")
        self.counter = identifier(settings.table_name + "_etag", "tableName")
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one connection: one statement sequence at a time
        self._cleaner: asyncio.Task[None] | None = None

    async def init(self) -> None:
        import aiosqlite

        path = Path(self.settings.database_path)
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(path, isolation_level=None, timeout=self.settings.busy_timeout)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
                " content_type TEXT NOT NULL DEFAULT '', etag INTEGER NOT NULL, expires_at REAL)"
            )
            await self._db.execute(f"CREATE TABLE IF NOT EXISTS {self.counter} (id INTEGER PRIMARY KEY, value INTEGER)")
            await self._db.execute(f"INSERT OR IGNORE INTO {self.counter} (id, value) VALUES (1, 0)")
        except (OSError, aiosqlite.Error) as err:
            raise ComponentError(f"cannot open SQLite database {path}: {err}") from None
        if self.settings.cleanup_interval > 0:
            self._cleaner = asyncio.create_task(self._clean_up(), name=f"{self.name}-ttl")

    async def close(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleaner
        if self._db is not None:
            await self._db.close()
            self._db = None

    @contextlib.asynccontextmanager
    async def _session(self, doing: str, *, write: bool) -> AsyncIterator["aiosqlite.Connection"]:
        import aiosqlite

        if self._db is None:
            raise ComponentError(f"state store {self.name} is closed")
        async with self._lock:
            db = self._db
            try:
                if write:
                    await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if write:
                        await db.execute("ROLLBACK")
                    raise
                if write:
                    await db.execute("COMMIT")
            except aiosqlite.Error as err:
                raise ComponentError(f"{doing} failed in SQLite database {self.settings.database_path}: {err}") from err

    async def get(self, key: str) -> StateItem | None:
        return (await self.bulk_get([key]))[0]

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        found: dict[str, StateItem] = {}
        async with self._session(f"reading {len(keys)} key(s)", write=False) as db:
            now = time.time()
            for key in keys:
                rows = await db.execute_fetchall(
                    f"SELECT value, content_type, etag, expires_at FROM {self.table} WHERE key = ? AND {LIVE}",
                    (key, now),
                )
                for row in rows:
                    found[key] = _item(key, *row)
        return [found.get(key) for key in keys]

    async def scan(self, prefix: str) -> AsyncGenerator[Sequence[StateItem], None]:
        after = None  # the last key of the batch before: batches in key order, each a short read
        while True:
            async with self._session(f"scanning keys starting {prefix!r}", write=False) as db:
                rows = await db.execute_fetchall(
                    f"SELECT key, value, content_type, etag, expires_at FROM {self.table}"
                    f" WHERE substr(key, 1, ?) = ? AND (? IS NULL OR key > ?) AND {LIVE} ORDER BY key LIMIT ?",
                    (len(prefix), prefix, after, after, time.time(), SCAN_BATCH),
                )
            items = [_item(*row) for row in rows]
            if items:
                yield items
            if len(items) < SCAN_BATCH:
                return
            after = items[-1].key

    async def set(self, request: SetRequest) -> None:
        await self.transact([request])

    async def delete(self, request: DeleteRequest) -> None:
        await self.transact([request])

    async def transact(self, operations: Sequence[Operation]) -> None:
        # One BEGIN IMMEDIATE ... COMMIT; any failure rolls every operation back.
        check_operations(operations)
        etags = [_etag(op.etag) for op in operations]
        async with self._session(f"writing {len(operations)} key(s)", write=True) as db:
            now = time.time()
            for op, etag in zip(operations, etags, strict=True):
                cursor = await db.execute(f"SELECT etag FROM {self.table} WHERE key = ? AND {LIVE}", (op.key, now))
                row = await cursor.fetchone()
                stored = row[0] if row is not None else None
                if etag is not None and stored != etag:
                    raise ETagMismatchError(f"etag {op.etag} does not match the stored one for {op.key!r}")
                if etag is None and op.concurrency is Concurrency.FIRST_WRITE and stored is not None:
                    raise ETagMismatchError(f"item {op.key!r} already exists and no etag was passed")
                if isinstance(op, DeleteRequest):
                    await db.execute(f"DELETE FROM {self.table} WHERE key = ?", (op.key,))
                    continue
                cursor = await db.execute(f"UPDATE {self.counter} SET value = value + 1 RETURNING value")
                counter = await cursor.fetchone()
                assert counter is not None  # the row is created at init
                next_etag = counter[0]
                ttl = op.ttl_seconds if op.ttl_seconds is not None and op.ttl_seconds >= 0 else None
                await db.execute(
                    f"INSERT OR REPLACE INTO {self.table} (key, value, content_type, etag, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (op.key, op.value, op.content_type, next_etag, None if ttl is None else now + ttl),
                )

    async def _clean_up(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup_interval)
            try:
                async with self._session("deleting expired items", write=True) as db:
                    await db.execute(f"DELETE FROM {self.table} WHERE expires_at <= ?", (time.time(),))
            except ComponentError as err:
                log.warning("state store %s: clean-up of expired items failed: %s", self.name, err)


def _item(key: str, value: bytes, content_type: str, etag: int, expires_at: float | None) -> StateItem:
    expires = _wall(expires_at) if expires_at is not None else None
    return StateItem(key, bytes(value), str(etag), content_type, {"ttlExpireTime": expires} if expires else {})


def _etag(etag: str | None) -> int | None:
    if not etag:
        return None
    if not etag.isdigit() or len(etag) > 18:
        raise ETagInvalidError(f"etag {etag!r} is not one this store issued")
    return int(etag)


def _wall(epoch: float) -> str | None:
    """The expiry as Dapr shows it; None past year 9999 (a TTL stored before TTLs were checked)."""
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return None
