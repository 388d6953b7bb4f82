"""`configuration.redis`: configuration items in Redis, subscriptions via keyspace notifications.

Layout: each item is a hash `{content, tags, metadata, version}` (tags and metadata as
JSON) under `<keyPrefix><app_id>||<group>||<label>||<key>`, and each (app, group,
label) has a set indexing its keys. Subscribers are told of every change made to
those hashes — by a sidecar or by anyone writing to Redis directly — through Redis
keyspace notifications, which the component switches on at start-up (it adds the
`K`, `g`, `h` and `x` classes to `notify-keyspace-events`, keeping what is set).
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ottava_sidecar import backoff, limits
from ottava_sidecar.components.backends.redis import RedisConnection, RedisMetadata
from ottava_sidecar.components.configuration.base import (
    ConfigurationItem,
    ConfigurationQuery,
    ConfigurationStore,
    ConfigurationWatch,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

SEPARATOR = "||"
NEEDED_EVENTS = "Kghx"  # keyspace channel; generic (DEL), hash and expiry events


class RedisConfigurationMetadata(RedisMetadata):
    key_prefix: str = Field(
        default="ottava-configuration||", alias="keyPrefix", description="Prefix of the items' Redis keys."
    )


@register("configuration.redis", RedisConfigurationMetadata)
class RedisConfigurationStore(ConfigurationStore[RedisConfigurationMetadata]):
    """Configuration in Redis hashes; subscribers follow changes through keyspace notifications."""

    def __init__(self, name: str, settings: RedisConfigurationMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.redis = RedisConnection(settings, f"configuration store {name}")
        self._watches: list[ConfigurationWatch] = []
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._channel_head = f"__keyspace@{settings.redis_db}__:"

    async def init(self) -> None:
        client = await self.redis.open()
        await self._enable_notifications()
        self._pubsub = client.pubsub()
        with self.redis.errors("subscribing to keyspace notifications"):
            await self._pubsub.psubscribe(self._channel_head + _glob_escape(self.settings.key_prefix) + "*")
            # Wait for the server's confirmation: changes made after init returns are seen.
            while (message := await self._pubsub.get_message(timeout=self.settings.read_timeout)) is not None:
                if message["type"] == "psubscribe":
                    break
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-keyspace")

    async def close(self) -> None:
        for watch in list(self._watches):
            watch.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1
        await self.redis.close()

    async def _enable_notifications(self) -> None:
        from redis import exceptions

        client = self.redis.client
        try:
            current = str((await client.config_get("notify-keyspace-events")).get("notify-keyspace-events") or "")
            expanded = current.replace("A", "g$lshzxe")
            missing = "".join(flag for flag in NEEDED_EVENTS if flag not in expanded)
            if missing:
                await client.config_set("notify-keyspace-events", current + missing)
        except exceptions.ResponseError as err:
            raise ComponentError(
                f"cannot enable keyspace notifications on {self.redis.where} ({err}); "
                f"set notify-keyspace-events to include {NEEDED_EVENTS!r} in the server's configuration"
            ) from None

    def _item_key(self, app_id: str, group: str, label: str, key: str) -> str:
        for part, value in (("app id", app_id), ("group", group), ("label", label)):
            if SEPARATOR in value:
                raise ComponentError(f"{part} {value!r} can't contain {SEPARATOR!r} in {self.name}")
        return self.settings.key_prefix + SEPARATOR.join((app_id, group, label, key))

    def _index_key(self, app_id: str, group: str, label: str) -> str:
        return self._item_key(app_id, group, label, "") + "index"

    async def get(self, query: ConfigurationQuery) -> list[ConfigurationItem]:
        client = self.redis.client
        with self.redis.errors(f"reading configuration of {query.app_id}"):
            keys: Sequence[str] = query.keys
            if not keys:
                members = await client.smembers(self._index_key(query.app_id, query.group, query.label))
                keys = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(self._item_key(query.app_id, query.group, query.label, key))
                found = await pipe.execute()
        return [_item(key, query.group, query.label, fields) for key, fields in zip(keys, found, strict=True) if fields]

    async def save(self, app_id: str, items: Sequence[ConfigurationItem]) -> None:
        if not items:
            return
        with self.redis.errors(f"saving configuration of {app_id}"):
            async with self.redis.client.pipeline(transaction=True) as pipe:
                for item in items:
                    item_key = self._item_key(app_id, item.group, item.label, item.key)
                    # The version first: subscribers react to the HSET and then read a whole item.
                    pipe.hincrby(item_key, "version", 1)
                    pipe.hset(
                        item_key,
                        mapping={
                            "content": item.content,
                            "tags": json.dumps(item.tags),
                            "metadata": json.dumps(item.metadata),
                        },
                    )
                    pipe.sadd(self._index_key(app_id, item.group, item.label), item.key)
                await pipe.execute()

    async def delete(self, query: ConfigurationQuery) -> None:
        existing = await self.get(query)
        if not existing:
            return
        with self.redis.errors(f"deleting configuration of {query.app_id}"):
            async with self.redis.client.pipeline(transaction=True) as pipe:
                for item in existing:
                    pipe.delete(self._item_key(query.app_id, query.group, query.label, item.key))
                    pipe.srem(self._index_key(query.app_id, query.group, query.label), item.key)
                await pipe.execute()

    async def subscribe(
        self, query: ConfigurationQuery, *, buffer_bytes: int = limits.Limits.subscriber_buffer_bytes
    ) -> ConfigurationWatch:
        watch = ConfigurationWatch(query, self._watches.remove, buffer_bytes=buffer_bytes)
        self._watches.append(watch)
        return watch

    async def _read(self) -> None:
        assert self._pubsub is not None
        delays = backoff.CONFIGURATION_WATCH.delays()
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "pmessage":
                    await self._dispatch(message["channel"].decode(), message["data"].decode())
                delays = backoff.CONFIGURATION_WATCH.delays()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a lost connection: redis-py resubscribes when it reconnects
                log.warning("keyspace notifications of %s interrupted: %s", self.name, err)
                await asyncio.sleep(next(delays))
                with contextlib.suppress(Exception):
                    await self._enable_notifications()  # a restarted server forgot CONFIG SET

    async def _dispatch(self, channel: str, event: str) -> None:
        stored_key = channel[len(self._channel_head) :]
        parts = stored_key[len(self.settings.key_prefix) :].split(SEPARATOR, 3)
        if len(parts) != 4 or not parts[3] or not self._watches:
            return  # an index set, or nobody listens
        app_id, group, label, key = parts
        if event == "hset":
            fields = await self.redis.client.hgetall(stored_key)
            if not fields:
                return  # deleted since
            item = _item(key, group, label, fields)
        elif event in ("del", "expired"):
            item = ConfigurationItem(key, "", group, label, deleted=True)
        else:
            return
        for watch in list(self._watches):  # a watch that overflows leaves the list
            if watch.query.matches(app_id, item):
                watch.push([replace(item)])


def _item(key: str, group: str, label: str, fields: dict[Any, Any]) -> ConfigurationItem:
    def text(name: bytes) -> str:
        value = fields.get(name)
        return value.decode() if isinstance(value, bytes) else ""

    return ConfigurationItem(
        key,
        text(b"content"),
        group,
        label,
        tags=json.loads(text(b"tags") or "{}"),
        metadata=json.loads(text(b"metadata") or "{}"),
        version=text(b"version"),
    )


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
