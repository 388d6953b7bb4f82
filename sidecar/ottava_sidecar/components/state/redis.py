"""`state.redis`: state in Redis hashes, with ETags, TTL and transactions.

Each item is a hash `{data, version, contentType}` under its (prefixed) key — the
layout of Dapr's Redis state store, so data written by Dapr reads back here. The
version is the ETag. Every write, single or transactional, runs one Lua script that
checks all ETags first and then applies all operations, so it is atomic on the server.
A read is one script too, which answers each key's fields and time to live in one
command: a pipeline of the same two commands costs redis-py about a third more.
"""

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from ottava_sidecar import limits
from ottava_sidecar.components.backends.redis import RedisConnection, RedisMetadata
from ottava_sidecar.components.errors import ETagInvalidError, ETagMismatchError
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.state.base import (
    Concurrency,
    DeleteRequest,
    Feature,
    InvalidOperationError,
    Operation,
    SetRequest,
    StateItem,
    StateMetadata,
    StateStore,
    check_operations,
)

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

# ARGV holds 6 values per operation: kind ("set"/"del"), etag ("" = none), first-write
# ("1"/"0"), value, ttl seconds ("" = never expires), content type.
# Redis does not roll back a script that fails half-way, so the script first checks
# everything that could make a write fail (ETags, the stored version a write increments,
# the TTL, a key of another type: HGET fails on it) and only then writes; a write that
# cannot be carried out writes nothing.
_STRIDE = 6
_WRITE = (
    """
for i = 1, #KEYS do
  local base = (i - 1) * 6
  local etag, first_write, ttl = ARGV[base + 2], ARGV[base + 3], ARGV[base + 5]
  local version = redis.call('HGET', KEYS[i], 'version')
  if version and not (string.match(version, '^%d+$') and #version <= 18) then
    return {'invalid', KEYS[i], 'the stored version ' .. version .. ' is not an ETag this store issued'}
  end
  if ttl ~= '' and not (string.match(ttl, '^%d+$') and #ttl <= 10 and tonumber(ttl) <= """
    + str(limits.MAX_TTL_SECONDS)
    + """) then
    return {'invalid', KEYS[i], 'ttl ' .. ttl .. ' is out of range'}
  end
  if etag ~= '' then
    if not version then return {'mismatch', KEYS[i], 'the item does not exist and an etag was passed'} end
    if version ~= etag then return {'mismatch', KEYS[i], 'etag ' .. etag .. ' does not match the stored one'} end
  elseif first_write == '1' and version then
    return {'mismatch', KEYS[i], 'the item already exists and no etag was passed'}
  end
end
for i = 1, #KEYS do
  local base = (i - 1) * 6
  if ARGV[base + 1] == 'del' then
    redis.call('DEL', KEYS[i])
  else
    redis.call('HINCRBY', KEYS[i], 'version', 1)
    redis.call('HSET', KEYS[i], 'data', ARGV[base + 4], 'contentType', ARGV[base + 6])
    local ttl = ARGV[base + 5]
    if ttl == '' then redis.call('PERSIST', KEYS[i]) else redis.call('EXPIRE', KEYS[i], tonumber(ttl)) end
  end
end
return {'ok'}
"""
)


# Per key, its fields and its time to live in milliseconds (-1 none, -2 no such key).
# A key of another type answers the error HMGET gives it, as it is.
_READ = """
local replies = {}
for i = 1, #KEYS do
  local fields = redis.pcall('HMGET', KEYS[i], 'data', 'version', 'contentType')
  if fields.err then return fields end
  replies[i] = {fields[1], fields[2], fields[3], redis.call('PTTL', KEYS[i])}
end
return replies
"""


class RedisStateMetadata(StateMetadata, RedisMetadata):
    pass


@register("state.redis", RedisStateMetadata)
class RedisStateStore(StateStore[RedisStateMetadata]):
    """State in Redis: ETags, TTL and atomic transactions (one Lua script per write)."""

    features: ClassVar[tuple[str, ...]] = (Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL)

    def __init__(self, name: str, settings: RedisStateMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.redis = RedisConnection(settings, f"state store {name}")
        self._write: AsyncScript | None = None
        self._read: AsyncScript | None = None

    async def init(self) -> None:
        client = await self.redis.open()
        self._write = client.register_script(_WRITE)
        self._read = client.register_script(_READ)

    async def close(self) -> None:
        await self.redis.close()

    async def get(self, key: str) -> StateItem | None:
        return (await self.bulk_get([key]))[0]

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        assert self._read is not None
        with self.redis.errors(f"reading {len(keys)} key(s)"):
            replies = await self._read(keys=list(keys))
        items: list[StateItem | None] = []
        now = time.time()
        for key, (data, version, content_type, pttl) in zip(keys, replies, strict=True):
            if version is None:
                items.append(None)
                continue
            expires = _wall(now + pttl / 1000) if pttl > 0 else None
            metadata = {"ttlExpireTime": expires} if expires else {}
            items.append(StateItem(key, data or b"", version.decode(), (content_type or b"").decode(), metadata))
        return items

    async def set(self, request: SetRequest) -> None:
        await self.transact([request])

    async def delete(self, request: DeleteRequest) -> None:
        await self.transact([request])

    async def transact(self, operations: Sequence[Operation]) -> None:
        if not operations:
            return
        check_operations(operations)
        keys: list[str] = []
        args: list[bytes | str] = []
        for op in operations:
            if op.etag and not op.etag.isdigit():
                raise ETagInvalidError(f"etag {op.etag!r} is not one this store issued")
            first_write = "1" if op.concurrency is Concurrency.FIRST_WRITE else "0"
            keys.append(op.key)
            if isinstance(op, SetRequest):
                ttl = "" if op.ttl_seconds is None or op.ttl_seconds < 0 else str(op.ttl_seconds)
                args += ["set", op.etag or "", first_write, op.value, ttl, op.content_type]
            else:
                args += ["del", op.etag or "", first_write, b"", "", ""]
        assert self._write is not None and len(args) == _STRIDE * len(keys)
        with self.redis.errors(f"writing {len(keys)} key(s)"):
            reply = await self._write(keys=keys, args=args)
        if reply[0] == b"mismatch":
            raise ETagMismatchError(f"{reply[2].decode()} (key {reply[1].decode()!r})")
        if reply[0] == b"invalid":
            raise InvalidOperationError(f"{reply[2].decode()} (key {reply[1].decode()!r}); nothing was written")


def _wall(epoch: float) -> str | None:
    """The expiry as Dapr shows it; None past year 9999 (a TTL stored before TTLs were checked)."""
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return None
