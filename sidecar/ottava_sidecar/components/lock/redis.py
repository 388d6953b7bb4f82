"""`lock.redis`: locks as Redis keys set with NX and an expiry.

Release and keep-alive are Lua scripts that check the owner and then delete the key or
reset its expiry, atomically on the server.
"""

from ottava_sidecar.components.backends.redis import RedisConnection, RedisMetadata
from ottava_sidecar.components.lock.base import LockMetadata, LockStore, UnlockStatus
from ottava_sidecar.components.registration import register

# 0 released, 1 no such lock, 2 held by another owner: the values of UnlockStatus.
_UNLOCK = """
local owner = redis.call('GET', KEYS[1])
if not owner then return 1 end
if owner ~= ARGV[1] then return 2 end
redis.call('DEL', KEYS[1])
return 0
"""

# The same outcomes; on success the key expires ARGV[2] milliseconds from now.
_KEEP_ALIVE = """
local owner = redis.call('GET', KEYS[1])
if not owner then return 1 end
if owner ~= ARGV[1] then return 2 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""


class RedisLockMetadata(LockMetadata, RedisMetadata):
    pass


@register("lock.redis", RedisLockMetadata)
class RedisLockStore(LockStore[RedisLockMetadata]):
    """Locks in Redis (single server): `SET NX PX` to take, an atomic owner check to release."""

    def __init__(self, name: str, settings: RedisLockMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.redis = RedisConnection(settings, f"lock store {name}")

    async def init(self) -> None:
        await self.redis.open()

    async def close(self) -> None:
        await self.redis.close()

    async def try_lock(self, resource_id: str, owner: str, expiry_seconds: int) -> bool:
        with self.redis.errors(f"locking {resource_id!r}"):
            taken = await self.redis.client.set(resource_id, owner, nx=True, px=max(1, expiry_seconds * 1000))
        return bool(taken)

    async def unlock(self, resource_id: str, owner: str) -> UnlockStatus:
        with self.redis.errors(f"unlocking {resource_id!r}"):
            status = await self.redis.client.eval(_UNLOCK, 1, resource_id, owner)
        return UnlockStatus(int(status))

    async def keep_alive(self, resource_id: str, owner: str, expiry_seconds: int) -> UnlockStatus:
        with self.redis.errors(f"keeping {resource_id!r} locked"):
            status = await self.redis.client.eval(_KEEP_ALIVE, 1, resource_id, owner, max(1, expiry_seconds * 1000))
        return UnlockStatus(int(status))
