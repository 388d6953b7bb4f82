"""`configuration.etcd`: configuration items as etcd keys, subscriptions as etcd watches.

Layout: `<keyPrefix><app_id>/<group>/<label>/<key>` holds JSON `{content, tags,
metadata}`; the item's version is the key's mod revision. A save of several items is
one etcd transaction. Each subscription is a watch on its (app, group, label) prefix,
resumed from the last revision it saw if the connection drops, so no change is missed
while etcd restarts (unless etcd compacted that history meanwhile).
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import Field

from ottava_sidecar import backoff, limits
from ottava_sidecar.components.backends.etcd import EtcdConnection, EtcdMetadata
from ottava_sidecar.components.configuration.base import (
    ConfigurationItem,
    ConfigurationQuery,
    ConfigurationStore,
    ConfigurationWatch,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registration import register

log = logging.getLogger(__name__)


class EtcdConfigurationMetadata(EtcdMetadata):
    key_prefix: str = Field(
        default="/ottava/configuration/", alias="keyPrefix", description="Prefix of the items' keys."
    )


@register("configuration.etcd", EtcdConfigurationMetadata)
class EtcdConfigurationStore(ConfigurationStore[EtcdConfigurationMetadata]):
    """Configuration in etcd keys; subscribers follow changes through etcd watches."""

    def __init__(self, name: str, settings: EtcdConfigurationMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.etcd = EtcdConnection(settings, f"configuration store {name}")
        self._watches: dict[ConfigurationWatch, asyncio.Task[None]] = {}

    async def init(self) -> None:
        await self.etcd.open()

    async def close(self) -> None:
        for watch in list(self._watches):
            watch.close()
        await self.etcd.close()

    def _folder(self, app_id: str, group: str, label: str) -> str:
        for part, value in (("app id", app_id), ("group", group), ("label", label)):
            if "/" in value:
                raise ComponentError(f"{part} {value!r} can't contain '/' in {self.name}")
        return f"{self.settings.key_prefix}{app_id}/{group}/{label}/"

    async def get(self, query: ConfigurationQuery) -> list[ConfigurationItem]:
        from aetcd import rpc

        folder = self._folder(query.app_id, query.group, query.label)
        if query.keys:
            ops = [rpc.RequestOp(request_range=rpc.RangeRequest(key=(folder + k).encode())) for k in query.keys]
            reply = await self._txn(f"reading configuration of {query.app_id}", rpc.TxnRequest(success=ops))
            kvs = [kv for response in reply.responses for kv in response.response_range.kvs]
        else:
            start = folder.encode()
            request = rpc.RangeRequest(key=start, range_end=_prefix_end(start))
            etcd = self.etcd
            reply = await etcd.call(
                f"reading configuration of {query.app_id}",
                lambda: etcd.kv.Range(request, timeout=self.settings.timeout, metadata=etcd.metadata),
            )
            kvs = list(reply.kvs)
        return [_item(kv.key.decode()[len(folder) :], query, kv) for kv in kvs]

    async def save(self, app_id: str, items: Sequence[ConfigurationItem]) -> None:
        from aetcd import rpc

        ops = [
            rpc.RequestOp(
                request_put=rpc.PutRequest(
                    key=(self._folder(app_id, item.group, item.label) + item.key).encode(),
                    value=json.dumps({"content": item.content, "tags": item.tags, "metadata": item.metadata}).encode(),
                )
            )
            for item in items
        ]
        if ops:
            await self._txn(f"saving configuration of {app_id}", rpc.TxnRequest(success=ops))

    async def delete(self, query: ConfigurationQuery) -> None:
        from aetcd import rpc

        folder = self._folder(query.app_id, query.group, query.label).encode()
        if query.keys:
            ops = [
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=folder + k.encode())) for k in query.keys
            ]
        else:
            ops = [
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=folder, range_end=_prefix_end(folder)))
            ]
        await self._txn(f"deleting configuration of {query.app_id}", rpc.TxnRequest(success=ops))

    async def _txn(self, doing: str, request: Any) -> Any:
        etcd = self.etcd
        return await etcd.call(
            doing, lambda: etcd.kv.Txn(request, timeout=self.settings.timeout, metadata=etcd.metadata)
        )

    async def subscribe(
        self, query: ConfigurationQuery, *, buffer_bytes: int = limits.Limits.subscriber_buffer_bytes
    ) -> ConfigurationWatch:
        watch = ConfigurationWatch(query, self._unsubscribe, buffer_bytes=buffer_bytes)
        created = asyncio.get_running_loop().create_future()
        self._watches[watch] = asyncio.create_task(self._follow(watch, created), name=f"{self.name}-watch")
        try:
            await asyncio.wait_for(asyncio.shield(created), self.settings.timeout)
        except BaseException:
            watch.close()
            raise
        return watch

    def _unsubscribe(self, watch: ConfigurationWatch) -> None:
        task = self._watches.pop(watch, None)
        if task is not None:
            task.cancel()

    async def _follow(self, watch: ConfigurationWatch, created: "asyncio.Future[None]") -> None:
        """Feed one subscription from an etcd watch, resuming after the revision last seen."""
        from aetcd import rpc

        query = watch.query
        folder = self._folder(query.app_id, query.group, query.label).encode()
        next_revision = 0
        delays = backoff.CONFIGURATION_WATCH.delays()
        while True:
            stop = asyncio.Event()
            create = rpc.WatchCreateRequest(key=folder, range_end=_prefix_end(folder), start_revision=next_revision)

            async def requests(create: Any = create, stop: asyncio.Event = stop) -> AsyncIterator[Any]:
                yield rpc.WatchRequest(create_request=create)
                await stop.wait()

            try:
                stream = self.etcd.watch.Watch(requests(), metadata=self.etcd.metadata)
                async for response in stream:
                    if response.created and not created.done():
                        created.set_result(None)
                    if response.canceled:
                        raise ComponentError(f"watch canceled by etcd: {response.cancel_reason}")
                    changes = []
                    for event in response.events:
                        kv = event.kv
                        key = kv.key.decode()[len(folder) :]
                        if event.type == rpc.Event.DELETE:
                            changes.append(ConfigurationItem(key, "", query.group, query.label, deleted=True))
                        else:
                            changes.append(_item(key, query, kv))
                        next_revision = kv.mod_revision + 1
                    matching = [item for item in changes if query.matches(query.app_id, item)]
                    watch.push(matching)
                    delays = backoff.CONFIGURATION_WATCH.delays()
            except asyncio.CancelledError:
                stop.set()
                raise
            except Exception as err:
                if not created.done():
                    created.set_exception(ComponentError(f"cannot watch {self.etcd.where}: {err}"))
                    return
                log.warning("watch of %s interrupted, resuming: %s", self.name, err)
            stop.set()
            await asyncio.sleep(next(delays))


def _item(key: str, query: ConfigurationQuery, kv: Any) -> ConfigurationItem:
    try:
        document = json.loads(kv.value)
    except ValueError:
        document = {"content": kv.value.decode(errors="replace")}  # written by hand, not by Ottava
    if not isinstance(document, dict):
        document = {"content": kv.value.decode(errors="replace")}
    return ConfigurationItem(
        key,
        str(document.get("content", "")),
        query.group,
        query.label,
        tags=dict(document.get("tags") or {}),
        metadata=dict(document.get("metadata") or {}),
        version=str(kv.mod_revision),
    )


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range end that covers every key starting with `prefix`."""
    end = bytearray(prefix)
    for index in range(len(end) - 1, -1, -1):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\0"
