"""`sequencer.redis`: one counter per key, advanced with INCR (atomic on the server)."""

from pydantic import Field

from ottava_sidecar.components.backends.redis import RedisConnection, RedisMetadata
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.sequencer.base import Increment, Sequencer


class RedisSequencerMetadata(RedisMetadata):
    key_prefix: str = Field(
        default="ottava-sequencer|", alias="keyPrefix", description="Prefix of the counters' Redis keys."
    )


@register("sequencer.redis", RedisSequencerMetadata)
class RedisSequencer(Sequencer[RedisSequencerMetadata]):
    """Counters in Redis: strictly +1 per call across every sidecar (WEAK and STRONG alike)."""

    def __init__(self, name: str, settings: RedisSequencerMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.redis = RedisConnection(settings, f"sequencer {name}")

    async def init(self) -> None:
        await self.redis.open()

    async def close(self) -> None:
        await self.redis.close()

    async def next_id(self, key: str, increment: Increment) -> int:
        with self.redis.errors(f"advancing sequence {key!r}"):
            return int(await self.redis.client.incr(self.settings.key_prefix + key))
