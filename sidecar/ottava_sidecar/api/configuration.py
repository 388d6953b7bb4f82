"""What the configuration calls mean, for every wire API.

Dapr's calls know only keys: they reach the items of the sidecar's own app id, in the
group and label named by the request metadata (`group`, `label`) or the defaults.
Layotto's calls name app id, group and label; an empty app id means the sidecar's own.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ottava_sidecar.api import errors
from ottava_sidecar.components.configuration.base import (
    DEFAULT_GROUP,
    DEFAULT_LABEL,
    ConfigurationItem,
    ConfigurationQuery,
    ConfigurationStore,
    ConfigurationWatch,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registry import LookupFailure, Registry


class ConfigurationApi:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def store(self, name: str) -> ConfigurationStore[Any]:
        if not name:
            raise errors.invalid_argument("configuration store name is empty", "ERR_CONFIGURATION_STORE_NOT_FOUND")
        try:
            return self._registry.lookup("configuration", name, ConfigurationStore)
        except LookupFailure as failure:
            raise errors.from_lookup(failure) from None

    def query(self, app_id: str, group: str, label: str, keys: Sequence[str]) -> ConfigurationQuery:
        if any(not key for key in keys):
            raise errors.invalid_argument("a configuration key is empty")
        return ConfigurationQuery(
            app_id or self._registry.app_id, group or DEFAULT_GROUP, label or DEFAULT_LABEL, tuple(keys)
        )

    def dapr_query(self, keys: Sequence[str], metadata: Mapping[str, str]) -> ConfigurationQuery:
        return self.query("", metadata.get("group", ""), metadata.get("label", ""), keys)

    async def get(self, store_name: str, query: ConfigurationQuery) -> list[ConfigurationItem]:
        store = self.store(store_name)
        try:
            return await store.get(query)
        except ComponentError as err:
            raise errors.internal(
                f"failed to get {list(query.keys)} from configuration store {store.name}: {err}",
                "ERR_CONFIGURATION_GET",
            ) from None

    async def save(self, store_name: str, app_id: str, items: Sequence[ConfigurationItem]) -> None:
        store = self.store(store_name)
        if not items:
            raise errors.invalid_argument(f"no items to save (configuration store {store.name})")
        for item in items:
            if not item.key:
                raise errors.invalid_argument(f"a configuration key is empty (configuration store {store.name})")
            item.group, item.label = item.group or DEFAULT_GROUP, item.label or DEFAULT_LABEL
        try:
            await store.save(app_id or self._registry.app_id, items)
        except ComponentError as err:
            raise errors.internal(
                f"failed to save to configuration store {store.name}: {err}", "ERR_CONFIGURATION_SAVE"
            ) from None

    async def delete(self, store_name: str, query: ConfigurationQuery) -> None:
        store = self.store(store_name)
        try:
            await store.delete(query)
        except ComponentError as err:
            raise errors.internal(
                f"failed to delete from configuration store {store.name}: {err}", "ERR_CONFIGURATION_DELETE"
            ) from None

    async def subscribe(self, store_name: str, query: ConfigurationQuery) -> ConfigurationWatch:
        store = self.store(store_name)
        try:
            return await store.subscribe(query)
        except ComponentError as err:
            raise errors.internal(
                f"failed to subscribe to configuration store {store.name}: {err}", "ERR_CONFIGURATION_SUBSCRIBE"
            ) from None

    async def watch(
        self, subscriptions: AsyncIterator[tuple[str, ConfigurationQuery]]
    ) -> AsyncIterator[tuple[str, str, list[ConfigurationItem]]]:
        """Layotto's subscription stream, as `(store name, app id, items)`.

        Each `(store name, query)` read adds a subscription, while the earlier ones keep
        streaming: its current items come first, then every change. An error reading or
        subscribing ends the stream with that error.
        """
        outbox: asyncio.Queue[tuple[str, str, list[ConfigurationItem]] | BaseException] = asyncio.Queue()
        watches: list[ConfigurationWatch] = []
        pumps: list[asyncio.Task[None]] = []

        async def pump(store_name: str, app_id: str, watch: ConfigurationWatch) -> None:
            async for changes in watch:
                outbox.put_nowait((store_name, app_id, changes))

        async def read_subscriptions() -> None:
            try:
                async for store_name, query in subscriptions:
                    current = await self.get(store_name, query)
                    watch = await self.subscribe(store_name, query)
                    watches.append(watch)
                    if current:
                        outbox.put_nowait((store_name, query.app_id, current))
                    pumps.append(asyncio.create_task(pump(store_name, query.app_id, watch)))
            except BaseException as err:  # handed to the generator, which raises it to the caller
                outbox.put_nowait(err)

        reader = asyncio.create_task(read_subscriptions())
        try:
            while True:
                answer = await outbox.get()
                if isinstance(answer, BaseException):
                    raise answer
                yield answer
        finally:
            reader.cancel()
            for watch in watches:
                watch.close()
            for task in pumps:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, *pumps, return_exceptions=True)
