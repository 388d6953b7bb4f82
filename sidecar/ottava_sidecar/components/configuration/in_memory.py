"""`configuration.in-memory`: process-local configuration with change notifications."""

import itertools
from collections.abc import Sequence
from dataclasses import replace

from ottava_sidecar import limits
from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.configuration.base import (
    ConfigurationItem,
    ConfigurationQuery,
    ConfigurationStore,
    ConfigurationWatch,
)
from ottava_sidecar.components.registration import register

_Address = tuple[str, str, str, str]  # app_id, group, label, key


class InMemoryConfigurationMetadata(ComponentMetadata):
    pass


@register("configuration.in-memory", InMemoryConfigurationMetadata)
class InMemoryConfigurationStore(ConfigurationStore[InMemoryConfigurationMetadata]):
    """Process-local configuration items; subscribers are told of every save and delete."""

    def __init__(self, name: str, settings: InMemoryConfigurationMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._items: dict[_Address, ConfigurationItem] = {}
        self._versions = itertools.count(1)
        self._watches: list[ConfigurationWatch] = []

    async def close(self) -> None:
        for watch in list(self._watches):
            watch.close()

    async def get(self, query: ConfigurationQuery) -> list[ConfigurationItem]:
        if query.keys:
            found = (self._items.get((query.app_id, query.group, query.label, k)) for k in query.keys)
            return [replace(item) for item in found if item is not None]
        return [replace(item) for (app_id, *_), item in self._items.items() if query.matches(app_id, item)]

    async def save(self, app_id: str, items: Sequence[ConfigurationItem]) -> None:
        saved = []
        for item in items:
            stored = replace(item, version=str(next(self._versions)), deleted=False)
            self._items[(app_id, item.group, item.label, item.key)] = stored
            saved.append(stored)
        self._notify(app_id, saved)

    async def delete(self, query: ConfigurationQuery) -> None:
        removed = [
            replace(item, content="", version="", deleted=True)
            for item in await self.get(query)
            if self._items.pop((query.app_id, item.group, item.label, item.key), None)
        ]
        self._notify(query.app_id, removed)

    async def subscribe(
        self, query: ConfigurationQuery, *, buffer_bytes: int = limits.Limits.subscriber_buffer_bytes
    ) -> ConfigurationWatch:
        watch = ConfigurationWatch(query, self._watches.remove, buffer_bytes=buffer_bytes)
        self._watches.append(watch)
        return watch

    def _notify(self, app_id: str, items: list[ConfigurationItem]) -> None:
        for watch in list(self._watches):  # a watch that overflows leaves the list
            watch.push([replace(i) for i in items if watch.query.matches(app_id, i)])
