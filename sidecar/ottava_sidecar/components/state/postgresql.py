"""`state.postgresql`: state in one PostgreSQL table, with ETags, TTL and transactions.

The table (created at start-up when missing) holds the value as bytes, its content
type, an ETag drawn from a sequence (never reused, even after a delete), and an
expiry time. Reads ignore expired rows; a background task deletes them every
`cleanupInterval`. ETag checks are conditions of the UPDATE/INSERT/DELETE statement
itself, so they hold under concurrent writers; a transaction runs every operation in
one database transaction and rolls back on the first failed check.
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from ottava_sidecar.components.backends.options import Seconds, identifier
from ottava_sidecar.components.backends.postgresql import PostgresConnection, PostgresMetadata
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

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

LIVE = "(expires_at IS NULL OR expires_at > now())"
SCAN_BATCH = 500  # rows a query reads at a time
EXPIRY = "CASE WHEN $4::bigint IS NULL THEN NULL ELSE now() + make_interval(secs => $4::bigint) END"


class PostgresStateMetadata(StateMetadata, PostgresMetadata):
    table_name: str = Field(
        default="state", alias="tableName", description="Table of the items (`schema.table` allowed)."
    )
    cleanup_interval: Seconds = Field(
        default=3600.0,
        ge=0,
        alias="cleanupInterval",
        description="How often expired rows are deleted ('1h'); 0 turns the clean-up off.",
    )


@register("state.postgresql", PostgresStateMetadata)
class PostgresStateStore(StateStore[PostgresStateMetadata]):
    """State in a PostgreSQL table: ETags, TTL with periodic clean-up, transactions."""

    features: ClassVar[tuple[str, ...]] = (Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL)

    def __init__(self, name: str, settings: PostgresStateMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.db = PostgresConnection(settings, f"state store {name}")
        self.table = identifier(settings.table_name, "tableName")
        self.sequence = identifier(settings.table_name + "_etag", "tableName")
        self._cleaner: asyncio.Task[None] | None = None

    async def init(self) -> None:
        await self.db.open()
        await self.db.run("creating the state table", self._create_schema)
        if self.settings.cleanup_interval > 0:
            self._cleaner = asyncio.create_task(self._clean_up(), name=f"{self.name}-ttl")

    async def _create_schema(self, connection: "PoolConnectionProxy") -> None:
        async with connection.transaction():
            # Sidecars starting together must not race to create the same table.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ottava-schema {self.table}")
            await connection.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {self.table} (
                    key TEXT PRIMARY KEY,
                    value BYTEA NOT NULL,
                    content_type TEXT NOT NULL DEFAULT '',
                    etag BIGINT NOT NULL,
                    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                    expires_at TIMESTAMPTZ
                );
                CREATE SEQUENCE IF NOT EXISTS {self.sequence};
                """
            )

    async def close(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleaner
        await self.db.close()

    async def get(self, key: str) -> StateItem | None:
        return (await self.bulk_get([key]))[0]

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        query = f"SELECT key, value, content_type, etag, expires_at FROM {self.table} WHERE key = ANY($1) AND {LIVE}"
        rows = await self.db.run(f"reading {len(keys)} key(s)", lambda c: c.fetch(query, list(keys)))
        found = {row["key"]: _item(row) for row in rows}
        return [found.get(key) for key in keys]

    async def scan(self, prefix: str) -> AsyncGenerator[Sequence[StateItem], None]:
        # Batches in key order (the primary key's index, in the table's collation), each its
        # own short statement: no transaction stays open while the caller evaluates.
        query = (
            f"SELECT key, value, content_type, etag, expires_at FROM {self.table}"
            f" WHERE starts_with(key, $1) AND ($2::text IS NULL OR key > $2) AND {LIVE}"
            f" ORDER BY key LIMIT {SCAN_BATCH}"
        )
        after: str | None = None
        while True:
            fetch = functools.partial(_fetch, query, prefix, after)
            rows = await self.db.run(f"scanning keys starting {prefix!r}", fetch)
            if rows:
                yield [_item(row) for row in rows]
            if len(rows) < SCAN_BATCH:
                return
            after = rows[-1]["key"]

    async def set(self, request: SetRequest) -> None:
        check_operations([request])
        await self.db.run(f"saving {request.key!r}", lambda c: self._apply(c, request))

    async def delete(self, request: DeleteRequest) -> None:
        await self.db.run(f"deleting {request.key!r}", lambda c: self._apply(c, request))

    async def transact(self, operations: Sequence[Operation]) -> None:
        check_operations(operations)

        async def work(connection: "PoolConnectionProxy") -> None:
            async with connection.transaction():
                for op in operations:
                    await self._apply(connection, op)

        await self.db.run(f"a transaction of {len(operations)} operation(s)", work)

    async def _apply(self, c: "PoolConnectionProxy", op: Operation) -> None:
        etag = _etag(op.etag)
        first_write = op.concurrency is Concurrency.FIRST_WRITE
        if isinstance(op, SetRequest):
            ttl = op.ttl_seconds if op.ttl_seconds is not None and op.ttl_seconds >= 0 else None
            values = f"nextval('{self.sequence}'), $2, $3, {EXPIRY}, now()"
            if etag is not None:
                status = await c.execute(
                    f"UPDATE {self.table} SET (etag, value, content_type, expires_at, updated_at) = ({values})"
                    f" WHERE key = $1 AND etag = $5 AND {LIVE}",
                    op.key, op.value, op.content_type, ttl, etag,
                )  # fmt: skip
                if status == "UPDATE 0":
                    raise ETagMismatchError(f"etag {op.etag} does not match the stored one for {op.key!r}")
                return
            insert = (
                f"INSERT INTO {self.table} AS t (key, etag, value, content_type, expires_at, updated_at)"
                f" VALUES ($1, {values}) ON CONFLICT (key) DO UPDATE"
                " SET (etag, value, content_type, expires_at, updated_at) ="
                " (EXCLUDED.etag, EXCLUDED.value, EXCLUDED.content_type, EXCLUDED.expires_at, EXCLUDED.updated_at)"
            )
            if first_write:  # only a new (or expired) key may be written without an etag
                insert += " WHERE t.expires_at IS NOT NULL AND t.expires_at <= now()"
            status = await c.execute(insert, op.key, op.value, op.content_type, ttl)
            if status == "INSERT 0 0":
                raise ETagMismatchError(f"item {op.key!r} already exists and no etag was passed")
            return
        if etag is not None:
            status = await c.execute(f"DELETE FROM {self.table} WHERE key = $1 AND etag = $2 AND {LIVE}", op.key, etag)
            if status == "DELETE 0":
                raise ETagMismatchError(f"etag {op.etag} does not match the stored one for {op.key!r}")
            return
        if first_write and await c.fetchval(f"SELECT 1 FROM {self.table} WHERE key = $1 AND {LIVE}", op.key):
            raise ETagMismatchError(f"item {op.key!r} already exists and no etag was passed")
        await c.execute(f"DELETE FROM {self.table} WHERE key = $1", op.key)

    async def _clean_up(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup_interval)
            try:
                status = await self.db.run(
                    "deleting expired items",
                    lambda c: c.execute(f"DELETE FROM {self.table} WHERE expires_at <= now()"),
                )
                log.debug("state store %s: %s expired", self.name, status)
            except Exception as err:  # the next round tries again
                log.warning("state store %s: clean-up of expired items failed: %s", self.name, err)


async def _fetch(query: str, *args_then_connection: Any) -> list[Any]:
    *args, connection = args_then_connection
    return list(await connection.fetch(query, *args))


def _item(row: Any) -> StateItem:
    expires = {"ttlExpireTime": _wall(row["expires_at"])} if row["expires_at"] is not None else {}
    return StateItem(row["key"], row["value"], str(row["etag"]), row["content_type"], expires)


def _etag(etag: str | None) -> int | None:
    if not etag:
        return None
    if not etag.isdigit() or len(etag) > 18:
        raise ETagInvalidError(f"etag {etag!r} is not one this store issued")
    return int(etag)


def _wall(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
