"""`sequencer.postgresql`: one row per key, advanced by an atomic upsert."""

from typing import TYPE_CHECKING

from pydantic import Field

from ottava_sidecar.components.backends.options import identifier
from ottava_sidecar.components.backends.postgresql import PostgresConnection, PostgresMetadata
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.sequencer.base import Increment, Sequencer

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy


class PostgresSequencerMetadata(PostgresMetadata):
    table_name: str = Field(
        default="ottava_sequencer", alias="tableName", description="Table of the counters (`schema.table` allowed)."
    )


@register("sequencer.postgresql", PostgresSequencerMetadata)
class PostgresSequencer(Sequencer[PostgresSequencerMetadata]):
    """Counters in a PostgreSQL table: strictly +1 per call across every sidecar (WEAK and STRONG alike)."""

    def __init__(self, name: str, settings: PostgresSequencerMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.db = PostgresConnection(settings, f"sequencer {name}")
        self.table = identifier(settings.table_name, "tableName")

    async def init(self) -> None:
        await self.db.open()
        await self.db.run("creating the sequencer table", self._create_schema)

    async def _create_schema(self, connection: "PoolConnectionProxy") -> None:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ottava-schema {self.table}")
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, value BIGINT NOT NULL)"
            )

    async def close(self) -> None:
        await self.db.close()

    async def next_id(self, key: str, increment: Increment) -> int:
        query = (
            f"INSERT INTO {self.table} AS t (key, value) VALUES ($1, 1)"
            " ON CONFLICT (key) DO UPDATE SET value = t.value + 1 RETURNING value"
        )
        value = await self.db.run(f"advancing sequence {key!r}", lambda c: c.fetchval(query, key))
        return int(value)
